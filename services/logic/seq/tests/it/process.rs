//! The real binaries: a `seqstore` shard and two `seq` allocators, each its own process
//! on loopback with the embedded registry. While numbers flow, the allocator serving them
//! is killed with SIGKILL (the other takes over), then restarted (and serves again):
//! no caller ever sees a number repeat or go back.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use svrkit::Channel;
use svrkit::balance::Balance;
use svrkit::discovery::{EmbeddedRegistry, discover};
use svrkit::launch::Announcement;
use wx_api::seq::{NextRequest, SeqClient, seq_methods};

/// A service process, killed when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary` as instance `id` and waits until it says where it listens.
fn start(binary: &Path, id: &str, registry: &Path, data: &Path, env: &[(&str, &str)]) -> Proc {
    let mut child = Command::new(binary)
        .env("SVRKIT_LISTEN", "127.0.0.1:0")
        .env("SVRKIT_ADMIN", "off")
        .env("SVRKIT_REGISTRY", format!("dir:{}", registry.display()))
        .env("SVRKIT_INSTANCE_ID", id)
        .env("SVRKIT_DATA_DIR", data.join(id))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let listening = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| matches!(Announcement::parse(&l), Some(Announcement::Listening(_))));
    assert!(listening, "{id} exited before listening");
    std::thread::spawn(move || lines.for_each(drop));
    Proc { child }
}

fn binary(name: &str) -> PathBuf {
    svrkit_testkit::workspace_binary(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_failover_and_restart_never_repeat_or_go_back() {
    let dir_dir = svrkit_testkit::tempdir("seq-process");
    let dir = dir_dir.path();
    let registry = dir.join("registry");
    let data = dir.join("data");
    let (seqstore, seq) = (binary("seqstore"), binary("seq"));
    let _store = start(&seqstore, "seqstore-1", &registry, &data, &[]);
    let allocator_env = [("WX_SEQ_LEASE_MS", "600"), ("WX_SEQ_STEP", "50")];
    let mut allocators = vec![
        Some(start(&seq, "seq-1", &registry, &data, &allocator_env)),
        Some(start(&seq, "seq-2", &registry, &data, &allocator_env)),
    ];

    let registry_client = EmbeddedRegistry::new(&registry);
    let channel = discover(
        &registry_client,
        seq_methods::SERVICE_NAME,
        Channel::builder().balance(Balance::ConsistentHash),
    )
    .await
    .expect("discover");
    let client = SeqClient::new(channel);
    // Users of a handful of sections.
    let uids: Vec<u64> = (1..=12).map(|i| i * 7_919).collect();
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut epochs: HashMap<u32, u64> = HashMap::new();
    let mut served = 0u32;
    let mut failed = 0u32;
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut phase = 0;
    while phase < 3 && Instant::now() < give_up {
        for &uid in &uids {
            let options = wx_api::by_section(wx_api::seq_section(uid));
            match client.next_with(NextRequest { uid }, options).await {
                Ok(reply) => {
                    let before = last.insert(uid, reply.seq).unwrap_or(0);
                    assert!(
                        reply.seq > before,
                        "uid {uid}: {} after {before} (phase {phase})",
                        reply.seq
                    );
                    let epoch = epochs.entry(reply.section).or_default();
                    assert!(reply.epoch >= *epoch, "epochs never go back");
                    *epoch = reply.epoch;
                    served += 1;
                }
                // While a dead allocator's lease runs out its sections are unavailable.
                Err(status) => {
                    assert_eq!(status.code(), svrkit::Code::Unavailable, "{status}");
                    failed += 1;
                }
            }
        }
        match (phase, served) {
            // Mid-stream: SIGKILL the first allocator (Child::kill sends SIGKILL).
            (0, n) if n >= 200 => {
                allocators[0] = None;
                phase = 1;
                served = 0;
            }
            // The survivor serves every section, the dead one's too once their lease
            // lapsed (however fast the first 200 came); now the dead one comes back.
            (1, n) if n >= 200 && epochs.values().any(|e| *e > 1) => {
                allocators[0] = Some(start(&seq, "seq-1", &registry, &data, &allocator_env));
                phase = 2;
                served = 0;
            }
            (2, n) if n >= 200 => phase = 3,
            _ => {}
        }
    }
    assert_eq!(
        phase, 3,
        "every phase served 200 numbers ({failed} calls failed)"
    );
    assert!(
        epochs.values().any(|e| *e > 1),
        "some section changed hands: {epochs:?}"
    );
    drop(allocators);
}
