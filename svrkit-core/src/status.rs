//! The outcome of a call: a [`Code`] and a human-readable message.
//!
//! Codes 0..=16 share their numbers and meaning with gRPC so that operators can read them
//! without a table; svrkit adds [`Code::Overloaded`] (17), which DAGOR admission control
//! answers when it sheds a request. `Status` is one pointer wide: the error path may be
//! cold, but `Result<T, Status>` travels through every hot function.

use std::fmt;

use bytes::Bytes;

/// A status reason is at most this many bytes.
pub const MAX_REASON_LEN: usize = 64;
/// Status details are at most this many bytes.
pub const MAX_DETAILS_LEN: usize = 8 * 1024;

/// The error type tower middleware commonly uses.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A status code carried on the wire as a `uint32` in the response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// The caller cancelled the call.
    Cancelled = 1,
    /// An error that fits no other code (also: a code this build does not know).
    Unknown = 2,
    /// The request was malformed: bad header, undecodable body, invalid field.
    InvalidArgument = 3,
    /// The deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// A requested entity does not exist.
    NotFound = 5,
    /// The entity the caller tried to create already exists.
    AlreadyExists = 6,
    /// The caller is known but may not do this.
    PermissionDenied = 7,
    /// A quota or size limit was hit (for example a message over the frame limit).
    ResourceExhausted = 8,
    /// The system is not in a state the operation requires.
    FailedPrecondition = 9,
    /// A concurrency conflict, such as a failed optimistic-version check.
    Aborted = 10,
    /// A value was outside its valid range.
    OutOfRange = 11,
    /// The service or method is not implemented by this server.
    Unimplemented = 12,
    /// An invariant inside the server broke.
    Internal = 13,
    /// The service is unreachable or going away; usually safe to retry elsewhere.
    Unavailable = 14,
    /// Unrecoverable loss or corruption of data.
    DataLoss = 15,
    /// The caller did not prove who it is.
    Unauthenticated = 16,
    /// Admission control shed the request before running it (svrkit extension).
    Overloaded = 17,
}

impl Code {
    /// Whether a response with this code is the server's fault rather than the caller's:
    /// it broke (`internal`, `unknown`, `data_loss`), could not answer in time or at all
    /// (`deadline_exceeded`, `unavailable`) or shed the request (`overloaded`). The rest
    /// (bad arguments, not found, permission, a business refusal such as a wrong
    /// password) are the caller's: a healthy server answers them too.
    pub fn is_server_fault(self) -> bool {
        matches!(
            self,
            Code::Internal
                | Code::Unknown
                | Code::DataLoss
                | Code::DeadlineExceeded
                | Code::Unavailable
                | Code::Overloaded
        )
    }

    /// Every code, in numeric order.
    pub const ALL: [Code; 18] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
        Code::Overloaded,
    ];

    /// The code for a wire value; unknown values map to [`Code::Unknown`].
    pub fn from_u32(value: u32) -> Code {
        Code::ALL
            .get(value as usize)
            .copied()
            .unwrap_or(Code::Unknown)
    }

    /// The wire value.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// The snake_case name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Cancelled => "cancelled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
            Code::Overloaded => "overloaded",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error half of every svrkit call: a code, a message, and whether the request
/// provably never reached a handler (which makes any method safe to retry).
///
/// ```
/// use svrkit::{Code, Status};
///
/// // A business refusal: the caller's error, with a reason clients can branch on.
/// let refused = Status::permission_denied("only the chat's members see this")
///     .with_reason("not_member");
/// assert_eq!(refused.code(), Code::PermissionDenied);
/// assert_eq!(refused.reason(), Some("not_member"));
/// assert!(!refused.code().is_server_fault());
///
/// // Shed under overload before any work: safe to retry elsewhere or later.
/// let shed = Status::overloaded("busy").with_not_processed();
/// assert!(shed.is_not_processed() && shed.code().is_server_fault());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Status(Box<Inner>);

