//! The admin endpoint's page for people: `/` shows what `/status` says, refreshed every
//! second — per method requests/s, errors/s, p50 and p99, in-flight; DAGOR's admission
//! level and sheds by business priority; connections; gray label and config version.
//!
//! The page, its script and the style sheet are embedded in the binary and served with
//! a Content-Security-Policy that allows nothing but this origin (no inline script). The
//! style sheet is shared with `svrkit console`'s cluster view ([`STYLE`]).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The policy the admin pages are served with.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The style sheet of svrkit's pages (the admin page and the cluster console).
pub const STYLE: &str = include_str!("../../assets/svrkit.css");
/// Table-cell and headline builders shared by svrkit's pages (served as `/widgets.js`).
pub const WIDGETS: &str = include_str!("../../assets/widgets.js");
const PAGE: &str = include_str!("../../assets/admin.html");
const SCRIPT: &str = include_str!("../../assets/admin.js");

/// An embedded page asset as an HTTP response, with the pages' security headers.
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    asset_with_policy(content_type, body, CONTENT_SECURITY_POLICY)
}

/// [`asset`] under another Content-Security-Policy (a page that needs more, such as
/// WebSocket connections).
pub fn asset_with_policy(
    content_type: &'static str,
    body: &'static str,
    policy: &'static str,
) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The routes of the page: `/`, `/admin.js`, and [`shared`].
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    shared()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/admin.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
}

/// What every svrkit page loads: `/svrkit.css` and `/widgets.js`.
pub fn shared<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/svrkit.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/widgets.js",
            get(|| async { asset("text/javascript; charset=utf-8", WIDGETS) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_what_it_serves_and_has_no_inline_script() {
        assert!(PAGE.contains("src=\"/admin.js\""));
        assert!(PAGE.contains("href=\"/svrkit.css\""));
        assert!(!PAGE.contains("<script>"));
        assert!(!PAGE.contains("style=\""));
        // The script reads the fields `/status` has.
        for field in [
            "p50_latency_ms",
            "p99_latency_ms",
            "shed_by_business_priority",
            "config_version",
            "version_label",
        ] {
            assert!(SCRIPT.contains(field), "admin.js does not show {field}");
        }
    }
}
