//! The embedded registry: a directory of instance records with heartbeats.
//!
//! Layout: `ROOT/services/SERVICE/INSTANCE_ID.json`, one JSON record per instance
//! (its [`Instance`] fields plus `heartbeat_unix_ms` and the writer's `ttl_ms`). A registered instance rewrites its
//! record every TTL/3 (write to a temporary file, then rename, so readers never see half a
//! record); deregistering deletes it. Watchers poll the service's directory and publish
//! the set of records whose heartbeat is younger than the TTL, removing older ones. Every
//! process on the machine that points at the same root shares the registry; it survives
//! restarts, and needs nothing installed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::BoxFuture;
use crate::config::{ConfigDoc, ConfigStore};
use crate::discovery::{DiscoveryError, Instance, Instances, Registration, Registry, follow};

/// Records older than this are dead (3 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3);
/// How often watchers look for changes (100 ms).
pub const DEFAULT_POLL: Duration = Duration::from_millis(100);

/// The longest pause of a watcher that has seen nothing change for a while (1 s).
///
/// A watcher polls every [`DEFAULT_POLL`] while what it follows changed in the last
/// [`QUIET_BEFORE_SLOWING`] (so a cluster that is starting, or an instance coming and
/// going, is seen as fast as before), then doubles its pause up to this: an idle
/// process's watchers (a dozen in a gateway) wake a tenth as often, and the first change
/// after a quiet spell is seen within a second at worst.
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// How long a watcher keeps polling fast after it started or saw a change (10 s).
pub const QUIET_BEFORE_SLOWING: Duration = Duration::from_secs(10);

/// Follows what `read` returns (see [`follow`]), waiting `fast` between reads until
/// nothing has changed for [`QUIET_BEFORE_SLOWING`], then doubling the wait up to
/// [`IDLE_POLL`] (or `fast`, when that is longer) until the next change.
fn follow_paced<T, F, Fut>(first: T, fast: Duration, read: F) -> watch::Receiver<T>
where
    T: PartialEq + Clone + Send + Sync + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<T>> + Send + 'static,
{
    let slowest = IDLE_POLL.max(fast);
    // The pause, the last value read, and when it last changed.
    let state = Arc::new(Mutex::new((
        fast,
        first.clone(),
        tokio::time::Instant::now(),
    )));
    let read = Arc::new(read);
    follow(first, move || {
        let (state, read) = (Arc::clone(&state), Arc::clone(&read));
        async move {
            let pause = state.lock().unwrap_or_else(PoisonError::into_inner).0;
            tokio::time::sleep(pause).await;
            let now = read().await?;
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            if now != state.1 {
                state.2 = tokio::time::Instant::now();
                state.1 = now.clone();
            }
            state.0 = if state.2.elapsed() < QUIET_BEFORE_SLOWING {
                fast
            } else {
                (state.0 * 2).min(slowest)
            };
            Some(now)
        }
    })
}

/// A registry in a directory shared by the processes of one machine.
#[derive(Debug, Clone)]
pub struct EmbeddedRegistry {
    root: PathBuf,
    ttl: Duration,
    poll: Duration,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Record {
    #[serde(flatten)]
    instance: Instance,
    heartbeat_unix_ms: u64,
    /// The writer's TTL: readers judge a record by the TTL it was written with.
    #[serde(default)]
    ttl_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A file-name-safe form of a service name or instance id.
fn safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl EmbeddedRegistry {
    /// A registry rooted at `root` (created when needed) with the default TTL and poll.
    pub fn new(root: impl Into<PathBuf>) -> EmbeddedRegistry {
        EmbeddedRegistry {
            root: root.into(),
            ttl: DEFAULT_TTL,
            poll: DEFAULT_POLL,
        }
    }

    /// The root used when none is given: `$SVRKIT_HOME/registry`, else `.svrkit/registry`.
    pub fn default_root() -> PathBuf {
        std::env::var_os("SVRKIT_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".svrkit"))
            .join("registry")
    }

    /// Sets how long a record lives without a heartbeat.
    pub fn ttl(mut self, ttl: Duration) -> EmbeddedRegistry {
        self.ttl = ttl;
        self
    }

    /// Sets how often watchers poll.
    pub fn poll(mut self, poll: Duration) -> EmbeddedRegistry {
        self.poll = poll;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn service_dir(&self, service: &str) -> PathBuf {
        self.root.join("services").join(safe(service))
    }

    fn record_path(&self, instance: &Instance) -> PathBuf {
        self.service_dir(&instance.service)
            .join(format!("{}.json", safe(&instance.id)))
    }

    /// Writes the record with a fresh heartbeat, atomically.
    fn heartbeat(&self, instance: &Instance) -> Result<(), DiscoveryError> {
        let path = self.record_path(instance);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let record = Record {
            instance: instance.clone(),
            heartbeat_unix_ms: now_ms(),
            ttl_ms: self.ttl.as_millis() as u64,
        };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&record)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// The live instances of `service`; expired records are removed.
    pub fn live(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        let dir = self.service_dir(service);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let now = now_ms();
        let mut live = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let record: Record = match std::fs::read(&path)
                .map(|bytes| serde_json::from_slice(&bytes))
            {
                Ok(Ok(record)) => record,
                // Gone between listing and reading, or not a record: skip it.
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable registry record");
                    continue;
                }
                Err(_) => continue,
            };
            let ttl = if record.ttl_ms == 0 {
                self.ttl.as_millis() as u64
            } else {
                record.ttl_ms
            };
            if now.saturating_sub(record.heartbeat_unix_ms) > ttl {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            live.push(record.instance);
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }

    /// All services with at least one record.
    pub fn services(&self) -> Result<Vec<String>, DiscoveryError> {
        let dir = self.root.join("services");
        let mut names = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    names.push(entry?.file_name().to_string_lossy().into_owned());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        names.sort();
        Ok(names)
    }
}

impl Registry for EmbeddedRegistry {
    fn register(
        &self,
        instance: Instance,
    ) -> BoxFuture<'static, Result<Registration, DiscoveryError>> {
        let this = self.clone();
        Box::pin(async move {
            this.heartbeat(&instance)?;
            let (beat, beating) = (this.clone(), instance.clone());
            let heartbeats = async move {
                let mut tick = tokio::time::interval(beat.ttl / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let (registry, instance) = (beat.clone(), beating.clone());
                    let written =
                        tokio::task::spawn_blocking(move || registry.heartbeat(&instance)).await;
                    if let Ok(Err(e)) = written {
                        tracing::warn!(error = %e, "registry heartbeat failed");
                    }
                }
            };
            let path = this.record_path(&instance);
            Ok(Registration::kept_alive(heartbeats, move || {
                Box::pin(async move {
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                        _ => Ok(()),
                    }
                })
            }))
        })
    }

    fn watch(
        &self,
        service: &str,
    ) -> BoxFuture<'static, Result<watch::Receiver<Instances>, DiscoveryError>> {
        let this = self.clone();
        let service = service.to_string();
        Box::pin(async move {
            let first: Instances = this.live(&service)?.into();
            let poll = this.poll;
            Ok(follow_paced(first, poll, move || {
                let (registry, name) = (this.clone(), service.clone());
                async move {
                    match tokio::task::spawn_blocking(move || registry.live(&name)).await {
                        Ok(Ok(now)) => Some(Instances::from(now)),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "registry poll failed; keeping the last instances");
                            None
                        }
                        Err(_) => None,
                    }
                }
            }))
        })
    }
}