#[derive(Clone, PartialEq, Eq)]
struct Inner {
    code: Code,
    message: String,
    not_processed: bool,
    /// Said by a handler about its own request: "not mine, ask another instance".
    not_mine: bool,
    /// The failure came back from a call (see [`Status::is_passed_on`]).
    passed_on: bool,
    /// A machine-readable reason, empty when none.
    reason: Box<str>,
    /// Machine-readable detail, empty when none.
    details: Bytes,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with the given code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status(Box::new(Inner {
            code,
            message: message.into(),
            not_processed: false,
            not_mine: false,
            passed_on: false,
            reason: Box::default(),
            details: Bytes::new(),
        }))
    }

    constructors! {
        /// [`Code::Cancelled`].
        cancelled => Cancelled,
        /// [`Code::Unknown`].
        unknown => Unknown,
        /// [`Code::InvalidArgument`].
        invalid_argument => InvalidArgument,
        /// [`Code::DeadlineExceeded`].
        deadline_exceeded => DeadlineExceeded,
        /// [`Code::NotFound`].
        not_found => NotFound,
        /// [`Code::AlreadyExists`].
        already_exists => AlreadyExists,
        /// [`Code::PermissionDenied`].
        permission_denied => PermissionDenied,
        /// [`Code::ResourceExhausted`].
        resource_exhausted => ResourceExhausted,
        /// [`Code::FailedPrecondition`].
        failed_precondition => FailedPrecondition,
        /// [`Code::Aborted`].
        aborted => Aborted,
        /// [`Code::OutOfRange`].
        out_of_range => OutOfRange,
        /// [`Code::Unimplemented`].
        unimplemented => Unimplemented,
        /// [`Code::Internal`].
        internal => Internal,
        /// [`Code::Unavailable`].
        unavailable => Unavailable,
        /// [`Code::DataLoss`].
        data_loss => DataLoss,
        /// [`Code::Unauthenticated`].
        unauthenticated => Unauthenticated,
        /// [`Code::Overloaded`].
        overloaded => Overloaded,
    }

    /// Marks that the request never reached a handler (connect failure, rejected before
    /// dispatch, sent after the server's goaway). Retry policies may then retry any method.
    pub fn with_not_processed(mut self) -> Status {
        self.0.not_processed = true;
        self
    }

    /// The status inside an error from a tower stack: the `Status` itself when the error
    /// is one (or wraps one), else `unknown` with the error's text. Layers such as
    /// `tower::timeout` return their own error types; this keeps them composable.
    pub fn from_error(error: BoxError) -> Status {
        match error.downcast::<Status>() {
            Ok(status) => *status,
            Err(error) => {
                let mut source = error.source();
                while let Some(inner) = source {
                    if let Some(status) = inner.downcast_ref::<Status>() {
                        return status.clone();
                    }
                    source = inner.source();
                }
                Status::unknown(error.to_string())
            }
        }
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.0.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// True when the request provably never reached a handler.
    pub fn is_not_processed(&self) -> bool {
        self.0.not_processed
    }

    /// What a handler answers for a request that is not its instance's to serve (a key it
    /// does not own, a lease another instance holds): `UNAVAILABLE`, not processed, and
    /// sent as such on the wire (`ResponseHeader.not_processed`), so the caller's channel
    /// retries any method on another instance.
    ///
    /// Only this constructor sets the wire flag: a handler that passes on a status from a
    /// call of its own (which may be locally "not processed", e.g. a refused connection)
    /// did process its request, and its caller must not repeat it.
    pub fn not_mine(message: impl Into<String>) -> Status {
        let mut status = Status::unavailable(message).with_not_processed();
        status.0.not_mine = true;
        status
    }

    /// True for [`Status::not_mine`].
    pub fn is_not_mine(&self) -> bool {
        self.0.not_mine
    }

    /// True when the failure did not start in this process: a [`Channel`](crate::Channel)
    /// returned it from a call, or the callee itself passed it on from a call of its own
    /// (`ResponseHeader.passed_on`).
    ///
    /// Retries happen only next to a failure: a handler that returns a status its own call
    /// got (with `?`, say) answers with `passed_on` set, and its caller's channel does not
    /// retry it, does not count it against the instance's health, and does not read an
    /// `OVERLOADED` it carries as shed before dispatch. Otherwise a dead instance three hops
    /// down would see every retry at every hop multiplied: 3 attempts per hop make 27.
    /// A handler that wants its caller to retry answers a status of its own instead.
    pub fn is_passed_on(&self) -> bool {
        self.0.passed_on
    }

    /// Adds a machine-readable reason that callers match on instead of parsing the
    /// message: a short stable word in snake case (`wrong_password`, `not_friend`), at
    /// most [`MAX_REASON_LEN`] bytes (a longer one is cut there). It travels in
    /// `ResponseHeader.reason` and survives being passed on through every hop.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Status {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            let mut end = MAX_REASON_LEN;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        self.0.reason = reason.into_boxed_str();
        self
    }

    /// The machine-readable reason, if the status has one.
    pub fn reason(&self) -> Option<&str> {
        (!self.0.reason.is_empty()).then_some(&*self.0.reason)
    }

    /// Adds machine-readable detail (an encoded protobuf message, say), at most
    /// [`MAX_DETAILS_LEN`] bytes: larger detail is not sent, and the server logs that.
    /// It travels in `ResponseHeader.details`.
    pub fn with_details(mut self, details: impl Into<Bytes>) -> Status {
        self.0.details = details.into();
        self
    }

    /// The machine-readable detail (empty when none).
    pub fn details(&self) -> &Bytes {
        &self.0.details
    }

    /// Marks the status as come back from a call (see [`Status::is_passed_on`]).
    pub(crate) fn passed_on(mut self) -> Status {
        self.0.passed_on = true;
        self
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Status")
            .field("code", &self.0.code)
            .field("message", &self.0.message)
            .field("not_processed", &self.0.not_processed)
            .field("passed_on", &self.0.passed_on)
            .field("reason", &self.0.reason)
            .field("details", &self.0.details.len())
            .finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(reason) => write!(f, "{} ({reason}): {}", self.0.code, self.0.message),
            None => write!(f, "{}: {}", self.0.code, self.0.message),
        }
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_faults_are_told_from_caller_errors() {
        let faults: Vec<Code> = Code::ALL
            .into_iter()
            .filter(|c| c.is_server_fault())
            .collect();
        assert_eq!(
            faults,
            [
                Code::Unknown,
                Code::DeadlineExceeded,
                Code::Internal,
                Code::Unavailable,
                Code::DataLoss,
                Code::Overloaded
            ]
        );
    }

    #[test]
    fn codes_round_trip_through_their_wire_value() {
        for code in Code::ALL {
            assert_eq!(Code::from_u32(code.as_u32()), code);
        }
        assert_eq!(Code::from_u32(999), Code::Unknown);
    }

    #[test]
    fn status_is_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Status>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn from_error_recovers_a_status_or_wraps_the_text() {
        let boxed: BoxError = Box::new(Status::not_found("x"));
        assert_eq!(Status::from_error(boxed).code(), Code::NotFound);
        let other: BoxError = "request timed out".into();
        let status = Status::from_error(other);
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unknown, "request timed out")
        );
    }

    #[test]
    fn constructors_set_code_and_message() {
        let s = Status::not_found("no such user");
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "no such user");
        assert!(!s.is_not_processed());
        assert!(
            Status::overloaded("x")
                .with_not_processed()
                .is_not_processed()
        );
        assert_eq!(s.to_string(), "not_found: no such user");
        assert_eq!((s.reason(), s.details().len()), (None, 0));
    }

    #[test]
    fn reasons_are_bounded_and_details_kept() {
        let s = Status::permission_denied("no")
            .with_reason("not_friend")
            .with_details(&b"\x08\x01"[..]);
        assert_eq!(s.reason(), Some("not_friend"));
        assert_eq!(s.to_string(), "permission_denied (not_friend): no");
        assert_eq!(&s.details()[..], b"\x08\x01");
        let long = "é".repeat(MAX_REASON_LEN);
        let cut = Status::internal("x").with_reason(long);
        let reason = cut.reason().expect("reason");
        assert!(reason.len() <= MAX_REASON_LEN && reason.chars().all(|c| c == 'é'));
    }
}
