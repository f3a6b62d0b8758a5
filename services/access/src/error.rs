//! Errors as clients see them: an HTTP status and `{"ok":false,"error":{...}}`.

use std::borrow::Cow;

use axum::http::StatusCode;
use serde_json::{Value, json};
use svrkit::{Code, Status};

/// A failed action.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The svrkit code it maps from.
    pub code: Code,
    /// A stable, machine-readable reason where the code alone is ambiguous
    /// (`token_expired`, `token_invalid`, `wrong_password`, `unknown_user`, ...).
    pub reason: Option<Cow<'static, str>>,
    /// For people.
    pub message: String,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason: None,
            message: message.into(),
        }
    }

    /// Adds a reason.
    pub fn reason(mut self, reason: impl Into<Cow<'static, str>>) -> ApiError {
        self.reason = Some(reason.into());
        self
    }

    /// `INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::InvalidArgument, message)
    }

    /// The HTTP status this error answers with.
    pub fn http_status(&self) -> StatusCode {
        match self.code {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound | Code::Unimplemented => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Overloaded | Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(reason) = &self.reason {
            error["reason"] = json!(reason);
        }
        json!({ "ok": false, "error": error })
    }
}

impl From<Status> for ApiError {
    /// The status as clients see it, with the reason the service that failed stated
    /// (`Status::reason`), however many hops it came through.
    fn from(status: Status) -> ApiError {
        let error = ApiError::new(status.code(), status.message());
        match status.reason() {
            Some(reason) => error.reason(reason.to_string()),
            None => error,
        }
    }
}