impl EmbeddedRegistry {
    fn config_path(&self, service: &str) -> PathBuf {
        self.root
            .join("config")
            .join(format!("{}.json", safe(service)))
    }

    fn read_config(&self, service: &str) -> Result<ConfigDoc, DiscoveryError> {
        match std::fs::read(self.config_path(service)) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigDoc::default()),
            Err(e) => Err(e.into()),
        }
    }
}

impl ConfigStore for EmbeddedRegistry {
    fn load(&self, service: &str) -> BoxFuture<'static, Result<ConfigDoc, DiscoveryError>> {
        let (this, service) = (self.clone(), service.to_string());
        Box::pin(async move { this.read_config(&service) })
    }

    fn store(
        &self,
        service: &str,
        doc: ConfigDoc,
    ) -> BoxFuture<'static, Result<(), DiscoveryError>> {
        let path = self.config_path(service);
        Box::pin(async move {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)?;
            std::fs::rename(&tmp, &path)?;
            Ok(())
        })
    }

    fn watch_config(
        &self,
        service: &str,
    ) -> BoxFuture<'static, Result<watch::Receiver<std::sync::Arc<ConfigDoc>>, DiscoveryError>>
    {
        let (this, service) = (self.clone(), service.to_string());
        Box::pin(async move {
            let first = std::sync::Arc::new(this.read_config(&service)?);
            let poll = this.poll;
            Ok(follow_paced(first, poll, move || {
                let (registry, name) = (this.clone(), service.clone());
                async move {
                    match registry.read_config(&name) {
                        Ok(now) => Some(std::sync::Arc::new(now)),
                        Err(e) => {
                            tracing::warn!(error = %e, "reading config failed; keeping the last document");
                            None
                        }
                    }
                }
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_quiet_watcher_slows_down_and_a_change_speeds_it_up_again() {
        let reads = Arc::new(AtomicU32::new(0));
        let value = Arc::new(AtomicU32::new(1));
        let (r, v) = (Arc::clone(&reads), Arc::clone(&value));
        let mut rx = follow_paced(1u32, DEFAULT_POLL, move || {
            r.fetch_add(1, Ordering::Relaxed);
            let now = v.load(Ordering::Relaxed);
            async move { Some(now) }
        });
        // Fast for the first ten seconds (a cluster starting)...
        tokio::time::sleep(QUIET_BEFORE_SLOWING + Duration::from_millis(50)).await;
        let fast = reads.load(Ordering::Relaxed);
        assert_eq!(fast, 100, "every 100 ms while recently changed");
        // ...then pauses of 200, 400, 800, 1000, 1000 ms: five reads in 3.4 s, not 34.
        tokio::time::sleep(Duration::from_millis(3_400)).await;
        assert_eq!(reads.load(Ordering::Relaxed), fast + 5);
        // A change is seen within a second and published; the pace is fast again.
        value.store(2, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_millis(1_001), rx.changed())
            .await
            .expect("seen within a second")
            .expect("still followed");
        assert_eq!(*rx.borrow(), 2);
        let seen_at = reads.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        assert_eq!(reads.load(Ordering::Relaxed), seen_at + 10, "fast again");
    }
}
