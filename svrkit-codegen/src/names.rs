//! The names generated code uses, exposed so that scaffolding tools agree with it.

/// `FooBar` -> `foo_bar`, `HTTPServer` -> `http_server`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = match prev {
                None => false,
                Some('_') => false,
                Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                Some(_) => next.is_some_and(|n| n.is_lowercase()),
            };
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

/// The Rust name prost-build gives a service, message or trait: `HTTPGateway` ->
/// `HttpGateway`, and `Self` (a keyword) -> `Self_`.
pub fn type_name(proto_name: &str) -> String {
    let name = heck::ToUpperCamelCase::to_upper_camel_case(proto_name);
    if name == "Self" {
        "Self_".to_string()
    } else {
        name
    }
}

/// Whether `word` is a Rust keyword (strict or reserved, in any edition).
pub(crate) fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

/// The snake case of an RPC's IDL name: `SayHello` -> `say_hello` (before the rules of
/// [`method_idents`], which make it a usable, unique identifier).
pub fn method_name(proto_name: &str) -> String {
    heck::ToSnakeCase::to_snake_case(proto_name)
}

/// Names generated code defines itself: on a client (`new`, `with_service`) and beside
/// the method constants (`SERVICE`, `SERVICE_NAME`); and the methods a trait of the
/// prelude gives every type *by value* (`Into::into`, `TryInto::try_into`), which
/// method-call syntax finds before a client's own `&self` method of that name, so that
/// `client.into(request)` would not call the RPC.
const RESERVED: &[&str] = &[
    "new",
    "with_service",
    "service",
    "service_name",
    "into",
    "try_into",
];

/// The name of an RPC's variant that takes `CallOptions`: `<name>_with` (`type_` ->
/// `type__with`). A shorter form for names ending in `_` (`type_with`) would make `x`
/// and `x_` (an RPC renamed by rule 3) share a variant.
pub fn with_variant(ident: &str) -> String {
    format!("{ident}_with")
}

/// Rust's keywords, strict and reserved, of every edition up to 2024 (and `_`).
const KEYWORDS: &[&str] = &[
    "as", "async", "await", "become", "box", "break", "const", "continue", "crate", "do", "dyn",
    "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let",
    "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return",
    "self", "Self", "static", "struct", "super", "trait", "true", "try", "type", "typeof",
    "unsafe", "unsized", "use", "virtual", "where", "while", "yield", "_",
];

/// The Rust names of a service's RPCs, in IDL order: the one rule the generated client,
/// server trait and method constants, `svrkit new` and the docs share.
///
/// 1. Start from the snake case of the IDL name (`GetUser` -> `get_user`).
/// 2. If that is a Rust keyword, a name generated code defines itself (`new`,
///    `with_service`, `service`, `service_name`) or a method the prelude gives every type
///    by value (`into`, `try_into`), append `_` (`Type` -> `type_`, `New` -> `new_`,
///    `Into` -> `into_`).
/// 3. While the name, or its variant that takes `CallOptions` ([`with_variant`]:
///    `get_user_with`, `type__with`), is already taken by an earlier RPC of the service
///    (its name or its variant), append another `_` (`GetUser` then `get_user` ->
///    `get_user`, `get_user_`; `Foo` then `FooWith` -> `foo`, `foo_with_`).
///
/// Each RPC's constant in `<service>_methods` is its name in upper case (`GET_USER_`).
pub fn method_idents<S: AsRef<str>>(proto_names: &[S]) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    let mut idents = Vec::with_capacity(proto_names.len());
    for proto in proto_names {
        let mut ident = method_name(proto.as_ref());
        if ident.is_empty() || is_keyword(&ident) || RESERVED.contains(&ident.as_str()) {
            ident.push('_');
        }
        while taken.contains(&ident) || taken.contains(&with_variant(&ident)) {
            ident.push('_');
        }
        taken.insert(with_variant(&ident));
        taken.insert(ident.clone());
        idents.push(ident);
    }
    idents
}

/// The Rust module prost-build gives a package segment or a message's nested items:
/// `Match` -> `r#match`, `self` -> `self_`.
pub fn module_ident(name: &str) -> String {
    let snake = heck::ToSnakeCase::to_snake_case(name);
    match snake.as_str() {
        "self" | "super" | "crate" | "extern" | "_" => format!("{snake}_"),
        _ if is_keyword(&snake) => format!("r#{snake}"),
        _ => snake,
    }
}

/// The Rust type of message `full_name` (`pkg.Outer.Inner`) of package `package`, as a
/// path below the module that mirrors the package tree: `pkg::outer::Inner`. Well-known
/// types map as generated code maps them: `Empty` -> `()`, the scalar wrappers to
/// primitives, the rest to `svrkit::codegen::prost_types`.
pub fn message_path(package: &str, full_name: &str) -> String {
    if package == "google.protobuf" {
        let name = full_name.trim_start_matches("google.protobuf.");
        return match name {
            "Empty" => "()".to_string(),
            "BoolValue" => "bool".to_string(),
            "BytesValue" => "Vec<u8>".to_string(),
            "DoubleValue" => "f64".to_string(),
            "FloatValue" => "f32".to_string(),
            "Int32Value" => "i32".to_string(),
            "Int64Value" => "i64".to_string(),
            "StringValue" => "String".to_string(),
            "UInt32Value" => "u32".to_string(),
            "UInt64Value" => "u64".to_string(),
            other => format!("svrkit::codegen::prost_types::{other}"),
        };
    }
    let local = full_name
        .strip_prefix(package)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(full_name);
    let mut parts: Vec<String> = package
        .split('.')
        .filter(|p| !p.is_empty())
        .map(module_ident)
        .collect();
    let names: Vec<&str> = local.split('.').collect();
    if let Some((last, parents)) = names.split_last() {
        parts.extend(parents.iter().map(|p| module_ident(p)));
        parts.push(type_name(last));
    }
    parts.join("::")
}

