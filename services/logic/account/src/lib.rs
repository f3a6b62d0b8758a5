//! `wx.account.Account`: registration, login sessions and profiles.
//!
//! - Names are unique (case-insensitive) through the name index in `accountstore`; an
//!   account is stored first and its name claimed second, so a crash in between leaves at
//!   worst an unreachable account, never a name without an account.
//! - Passwords are hashed with argon2id (a fresh salt each) off the async threads.
//! - A session is a random 128-bit id stored on the user's shard with an expiry; the
//!   token clients hold is `uid.session_id`. Verification tells valid, expired and
//!   invalid (forged, mistyped or logged out) apart.
//! - Profiles hide the fields a user marked private from everyone but themselves and
//!   their friends (the relation comes from the contact service).

pub mod device;
mod hash_pool;
mod password;
pub mod proof;
pub mod throttle;
mod token;

use std::time::Duration;

use svrkit::{Code, Status};
use wx_api::account::account_server::Account;
use wx_api::account::{
    ExistsReply, ExistsRequest, FindUserRequest, GetProfilesReply, GetProfilesRequest,
    LoginChallengeReply, LoginChallengeRequest, LoginReply, LoginRequest, LogoutReply,
    LogoutRequest, Profile, RegisterReply, RegisterRequest, TokenState, UpdateProfileRequest,
    VerifyTokenReply, VerifyTokenRequest,
};
use wx_api::contact::{CheckRequest, ContactClient, Relation};
use wx_api::storage::{
    AccountRecord, AccountStoreClient, ClaimNameRequest, CreateAccountRequest, GetAccountRequest,
    GetSessionRequest, LookupNameRequest, ProfileField, PutSessionRequest, SessionRecord,
    UpdateAccountRequest,
};
use wx_api::{acting_user, by_uid, name_key, now_ms, retry_on_conflict};

pub use token::Token;

/// How many times a profile change is re-read and re-applied after losing a race.
const PROFILE_UPDATE_ATTEMPTS: usize = 3;

/// How long a session lasts unless configured otherwise: 7 days.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The account service.
#[derive(Debug, Clone)]
pub struct AccountService {
    store: AccountStoreClient,
    contact: ContactClient,
    session_ttl: Duration,
    throttle: std::sync::Arc<throttle::LoginThrottle>,
    devices: device::Devices,
    /// Proofs of work for unknown devices under pressure (none: never asked).
    puzzles: Option<std::sync::Arc<proof::Puzzles>>,
}

impl AccountService {
    /// The service over its store and the contact service (for who is a friend).
    pub fn new(store: AccountStoreClient, contact: ContactClient) -> AccountService {
        AccountService {
            store,
            contact,
            session_ttl: DEFAULT_SESSION_TTL,
            throttle: std::sync::Arc::default(),
            devices: device::Devices::none(),
            puzzles: None,
        }
    }

    /// Asks unknown devices for a proof of work as `puzzles` say (never by default).
    pub fn puzzles(mut self, puzzles: proof::Puzzles) -> AccountService {
        self.puzzles = Some(std::sync::Arc::new(puzzles));
        self
    }

    /// Issues and recognises device credentials with `devices` (none by default).
    pub fn devices(mut self, devices: device::Devices) -> AccountService {
        self.devices = devices;
        self
    }

    /// Sets how long sessions last.
    pub fn session_ttl(mut self, ttl: Duration) -> AccountService {
        self.session_ttl = ttl;
        self
    }

    /// The uid registered under `name` (NOT_FOUND when none is), from the name index.
    /// The uid of the user named `name`; `NOT_FOUND` with reason `unknown_user` if none.
    async fn uid_named(&self, name: &str) -> Result<u64, Status> {
        match self
            .store
            .lookup_name_with(
                LookupNameRequest {
                    name: name.to_string(),
                },
                by_uid(name_key(name)),
            )
            .await
        {
            Ok(reply) => Ok(reply.uid),
            Err(e) if e.code() == Code::NotFound => {
                Err(Status::not_found(format!("no user named {name:?}"))
                    .with_reason("unknown_user"))
            }
            Err(e) => Err(e),
        }
    }

    async fn account(&self, uid: u64) -> Result<AccountRecord, Status> {
        self.store
            .get_account_with(GetAccountRequest { uid }, by_uid(uid))
            .await?
            .account
            .ok_or_else(|| Status::internal("the store answered without an account"))
    }
}

