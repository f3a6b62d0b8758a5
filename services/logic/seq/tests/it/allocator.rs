//! Allocators against a real `seqstore` shard (fjall on a temporary directory), each
//! served on its own loopback port: numbers only go up, the step is persisted before it is
//! used, a restarted allocator waits out its old lease, and racing allocators take turns.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use svrkit::{Channel, Code, Server, Status};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wx_api::seq::SeqClient;
use wx_api::seq::seq_server::SeqServer;
use wx_api::storage::seq_store_server::SeqStoreServer;
use wx_api::storage::{GetSectionRequest, SeqStoreClient};
use wx_storage::{Engine, SeqStoreService};

/// A running server and what stops it.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops at once, like a crash: the allocator's state and lease are abandoned.
    fn kill(mut self) {
        self.task.abort();
        drop(self.stop.take());
    }
}

async fn serve(server: Server) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

/// A seqstore shard on a fresh directory, and a client of it.
/// A seqstore on loopback, its client, and its data directory, which must outlive it (it
/// is removed when dropped).
async fn seqstore() -> (svrkit_testkit::TempDir, Running, Channel) {
    let dir = svrkit_testkit::tempdir("seqstore");
    let engine = Engine::open(dir.path()).expect("engine");
    let service = SeqStoreService::new(engine).expect("store");
    let running = serve(Server::builder().add_service(SeqStoreServer::new(service))).await;
    let channel = Channel::lazy([running.addr]);
    (dir, running, channel)
}

/// An allocator `id` with a short lease and a small step, and a client of it alone.
async fn allocator(store: &Channel, id: &str) -> (Running, SeqClient) {
    let mut settings = seq::Settings::new(id);
    settings.lease = Duration::from_millis(400);
    settings.step = 10;
    // Each allocator has its own task tree: aborting the server task drops the service,
    // which ends its renewal loop as a crash would.
    let service = seq::SeqService::new(store.clone(), settings);
    let running = serve(Server::builder().add_service(SeqServer::new(service))).await;
    let client = SeqClient::new(Channel::lazy([running.addr]));
    (running, client)
}

async fn next(client: &SeqClient, uid: u64) -> Result<wx_api::seq::NextReply, Status> {
    client.next(wx_api::seq::NextRequest { uid }).await
}

/// `next`, asked again while the answer is "not mine" (a lease still running elsewhere),
/// for at most the testkit's patience.
async fn next_when_served(client: &SeqClient, uid: u64) -> wx_api::seq::NextReply {
    let give_up = std::time::Instant::now() + svrkit_testkit::PATIENCE;
    loop {
        match next(client, uid).await {
            Ok(reply) => return reply,
            Err(status) if status.is_not_processed() && std::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("uid {uid}: {status}"),
        }
    }
}

