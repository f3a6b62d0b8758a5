//! A small W3C WebDriver client: the dozen commands the page tests use (open a page,
//! find an element by CSS, read its text or an attribute, click, type, run a script, take
//! a screenshot), sent as JSON over HTTP/1.1 to a chromedriver on loopback.
//!
//! Every command is bounded in time, and an error the driver reports (`no such element`,
//! `stale element reference` …) comes back as [`WebDriverError::Command`] with the
//! driver's own words.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// The key under which W3C WebDriver names an element in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one command may take (starting a browser is the slowest).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong with a WebDriver command.
#[derive(Debug, thiserror::Error)]
pub enum WebDriverError {
    /// The driver could not be reached or its answer could not be read.
    #[error("talking to the WebDriver: {0}")]
    Transport(String),
    /// The driver did not answer within the command timeout.
    #[error("the WebDriver did not answer {0} within {COMMAND_TIMEOUT:?}")]
    Timeout(String),
    /// The driver refused the command (its error code and message).
    #[error("{error}: {message}")]
    Command {
        /// The W3C error code, e.g. `no such element`.
        error: String,
        /// The driver's explanation.
        message: String,
    },
    /// The driver answered something that is not what the protocol says.
    #[error("an unexpected WebDriver answer: {0}")]
    Protocol(String),
}

/// How to find an element.
#[derive(Debug, Clone, Copy)]
pub enum Locator<'a> {
    /// A CSS selector.
    Css(&'a str),
}

/// The HTTP/1.1 client commands go through.
type Http = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

/// A fresh [`Http`] client.
fn http_client() -> Http {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// One WebDriver session: one browser window with its own profile.
#[derive(Debug, Clone)]
pub struct Client {
    http: Http,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
}

/// An element on a session's page.
#[derive(Debug, Clone)]
pub struct Element {
    client: Client,
    id: String,
}

impl Client {
    /// Opens a new session on the driver at `driver` (`http://127.0.0.1:PORT`) with the
    /// given W3C capabilities (`alwaysMatch`).
    pub async fn connect(driver: &str, capabilities: Value) -> Result<Client, WebDriverError> {
        let http = http_client();
        let body = json!({ "capabilities": { "alwaysMatch": capabilities } });
        let value = send(
            &http,
            Method::POST,
            &format!("{driver}/session"),
            Some(body),
        )
        .await?;
        let id = value
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                WebDriverError::Protocol(format!("a new session without an id: {value}"))
            })?;
        Ok(Client {
            http,
            session: format!("{driver}/session/{id}"),
        })
    }

    /// Opens `url` and waits until the page has loaded.
    pub async fn goto(&self, url: &str) -> Result<(), WebDriverError> {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .map(drop)
    }

    /// Reloads the page.
    pub async fn refresh(&self) -> Result<(), WebDriverError> {
        self.command(Method::POST, "/refresh", Some(json!({})))
            .await
            .map(drop)
    }

    /// The first element that `locator` matches (`no such element` when none does).
    pub async fn find(&self, locator: Locator<'_>) -> Result<Element, WebDriverError> {
        let Locator::Css(css) = locator;
        let value = self
            .command(
                Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await?;
        let id = value
            .get(ELEMENT_KEY)
            .and_then(Value::as_str)
            .ok_or_else(|| WebDriverError::Protocol(format!("not an element: {value}")))?;
        Ok(Element {
            client: self.clone(),
            id: id.to_owned(),
        })
    }

    /// Runs `script` (a function body) in the page with `args`, and returns what it
    /// returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, WebDriverError> {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// A PNG of the visible page.
    pub async fn screenshot(&self) -> Result<Vec<u8>, WebDriverError> {
        let value = self.command(Method::GET, "/screenshot", None).await?;
        let encoded = value
            .as_str()
            .ok_or_else(|| WebDriverError::Protocol("a screenshot that is not a string".into()))?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| WebDriverError::Protocol(format!("a screenshot that is not base64: {e}")))
    }

    /// Ends the session and closes its browser.
    pub async fn close(self) -> Result<(), WebDriverError> {
        self.command(Method::DELETE, "", None).await.map(drop)
    }

    async fn command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let url = format!("{}{path}", self.session);
        send(&self.http, method, &url, body).await
    }
}

