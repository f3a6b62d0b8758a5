//! The prost-build `ServiceGenerator` that writes svrkit's client, server and method code.

use std::collections::HashMap;
use std::fmt::Write;

use prost_build::{Comments, Method, Service, ServiceGenerator};

use crate::names;
use crate::options::MethodOptions;

/// Generates svrkit code for each service prost-build meets.
#[derive(Debug)]
pub(crate) struct SvrkitGenerator {
    options: HashMap<String, MethodOptions>,
    /// Each service's encoded descriptor set, by full name (for gRPC reflection).
    descriptors: HashMap<String, Vec<u8>>,
}

impl SvrkitGenerator {
    pub(crate) fn new(
        options: HashMap<String, MethodOptions>,
        descriptors: HashMap<String, Vec<u8>>,
    ) -> SvrkitGenerator {
        SvrkitGenerator {
            options,
            descriptors,
        }
    }
}

impl ServiceGenerator for SvrkitGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let idents = names::method_idents(
            &service
                .methods
                .iter()
                .map(|m| m.proto_name.as_str())
                .collect::<Vec<_>>(),
        );
        let methods: Vec<(Method, MethodOptions)> = service
            .methods
            .iter()
            .zip(idents)
            .map(|(m, ident)| {
                let key = format!("{full_name}.{}", m.proto_name);
                let mut method = m.clone();
                // prost-build's own name may be a raw identifier or clash with a helper;
                // svrkit's rule (see `names::method_idents`) never does.
                method.name = ident;
                (method, self.options.get(&key).copied().unwrap_or_default())
            })
            .collect();
        let service_docs = docs(&service.comments);
        let descriptor = self
            .descriptors
            .get(&full_name)
            .map_or(&[][..], Vec::as_slice);
        write_methods(buf, &service, &full_name, &methods, descriptor);
        write_client(buf, &service, &full_name, &service_docs, &methods);
        write_server(buf, &service, &full_name, &service_docs, &methods);
    }
}

/// The IDL comment as doc lines (empty when there is none), rendered as prost-build
/// renders message comments (already made safe for rustdoc by `comments::sanitize`).
fn docs(comments: &Comments) -> String {
    let leading_only = Comments {
        leading_detached: Vec::new(),
        leading: comments.leading.clone(),
        trailing: comments.trailing.clone(),
    };
    let mut out = String::new();
    leading_only.append_with_indent(0, &mut out);
    out
}

/// A message type as seen from inside the generated modules.
fn rust_type(path: &str) -> String {
    // Extern paths are absolute; prost-build maps google.protobuf.Empty to `()` and the
    // scalar wrappers (`Int64Value`, ...) to primitives.
    const PRIMITIVES: &[&str] = &["()", "bool", "f32", "f64", "i32", "i64", "u32", "u64"];
    if path.starts_with("::") || PRIMITIVES.contains(&path) {
        path.to_string()
    } else {
        format!("super::{path}")
    }
}

/// Names the IDL chose may break Rust's naming style (`type_` gives `type__with`, an RPC
/// `GETUser` a constant `GET_USER`); the generated modules accept them.
const ALLOW: &str = "#[allow(non_snake_case, non_camel_case_types, non_upper_case_globals)]";

fn const_name(method: &Method) -> String {
    method.name.to_uppercase()
}

