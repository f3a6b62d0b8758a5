//! A signed-in user of a running backend, with the actions scenarios take spelled once:
//! `alice.befriend(&bob)`, `alice.send(&bob, "hi")`, `alice.post(…)` instead of the JSON
//! of each call written out every time.

use std::net::SocketAddr;
use std::ops::Deref;

use serde_json::{Value, json};
use wx_client::{Answer, Ws};

use super::{Backend, User, call, refused, unique};

/// A registered, signed-in user and the backend it uses. Derefs to its [`User`] (`uid`,
/// `name`, `token`).
pub struct Session<'b> {
    backend: &'b Backend,
    user: User,
}

impl Backend {
    /// A new user, named `base` with a unique suffix, registered and signed in.
    pub async fn session(&self, base: &str) -> Session<'_> {
        Session {
            backend: self,
            user: self.user(&unique(base)).await,
        }
    }
}

impl Backend {
    /// A second session (another sign-in) of `user`.
    pub async fn session_of(&self, user: &User) -> Session<'_> {
        let answer = call(
            &self.http,
            "login",
            json!({ "name": user.name, "password": "correct horse battery" }),
            None,
        )
        .await;
        Session {
            backend: self,
            user: User {
                token: answer["token"].as_str().expect("a token").to_string(),
                ..user.clone()
            },
        }
    }
}

impl Deref for Session<'_> {
    type Target = User;

    fn deref(&self) -> &User {
        &self.user
    }
}

impl Session<'_> {
    /// The session token, as the call helpers take it.
    pub fn token(&self) -> Option<&str> {
        Some(self.user.token.as_str())
    }

    /// Runs `action` over HTTP; it must succeed.
    pub async fn call(&self, action: &str, body: Value) -> Value {
        call(&self.backend.http, action, body, self.token()).await
    }

    /// Runs `action` over HTTP; it must fail with HTTP `status` and error `code`.
    pub async fn refused(&self, action: &str, body: Value, status: u16, code: &str) -> Answer {
        refused(&self.backend.http, action, body, self.token(), status, code).await
    }

    /// Asks `other` to be friends, with `greeting`; the relation as this user sees it.
    pub async fn request_friend(&self, other: &User, greeting: &str) -> String {
        let reply = self
            .call(
                "friends.request",
                json!({ "peer": other.uid, "greeting": greeting }),
            )
            .await;
        reply["relation"].as_str().unwrap_or_default().to_string()
    }

    /// This user and `other` become friends (a request, then `other` accepts).
    pub async fn befriend(&self, other: &Session<'_>) {
        self.request_friend(other, "").await;
        other
            .call("friends.accept", json!({ "peer": self.uid }))
            .await;
    }

    /// Sends `text` to `to`; the answer (`msg_id`, `seq`, `sent_ms`).
    pub async fn send(&self, to: &User, text: &str) -> Value {
        self.call("message.send", json!({ "to": to.uid, "text": text }))
            .await
    }

    /// Posts to Moments (`body` as `moments.post` takes it); the answer (`author`, `seq`).
    pub async fn post(&self, body: Value) -> Value {
        self.call("moments.post", body).await
    }

    /// This user's profile as `reader` sees it.
    pub async fn profile_seen_by(&self, reader: &Session<'_>) -> Value {
        let mut answer = reader.call("profile.get", json!({ "uid": self.uid })).await;
        answer["profile"].take()
    }

    /// The uids of this user's friends.
    pub async fn friends(&self) -> Vec<u64> {
        let list = self.call("friends.list", json!({})).await;
        list["friends"]
            .as_array()
            .map(|friends| {
                friends
                    .iter()
                    .filter_map(|f| f["profile"]["uid"].as_u64())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A long connection to the access-long instance at `addr`, signed in.
    pub async fn connect(&self, addr: SocketAddr) -> Ws {
        let ws = Ws::connect(addr, &self.user.token)
            .await
            .expect("connects")
            .expect("the token is accepted");
        assert_eq!(ws.uid, self.uid);
        ws
    }
}
