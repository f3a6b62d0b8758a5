//! `svrkit-bench moments`: Moments fan-out and timeline reads through the real services.
//!
//! Starts the release backend by itself and builds a social graph straight through
//! contactstore (not the access tier, which would spend the run hashing passwords):
//! `--users` users with `--avg-friends` random friends on average, `--big-authors`
//! authors with `--big-friends` friends each, and `--readers` readers with
//! `--reader-friends` friends each (the big authors among them). Friends of the readers
//! post once so their timelines are full. Then, for each push threshold in
//! `--thresholds` (published as live configuration of `wx.moments.Moments`, as an
//! operator would):
//!
//! - **post to visible**: ordinary and big authors post; for each post, `--sample` of the
//!   author's friends poll their timelines until it shows; the post's time is the last
//!   of them. Pushed posts give `push_visible_p50/p99_ms`, pulled ones
//!   `pull_visible_ms` (their mean), and `big_visible_ms` is the slowest big author's;
//! - **timeline reads**: the readers read their first page for `--read-seconds`, eight
//!   at a time: `timeline_p50/p99_ms`.
//!
//! A table, then one JSON line per threshold.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;
use svrkit::discovery::{EmbeddedRegistry, discover};
use svrkit::{Channel, Context};
use wx_api::moments::{MomentsClient, PostRequest, TimelineRequest, moments_methods};
use wx_api::storage::{ContactStoreClient, contact_store_methods};

use crate::backend::Backend;
use crate::stats::quantile;

/// Options of `svrkit-bench moments`.
#[derive(Debug, clap::Args)]
pub(crate) struct MomentsArgs {
    /// Users in the graph.
    #[arg(long, default_value_t = 6_000)]
    users: u64,
    /// Average friends of an ordinary user.
    #[arg(long, default_value_t = 50)]
    avg_friends: u64,
    /// Authors with very many friends.
    #[arg(long, default_value_t = 3)]
    big_authors: u64,
    /// Friends of each big author.
    #[arg(long, default_value_t = 5_000)]
    big_friends: u64,
    /// Readers whose timeline reads are measured.
    #[arg(long, default_value_t = 5)]
    readers: u64,
    /// Friends of each reader.
    #[arg(long, default_value_t = 500)]
    reader_friends: u64,
    /// Push thresholds to compare (comma-separated; run highest first).
    #[arg(long, value_delimiter = ',', default_value = "10000,1000")]
    thresholds: Vec<u64>,
    /// Friends sampled per post for the time until visible.
    #[arg(long, default_value_t = 50)]
    sample: usize,
    /// Seconds of timeline reads per threshold.
    #[arg(long, default_value_t = 3.0)]
    read_seconds: f64,
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The friendship graph: pairs and each user's friends.
struct Graph {
    pairs: Vec<(u64, u64)>,
    friends: Vec<Vec<u64>>,
}

impl Graph {
    fn build(args: &MomentsArgs) -> anyhow::Result<Graph> {
        let n = args.users;
        let first_ordinary = args.big_authors + 1;
        if n < first_ordinary + args.big_friends.max(args.reader_friends) {
            bail!("--users must exceed the big authors' and readers' friend counts");
        }
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        let mut graph = Graph {
            pairs: Vec::new(),
            friends: vec![Vec::new(); n as usize + 1],
        };
        let mut add = |graph: &mut Graph, a: u64, b: u64| {
            let key = (a.min(b), a.max(b));
            if a != b && seen.insert(key) {
                graph.pairs.push(key);
                graph.friends[a as usize].push(b);
                graph.friends[b as usize].push(a);
            }
        };
        for big in 1..=args.big_authors {
            for f in first_ordinary..first_ordinary + args.big_friends {
                add(&mut graph, big, f);
            }
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let readers = first_ordinary..first_ordinary + args.readers;
        for r in readers.clone() {
            while (graph.friends[r as usize].len() as u64) < args.reader_friends {
                let f = first_ordinary + rng.below(n - first_ordinary + 1);
                add(&mut graph, r, f);
            }
        }
        let ordinary = n - first_ordinary + 1;
        let target = graph.pairs.len() as u64 + ordinary * args.avg_friends / 2;
        let mut attempts = 0;
        while (graph.pairs.len() as u64) < target && attempts < target * 4 {
            attempts += 1;
            let a = first_ordinary + rng.below(ordinary);
            let b = first_ordinary + rng.below(ordinary);
            if graph.friends[a as usize].len() < 4_000 && graph.friends[b as usize].len() < 4_000 {
                add(&mut graph, a, b);
            }
        }
        Ok(graph)
    }
}

fn as_user(uid: u64) -> Context {
    Context::new()
        .with_uid(uid)
        .with_timeout(Duration::from_secs(10))
}

/// Writes every pair as two FRIEND edges, `workers` at a time, showing progress.
async fn write_graph(
    contacts: &ContactStoreClient,
    pairs: Arc<Vec<(u64, u64)>>,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..128 {
        let (contacts, pairs, next, done) = (
            contacts.clone(),
            Arc::clone(&pairs),
            Arc::clone(&next),
            Arc::clone(&done),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(a, b)) = pairs.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                crate::backend::befriend(&contacts, a, b).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let total = pairs.len();
    let progress = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                eprintln!("  {} of {total} friendships", done.load(Ordering::Relaxed));
            }
        })
    };
    while let Some(joined) = workers.join_next().await {
        joined??;
    }
    progress.abort();
    Ok(())
}