fn write_methods(
    buf: &mut String,
    service: &Service,
    full_name: &str,
    methods: &[(Method, MethodOptions)],
    descriptor: &[u8],
) {
    let module = names::methods_module(&service.name);
    let _ = writeln!(buf, "/// Names and IDL options of `{full_name}`.");
    let _ = writeln!(buf, "{ALLOW}");
    let _ = writeln!(buf, "pub mod {module} {{");
    let _ = writeln!(buf, "use svrkit::codegen::{{MethodDesc, ServiceDesc}};");
    let _ = writeln!(buf, "/// The fully qualified service name.");
    let _ = writeln!(buf, "pub const SERVICE_NAME: &str = \"{full_name}\";");
    for (method, opts) in methods {
        let timeout = if opts.timeout_ms == 0 {
            "None".to_string()
        } else {
            format!(
                "Some(svrkit::codegen::Duration::from_millis({}))",
                opts.timeout_ms
            )
        };
        let _ = writeln!(buf, "/// `{full_name}/{}`.", method.proto_name);
        let _ = writeln!(
            buf,
            "pub const {}: MethodDesc = MethodDesc {{ service: SERVICE_NAME, method: \"{}\", idempotent: {}, timeout: {timeout}, priority: {}, stale_read: {} }};",
            const_name(method),
            method.proto_name,
            opts.idempotent,
            opts.priority,
            opts.stale_read
        );
    }
    let list: Vec<String> = methods.iter().map(|(m, _)| const_name(m)).collect();
    let _ = writeln!(buf, "/// The service and its methods, in IDL order.");
    let _ = writeln!(
        buf,
        "pub static SERVICE: ServiceDesc = ServiceDesc {{ name: SERVICE_NAME, methods: &[{}] }};",
        list.join(", ")
    );
    // Lower case: it cannot meet a method's constant, which is upper case.
    let _ = writeln!(
        buf,
        "/// The IDL as an encoded `FileDescriptorSet` (the service's file and its imports), served by gRPC reflection."
    );
    let mut literal = String::with_capacity(descriptor.len() * 4 + 3);
    literal.push_str("b\"");
    for b in descriptor {
        let _ = write!(literal, "\\x{b:02x}");
    }
    literal.push('"');
    let _ = writeln!(buf, "pub static file_descriptor_set: &[u8] = {literal};");
    let _ = writeln!(buf, "}}");
}

fn write_client(
    buf: &mut String,
    service: &Service,
    full_name: &str,
    service_docs: &str,
    methods: &[(Method, MethodOptions)],
) {
    let module = names::client_module(&service.name);
    let client = names::client_type(&service.name);
    let methods_mod = names::methods_module(&service.name);
    let _ = writeln!(buf, "/// Client for `{full_name}`.");
    let _ = writeln!(buf, "{ALLOW}");
    let _ = writeln!(buf, "pub mod {module} {{");
    let _ = writeln!(
        buf,
        "use svrkit::codegen::{{BoxError, CallOptions, Channel, Client, RpcRequest, RpcResponse, Service, Status}};"
    );
    let _ = write!(buf, "{service_docs}");
    if !service_docs.is_empty() {
        let _ = writeln!(buf, "///");
    }
    let _ = writeln!(
        buf,
        "/// A typed client of `{full_name}` over a [`Channel`] or any tower stack over one."
    );
    let _ = writeln!(buf, "#[derive(Debug, Clone)]");
    let _ = writeln!(
        buf,
        "pub struct {client}<S = Channel> {{ inner: Client<S> }}"
    );
    let _ = writeln!(buf, "impl {client}<Channel> {{");
    let _ = writeln!(buf, "/// A client over `channel`.");
    let _ = writeln!(
        buf,
        "pub fn new(channel: Channel) -> Self {{ Self::with_service(channel) }}"
    );
    let _ = writeln!(buf, "}}");
    let _ = writeln!(
        buf,
        "impl<S> {client}<S> where S: Service<RpcRequest, Response = RpcResponse> + Clone + Send + 'static, S::Error: Into<BoxError>, S::Future: Send {{"
    );
    let _ = writeln!(
        buf,
        "/// A client over any tower service that speaks svrkit requests."
    );
    let _ = writeln!(
        buf,
        "pub fn with_service(inner: S) -> Self {{ {client} {{ inner: Client::new(inner) }} }}"
    );
    for (method, _) in methods {
        let input = rust_type(&method.input_type);
        let output = rust_type(&method.output_type);
        let docs = docs(&method.comments);
        let _ = write!(buf, "{docs}");
        let _ = writeln!(
            buf,
            "pub async fn {name}(&self, request: {input}) -> Result<{output}, Status> {{ self.{with}(request, CallOptions::default()).await }}",
            name = method.name,
            with = names::with_variant(&method.name)
        );
        let _ = writeln!(buf, "/// [`Self::{}`] with per-call options.", method.name);
        let _ = writeln!(
            buf,
            "pub async fn {with}(&self, request: {input}, options: CallOptions) -> Result<{output}, Status> {{ self.inner.unary(&super::{methods_mod}::{konst}, &request, options).await }}",
            with = names::with_variant(&method.name),
            konst = const_name(method)
        );
    }
    let _ = writeln!(buf, "}}");
    let _ = writeln!(buf, "}}");
}

