//! What gRPC reflection serves of each service: an encoded `FileDescriptorSet` holding
//! the service's file and every file it imports (svrkit's options and the well-known
//! types included), without source info.

use std::collections::{BTreeSet, HashMap};

use prost::Message;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

/// Each service's descriptor set, by the service's full name.
pub(crate) fn per_service(fds: &FileDescriptorSet) -> HashMap<String, Vec<u8>> {
    let files: HashMap<&str, &FileDescriptorProto> =
        fds.file.iter().map(|f| (f.name(), f)).collect();
    let mut out = HashMap::new();
    for file in &fds.file {
        if file.service.is_empty() {
            continue;
        }
        let set = FileDescriptorSet {
            file: with_imports(file, &files),
        }
        .encode_to_vec();
        for service in &file.service {
            let full = if file.package().is_empty() {
                service.name().to_string()
            } else {
                format!("{}.{}", file.package(), service.name())
            };
            out.insert(full, set.clone());
        }
    }
    out
}

/// `file` and its imports, transitively, each once and each before the files that import
/// it, without source info.
fn with_imports(
    file: &FileDescriptorProto,
    files: &HashMap<&str, &FileDescriptorProto>,
) -> Vec<FileDescriptorProto> {
    fn visit<'a>(
        file: &'a FileDescriptorProto,
        files: &HashMap<&str, &'a FileDescriptorProto>,
        seen: &mut BTreeSet<&'a str>,
        out: &mut Vec<FileDescriptorProto>,
    ) {
        if !seen.insert(file.name()) {
            return;
        }
        for dependency in &file.dependency {
            if let Some(imported) = files.get(dependency.as_str()) {
                visit(imported, files, seen, out);
            }
        }
        let mut bare = file.clone();
        bare.source_code_info = None;
        out.push(bare);
    }
    let mut out = Vec::new();
    visit(file, files, &mut BTreeSet::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::ServiceDescriptorProto;

    fn file(name: &str, deps: &[&str], service: Option<&str>) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.to_string()),
            package: Some("p".to_string()),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            service: service
                .map(|s| ServiceDescriptorProto {
                    name: Some(s.to_string()),
                    ..ServiceDescriptorProto::default()
                })
                .into_iter()
                .collect(),
            ..FileDescriptorProto::default()
        }
    }

    #[test]
    fn a_service_carries_its_file_and_every_import_once() {
        let fds = FileDescriptorSet {
            file: vec![
                file("base.proto", &[], None),
                file("mid.proto", &["base.proto"], None),
                file("api.proto", &["mid.proto", "base.proto"], Some("Api")),
                file("other.proto", &[], Some("Other")),
            ],
        };
        let sets = per_service(&fds);
        let names = |svc: &str| -> Vec<String> {
            FileDescriptorSet::decode(&sets[svc][..])
                .expect("decodes")
                .file
                .iter()
                .map(|f| f.name().to_string())
                .collect()
        };
        assert_eq!(names("p.Api"), ["base.proto", "mid.proto", "api.proto"]);
        assert_eq!(names("p.Other"), ["other.proto"]);
    }
}