async fn post(moments: &MomentsClient, author: u64, text: String) -> anyhow::Result<(u64, bool)> {
    let reply = as_user(author)
        .scope(moments.post(PostRequest {
            text,
            ..PostRequest::default()
        }))
        .await?;
    Ok((reply.post.map_or(0, |p| p.seq), reply.pushed))
}

/// Whether `reader`'s newest posts include (author, seq).
async fn shows(moments: &MomentsClient, reader: u64, author: u64, seq: u64) -> bool {
    let page = as_user(reader)
        .scope(moments.timeline(TimelineRequest {
            cursor: String::new(),
            limit: 10,
        }))
        .await;
    page.is_ok_and(|p| {
        p.posts
            .iter()
            .any(|v| v.post.is_some_and(|r| r.author == author && r.seq == seq))
    })
}

/// Posts as `author` and waits until each sampled friend's timeline shows it: the time
/// from the post's answer until the last did, and whether it was pushed.
async fn post_until_visible(
    moments: &MomentsClient,
    author: u64,
    sampled: Vec<u64>,
) -> anyhow::Result<(Duration, bool)> {
    let (seq, pushed) = post(moments, author, format!("bench post of {author}")).await?;
    let start = Instant::now();
    let mut polls = tokio::task::JoinSet::new();
    for reader in sampled {
        let moments = moments.clone();
        polls.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if shows(&moments, reader, author, seq).await {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            false
        });
    }
    while let Some(seen) = polls.join_next().await {
        if !seen? {
            bail!("a friend of {author} never saw post {seq}");
        }
    }
    Ok((start.elapsed(), pushed))
}