/// Checks a user name: 3 to 32 characters, ASCII letters, digits and `_`, starting with
/// a letter.
pub fn check_name(name: &str) -> Result<(), Status> {
    let ok = (3..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "a name has 3 to 32 letters, digits or _, and starts with a letter",
        ))
    }
}

/// The text fields of a profile and the most characters each holds.
pub const TEXT_FIELDS: [(&str, usize); 5] = [
    ("nickname", 64),
    ("avatar", 256),
    ("region", 64),
    ("signature", 140),
    ("phone", 32),
];

/// Checks a text profile field: within its length, and no control characters (NUL,
/// newlines, escapes); errors name the field.
pub fn check_field(name: &str, value: &str) -> Result<(), Status> {
    let max = TEXT_FIELDS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, max)| *max);
    let chars = value.chars().count();
    if chars > max {
        return Err(Status::invalid_argument(format!(
            "{name} has at most {max} characters, not {chars}"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{name} may not hold control characters"
        )));
    }
    Ok(())
}

fn change_text<'a>(p: &'a Profile, name: &str) -> Option<&'a String> {
    Some(match name {
        "nickname" => &p.nickname,
        "avatar" => &p.avatar,
        "region" => &p.region,
        "signature" => &p.signature,
        "phone" => &p.phone,
        _ => return None,
    })
}

fn record_text<'a>(r: &'a mut AccountRecord, name: &str) -> Option<&'a mut String> {
    Some(match name {
        "nickname" => &mut r.nickname,
        "avatar" => &mut r.avatar,
        "region" => &mut r.region,
        "signature" => &mut r.signature,
        "phone" => &mut r.phone,
        _ => return None,
    })
}

fn check_password(password: &str) -> Result<(), Status> {
    if (8..=128).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "a password has 8 to 128 characters",
        ))
    }
}

/// A fresh uid: random, below 2^53 so JavaScript clients keep it exact, above 10,000.
fn new_uid() -> Result<u64, Status> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| Status::internal(format!("no randomness: {e}")))?;
    Ok(10_000 + u64::from_le_bytes(bytes) % ((1u64 << 53) - 10_000))
}

/// `record` as `viewer` may see it.
pub fn profile_for(record: &AccountRecord, full: bool) -> Profile {
    let private = |f: ProfileField| record.private_fields.contains(&(f as i32));
    let mut profile = Profile {
        uid: record.uid,
        name: record.name.clone(),
        nickname: record.nickname.clone(),
        avatar: record.avatar.clone(),
        region: record.region.clone(),
        signature: record.signature.clone(),
        phone: record.phone.clone(),
        private_fields: record.private_fields.clone(),
        hidden: Vec::new(),
        version: record.version,
    };
    if !full {
        for (field, value) in [
            (ProfileField::Region, &mut profile.region),
            (ProfileField::Signature, &mut profile.signature),
            (ProfileField::Phone, &mut profile.phone),
        ] {
            if private(field) {
                value.clear();
                profile.hidden.push(field as i32);
            }
        }
        // Which fields someone hides is itself private.
        profile.private_fields.clear();
    }
    profile
}

impl Account for AccountService {
    async fn register(&self, request: RegisterRequest) -> Result<RegisterReply, Status> {
        check_name(&request.name)?;
        check_password(&request.password)?;
        check_field("nickname", &request.nickname)?;
        // Fail fast on a taken name before paying for the hash.
        match self
            .store
            .lookup_name_with(
                LookupNameRequest {
                    name: request.name.clone(),
                },
                by_uid(name_key(&request.name)),
            )
            .await
        {
            Ok(_) => {
                return Err(Status::already_exists(format!(
                    "the name {:?} is taken",
                    request.name
                ))
                .with_reason("name_taken"));
            }
            Err(e) if e.code() == Code::NotFound => {}
            Err(e) => return Err(e),
        }
        let uid = new_uid()?;
        let hash = password::hash(request.password).await?;
        let nickname = if request.nickname.is_empty() {
            request.name.clone()
        } else {
            request.nickname
        };
        let account = AccountRecord {
            uid,
            name: request.name.clone(),
            password_hash: hash,
            nickname,
            // The phone number is private unless the user says otherwise.
            private_fields: vec![ProfileField::Phone as i32],
            created_ms: now_ms(),
            ..AccountRecord::default()
        };
        self.store
            .create_account_with(
                CreateAccountRequest {
                    account: Some(account),
                },
                by_uid(uid),
            )
            .await?;
        let route = by_uid(name_key(&request.name));
        self.store
            .claim_name_with(
                ClaimNameRequest {
                    name: request.name,
                    uid,
                },
                route,
            )
            .await?;
        Ok(RegisterReply { uid })
    }

