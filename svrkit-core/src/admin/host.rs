//! Which `Host` a page answers to: a defence against DNS rebinding.
//!
//! A web page on an attacker's domain can point that domain at 127.0.0.1 (or any
//! address inside a network) after the browser loaded it, and then read whatever answers
//! there as if it were its own origin: an admin page, the console, a gateway. What gives
//! it away is the `Host` header, which still names the attacker's domain. So every svrkit
//! page answers only to hosts it is meant for:
//!
//! - an IP address (`127.0.0.1:9100`, `[::1]`): someone typed or was given the address,
//!   which rebinding cannot produce;
//! - `localhost` and its subdomains (which resolve to loopback by themselves);
//! - the names configured for it ([`AllowedHosts::new`], or from an environment
//!   variable with [`AllowedHosts::from_env`]: `SVRKIT_ALLOWED_HOSTS` for admin pages,
//!   comma-separated, a leading `*.` allowing subdomains).
//!
//! Anything else is refused `403` before any handler runs. A request without a `Host`
//! (HTTP/1.0, a plain TCP probe) is not a browser's and is let through.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The environment variable naming the hosts admin pages also answer to.
pub const ALLOWED_HOSTS_VAR: &str = "SVRKIT_ALLOWED_HOSTS";

/// The most names a list holds (each at most 253 bytes, as DNS allows).
const MAX_NAMES: usize = 64;

/// The host names a page answers to besides IP addresses and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    names: Arc<[String]>,
}

impl AllowedHosts {
    /// `names` (lowercase, without ports; `*.example.com` allows every subdomain of
    /// `example.com`). Empty names and more than 64 are ignored.
    pub fn new(names: impl IntoIterator<Item = impl AsRef<str>>) -> AllowedHosts {
        let names: Vec<String> = names
            .into_iter()
            .map(|n| {
                host_name(n.as_ref())
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
            })
            .filter(|n| !n.is_empty() && n.len() <= 253)
            .take(MAX_NAMES)
            .collect();
        AllowedHosts {
            names: names.into(),
        }
    }

    /// The comma-separated names in the environment variable `var` (none when unset).
    pub fn from_env(var: &str) -> AllowedHosts {
        AllowedHosts::new(
            std::env::var(var)
                .unwrap_or_default()
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>(),
        )
    }

    /// Whether a request whose `Host` header is `host` is answered.
    pub fn allows(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        self.names
            .iter()
            .any(|allowed| match allowed.strip_prefix("*.") {
                Some(parent) => {
                    name.len() > parent.len() + 1 && name.ends_with(&format!(".{parent}"))
                }
                None => *allowed == name,
            })
    }
}

/// The name part of a `Host` header: without its port, an IPv6 address without brackets.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(address, _)| address);
    }
    match host.rsplit_once(':') {
        // One colon: a port. More than one: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// Middleware (`axum::middleware::from_fn_with_state`) refusing requests for hosts that
/// `allowed` does not allow.
pub async fn check_host(
    State(allowed): State<AllowedHosts>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}"));
    match host {
        Some(host) if !allowed.allows(host) => {
            tracing::debug!(host, "request for a host this page does not answer to");
            (
                StatusCode::FORBIDDEN,
                format!(
                    "this server does not answer to the host {:?}; add it to {ALLOWED_HOSTS_VAR} (or the gateway's allowed hosts) if it is yours\n",
                    host.chars().take(80).collect::<String>()
                ),
            )
                .into_response()
        }
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_localhost_are_answered_and_other_names_only_when_configured() {
        let none = AllowedHosts::default();
        for ok in [
            "127.0.0.1",
            "127.0.0.1:9100",
            "10.1.2.3:80",
            "[::1]:8420",
            "[::1]",
            "::1",
            "localhost",
            "LOCALHOST:8420",
            "app.localhost",
            "localhost.",
        ] {
            assert!(none.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8420",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "",
            "\u{fffd}",
        ] {
            assert!(!none.allows(refused), "{refused:?}");
        }
        let some =
            AllowedHosts::new(["Console.Example.com", "*.wx.example", " ", "ws.example:443"]);
        assert!(
            some.allows("ws.example"),
            "a configured port is not part of the name"
        );
        assert!(some.allows("console.example.com:443"));
        assert!(some.allows("console.example.com."));
        assert!(some.allows("a.wx.example"));
        assert!(!some.allows("wx.example"), "a wildcard is for subdomains");
        assert!(!some.allows("evilwx.example"));
        assert!(!some.allows("other.example.com"));
    }
}