/// A service's Rust name without the `_` that keeps a keyword (`Self_`) from being one:
/// `Self_` -> `Self`, so its client is `SelfClient` in `self_client`.
fn stem(service: &str) -> &str {
    match service.trim_end_matches('_') {
        "" => service,
        stem => stem,
    }
}

/// The module of a service's method descriptors: `Echo` -> `echo_methods`.
pub fn methods_module(service: &str) -> String {
    format!("{}_methods", snake_case(stem(service)))
}

/// The client module: `Echo` -> `echo_client`.
pub fn client_module(service: &str) -> String {
    format!("{}_client", snake_case(stem(service)))
}

/// The client type: `Echo` -> `EchoClient`.
pub fn client_type(service: &str) -> String {
    format!("{}Client", stem(service))
}

/// The server module: `Echo` -> `echo_server`.
pub fn server_module(service: &str) -> String {
    format!("{}_server", snake_case(stem(service)))
}

/// The trait an author implements: `Echo` -> `Echo`.
pub fn trait_name(service: &str) -> String {
    service.to_string()
}

/// The server adapter type: `Echo` -> `EchoServer`.
pub fn server_type(service: &str) -> String {
    format!("{}Server", stem(service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_names_match_prost_build() {
        assert_eq!(type_name("HTTPGateway"), "HttpGateway");
        assert_eq!(type_name("Greeter"), "Greeter");
        assert_eq!(method_name("SayHello"), "say_hello");
    }

    #[test]
    fn method_idents_avoid_keywords_helpers_and_each_other() {
        assert_eq!(
            method_idents(&[
                "Type",
                "New",
                "WithService",
                "Self",
                "Service",
                "ServiceName"
            ]),
            [
                "type_",
                "new_",
                "with_service_",
                "self_",
                "service_",
                "service_name_"
            ]
        );
        assert_eq!(
            method_idents(&["GetUser", "get_user"]),
            ["get_user", "get_user_"]
        );
        assert_eq!(method_idents(&["Foo", "FooWith"]), ["foo", "foo_with_"]);
        assert_eq!(method_idents(&["FooWith", "Foo"]), ["foo_with", "foo_"]);
        assert_eq!(
            method_idents(&["Ping", "ping", "PING"]),
            ["ping", "ping_", "ping__"]
        );
        // The prelude's by-value methods.
        assert_eq!(
            method_idents(&["Into", "TryInto", "IntoIter"]),
            ["into_", "try_into_", "into_iter"]
        );
        assert_eq!(with_variant("type_"), "type__with");
        assert_eq!(method_idents(&["Type", "TypeWith"]), ["type_", "type_with"]);
        // Every name and every variant is distinct.
        let idents = method_idents(&[
            "A",
            "AWith",
            "a_with",
            "a",
            "AWithWith",
            "Type",
            "TypeWith",
            "type_with",
            "Into",
        ]);
        let mut all: Vec<String> = idents
            .iter()
            .flat_map(|i| [i.clone(), with_variant(i)])
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), idents.len() * 2, "{idents:?}");
    }

    #[test]
    fn message_paths_mirror_packages_and_nesting() {
        assert_eq!(
            message_path("a.match", "a.match.Outer.Inner"),
            "a::r#match::outer::Inner"
        );
        assert_eq!(message_path("p", "p.Self"), "p::Self_");
        assert_eq!(
            message_path("google.protobuf", "google.protobuf.Empty"),
            "()"
        );
        assert_eq!(
            message_path("google.protobuf", "google.protobuf.Timestamp"),
            "svrkit::codegen::prost_types::Timestamp"
        );
        assert_eq!(module_ident("self"), "self_");
    }

    #[test]
    fn keyword_services_get_plain_helper_names() {
        assert_eq!(type_name("Self"), "Self_");
        assert_eq!(client_type("Self_"), "SelfClient");
        assert_eq!(server_type("Self_"), "SelfServer");
        assert_eq!(client_module("Self_"), "self_client");
        assert_eq!(trait_name("Self_"), "Self_");
    }

    #[test]
    fn snake_case_handles_acronyms_and_digits() {
        assert_eq!(snake_case("Echo"), "echo");
        assert_eq!(snake_case("AccountStore"), "account_store");
        assert_eq!(snake_case("HTTPGateway"), "http_gateway");
        assert_eq!(snake_case("Seq2Svr"), "seq2_svr");
        assert_eq!(snake_case("already_snake"), "already_snake");
    }
}