    async fn login(&self, request: LoginRequest) -> Result<LoginReply, Status> {
        // A known device proves itself by its credential alone (no read): it may take
        // the hashing queue's share kept for known devices.
        let presented = self.devices.recognise(&request.device);
        // Under pressure an unknown device pays first (a proof of work for this name),
        // so a flood of guesses costs the flooder what it costs us.
        let mut paid = false;
        if let Some(puzzles) = &self.puzzles {
            let (queued, capacity) = password::load();
            puzzles.observe(queued, capacity, now_ms());
            if presented.is_none() && puzzles.required(now_ms()) {
                puzzles.check(&request.name, &request.proof, now_ms())?;
                paid = true;
            }
        }
        // The password check's place first: when sign-ins come faster than the cores
        // hash, the ones refused cost no reads. A sign-in that paid may take the share
        // kept for known devices, like one: the guesses that filled the rest of the
        // queue before proofs were asked for must not refuse it after it paid.
        let place = password::reserve(presented.is_some() || paid)?;
        let uid = self.uid_named(&request.name).await?;
        // The credential counts for the account it was issued for only.
        let known = presented
            .filter(|(owner, _)| *owner == uid)
            .map(|(_, device)| device);
        let device = known.unwrap_or(0);
        if let Some(wait) = self.throttle.wait(uid, device, std::time::Instant::now()) {
            return Err(Status::resource_exhausted(format!(
                "too many wrong passwords; try again in {} s",
                wait.as_secs().max(1)
            ))
            .with_reason("login_throttled"));
        }
        let account = self.account(uid).await?;
        if !password::verify(place, request.password, account.password_hash).await? {
            self.throttle.failed(uid, device, std::time::Instant::now());
            return Err(Status::unauthenticated("wrong password").with_reason("wrong_password"));
        }
        self.throttle.succeeded(uid, device);
        // A device signed in: known from now on (it keeps its id, or gets a new one).
        let device_id = match known {
            Some(device) => device,
            None => token::random_u64()?,
        };
        let credential = self.devices.issue(uid, device_id).unwrap_or_default();
        let session = SessionRecord {
            session_id: token::new_session_id()?,
            uid,
            created_ms: now_ms(),
            expires_ms: now_ms() + self.session_ttl.as_millis() as u64,
        };
        let reply = LoginReply {
            uid,
            token: Token::of(&session).to_string(),
            expires_ms: session.expires_ms,
            device: credential,
        };
        self.store
            .put_session_with(
                PutSessionRequest {
                    session: Some(session),
                },
                by_uid(uid),
            )
            .await?;
        Ok(reply)
    }

    async fn login_challenge(
        &self,
        request: LoginChallengeRequest,
    ) -> Result<LoginChallengeReply, Status> {
        let Some(puzzles) = &self.puzzles else {
            return Err(Status::failed_precondition(
                "this service asks for no proof of work",
            ));
        };
        check_name(&request.name)?;
        Ok(LoginChallengeReply {
            challenge: puzzles.challenge(&request.name, now_ms())?,
            bits: puzzles.bits(),
        })
    }

    async fn logout(&self, request: LogoutRequest) -> Result<LogoutReply, Status> {
        let token: Token = request
            .token
            .parse()
            .map_err(|_| Status::unauthenticated("invalid session token"))?;
        self.store
            .delete_session_with(
                GetSessionRequest {
                    uid: token.uid,
                    session_id: token.session_id,
                },
                by_uid(token.uid),
            )
            .await?;
        Ok(LogoutReply {})
    }

    async fn verify_token(&self, request: VerifyTokenRequest) -> Result<VerifyTokenReply, Status> {
        let invalid = VerifyTokenReply {
            state: TokenState::Invalid as i32,
            uid: 0,
            expires_ms: 0,
        };
        let Ok(token) = request.token.parse::<Token>() else {
            return Ok(invalid);
        };
        let session = match self
            .store
            .get_session_with(
                GetSessionRequest {
                    uid: token.uid,
                    session_id: token.session_id,
                },
                by_uid(token.uid),
            )
            .await
        {
            Ok(session) => session,
            Err(e) if e.code() == Code::NotFound => return Ok(invalid),
            Err(e) => return Err(e),
        };
        let state = if session.expires_ms <= now_ms() {
            TokenState::Expired
        } else {
            TokenState::Valid
        };
        Ok(VerifyTokenReply {
            state: state as i32,
            uid: session.uid,
            expires_ms: session.expires_ms,
        })
    }

