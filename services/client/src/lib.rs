//! A client of the backend's access tier: [`Http`] for access-short and [`Ws`] for
//! access-long. Every answer is the gateway's JSON (`{"ok":true,...}` or
//! `{"ok":false,"error":{"code","message","reason"?}}`) with its HTTP status.

mod admit;
pub mod proof;

pub use admit::{AdmitHint, HINT_TTL, HINT_TTL_MAX, PEAK_BACKOFF};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, sending or receiving failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The answer is not HTTP or not JSON.
    #[error("bad answer: {0}")]
    BadAnswer(String),
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    /// Nothing came in time.
    #[error("timed out")]
    Timeout,
}

/// An answer: the HTTP status and the JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status (200 on success).
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Answer {
    /// True for `{"ok":true}`.
    pub fn ok(&self) -> bool {
        self.body["ok"] == true
    }

    /// The error code (`not_found`, ...), or `""` on success.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    /// The error reason, if the gateway gave one.
    pub fn reason(&self) -> &str {
        self.body["error"]["reason"].as_str().unwrap_or_default()
    }
}

/// How many times [`Http::login`] signs in when it is refused `overloaded`.
pub const LOGIN_ATTEMPTS: u32 = 3;

/// `base` to three times `base`, spread by the clock's nanoseconds so that clients
/// refused together do not come back together.
fn jittered(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base * 2 * (nanos % 1000) / 1000
}

/// access-short over HTTP/1.1, one connection per call.
#[derive(Debug, Clone, Copy)]
pub struct Http {
    addr: SocketAddr,
}

impl Http {
    /// A client of the gateway at `addr`.
    pub fn new(addr: SocketAddr) -> Http {
        Http { addr }
    }

    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `POST /v1/ACTION` with `body`, signed with `token` if given.
    pub async fn call(
        &self,
        action: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Answer, ClientError> {
        self.raw(
            "POST",
            &format!("/v1/{action}"),
            body.to_string().as_bytes(),
            token,
        )
        .await
    }

    /// Signs in as `name` with `password`, presenting the device credential `device` if
    /// it has one: when the backend asks for a proof of work (`proof_required`), asks
    /// for a puzzle, solves it (off the async threads) and signs in again with it.
    /// Refused `overloaded` (nothing was processed: the password checks' queue was
    /// full), it backs off for a jittered 0.2–0.6 s, then 0.4–1.2 s, and tries again,
    /// [`LOGIN_ATTEMPTS`] times in all, as the apps do. The last answer either way.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        device: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let mut answer = self.login_once(name, password, device).await?;
        for attempt in 1..LOGIN_ATTEMPTS {
            if answer.code() != "overloaded" {
                break;
            }
            tokio::time::sleep(jittered(Duration::from_millis(200) * attempt)).await;
            answer = self.login_once(name, password, device).await?;
        }
        Ok(answer)
    }

    /// One sign-in, with a proof of work if one is asked for.
    async fn login_once(
        &self,
        name: &str,
        password: &str,
        device: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let mut body = json!({ "name": name, "password": password });
        if let Some(device) = device {
            body["device"] = json!(device);
        }
        let answer = self.call("login", &body, None).await?;
        if answer.reason() != "proof_required" {
            return Ok(answer);
        }
        let puzzle = self
            .call("login.challenge", &json!({ "name": name }), None)
            .await?;
        if !puzzle.ok() {
            return Ok(puzzle);
        }
        let challenge = puzzle.body["challenge"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let bits = puzzle.body["bits"]
            .as_u64()
            .and_then(|b| u32::try_from(b).ok())
            .unwrap_or(u32::MAX);
        let solved = tokio::task::spawn_blocking(move || proof::solve(&challenge, bits))
            .await
            .map_err(|e| ClientError::BadAnswer(format!("the solver stopped: {e}")))?;
        let Some(solved) = solved else {
            return Ok(answer);
        };
        body["proof"] = json!(solved);
        self.call("login", &body, None).await
    }

    /// Any request, for tests of malformed input.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let exchange = async {
            let mut stream = TcpStream::connect(self.addr).await?;
            let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
                self.addr,
                body.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body).await?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await?;
            Ok::<Vec<u8>, ClientError>(raw)
        };
        let raw = tokio::time::timeout(Duration::from_secs(30), exchange)
            .await
            .map_err(|_| ClientError::Timeout)??;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| ClientError::BadAnswer(text.to_string()))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::BadAnswer(head.to_string()))?;
        let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
        Ok(Answer { status, body })
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// access-long: one authenticated WebSocket.
///
/// It honours the gateway's admission hint: after an answer carrying `"admit": N`,
/// [`Ws::call`] answers an action whose business priority is above `N` itself, with
/// `overloaded` (reason `held_back`), without sending it, as [`AdmitHint`] decides: while
/// the hint is fresh, and after a refusal at the edge for a backoff of its own.
#[derive(Debug)]
pub struct Ws {
    socket: Socket,
    next_id: u64,
    pushes: VecDeque<Value>,
    /// The signed-in user.
    pub uid: u64,
    /// Every action's business priority, from the auth answer.
    priorities: serde_json::Map<String, Value>,
    /// What the gateway's answers said about admission.
    hint: AdmitHint,
    /// The business priority of each request sent and not yet answered, by id.
    sent: std::collections::HashMap<u64, u64>,
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> ClientError {
    ClientError::WebSocket(Box::new(e))
}

impl Ws {
    /// Connects to the gateway at `addr` and authenticates with `token`. A refused token
    /// comes back as the gateway's error answer.
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<Result<Ws, Value>, ClientError> {
        let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/ws"))
            .await
            .map_err(ws_error)?;
        let auth = json!({ "op": "auth", "token": token }).to_string();
        socket
            .send(Message::Text(auth.into()))
            .await
            .map_err(ws_error)?;
        let mut ws = Ws {
            socket,
            next_id: 1,
            pushes: VecDeque::new(),
            uid: 0,
            priorities: serde_json::Map::new(),
            hint: AdmitHint::new(),
            sent: std::collections::HashMap::new(),
        };
        let hello = ws.frame(Duration::from_secs(10)).await?;
        if hello["ok"] != true {
            return Ok(Err(hello));
        }
        ws.uid = hello["uid"].as_u64().unwrap_or(0);
        if let Some(priorities) = hello["priorities"].as_object() {
            ws.priorities = priorities.clone();
        }
        Ok(Ok(ws))
    }

