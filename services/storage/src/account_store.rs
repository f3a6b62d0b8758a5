//! `wx.storage.AccountStore`: accounts by uid, the name index by name, sessions by uid.

use fjall::Keyspace;
use prost::Message;
use svrkit::Status;
use wx_api::storage::account_store_server::AccountStore;
use wx_api::storage::{
    AccountRecord, AccountReply, ClaimNameReply, ClaimNameRequest, CreateAccountRequest,
    DeleteSessionReply, GetAccountRequest, GetSessionRequest, LookupNameReply, LookupNameRequest,
    PutSessionReply, PutSessionRequest, SessionRecord, UpdateAccountRequest,
};

use crate::codec::{decode, get, id_key};
use crate::engine::{Engine, StorageError};

/// The account store of one shard.
#[derive(Clone)]
pub struct AccountStoreService {
    engine: Engine,
    accounts: Keyspace,
    names: Keyspace,
    sessions: Keyspace,
}

impl std::fmt::Debug for AccountStoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountStoreService")
            .field("engine", &self.engine)
            .finish()
    }
}

impl AccountStoreService {
    /// The store on `engine`.
    pub fn new(engine: Engine) -> Result<AccountStoreService, StorageError> {
        Ok(AccountStoreService {
            accounts: engine.keyspace("accounts")?,
            names: engine.keyspace("names")?,
            sessions: engine.keyspace("sessions")?,
            engine,
        })
    }
}

fn session_key(uid: u64, session_id: &str) -> Vec<u8> {
    let mut key = id_key(uid).to_vec();
    key.extend_from_slice(session_id.as_bytes());
    key
}

fn check_name(name: &str) -> Result<String, Status> {
    if name.is_empty() || name.len() > 64 {
        return Err(Status::invalid_argument("a name has 1 to 64 bytes"));
    }
    Ok(name.to_lowercase())
}

impl AccountStore for AccountStoreService {
    async fn claim_name(&self, request: ClaimNameRequest) -> Result<ClaimNameReply, Status> {
        let name = check_name(&request.name)?;
        if request.uid == 0 {
            return Err(Status::invalid_argument("uid 0 cannot hold a name"));
        }
        let _guard = self.engine.lock(name.as_bytes()).await;
        if let Some(bytes) = self
            .names
            .get(name.as_bytes())
            .map_err(StorageError::from)?
        {
            let holder = bytes
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| Status::internal("corrupt name record"))?;
            if holder == request.uid {
                return Ok(ClaimNameReply { uid: holder });
            }
            return Err(Status::already_exists(format!(
                "the name {:?} is taken",
                request.name
            )));
        }
        let mut batch = self.engine.batch();
        batch.insert(&self.names, name.as_bytes(), id_key(request.uid).to_vec());
        self.engine.commit(batch).await?;
        Ok(ClaimNameReply { uid: request.uid })
    }

    async fn lookup_name(&self, request: LookupNameRequest) -> Result<LookupNameReply, Status> {
        let name = check_name(&request.name)?;
        match self
            .names
            .get(name.as_bytes())
            .map_err(StorageError::from)?
        {
            Some(bytes) => Ok(LookupNameReply {
                uid: bytes
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| Status::internal("corrupt name record"))?,
            }),
            None => Err(Status::not_found(format!(
                "no user named {:?}",
                request.name
            ))),
        }
    }

    async fn create_account(&self, request: CreateAccountRequest) -> Result<AccountReply, Status> {
        let mut account = request
            .account
            .ok_or_else(|| Status::invalid_argument("no account given"))?;
        if account.uid == 0 {
            return Err(Status::invalid_argument("uid 0 is reserved"));
        }
        let key = id_key(account.uid);
        let _guard = self.engine.lock(&key).await;
        if self
            .accounts
            .contains_key(key)
            .map_err(StorageError::from)?
        {
            return Err(Status::already_exists(format!(
                "uid {} exists",
                account.uid
            )));
        }
        account.version = 1;
        let mut batch = self.engine.batch();
        batch.insert(&self.accounts, key.to_vec(), account.encode_to_vec());
        self.engine.commit(batch).await?;
        Ok(AccountReply {
            account: Some(account),
        })
    }

    async fn get_account(&self, request: GetAccountRequest) -> Result<AccountReply, Status> {
        let account: Option<AccountRecord> = get(&self.accounts, &id_key(request.uid))?;
        match account {
            Some(account) => Ok(AccountReply {
                account: Some(account),
            }),
            None => Err(Status::not_found(format!("no account {}", request.uid))),
        }
    }

    async fn update_account(&self, request: UpdateAccountRequest) -> Result<AccountReply, Status> {
        let mut account = request
            .account
            .ok_or_else(|| Status::invalid_argument("no account given"))?;
        let key = id_key(account.uid);
        let _guard = self.engine.lock(&key).await;
        let current: AccountRecord = get(&self.accounts, &key)?
            .ok_or_else(|| Status::not_found(format!("no account {}", account.uid)))?;
        if current.version != request.expected_version {
            return Err(Status::aborted(format!(
                "account {} is at version {}, not {}",
                account.uid, current.version, request.expected_version
            )));
        }
        account.version = current.version + 1;
        let mut batch = self.engine.batch();
        batch.insert(&self.accounts, key.to_vec(), account.encode_to_vec());
        self.engine.commit(batch).await?;
        Ok(AccountReply {
            account: Some(account),
        })
    }

    async fn put_session(&self, request: PutSessionRequest) -> Result<PutSessionReply, Status> {
        let session = request
            .session
            .ok_or_else(|| Status::invalid_argument("no session given"))?;
        if session.uid == 0 || session.session_id.is_empty() {
            return Err(Status::invalid_argument("a session needs a uid and an id"));
        }
        let mut batch = self.engine.batch();
        batch.insert(
            &self.sessions,
            session_key(session.uid, &session.session_id),
            session.encode_to_vec(),
        );
        self.engine.commit(batch).await?;
        Ok(PutSessionReply {})
    }

    async fn get_session(&self, request: GetSessionRequest) -> Result<SessionRecord, Status> {
        let key = session_key(request.uid, &request.session_id);
        match self.sessions.get(&key).map_err(StorageError::from)? {
            Some(bytes) => Ok(decode(&key, &bytes)?),
            None => Err(Status::not_found("no such session")),
        }
    }

    async fn delete_session(
        &self,
        request: GetSessionRequest,
    ) -> Result<DeleteSessionReply, Status> {
        let mut batch = self.engine.batch();
        batch.remove(
            &self.sessions,
            session_key(request.uid, &request.session_id),
        );
        self.engine.commit(batch).await?;
        Ok(DeleteSessionReply {})
    }
}
