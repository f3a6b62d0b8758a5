//! gRPC server reflection (`grpc.reflection.v1.ServerReflection` and its older twin
//! `v1alpha`, which many tools still ask): lists the services and serves the descriptors
//! the code generator embedded in each ([`ServiceHandler::file_descriptor_set`]), so
//! `grpcurl`, Postman or `svrkit call --reflect` need no copy of the IDL.
//!
//! [`ServiceHandler::file_descriptor_set`]: crate::server::ServiceHandler::file_descriptor_set

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};

/// The v1 service's full name.
pub(crate) const SERVICE_V1: &str = "grpc.reflection.v1.ServerReflection";
/// The v1alpha service's full name (the same messages).
pub(crate) const SERVICE_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";
/// The one method of both.
pub(crate) const METHOD: &str = "ServerReflectionInfo";
/// At most this many requests on one reflection stream.
pub(crate) const MAX_REQUESTS_PER_STREAM: usize = 10_000;
/// A reflection request is at most this large.
pub(crate) const MAX_REQUEST_LEN: usize = 64 * 1024;

/// `ServerReflectionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ReflectionRequest {
    #[prost(string, tag = "1")]
    pub(crate) host: String,
    #[prost(oneof = "Ask", tags = "3, 4, 5, 6, 7")]
    pub(crate) ask: Option<Ask>,
}

/// `ServerReflectionRequest.message_request`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Ask {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(message, tag = "5")]
    FileContainingExtension(ExtensionRequest),
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

/// `ExtensionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExtensionRequest {
    #[prost(string, tag = "1")]
    pub(crate) containing_type: String,
    #[prost(int32, tag = "2")]
    pub(crate) extension_number: i32,
}

/// `ServerReflectionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ReflectionResponse {
    #[prost(string, tag = "1")]
    pub(crate) valid_host: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) original_request: Option<ReflectionRequest>,
    #[prost(oneof = "Answer", tags = "4, 5, 6, 7")]
    pub(crate) answer: Option<Answer>,
}

/// `ServerReflectionResponse.message_response`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Answer {
    /// `file_descriptor_response`.
    #[prost(message, tag = "4")]
    Files(FileDescriptorResponse),
    /// `all_extension_numbers_response`.
    #[prost(message, tag = "5")]
    ExtensionNumbers(ExtensionNumberResponse),
    /// `list_services_response`.
    #[prost(message, tag = "6")]
    Services(ListServiceResponse),
    /// `error_response`.
    #[prost(message, tag = "7")]
    Error(ErrorResponse),
}

/// `FileDescriptorResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FileDescriptorResponse {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub(crate) file_descriptor_proto: Vec<Bytes>,
}

/// `ExtensionNumberResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExtensionNumberResponse {
    #[prost(string, tag = "1")]
    pub(crate) base_type_name: String,
    #[prost(int32, repeated, tag = "2")]
    pub(crate) extension_number: Vec<i32>,
}

/// `ListServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    pub(crate) service: Vec<ServiceResponse>,
}

/// `ServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ServiceResponse {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
}

/// `ErrorResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ErrorResponse {
    #[prost(int32, tag = "1")]
    pub(crate) error_code: i32,
    #[prost(string, tag = "2")]
    pub(crate) error_message: String,
}

/// The descriptors of one server, indexed for reflection.
#[derive(Debug, Default)]
pub(crate) struct Descriptors {
    /// Each file, encoded, by name.
    files: HashMap<String, Bytes>,
    /// Each file's imports.
    imports: HashMap<String, Vec<String>>,
    /// The file defining each fully qualified symbol (message, enum, service, method).
    symbols: HashMap<String, String>,
    /// Extensions: extended type -> (number, defining file).
    extensions: HashMap<String, Vec<(i32, String)>>,
    /// The services listed.
    services: BTreeSet<String>,
}

fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_string()
    } else {
        format!("{scope}.{name}")
    }
}