    async fn frame(&mut self, wait: Duration) -> Result<Value, ClientError> {
        loop {
            let message = tokio::time::timeout(wait, self.socket.next())
                .await
                .map_err(|_| ClientError::Timeout)?;
            match message {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .map_err(|e| ClientError::BadAnswer(e.to_string()));
                }
                Some(Ok(Message::Close(_))) | None => {
                    return Err(ClientError::BadAnswer("the connection closed".into()));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ws_error(e)),
            }
        }
    }

    /// Sends a raw text frame (for tests of malformed input).
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.socket
            .send(Message::Text(text.to_string().into()))
            .await
            .map_err(ws_error)
    }

    /// The next frame that is not a push (an answer, or an error about a bad frame).
    pub async fn answer(&mut self) -> Result<Value, ClientError> {
        loop {
            let frame = self.frame(Duration::from_secs(30)).await?;
            if frame.get("push").is_some() {
                self.pushes.push_back(frame);
            } else {
                return Ok(frame);
            }
        }
    }

    /// Runs an action and returns its answer frame; held back (answered here, not sent)
    /// while the gateway's last hint says it would be refused.
    pub async fn call(&mut self, action: &str, body: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let priority = self.priority(action);
        if self.hint.holds_back(priority, Instant::now()) {
            return Ok(json!({
                "id": id,
                "ok": false,
                "error": {
                    "code": "overloaded",
                    "message": "the gateway is shedding this priority; not sent",
                    "reason": "held_back",
                },
            }));
        }
        let frame = json!({ "id": id, "action": action, "body": body }).to_string();
        self.send_text(&frame).await?;
        self.sent.insert(id, priority);
        loop {
            let answer = match self.answer().await {
                Ok(answer) => answer,
                Err(e) => {
                    self.sent.remove(&id);
                    return Err(e);
                }
            };
            self.note_hint(&answer);
            if answer["id"] == id {
                return Ok(answer);
            }
        }
    }

    /// The business priority of `action` by the gateway's table; an action it does not
    /// list is the least important.
    fn priority(&self, action: &str) -> u64 {
        self.priorities
            .get(action)
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX)
    }

    /// Notes what an answer to a request of this connection says about admission.
    fn note_hint(&mut self, answer: &Value) {
        let Some(priority) = answer["id"].as_u64().and_then(|id| self.sent.remove(&id)) else {
            return;
        };
        let refused = answer["error"]["reason"] == "edge_shed";
        self.hint
            .observe(priority, answer["admit"].as_u64(), refused, Instant::now());
    }

    /// The next push, waiting up to `wait`.
    pub async fn push(&mut self, wait: Duration) -> Result<Value, ClientError> {
        if let Some(push) = self.pushes.pop_front() {
            return Ok(push);
        }
        loop {
            let frame = self.frame(wait).await?;
            if frame.get("push").is_some() {
                return Ok(frame);
            }
        }
    }
}