/// Two uids in one section, found by search (sections are a hash of the uid).
fn uids_in_one_section(count: usize) -> Vec<u64> {
    let section = wx_api::seq_section(1);
    (1..)
        .filter(|u| wx_api::seq_section(*u) == section)
        .take(count)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_go_up_and_the_step_is_persisted_before_it_is_used() {
    let (_data, _store, store) = seqstore().await;
    let (_a, a) = allocator(&store, "a").await;
    let store_client = SeqStoreClient::new(store.clone());
    let uids = uids_in_one_section(3);
    let mut last: HashMap<u64, u64> = HashMap::new();
    for round in 0..60 {
        for &uid in &uids {
            let reply = next(&a, uid).await.expect("allocated");
            let before = last.insert(uid, reply.seq).unwrap_or(0);
            assert!(
                reply.seq > before,
                "round {round}: {} after {before}",
                reply.seq
            );
            // The section's persisted bound already covers what was handed out.
            let record = store_client
                .get_section(GetSectionRequest {
                    section: reply.section,
                })
                .await
                .expect("record");
            assert!(record.max_seq >= reply.seq, "{record:?} vs {}", reply.seq);
            assert_eq!(record.owner, "a");
        }
    }
    let err = next(&a, 0).await.expect_err("uid 0");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_allocator_waits_out_its_lease_and_continues_above() {
    let (_data, _store, store) = seqstore().await;
    let uid = 42;
    let (a, client) = allocator(&store, "a").await;
    let mut last = 0;
    for _ in 0..25 {
        last = next(&client, uid).await.expect("allocated").seq;
    }
    let first_epoch = next(&client, uid).await.expect("allocated").epoch;
    last += 1;
    a.kill();
    // The same instance id, restarted with no memory: it may not reuse the old lease.
    let (_a2, client) = allocator(&store, "a").await;
    let reply = next_when_served(&client, uid).await;
    assert!(reply.seq > last, "{} after {last}", reply.seq);
    assert!(reply.epoch > first_epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_allocators_take_turns_and_never_interleave() {
    let (_data, _store, store) = seqstore().await;
    let (a, client_a) = allocator(&store, "a").await;
    let (_b, client_b) = allocator(&store, "b").await;
    let uids = uids_in_one_section(4);
    // (uid, seq, epoch) of every number handed out by either allocator.
    let mut handed = Vec::new();
    let mut not_mine = 0;
    let mut a = Some(a);
    let give_up = std::time::Instant::now() + svrkit_testkit::PATIENCE;
    for round in 0.. {
        if round == 150 {
            // The holder crashes mid-stream; the other must take over, after the lease.
            if let Some(a) = a.take() {
                a.kill();
            }
        }
        for (i, &uid) in uids.iter().enumerate() {
            let client = if (round + i) % 2 == 0 {
                &client_a
            } else {
                &client_b
            };
            match next(client, uid).await {
                Ok(reply) => handed.push((uid, reply.seq, reply.epoch)),
                Err(status) if status.is_not_processed() => not_mine += 1,
                Err(status) if status.code() == Code::Unavailable => {}
                Err(status) => panic!("unexpected {status}"),
            }
        }
        let taken_over = handed.iter().filter(|h| h.2 > 1).count() > 40;
        if (round > 150 && taken_over) || std::time::Instant::now() > give_up {
            break;
        }
    }
    assert!(not_mine > 0, "the allocator without the lease refused");
    let epochs: std::collections::BTreeSet<u64> = handed.iter().map(|h| h.2).collect();
    assert!(epochs.len() >= 2, "the section changed hands: {epochs:?}");
    for &uid in &uids {
        let mine: Vec<(u64, u64)> = handed
            .iter()
            .filter(|h| h.0 == uid)
            .map(|h| (h.1, h.2))
            .collect();
        // In the order they were handed out, numbers rise and epochs never go back: the
        // numbers of one owner all lie below the next owner's.
        for pair in mine.windows(2) {
            assert!(pair[1].0 > pair[0].0, "uid {uid}: {pair:?}");
            assert!(pair[1].1 >= pair[0].1, "uid {uid}: {pair:?}");
        }
    }
}

/// A seqstore whose writes each take `delay`, as a loaded store's do.
#[derive(Clone)]
struct SlowStore {
    inner: wx_storage::SeqStoreService,
    delay: Duration,
    /// `PutSections` requests seen.
    batches: Arc<std::sync::atomic::AtomicU64>,
}

impl wx_api::storage::seq_store_server::SeqStore for SlowStore {
    async fn get_section(
        &self,
        request: GetSectionRequest,
    ) -> Result<wx_api::storage::SectionRecord, Status> {
        self.inner.get_section(request).await
    }

    async fn put_section(
        &self,
        request: wx_api::storage::PutSectionRequest,
    ) -> Result<wx_api::storage::SectionRecord, Status> {
        tokio::time::sleep(self.delay).await;
        self.inner.put_section(request).await
    }

    async fn put_sections(
        &self,
        request: wx_api::storage::PutSectionsRequest,
    ) -> Result<wx_api::storage::PutSectionsReply, Status> {
        self.batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(self.delay).await;
        self.inner.put_sections(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sections_keep_their_leases_when_each_write_is_slow() {
    // 100 sections held, each store write 20 ms, a 400 ms lease renewed every 133 ms:
    // renewed one after another a round takes 2 s and the leases lapse; in one batch it
    // takes one write's time.
    let dir = svrkit_testkit::tempdir("seqstore");
    let engine = Engine::open(dir.path()).expect("engine");
    let slow = SlowStore {
        inner: SeqStoreService::new(engine).expect("store"),
        delay: Duration::from_millis(20),
        batches: Arc::default(),
    };
    let batches = Arc::clone(&slow.batches);
    let _store = serve(Server::builder().add_service(SeqStoreServer::new(slow))).await;
    let store = Channel::lazy([_store.addr]);
    let (_a, a) = allocator(&store, "a").await;
    let mut seen = std::collections::HashSet::new();
    let uids: Vec<u64> = (1..)
        .filter(|u| seen.insert(wx_api::seq_section(*u)))
        .take(100)
        .collect();
    let mut epochs: HashMap<u32, u64> = HashMap::new();
    for &uid in &uids {
        let reply = next_when_served(&a, uid).await;
        epochs.insert(reply.section, reply.epoch);
    }
    // Three lease lengths of traffic over every section: each is served all along by the
    // epoch that took it (a lapse would end it, and the next request would take the
    // section again, in a new epoch).
    let window = std::time::Instant::now();
    let batches_before = batches.load(std::sync::atomic::Ordering::Relaxed);
    let until = window + Duration::from_millis(1_200);
    let mut rounds = 0;
    while std::time::Instant::now() < until {
        for &uid in &uids {
            let reply = next(&a, uid).await.expect("served");
            assert_eq!(
                epochs[&reply.section], reply.epoch,
                "section {} was taken again after {rounds} rounds",
                reply.section
            );
        }
        rounds += 1;
    }
    assert!(rounds > 0);
    // All 100 leases were renewed in batches: one request per renewal round (every
    // 133 ms, one store shard), where a request per section would be 100 per round.
    let rounds_elapsed = window.elapsed().as_millis() as u64 / 133 + 2;
    let batches = batches.load(std::sync::atomic::Ordering::Relaxed) - batches_before;
    assert!(
        (1..=rounds_elapsed).contains(&batches),
        "{batches} PutSections requests in {rounds_elapsed} renewal rounds"
    );
}
