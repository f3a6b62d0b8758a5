//! Calling any method by name with messages described at run time (feature `dynamic`):
//! what `svrkit call` does, for gateways, tools and tests that have descriptors rather
//! than generated code.
//!
//! A [`DynamicClient`] holds a channel and a `prost_reflect::DescriptorPool` (from
//! `protox`, a descriptor set, or reflection). The method's svrkit options in the IDL
//! (`(svrkit.idempotent)`, `(svrkit.timeout_ms)`, `(svrkit.priority)`) apply as they do to
//! generated clients, so a dynamic call is retried, timed and prioritised alike. Those
//! options live in extensions: build the pool from `protox::Compiler::descriptor_pool` or
//! from encoded descriptor bytes (`DescriptorPool::decode`), not from a
//! `prost_types::FileDescriptorSet`, which drops them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

use crate::client::{CallOptions, Channel, RpcRequest};
use crate::method::{DynamicMethod, Method};
use crate::status::Status;

/// Why a dynamic call could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum DynamicError {
    /// The name is not `SERVICE/Method`.
    #[error("expected SERVICE/Method, got {0:?}")]
    BadName(String),
    /// No service of the pool has this name (full or short).
    #[error("unknown service {0:?} (not in the descriptors)")]
    UnknownService(String),
    /// The short name fits several services.
    #[error("service {name:?} is ambiguous: {candidates}")]
    AmbiguousService {
        /// The name given.
        name: String,
        /// The full names it fits, comma-separated.
        candidates: String,
    },
    /// The service has no such method.
    #[error("unknown method {method:?} of {service}")]
    UnknownMethod {
        /// The service's full name.
        service: String,
        /// The method asked for.
        method: String,
    },
    /// The JSON is not the request message in protobuf's JSON mapping.
    #[error("the JSON does not fit {message}: {error}")]
    BadJson {
        /// The request message's full name.
        message: String,
        /// What did not fit.
        error: String,
    },
    /// The server answered with bytes that are not the response message.
    #[error("undecodable {message}: {error}")]
    BadResponse {
        /// The response message's full name.
        message: String,
        /// The decoding error.
        error: String,
    },
    /// The call failed.
    #[error("{0}")]
    Call(#[from] Status),
    /// Server reflection could not describe the service.
    #[error("server reflection: {0}")]
    Reflection(String),
}

/// At most this many files are fetched by reflection for one service.
const MAX_REFLECTED_FILES: usize = 256;

/// Asks `channel`'s server (over gRPC server reflection, v1 and else v1alpha; a svrkit
/// server or any gRPC server) for the descriptors of `service` — its file and every file
/// it imports — so that its methods can be called with no local IDL (`svrkit call
/// --reflect`). Build `channel` with [`crate::grpc::Protocol::Grpc`].
///
/// # Errors
///
/// The server does not answer reflection, does not know `service`, or answers with
/// descriptors that do not make a pool.
pub async fn reflect(channel: &Channel, service: &str) -> Result<DescriptorPool, DynamicError> {
    use crate::grpc::reflection::{Answer, Ask, ReflectionRequest, ReflectionResponse};
    use crate::grpc::reflection::{METHOD, SERVICE_V1, SERVICE_V1ALPHA};
    use std::collections::{BTreeMap, BTreeSet};

    /// One request, answered by one response (a one-message bidi stream).
    async fn ask(channel: &Channel, version: &str, ask: Ask) -> Result<ReflectionResponse, Status> {
        let request = ReflectionRequest {
            host: String::new(),
            ask: Some(ask),
        };
        let reply = channel
            .call(RpcRequest {
                method: Method::Dynamic(Arc::new(DynamicMethod {
                    service: version.to_string(),
                    method: METHOD.to_string(),
                    idempotent: true,
                    timeout: None,
                    priority: 0,
                    stale_read: false,
                })),
                body: Bytes::from(request.encode_to_vec()),
                options: CallOptions::new(),
            })
            .await?;
        ReflectionResponse::decode(reply.body)
            .map_err(|e| Status::internal(format!("undecodable reflection answer: {e}")))
    }

    let mut version = SERVICE_V1;
    let first = match ask(
        channel,
        version,
        Ask::FileContainingSymbol(service.to_string()),
    )
    .await
    {
        Err(status) if status.code() == crate::Code::Unimplemented => {
            version = SERVICE_V1ALPHA;
            ask(
                channel,
                version,
                Ask::FileContainingSymbol(service.to_string()),
            )
            .await?
        }
        other => other?,
    };
    type Files = BTreeMap<String, prost_types::FileDescriptorProto>;
    fn take(files: &mut Files, answer: ReflectionResponse) -> Result<(), DynamicError> {
        match answer.answer {
            Some(Answer::Files(found)) => {
                for bytes in found.file_descriptor_proto {
                    let file = prost_types::FileDescriptorProto::decode(bytes).map_err(|e| {
                        DynamicError::Reflection(format!("undecodable file descriptor: {e}"))
                    })?;
                    files.entry(file.name().to_string()).or_insert(file);
                }
                Ok(())
            }
            Some(Answer::Error(e)) => Err(DynamicError::Reflection(e.error_message)),
            _ => Err(DynamicError::Reflection(
                "the server answered something else than files".to_string(),
            )),
        }
    }
    let mut files = Files::new();
    take(&mut files, first)?;
    // Servers may answer with the file alone: fetch the imports it lacks.
    loop {
        let missing: BTreeSet<String> = files
            .values()
            .flat_map(|f| f.dependency.iter())
            .filter(|d| !files.contains_key(*d))
            .cloned()
            .collect();
        let Some(name) = missing.into_iter().next() else {
            break;
        };
        if files.len() >= MAX_REFLECTED_FILES {
            return Err(DynamicError::Reflection(format!(
                "{service} needs more than {MAX_REFLECTED_FILES} files"
            )));
        }
        take(
            &mut files,
            ask(channel, version, Ask::FileByFilename(name)).await?,
        )?;
    }
    // Each file after the files it imports.
    let mut ordered = Vec::with_capacity(files.len());
    let mut placed = BTreeSet::new();
    while !files.is_empty() {
        let ready: Vec<String> = files
            .iter()
            .filter(|(_, f)| f.dependency.iter().all(|d| placed.contains(d)))
            .map(|(name, _)| name.clone())
            .collect();
        if ready.is_empty() {
            return Err(DynamicError::Reflection(
                "the descriptors import each other in a cycle".to_string(),
            ));
        }
        for name in ready {
            if let Some(file) = files.remove(&name) {
                ordered.push(file);
                placed.insert(name);
            }
        }
    }
    let set = prost_types::FileDescriptorSet { file: ordered };
    DescriptorPool::decode(set.encode_to_vec().as_slice())
        .map_err(|e| DynamicError::Reflection(format!("the descriptors do not make a pool: {e}")))
}

