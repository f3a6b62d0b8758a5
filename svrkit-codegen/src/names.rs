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

/// The Rust name prost-build gives a service, message or trait: `HTTPGateway` -> `HttpGateway`.
pub fn type_name(proto_name: &str) -> String {
    heck::ToUpperCamelCase::to_upper_camel_case(proto_name)
}

/// The Rust name prost-build gives a method: `SayHello` -> `say_hello`.
pub fn method_name(proto_name: &str) -> String {
    heck::ToSnakeCase::to_snake_case(proto_name)
}

/// The module of a service's method descriptors: `Echo` -> `echo_methods`.
pub fn methods_module(service: &str) -> String {
    format!("{}_methods", snake_case(service))
}

/// The client module: `Echo` -> `echo_client`.
pub fn client_module(service: &str) -> String {
    format!("{}_client", snake_case(service))
}

/// The client type: `Echo` -> `EchoClient`.
pub fn client_type(service: &str) -> String {
    format!("{service}Client")
}

/// The server module: `Echo` -> `echo_server`.
pub fn server_module(service: &str) -> String {
    format!("{}_server", snake_case(service))
}

/// The trait an author implements: `Echo` -> `Echo`.
pub fn trait_name(service: &str) -> String {
    service.to_string()
}

/// The server adapter type: `Echo` -> `EchoServer`.
pub fn server_type(service: &str) -> String {
    format!("{service}Server")
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
    fn snake_case_handles_acronyms_and_digits() {
        assert_eq!(snake_case("Echo"), "echo");
        assert_eq!(snake_case("AccountStore"), "account_store");
        assert_eq!(snake_case("HTTPGateway"), "http_gateway");
        assert_eq!(snake_case("Seq2Svr"), "seq2_svr");
        assert_eq!(snake_case("already_snake"), "already_snake");
    }
}
