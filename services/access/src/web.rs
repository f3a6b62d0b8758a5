//! The web client: a page, a style sheet and JavaScript modules, embedded in the binary
//! and served by access-short at `/`. It speaks the public API only — `POST /v1/ACTION`
//! here and the WebSocket of the access-long instance the `endpoint` action names — so
//! it is a client like any other.
//!
//! Every file is served with a Content-Security-Policy that allows scripts and styles
//! from this origin only (no inline script, no `eval`), connections to this origin and
//! to WebSockets, and no framing. The API sends no CORS headers, so other origins cannot
//! read its answers; the page keeps the session token in `sessionStorage`, which only
//! this origin can read.

use axum::Router;
use axum::response::Response;
use axum::routing::get;

/// The policy every file of the web client is served with.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of the web client.
const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../web/index.html"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../web/app.css"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/app.js"),
    },
    Asset {
        path: "/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/api.js"),
    },
    Asset {
        path: "/view.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/view.js"),
    },
    Asset {
        path: "/state.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/state.js"),
    },
    Asset {
        path: "/session.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/session.js"),
    },
    Asset {
        path: "/proof.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/proof.js"),
    },
    Asset {
        path: "/tabs.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/tabs.js"),
    },
    Asset {
        path: "/profile.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/profile.js"),
    },
    Asset {
        path: "/contacts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/contacts.js"),
    },
    Asset {
        path: "/chats.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/chats.js"),
    },
    Asset {
        path: "/moments.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/moments.js"),
    },
    Asset {
        path: "/wallet.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/wallet.js"),
    },
];

fn serve(asset: &'static Asset) -> Response {
    svrkit::admin::page::asset_with_policy(asset.content_type, asset.body, CONTENT_SECURITY_POLICY)
}

/// The routes serving the web client (merged into access-short's router).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { serve(asset) }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        let served: Vec<&str> = ASSETS.iter().map(|a| a.path).collect();
        for asset in ASSETS
            .iter()
            .filter(|a| a.path.ends_with(".js") || a.path == "/")
        {
            for line in asset.body.lines() {
                let Some(rest) = line
                    .split_once(" from \"./")
                    .map(|(_, r)| r)
                    .or_else(|| line.split_once("src=\"/").map(|(_, r)| r))
                    .or_else(|| line.split_once("href=\"/").map(|(_, r)| r))
                else {
                    continue;
                };
                let name = rest.split('"').next().unwrap_or_default();
                let path = format!("/{name}");
                assert!(
                    served.contains(&path.as_str()),
                    "{} refers to {path}, which is not served",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn no_inline_script_or_handler_in_the_page() {
        let page = ASSETS[0].body;
        assert!(
            !page.contains("<script>"),
            "inline scripts are refused by the policy"
        );
        assert!(
            !page.contains(" onclick="),
            "inline handlers are refused by the policy"
        );
        assert!(
            !page.contains("style=\""),
            "inline styles are refused by the policy"
        );
    }
}