/// A client for any method of the services a descriptor pool describes.
#[derive(Debug, Clone)]
pub struct DynamicClient {
    channel: Channel,
    pool: DescriptorPool,
}

/// The method's svrkit options, read from its descriptor.
pub fn describe(method: &MethodDescriptor) -> DynamicMethod {
    let options = method.options();
    let pool = method.parent_pool();
    let option = |name: &str| {
        pool.get_extension_by_name(name)
            .filter(|ext| options.has_extension(ext))
            .map(|ext| options.get_extension(&ext).into_owned())
    };
    DynamicMethod {
        service: method.parent_service().full_name().to_string(),
        method: method.name().to_string(),
        idempotent: matches!(option("svrkit.idempotent"), Some(Value::Bool(true))),
        timeout: match option("svrkit.timeout_ms") {
            Some(Value::U32(ms)) if ms > 0 => Some(Duration::from_millis(u64::from(ms))),
            _ => None,
        },
        priority: match option("svrkit.priority") {
            Some(Value::U32(priority)) => priority.min(255),
            _ => 0,
        },
        stale_read: matches!(option("svrkit.stale_read"), Some(Value::Bool(true))),
    }
}

/// `SERVICE/Method`, where SERVICE is a full name or a short one that fits one service.
pub fn find_method(pool: &DescriptorPool, name: &str) -> Result<MethodDescriptor, DynamicError> {
    let (service, method) = name
        .split_once('/')
        .ok_or_else(|| DynamicError::BadName(name.to_string()))?;
    let fits: Vec<_> = pool
        .services()
        .filter(|s| s.full_name() == service || s.name() == service)
        .collect();
    let service = match fits.as_slice() {
        [one] => one.clone(),
        [] => return Err(DynamicError::UnknownService(service.to_string())),
        many => {
            return Err(DynamicError::AmbiguousService {
                name: service.to_string(),
                candidates: many
                    .iter()
                    .map(|s| s.full_name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    };
    service
        .methods()
        .find(|m| m.name() == method)
        .ok_or_else(|| DynamicError::UnknownMethod {
            service: service.full_name().to_string(),
            method: method.to_string(),
        })
}

/// A request for `method` from protobuf's JSON mapping (the whole text is one message).
pub fn request_from_json(
    method: &MethodDescriptor,
    json: &str,
) -> Result<DynamicMessage, DynamicError> {
    let mut de = serde_json::Deserializer::from_str(json);
    DynamicMessage::deserialize(method.input(), &mut de)
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| DynamicError::BadJson {
            message: method.input().full_name().to_string(),
            error: e.to_string(),
        })
}

impl DynamicClient {
    /// A client calling through `channel` the methods `pool` describes.
    pub fn new(channel: Channel, pool: DescriptorPool) -> DynamicClient {
        DynamicClient { channel, pool }
    }

    /// The channel it calls through.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// `SERVICE/Method` among the client's descriptors (see [`find_method`]).
    pub fn find_method(&self, name: &str) -> Result<MethodDescriptor, DynamicError> {
        find_method(&self.pool, name)
    }

    /// Calls `method` with `request` (a message of its input type).
    pub async fn call(
        &self,
        method: &MethodDescriptor,
        request: &DynamicMessage,
        options: CallOptions,
    ) -> Result<DynamicMessage, DynamicError> {
        let response = self
            .channel
            .call(RpcRequest {
                method: Method::Dynamic(Arc::new(describe(method))),
                body: Bytes::from(request.encode_to_vec()),
                options,
            })
            .await?;
        DynamicMessage::decode(method.output(), response.body).map_err(|e| {
            DynamicError::BadResponse {
                message: method.output().full_name().to_string(),
                error: e.to_string(),
            }
        })
    }

    /// Calls `name` (`SERVICE/Method`) with a request in protobuf's JSON mapping; the
    /// response serializes to the same mapping with serde (`serde_json::to_string`).
    pub async fn call_json(
        &self,
        name: &str,
        json: &str,
        options: CallOptions,
    ) -> Result<DynamicMessage, DynamicError> {
        let method = self.find_method(name)?;
        let request = request_from_json(&method, json)?;
        self.call(&method, &request, options).await
    }
}