fn write_server(
    buf: &mut String,
    service: &Service,
    full_name: &str,
    service_docs: &str,
    methods: &[(Method, MethodOptions)],
) {
    let module = names::server_module(&service.name);
    let trait_name = names::trait_name(&service.name);
    let server = names::server_type(&service.name);
    let methods_mod = names::methods_module(&service.name);
    let _ = writeln!(buf, "/// Server side of `{full_name}`.");
    let _ = writeln!(buf, "{ALLOW}");
    let _ = writeln!(buf, "pub mod {module} {{");
    let _ = writeln!(
        buf,
        "use svrkit::codegen::{{Arc, BoxFuture, Bytes, MethodDesc, ServiceDesc, ServiceHandler, Status}};"
    );
    let _ = write!(buf, "{service_docs}");
    if !service_docs.is_empty() {
        let _ = writeln!(buf, "///");
    }
    let _ = writeln!(
        buf,
        "/// Implement this trait and serve it with [`{server}`]. The request context (deadline, trace, priorities, uid) is `svrkit::Context::current()`."
    );
    let _ = writeln!(buf, "pub trait {trait_name}: Send + Sync + 'static {{");
    for (method, _) in methods {
        let _ = write!(buf, "{}", docs(&method.comments));
        let _ = writeln!(
            buf,
            "fn {}(&self, request: {}) -> impl std::future::Future<Output = Result<{}, Status>> + Send;",
            method.name,
            rust_type(&method.input_type),
            rust_type(&method.output_type)
        );
    }
    let _ = writeln!(buf, "}}");
    let _ = writeln!(
        buf,
        "/// Routes `{full_name}` requests to a [`{trait_name}`] implementation."
    );
    let _ = writeln!(buf, "pub struct {server}<T> {{ inner: Arc<T> }}");
    let _ = writeln!(buf, "impl<T: {trait_name}> {server}<T> {{");
    let _ = writeln!(buf, "/// Serves `inner`.");
    let _ = writeln!(
        buf,
        "pub fn new(inner: T) -> Self {{ Self::from_arc(Arc::new(inner)) }}"
    );
    let _ = writeln!(buf, "/// Serves an implementation shared with other code.");
    let _ = writeln!(
        buf,
        "pub fn from_arc(inner: Arc<T>) -> Self {{ {server} {{ inner }} }}"
    );
    let _ = writeln!(buf, "}}");
    let _ = writeln!(
        buf,
        "impl<T> Clone for {server}<T> {{ fn clone(&self) -> Self {{ {server} {{ inner: Arc::clone(&self.inner) }} }} }}"
    );
    let _ = writeln!(
        buf,
        "impl<T> std::fmt::Debug for {server}<T> {{ fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {{ f.write_str(\"{server}\") }} }}"
    );
    let _ = writeln!(
        buf,
        "impl<T: {trait_name}> ServiceHandler for {server}<T> {{"
    );
    let _ = writeln!(
        buf,
        "fn descriptor(&self) -> &'static ServiceDesc {{ &super::{methods_mod}::SERVICE }}"
    );
    let _ = writeln!(
        buf,
        "fn file_descriptor_set(&self) -> &'static [u8] {{ super::{methods_mod}::file_descriptor_set }}"
    );
    let _ = writeln!(
        buf,
        "fn call(&self, method: &'static MethodDesc, body: Bytes) -> BoxFuture<'static, Result<Bytes, Status>> {{"
    );
    let _ = writeln!(buf, "match method.method {{");
    for (method, _) in methods {
        let _ = writeln!(
            buf,
            "\"{proto}\" => {{ let inner = Arc::clone(&self.inner); Box::pin(async move {{ let request = svrkit::codegen::decode_request::<{input}>(method, body)?; let reply = <T as {trait_name}>::{name}(&inner, request).await?; Ok(svrkit::codegen::encode(&reply)) }}) }}",
            proto = method.proto_name,
            input = rust_type(&method.input_type),
            name = method.name
        );
    }
    let _ = writeln!(buf, "_ => svrkit::codegen::unimplemented(method),");
    let _ = writeln!(buf, "}}");
    let _ = writeln!(buf, "}}");
    let _ = writeln!(buf, "}}");
    let _ = writeln!(buf, "}}");
}