/// One threshold's figures.
struct Round {
    threshold: u64,
    push_visible_us: Vec<u32>,
    pull_visible_us: Vec<u32>,
    big_visible_us: u32,
    timeline_us: Vec<u32>,
    errors: u64,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// Runs the benchmark.
pub(crate) async fn run(args: MomentsArgs) -> anyhow::Result<()> {
    let backend = Backend::start(1, &[("RUST_LOG", "warn")])?;
    let registry = EmbeddedRegistry::new(backend.registry_dir());
    let contacts = ContactStoreClient::new(
        discover(
            &registry,
            contact_store_methods::SERVICE_NAME,
            wx_api::sharded(),
        )
        .await?,
    );
    let moments = MomentsClient::new(
        discover(&registry, moments_methods::SERVICE_NAME, Channel::builder()).await?,
    );
    let graph = Graph::build(&args)?;
    eprintln!(
        "writing {} friendships among {} users",
        graph.pairs.len(),
        args.users
    );
    write_graph(&contacts, Arc::new(graph.pairs.clone())).await?;
    let first_ordinary = args.big_authors + 1;
    let readers: Vec<u64> = (first_ordinary..first_ordinary + args.readers).collect();
    // The readers' friends post once, so the timelines read are full.
    let mut authors: Vec<u64> = readers
        .iter()
        .flat_map(|r| graph.friends[*r as usize].iter().copied())
        .filter(|a| *a > args.big_authors)
        .collect();
    authors.sort_unstable();
    authors.dedup();
    eprintln!(
        "{} authors post once to fill the readers' timelines",
        authors.len()
    );
    let mut filling = tokio::task::JoinSet::new();
    let authors = Arc::new(authors);
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..32 {
        let (moments, authors, next) = (moments.clone(), Arc::clone(&authors), Arc::clone(&next));
        filling.spawn(async move {
            while let Some(&a) = authors.get(next.fetch_add(1, Ordering::Relaxed)) {
                post(&moments, a, format!("hello from {a}")).await?;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(joined) = filling.join_next().await {
        joined??;
    }

    // Highest first: an author who was pulled once stays a pull author.
    let mut thresholds = args.thresholds.clone();
    thresholds.sort_unstable_by(|a, b| b.cmp(a));
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut rounds = Vec::new();
    for &threshold in &thresholds {
        eprintln!("threshold {threshold}: publishing it");
        svrkit::config::publish_stable(
            &registry,
            moments_methods::SERVICE_NAME,
            json!({ "push_threshold": threshold }).to_string(),
        )
        .await?;
        // Applied once a big author's post is pushed or pulled as the threshold says.
        let big_pushed = args.big_friends <= threshold;
        let deadline = Instant::now() + Duration::from_secs(10);
        while args.big_authors > 0 && post(&moments, 1, "probe".into()).await?.1 != big_pushed {
            if Instant::now() > deadline {
                bail!("the threshold {threshold} was not applied within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut round = Round {
            threshold,
            push_visible_us: Vec::new(),
            pull_visible_us: Vec::new(),
            big_visible_us: 0,
            timeline_us: Vec::new(),
            errors: 0,
        };
        let sample = |friends: &[u64], rng: &mut Rng| -> Vec<u64> {
            (0..args.sample.min(friends.len()))
                .map(|_| friends[rng.below(friends.len() as u64) as usize])
                .collect()
        };
        eprintln!("threshold {threshold}: posting and waiting until visible");
        let mut posters: Vec<u64> = (1..=args.big_authors).flat_map(|b| [b, b]).collect();
        for _ in 0..10 {
            posters.push(
                first_ordinary
                    + args.readers
                    + rng.below(args.users - first_ordinary - args.readers),
            );
        }
        for author in posters {
            let sampled = sample(&graph.friends[author as usize], &mut rng);
            if sampled.is_empty() {
                continue;
            }
            match post_until_visible(&moments, author, sampled).await {
                Ok((took, pushed)) => {
                    if pushed {
                        round.push_visible_us.push(micros(took));
                    } else {
                        round.pull_visible_us.push(micros(took));
                    }
                    if author <= args.big_authors {
                        round.big_visible_us = round.big_visible_us.max(micros(took));
                    }
                }
                Err(e) => {
                    eprintln!("  {e:#}");
                    round.errors += 1;
                }
            }
        }
        eprintln!(
            "threshold {threshold}: reading timelines for {} s",
            args.read_seconds
        );
        let stop = Instant::now() + Duration::from_secs_f64(args.read_seconds);
        let errors = Arc::new(AtomicU64::new(0));
        let mut reading = tokio::task::JoinSet::new();
        for i in 0..8 {
            let (moments, errors) = (moments.clone(), Arc::clone(&errors));
            let reader = readers[i % readers.len().max(1)];
            reading.spawn(async move {
                let mut took = Vec::new();
                while Instant::now() < stop {
                    let start = Instant::now();
                    let page = as_user(reader)
                        .scope(moments.timeline(TimelineRequest {
                            cursor: String::new(),
                            limit: 20,
                        }))
                        .await;
                    match page {
                        Ok(_) => took.push(micros(start.elapsed())),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                took
            });
        }
        while let Some(took) = reading.join_next().await {
            round.timeline_us.extend(took?);
        }
        round.errors += errors.load(Ordering::Relaxed);
        rounds.push(round);
    }

    let ms = |us: u32| f64::from(us) / 1000.0;
    println!(
        "{:>9} {:>6} {:>7} {:>13} {:>13} {:>12} {:>11} {:>11} {:>11} {:>6}",
        "threshold",
        "users",
        "avg fr",
        "push vis p50",
        "push vis p99",
        "pull vis",
        "big vis",
        "tl p50",
        "tl p99",
        "errors"
    );
    let mut lines = Vec::new();
    for r in &mut rounds {
        let pull = (!r.pull_visible_us.is_empty()).then(|| {
            r.pull_visible_us.iter().map(|u| f64::from(*u)).sum::<f64>()
                / r.pull_visible_us.len() as f64
                / 1000.0
        });
        let figures = json!({
            "bench": "moments",
            "users": args.users,
            "avg_friends": args.avg_friends,
            "big_friends": args.big_friends,
            "threshold": r.threshold,
            "push_visible_p50_ms": ms(quantile(&mut r.push_visible_us, 0.5)),
            "push_visible_p99_ms": ms(quantile(&mut r.push_visible_us, 0.99)),
            "pull_visible_ms": pull,
            "big_visible_ms": ms(r.big_visible_us),
            "timeline_p50_ms": ms(quantile(&mut r.timeline_us, 0.5)),
            "timeline_p99_ms": ms(quantile(&mut r.timeline_us, 0.99)),
            "timeline_reads": r.timeline_us.len(),
            "reader_friends": args.reader_friends,
            "errors": r.errors,
        });
        let f = |k: &str| figures[k].as_f64().unwrap_or_default();
        println!(
            "{:>9} {:>6} {:>7} {:>11.1}ms {:>11.1}ms {:>10}ms {:>9.1}ms {:>9.1}ms {:>9.1}ms {:>6}",
            r.threshold,
            args.users,
            args.avg_friends,
            f("push_visible_p50_ms"),
            f("push_visible_p99_ms"),
            pull.map_or("-".to_string(), |p| format!("{p:.1}")),
            f("big_visible_ms"),
            f("timeline_p50_ms"),
            f("timeline_p99_ms"),
            r.errors
        );
        lines.push(figures);
    }
    eprintln!("resident memory after the run:");
    for (id, rss) in backend.rss() {
        eprintln!("  {id:<16} {:>6.1} MB", rss as f64 / 1e6);
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}
