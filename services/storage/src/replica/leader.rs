//! Reaching a shard's leader from outside its group (backups, replica changes): ask a
//! replica, follow the leader it names, wait out an election.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use svrkit::config::ConfigStore;
use svrkit::launch::Launch;
use svrkit::{Channel, Status};
use wx_api::storage::replication_client::ReplicationClient;

/// How many replicas are asked before giving up.
const TRIES: usize = 10;
/// The pause before asking again while no replica names a leader.
const ELECTION_PAUSE: Duration = Duration::from_millis(200);

/// Calls `call` on the replicas of a shard (`replicas`, at `addrs` by instance id),
/// starting with the first and following the leader each follower names, until the
/// leader answers; returns its answer and a client to it. The error says why no leader
/// answered (the last refusal, or a replica that is not registered).
pub async fn on_leader<T, F, Fut>(
    replicas: &[String],
    addrs: &[(String, SocketAddr)],
    mut call: F,
) -> Result<(T, ReplicationClient), String>
where
    F: FnMut(ReplicationClient) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut next = replicas.first().cloned();
    for tries in 1..=TRIES {
        let Some(name) = next.take() else { break };
        let addr = addrs
            .iter()
            .find(|(id, _)| *id == name)
            .map(|(_, a)| *a)
            .ok_or_else(|| format!("{name} is not registered"))?;
        let client = ReplicationClient::new(Channel::builder().max_attempts(1).lazy([addr]));
        match call(client.clone()).await {
            Ok(answer) => return Ok((answer, client)),
            Err(e) if e.reason() == Some(svrkit::client::NOT_LEADER) && tries < TRIES => {
                let hint = String::from_utf8_lossy(e.details()).into_owned();
                next = if hint.is_empty() {
                    // No leader yet: ask the replicas in turn.
                    tokio::time::sleep(ELECTION_PAUSE).await;
                    replicas.get(tries % replicas.len().max(1)).cloned()
                } else {
                    Some(hint)
                };
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("no replica named a leader".into())
}

/// What an operator's tool (`wx-backup`, `wx-replica`) sees of a store's cluster, from
/// its environment (`SVRKIT_REGISTRY`, and the operator's TLS files when there are any):
/// the configuration store holding the shard map, and where the instances are now.
pub struct Cluster {
    /// The registry's configuration store.
    pub config: Arc<dyn ConfigStore>,
    /// Every registered instance of the service: (instance id, address).
    pub addrs: Vec<(String, SocketAddr)>,
}

impl Cluster {
    /// The cluster of `service` as this process's environment describes it.
    pub async fn from_env(service: &str) -> Result<Cluster, super::ReplicaError> {
        let failed = |e: &dyn std::fmt::Display| super::ReplicaError::Launch(e.to_string());
        let launch = Launch::from_env("operator").map_err(|e| failed(&e))?;
        let registry = launch
            .registry()
            .ok_or_else(|| failed(&"SVRKIT_REGISTRY names no registry"))?;
        let config = launch
            .config_store()
            .ok_or_else(|| failed(&"the registry has no configuration store"))?;
        let live = registry
            .watch(service)
            .await
            .map_err(|e| failed(&e))?
            .borrow()
            .clone();
        Ok(Cluster {
            config,
            addrs: live.iter().map(|i| (i.id.clone(), i.addr)).collect(),
        })
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}