impl Descriptors {
    /// Indexes the encoded descriptor sets `sets`, listing `services` (the services
    /// served, the built-in ones included). A set that does not decode is skipped.
    pub(crate) fn build(sets: &[&[u8]], services: &[&str]) -> Descriptors {
        let mut d = Descriptors {
            services: services.iter().map(|s| s.to_string()).collect(),
            ..Descriptors::default()
        };
        for set in sets {
            let Ok(set) = FileDescriptorSet::decode(*set) else {
                tracing::warn!("a service's embedded descriptor set does not decode");
                continue;
            };
            for file in set.file {
                d.add(file);
            }
        }
        d
    }

    fn add(&mut self, file: FileDescriptorProto) {
        let name = file.name().to_string();
        if self.files.contains_key(&name) {
            return;
        }
        let package = file.package().to_string();
        let mut defined = Vec::new();
        for message in &file.message_type {
            self.index_message(&package, message, &name, &mut defined);
        }
        for e in &file.enum_type {
            defined.push(qualify(&package, e.name()));
        }
        for service in &file.service {
            let full = qualify(&package, service.name());
            for method in &service.method {
                defined.push(format!("{full}.{}", method.name()));
            }
            defined.push(full);
        }
        for extension in &file.extension {
            self.add_extension(extension, &name);
        }
        for symbol in defined {
            self.symbols.insert(symbol, name.clone());
        }
        self.imports.insert(name.clone(), file.dependency.clone());
        self.files.insert(name, Bytes::from(file.encode_to_vec()));
    }

    fn index_message(
        &mut self,
        scope: &str,
        message: &DescriptorProto,
        file: &str,
        defined: &mut Vec<String>,
    ) {
        let full = qualify(scope, message.name());
        for nested in &message.nested_type {
            self.index_message(&full, nested, file, defined);
        }
        for e in &message.enum_type {
            defined.push(qualify(&full, e.name()));
        }
        for extension in &message.extension {
            self.add_extension(extension, file);
        }
        defined.push(full);
    }

    fn add_extension(&mut self, extension: &prost_types::FieldDescriptorProto, file: &str) {
        let extendee = extension.extendee().trim_start_matches('.').to_string();
        self.extensions
            .entry(extendee)
            .or_default()
            .push((extension.number(), file.to_string()));
    }

    /// `file` and every file it imports, transitively, each once (the file first).
    fn with_imports(&self, file: &str) -> Vec<Bytes> {
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        let mut stack = vec![file.to_string()];
        while let Some(name) = stack.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            if let Some(bytes) = self.files.get(&name) {
                order.push(bytes.clone());
            }
            if let Some(imports) = self.imports.get(&name) {
                stack.extend(imports.iter().rev().cloned());
            }
        }
        order
    }

    fn files_answer(&self, file: Option<&String>, what: &str) -> Answer {
        match file {
            Some(file) => Answer::Files(FileDescriptorResponse {
                file_descriptor_proto: self.with_imports(file),
            }),
            None => not_found(what),
        }
    }

    /// The answer to one reflection request.
    pub(crate) fn answer(&self, request: ReflectionRequest) -> ReflectionResponse {
        let answer = match &request.ask {
            None => Answer::Error(ErrorResponse {
                error_code: crate::Code::InvalidArgument.as_u32() as i32,
                error_message: "the request asks nothing".to_string(),
            }),
            Some(Ask::ListServices(_)) => Answer::Services(ListServiceResponse {
                service: self
                    .services
                    .iter()
                    .map(|name| ServiceResponse { name: name.clone() })
                    .collect(),
            }),
            Some(Ask::FileByFilename(name)) => self.files_answer(
                self.files.contains_key(name).then_some(name),
                &format!("file {name:?}"),
            ),
            Some(Ask::FileContainingSymbol(symbol)) => {
                let symbol = symbol.trim_start_matches('.');
                self.files_answer(self.symbols.get(symbol), &format!("symbol {symbol:?}"))
            }
            Some(Ask::FileContainingExtension(ext)) => {
                let file = self
                    .extensions
                    .get(ext.containing_type.trim_start_matches('.'))
                    .and_then(|all| all.iter().find(|(n, _)| *n == ext.extension_number))
                    .map(|(_, file)| file);
                self.files_answer(
                    file,
                    &format!(
                        "extension {} of {:?}",
                        ext.extension_number, ext.containing_type
                    ),
                )
            }
            Some(Ask::AllExtensionNumbersOfType(ty)) => {
                let ty = ty.trim_start_matches('.');
                let known = self.symbols.contains_key(ty) || self.extensions.contains_key(ty);
                if known {
                    Answer::ExtensionNumbers(ExtensionNumberResponse {
                        base_type_name: ty.to_string(),
                        extension_number: self
                            .extensions
                            .get(ty)
                            .map(|all| all.iter().map(|(n, _)| *n).collect())
                            .unwrap_or_default(),
                    })
                } else {
                    not_found(&format!("type {ty:?}"))
                }
            }
        };
        ReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            answer: Some(answer),
        }
    }
}