    async fn get_profiles(&self, request: GetProfilesRequest) -> Result<GetProfilesReply, Status> {
        let viewer = acting_user()?;
        if request.uids.len() > wx_api::MAX_FRIENDS as usize {
            return Err(Status::invalid_argument(format!(
                "at most {} profiles per call",
                wx_api::MAX_FRIENDS
            )));
        }
        // Each user once, whatever the request repeats.
        let mut seen = std::collections::HashSet::new();
        let uids: Vec<u64> = request
            .uids
            .into_iter()
            .filter(|u| seen.insert(*u))
            .collect();
        let request = GetProfilesRequest { uids };
        let relations = self
            .contact
            .check(CheckRequest {
                peers: request.uids.clone(),
            })
            .await?
            .relations;
        let mut fetches = tokio::task::JoinSet::new();
        for (i, uid) in request.uids.iter().copied().enumerate() {
            let service = self.clone();
            let ctx = svrkit::Context::current();
            fetches.spawn(ctx.scope(async move { (i, service.account(uid).await) }));
        }
        let mut found: Vec<(usize, Profile)> = Vec::with_capacity(request.uids.len());
        while let Some(joined) = fetches.join_next().await {
            let (i, result) = joined.map_err(|e| Status::internal(e.to_string()))?;
            match result {
                Ok(record) => {
                    let full = record.uid == viewer
                        || relations.get(i).copied() == Some(Relation::Friend as i32);
                    found.push((i, profile_for(&record, full)));
                }
                Err(e) if e.code() == Code::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        found.sort_by_key(|(i, _)| *i);
        Ok(GetProfilesReply {
            profiles: found.into_iter().map(|(_, p)| p).collect(),
        })
    }

    async fn update_profile(&self, request: UpdateProfileRequest) -> Result<Profile, Status> {
        let uid = acting_user()?;
        let change = request.profile.unwrap_or_default();
        // Optimistic concurrency: re-read and re-apply when another update got in first.
        retry_on_conflict(PROFILE_UPDATE_ATTEMPTS, || async {
            let mut record = self.account(uid).await?;
            let expected = record.version;
            for field in &request.mask {
                if let (Some(value), Some(target)) =
                    (change_text(&change, field), record_text(&mut record, field))
                {
                    check_field(field, value)?;
                    target.clone_from(value);
                    continue;
                }
                match field.as_str() {
                    "private_fields" => {
                        if change.private_fields.iter().any(|f| {
                            ProfileField::try_from(*f)
                                .map_or(true, |f| f == ProfileField::Unspecified)
                        }) {
                            return Err(Status::invalid_argument(
                                "private_fields may hold region, signature and phone",
                            ));
                        }
                        record.private_fields = change.private_fields.clone();
                    }
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "unknown profile field {other:?}"
                        )));
                    }
                }
            }
            let reply = self
                .store
                .update_account_with(
                    UpdateAccountRequest {
                        account: Some(record),
                        expected_version: expected,
                    },
                    by_uid(uid),
                )
                .await?;
            let record = reply
                .account
                .ok_or_else(|| Status::internal("the store answered without an account"))?;
            Ok(profile_for(&record, true))
        })
        .await
        .map_err(|status| match status.code() {
            Code::Aborted => Status::aborted("the profile kept changing; try again"),
            _ => status,
        })
    }

    async fn find_user(&self, request: FindUserRequest) -> Result<Profile, Status> {
        acting_user()?;
        check_name(&request.name)?;
        let uid = self.uid_named(&request.name).await?;
        let found = self
            .get_profiles(GetProfilesRequest { uids: vec![uid] })
            .await?;
        found.profiles.into_iter().next().ok_or_else(|| {
            Status::not_found(format!("no user named {}", request.name)).with_reason("unknown_user")
        })
    }

    async fn exists(&self, request: ExistsRequest) -> Result<ExistsReply, Status> {
        let mut exists = Vec::with_capacity(request.uids.len());
        for uid in request.uids {
            exists.push(match self.account(uid).await {
                Ok(_) => true,
                Err(e) if e.code() == Code::NotFound => false,
                Err(e) => return Err(e),
            });
        }
        Ok(ExistsReply { exists })
    }
}
