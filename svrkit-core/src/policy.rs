//! Call policies: which services may call a server, method by method, and which may
//! send a request that acts for a user (carries a uid).
//!
//! A policy is checked on every request right after its header is read — before
//! admission control, before the body is decoded — against the caller's *verified*
//! service name (from its mTLS certificate, [`crate::tls`]). A request the policy does
//! not allow is answered `permission_denied` and counted
//! (`svrkit_server_rejected_total{reason="permission_denied"}`). Without TLS there is no
//! verified caller, and a server with a policy refuses everything.
//!
//! As JSON (the `SVRKIT_CALL_POLICY` setting of `svrkit::launch`; `svrkit up` writes it
//! from the manifest):
//!
//! ```json
//! {"callers": ["account", "operator"],
//!  "methods": {"Announce": ["access-long"]},
//!  "uid_callers": ["access-short", "access-long", "account"]}
//! ```
//!
//! `callers`: who may call any method (absent: every holder of a cluster certificate);
//! `methods`: per method name (or `Service/Method`), who may call it instead;
//! `uid_callers`: who may send a request carrying a uid (absent: whoever may call).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::status::Status;

/// Who may call what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallPolicy {
    /// Services allowed to call any method not listed in `methods` (`None`: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callers: Option<BTreeSet<String>>,
    /// Per method (`Method` or `package.Service/Method`): the services allowed instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub methods: BTreeMap<String, BTreeSet<String>>,
    /// Services allowed to send requests that carry a uid (`None`: whoever may call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid_callers: Option<BTreeSet<String>>,
}

/// A call policy that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("a call policy: {0}")]
pub struct PolicyError(#[from] serde_json::Error);

impl CallPolicy {
    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<CallPolicy, PolicyError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Whether `caller` (verified, or `None` without TLS) may call `service/method`,
    /// with a uid or without.
    pub fn check(
        &self,
        caller: Option<&str>,
        service: &str,
        method: &str,
        carries_uid: bool,
    ) -> Result<(), Status> {
        let Some(caller) = caller else {
            return Err(Status::permission_denied(format!(
                "{service}/{method} needs a caller with a verified identity (mutual TLS)"
            )));
        };
        let qualified = format!("{service}/{method}");
        let allowed = self
            .methods
            .get(&qualified)
            .or_else(|| self.methods.get(method))
            .or(self.callers.as_ref());
        if let Some(allowed) = allowed
            && !allowed.contains(caller)
        {
            return Err(Status::permission_denied(format!(
                "{caller} may not call {qualified}"
            )));
        }
        if carries_uid
            && let Some(uid_callers) = &self.uid_callers
            && !uid_callers.contains(caller)
        {
            return Err(Status::permission_denied(format!(
                "{caller} may not act for a user on {qualified}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Code;

    fn policy() -> CallPolicy {
        CallPolicy::from_json(
            r#"{"callers":["account","operator"],
                "methods":{"Announce":["access-long"],"wx.storage.AccountStore/GetAccount":["account"]},
                "uid_callers":["account"]}"#,
        )
        .expect("parses")
    }

    #[test]
    fn callers_methods_and_uids_are_checked() {
        let p = policy();
        let svc = "wx.storage.AccountStore";
        assert!(p.check(Some("account"), svc, "PutSession", true).is_ok());
        assert!(p.check(Some("operator"), svc, "PutSession", false).is_ok());
        let denied = |r: Result<(), Status>| r.err().map(|s| s.code());
        assert_eq!(
            denied(p.check(Some("operator"), svc, "PutSession", true)),
            Some(Code::PermissionDenied),
            "the operator may not act for a user"
        );
        assert_eq!(
            denied(p.check(Some("contact"), svc, "PutSession", false)),
            Some(Code::PermissionDenied)
        );
        assert_eq!(
            denied(p.check(Some("operator"), svc, "GetAccount", false)),
            Some(Code::PermissionDenied),
            "a qualified method rule overrides the callers"
        );
        assert!(
            p.check(Some("access-long"), "wx.access.Push", "Announce", false)
                .is_ok()
        );
        assert_eq!(
            denied(p.check(Some("account"), "wx.access.Push", "Announce", false)),
            Some(Code::PermissionDenied)
        );
        assert_eq!(
            denied(p.check(None, svc, "PutSession", false)),
            Some(Code::PermissionDenied),
            "no verified caller, no call"
        );
    }

    #[test]
    fn an_empty_policy_admits_every_verified_caller_and_unknown_fields_are_refused() {
        let open = CallPolicy::default();
        assert!(open.check(Some("anyone"), "s", "m", true).is_ok());
        assert!(CallPolicy::from_json(r#"{"caller":["x"]}"#).is_err());
        assert!(CallPolicy::from_json("not json").is_err());
    }
}