impl Element {
    /// The element's rendered text.
    pub async fn text(&self) -> Result<String, WebDriverError> {
        let value = self.command(Method::GET, "/text", None).await?;
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| WebDriverError::Protocol(format!("text that is not a string: {value}")))
    }

    /// The element's attribute `name`, or `None` when it has none.
    pub async fn attr(&self, name: &str) -> Result<Option<String>, WebDriverError> {
        let value = self
            .command(Method::GET, &format!("/attribute/{name}"), None)
            .await?;
        match value {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(WebDriverError::Protocol(format!(
                "an attribute that is not a string: {other}"
            ))),
        }
    }

    /// Whether the element is shown on the page.
    pub async fn is_displayed(&self) -> Result<bool, WebDriverError> {
        let value = self.command(Method::GET, "/displayed", None).await?;
        value
            .as_bool()
            .ok_or_else(|| WebDriverError::Protocol(format!("not a boolean: {value}")))
    }

    /// Clicks the element.
    pub async fn click(&self) -> Result<(), WebDriverError> {
        self.command(Method::POST, "/click", Some(json!({})))
            .await
            .map(drop)
    }

    /// Empties an input field.
    pub async fn clear(&self) -> Result<(), WebDriverError> {
        self.command(Method::POST, "/clear", Some(json!({})))
            .await
            .map(drop)
    }

    /// Types `text` into the element.
    pub async fn send_keys(&self, text: &str) -> Result<(), WebDriverError> {
        self.command(Method::POST, "/value", Some(json!({ "text": text })))
            .await
            .map(drop)
    }

    async fn command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let path = format!("/element/{}{path}", self.id);
        self.client.command(method, &path, body).await
    }
}

/// Sends one command and returns the `value` of its answer, or the error it reports.
async fn send(
    http: &Http,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WebDriverError> {
    let what = format!("{method} {url}");
    let mut request = Request::builder().method(method).uri(url);
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json; charset=utf-8");
            Full::new(Bytes::from(body.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let request = request
        .body(body)
        .map_err(|e| WebDriverError::Transport(format!("{what}: {e}")))?;
    let exchange = async {
        let response = http
            .request(request)
            .await
            .map_err(|e| WebDriverError::Transport(format!("{what}: {e}")))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| WebDriverError::Transport(format!("{what}: {e}")))?
            .to_bytes();
        Ok::<_, WebDriverError>((status, bytes))
    };
    let (status, bytes) = tokio::time::timeout(COMMAND_TIMEOUT, exchange)
        .await
        .map_err(|_| WebDriverError::Timeout(what.clone()))??;
    let mut answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
        WebDriverError::Protocol(format!(
            "{what} answered {status} with a body that is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    let value = answer
        .get_mut("value")
        .map(Value::take)
        .unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Err(WebDriverError::Command {
        error: text("error"),
        message: text("message"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP server on loopback that answers every request with `status` and
    /// `body`, and hands back the request it read.
    async fn driver_answering(
        status: u16,
        body: &'static str,
    ) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the body its content-length announces.
            loop {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "the client closed before a whole request");
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&request).to_string()
        });
        (format!("http://{addr}"), task)
    }

    /// A client of session `s1` on `driver`.
    fn session_s1(driver: &str) -> Client {
        Client {
            http: http_client(),
            session: format!("{driver}/session/s1"),
        }
    }

    #[tokio::test]
    async fn a_new_session_sends_the_capabilities_and_keeps_the_id() {
        let (driver, request) =
            driver_answering(200, r#"{"value":{"sessionId":"abc","capabilities":{}}}"#).await;
        let client = Client::connect(
            &driver,
            json!({ "goog:chromeOptions": { "args": ["--headless=new"] } }),
        )
        .await
        .expect("a session");
        assert_eq!(client.session, format!("{driver}/session/abc"));
        let request = request.await.expect("the driver's task");
        assert!(request.starts_with("POST /session HTTP/1.1"), "{request}");
        assert!(
            request.contains(r#"{"capabilities":{"alwaysMatch":{"goog:chromeOptions":{"args":["--headless=new"]}}}}"#),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_missing_element_is_the_drivers_own_error() {
        let (driver, request) = driver_answering(
            404,
            r#"{"value":{"error":"no such element","message":"no such element: Unable to locate element","stacktrace":""}}"#,
        )
        .await;
        let client = session_s1(&driver);
        let err = client
            .find(Locator::Css("#nothing"))
            .await
            .expect_err("no element");
        match &err {
            WebDriverError::Command { error, message } => {
                assert_eq!(error, "no such element");
                assert!(message.contains("Unable to locate"), "{message}");
            }
            other => panic!("expected the driver's error, got {other:?}"),
        }
        let request = request.await.expect("the driver's task");
        assert!(
            request.starts_with("POST /session/s1/element HTTP/1.1"),
            "{request}"
        );
        assert!(
            request.contains(r##"{"using":"css selector","value":"#nothing"}"##),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_screenshot_is_decoded_and_an_answer_that_is_not_json_is_named() {
        let (driver, _request) = driver_answering(200, r#"{"value":"iVBORw0KGgo="}"#).await;
        let client = session_s1(&driver);
        let png = client.screenshot().await.expect("a screenshot");
        assert_eq!(png, b"\x89PNG\r\n\x1a\n");

        let (driver, _request) = driver_answering(500, "<html>oops</html>").await;
        let client = session_s1(&driver);
        let err = client.refresh().await.expect_err("not JSON");
        assert!(
            matches!(&err, WebDriverError::Protocol(m) if m.contains("500") && m.contains("oops")),
            "{err:?}"
        );
    }
}