fn not_found(what: &str) -> Answer {
    Answer::Error(ErrorResponse {
        error_code: crate::Code::NotFound.as_u32() as i32,
        error_message: format!("{what} is not known to this server"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{MethodDescriptorProto, ServiceDescriptorProto};

    fn file(name: &str, package: &str, deps: &[&str]) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.to_string()),
            package: Some(package.to_string()),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            ..FileDescriptorProto::default()
        }
    }

    fn descriptors() -> Descriptors {
        let mut api = file("shop/api.proto", "shop", &["shop/types.proto"]);
        api.service.push(ServiceDescriptorProto {
            name: Some("Cart".to_string()),
            method: vec![MethodDescriptorProto {
                name: Some("Add".to_string()),
                ..MethodDescriptorProto::default()
            }],
            ..ServiceDescriptorProto::default()
        });
        let mut types = file("shop/types.proto", "shop", &[]);
        types.message_type.push(DescriptorProto {
            name: Some("Item".to_string()),
            nested_type: vec![DescriptorProto {
                name: Some("Price".to_string()),
                ..DescriptorProto::default()
            }],
            ..DescriptorProto::default()
        });
        let set = FileDescriptorSet {
            file: vec![api, types],
        }
        .encode_to_vec();
        Descriptors::build(&[&set, b"\xff\xff not a set"], &["shop.Cart", SERVICE_V1])
    }

    fn ask(d: &Descriptors, ask: Ask) -> Answer {
        d.answer(ReflectionRequest {
            host: String::new(),
            ask: Some(ask),
        })
        .answer
        .expect("answered")
    }

    fn file_names(answer: Answer) -> Vec<String> {
        let Answer::Files(files) = answer else {
            panic!("expected files, got {answer:?}");
        };
        files
            .file_descriptor_proto
            .iter()
            .map(|b| {
                FileDescriptorProto::decode(&b[..])
                    .expect("file")
                    .name()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn symbols_find_their_file_with_its_imports() {
        let d = descriptors();
        for symbol in ["shop.Cart", ".shop.Cart.Add", "shop.Item.Price"] {
            let files = file_names(ask(&d, Ask::FileContainingSymbol(symbol.to_string())));
            assert!(
                files.contains(&"shop/types.proto".to_string()),
                "{symbol}: {files:?}"
            );
        }
        assert_eq!(
            file_names(ask(&d, Ask::FileContainingSymbol("shop.Cart".into()))),
            ["shop/api.proto", "shop/types.proto"],
            "the file first, then its imports"
        );
        let Answer::Services(list) = ask(&d, Ask::ListServices(String::new())) else {
            panic!("a list");
        };
        let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        assert_eq!(names, [SERVICE_V1, "shop.Cart"]);
    }

    #[test]
    fn unknown_names_are_not_found_errors() {
        let d = descriptors();
        for ask_for in [
            Ask::FileContainingSymbol("shop.Nothing".into()),
            Ask::FileByFilename("../etc/passwd".into()),
            Ask::AllExtensionNumbersOfType("nope.Nope".into()),
        ] {
            let Answer::Error(e) = ask(&d, ask_for) else {
                panic!("an error");
            };
            assert_eq!(e.error_code, 5, "NOT_FOUND");
        }
    }
}
