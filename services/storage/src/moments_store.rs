//! `wx.storage.MomentsStore`: Moments on the author's and the reader's shards.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `moment_posts` | author, seq | `MomentPost` (the album is the author's range) |
//! | `moment_likes` | author, seq, liker | `MomentLike` |
//! | `moment_comments` | author, seq, comment id | `MomentComment` |
//! | `timelines` | reader, created ms, author, seq | nothing: a pointer |
//! | `moment_outbox` | author, created ms, author, seq | nothing: the author's own posts |
//! | `moment_pull_authors` | author | nothing |
//! | `queue_timeline` | job id | `TimelineJob` (see [`crate::queue`]) |
//!
//! All numbers are big-endian, so a reader's timeline sorts by time, then author, then
//! sequence, and a reverse range scan reads it newest first. Comment ids count up per
//! post (1, 2, …) so comments read back in the order they were made.

use fjall::Keyspace;
use prost::Message;
use svrkit::Status;
use wx_api::storage::moments_store_server::MomentsStore;
use wx_api::storage::{
    AckJobReply, AckJobRequest, AddCommentRequest, AddToTimelinesReply, AddToTimelinesRequest,
    DeleteCommentReply, DeleteCommentRequest, DeletePostReply, GetPostsReply, GetPostsRequest,
    LeaseJobsReply, LeaseJobsRequest, ListPullAuthorsReply, ListPullAuthorsRequest,
    MarkPullAuthorReply, MarkPullAuthorRequest, MomentComment, MomentLike, MomentPost, PostKey,
    PublishReply, PublishRequest, ReadTimelineReply, ReadTimelineRequest, SetLikeReply,
    SetLikeRequest, StoredMoment, TimelineEntry, TimelineJob,
};

use crate::codec::{decode, get, id_key, pair_key, word};
use crate::engine::{Engine, StorageError};
use crate::queue::Queue;

/// The most comments one post takes.
pub const MAX_COMMENTS: usize = 1_000;
/// The most likes, and the most comments, GetPosts returns with one post.
pub const MAX_EACH: usize = 200;
/// The most posts one GetPosts returns.
pub const MAX_GET: usize = 200;
/// The most pointers one ReadTimeline returns.
pub const MAX_TIMELINE: usize = 500;
/// The most pointers one AddToTimelines writes.
pub const MAX_TIMELINE_ITEMS: usize = 10_000;
/// The most authors the pull list holds.
pub const MAX_PULL_AUTHORS: usize = 100_000;

/// The Moments store of one shard.
pub struct MomentsStoreService {
    engine: Engine,
    posts: Keyspace,
    likes: Keyspace,
    comments: Keyspace,
    timelines: Keyspace,
    outbox: Keyspace,
    pull_authors: Keyspace,
    jobs: Queue,
}

impl std::fmt::Debug for MomentsStoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MomentsStoreService")
            .field("engine", &self.engine)
            .finish()
    }
}

/// Three ids, big-endian.
fn triple_key(a: u64, b: u64, c: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&pair_key(a, b));
    key[16..].copy_from_slice(&c.to_be_bytes());
    key
}

/// Whether `ks` holds `key`.
fn exists(ks: &Keyspace, key: &[u8]) -> Result<bool, StorageError> {
    Ok(ks.get(key)?.is_some())
}

/// A timeline pointer's key.
fn timeline_key(reader: u64, e: &TimelineEntry) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&reader.to_be_bytes());
    key[8..].copy_from_slice(&triple_key(e.created_ms, e.author, e.seq));
    key
}

fn post_key(post: Option<&PostKey>) -> Result<PostKey, Status> {
    match post {
        Some(p) if p.author != 0 && p.seq != 0 => Ok(*p),
        _ => Err(Status::invalid_argument(
            "a post is named by its author and seq",
        )),
    }
}

impl MomentsStoreService {
    /// The store on `engine`.
    pub fn new(engine: Engine) -> Result<MomentsStoreService, StorageError> {
        Ok(MomentsStoreService {
            posts: engine.keyspace("moment_posts")?,
            likes: engine.keyspace("moment_likes")?,
            comments: engine.keyspace("moment_comments")?,
            timelines: engine.keyspace("timelines")?,
            outbox: engine.keyspace("moment_outbox")?,
            pull_authors: engine.keyspace("moment_pull_authors")?,
            jobs: Queue::open(&engine, "timeline")?,
            engine,
        })
    }

    fn post(&self, key: &PostKey) -> Result<MomentPost, Status> {
        get::<MomentPost>(&self.posts, &pair_key(key.author, key.seq))?
            .filter(|p| !p.deleted)
            .ok_or_else(|| Status::not_found(format!("no post {}:{}", key.author, key.seq)))
    }

    /// The first `max` likes and the newest `max` comments (oldest first) of a post.
    fn interactions(
        &self,
        key: &PostKey,
        max: usize,
    ) -> Result<(Vec<MomentLike>, Vec<MomentComment>), Status> {
        let prefix = pair_key(key.author, key.seq);
        let mut likes = Vec::new();
        for item in self.likes.prefix(prefix).take(max) {
            let (k, v) = item.into_inner().map_err(StorageError::from)?;
            likes.push(decode::<MomentLike>(&k, &v)?);
        }
        let mut comments = Vec::new();
        for item in self.comments.prefix(prefix).rev().take(max) {
            let (k, v) = item.into_inner().map_err(StorageError::from)?;
            comments.push(decode::<MomentComment>(&k, &v)?);
        }
        comments.reverse();
        Ok((likes, comments))
    }
}

impl MomentsStore for MomentsStoreService {
    async fn publish(&self, request: PublishRequest) -> Result<PublishReply, Status> {
        let post = request
            .post
            .ok_or_else(|| Status::invalid_argument("no post given"))?;
        if post.author == 0 || post.seq == 0 {
            return Err(Status::invalid_argument("a post needs an author and a seq"));
        }
        if request.recipients.len() > wx_api::MAX_FRIENDS as usize + 1 {
            return Err(Status::invalid_argument(format!(
                "a post reaches at most {} timelines",
                wx_api::MAX_FRIENDS + 1
            )));
        }
        let key = pair_key(post.author, post.seq);
        let _guard = self.engine.lock(&key).await;
        if exists(&self.posts, &key)? {
            // Published before (a retry): its job, if any, was enqueued with it.
            return Ok(PublishReply { job_id: 0 });
        }
        let entry = TimelineEntry {
            created_ms: post.created_ms,
            author: post.author,
            seq: post.seq,
        };
        let mut batch = self.engine.batch();
        batch.insert(&self.posts, key.to_vec(), post.encode_to_vec());
        batch.insert(
            &self.outbox,
            timeline_key(post.author, &entry).to_vec(),
            Vec::new(),
        );
        let job_id = if request.recipients.is_empty() {
            0
        } else {
            let job = TimelineJob {
                entry: Some(entry),
                recipients: request.recipients,
            };
            self.jobs.push(&mut batch, &job.encode_to_vec())
        };
        self.engine.commit(batch).await?;
        Ok(PublishReply { job_id })
    }

    async fn delete_post(&self, request: PostKey) -> Result<DeletePostReply, Status> {
        let key = pair_key(request.author, request.seq);
        let _guard = self.engine.lock(&key).await;
        let Some(mut post) = get::<MomentPost>(&self.posts, &key)? else {
            return Err(Status::not_found(format!(
                "no post {}:{}",
                request.author, request.seq
            )));
        };
        if post.deleted {
            return Ok(DeletePostReply {});
        }
        post.deleted = true;
        post.text.clear();
        post.media.clear();
        post.listed.clear();
        let mut batch = self.engine.batch();
        batch.insert(&self.posts, key.to_vec(), post.encode_to_vec());
        self.engine.commit(batch).await?;
        Ok(DeletePostReply {})
    }

    async fn get_posts(&self, request: GetPostsRequest) -> Result<GetPostsReply, Status> {
        if request.keys.len() > MAX_GET {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_GET} posts at a time"
            )));
        }
        let max_each = match request.max_each as usize {
            0 => MAX_EACH,
            n => n.min(MAX_EACH),
        };
        let mut moments = Vec::with_capacity(request.keys.len());
        for key in &request.keys {
            let Some(post) = get::<MomentPost>(&self.posts, &pair_key(key.author, key.seq))? else {
                continue;
            };
            let (likes, comments) = if request.interactions && !post.deleted {
                self.interactions(key, max_each)?
            } else {
                (Vec::new(), Vec::new())
            };
            moments.push(StoredMoment {
                post: Some(post),
                likes,
                comments,
            });
        }
        Ok(GetPostsReply { moments })
    }

    async fn set_like(&self, request: SetLikeRequest) -> Result<SetLikeReply, Status> {
        let post = post_key(request.post.as_ref())?;
        if request.from == 0 {
            return Err(Status::invalid_argument("a like needs its author"));
        }
        let key = triple_key(post.author, post.seq, request.from);
        let _guard = self.engine.lock(&pair_key(post.author, post.seq)).await;
        let there = exists(&self.likes, &key)?;
        if there == request.on {
            return Ok(SetLikeReply { changed: false });
        }
        let mut batch = self.engine.batch();
        if request.on {
            self.post(&post)?;
            let like = MomentLike {
                from: request.from,
                created_ms: wx_api::now_ms(),
            };
            batch.insert(&self.likes, key.to_vec(), like.encode_to_vec());
        } else {
            batch.remove(&self.likes, key.to_vec());
        }
        self.engine.commit(batch).await?;
        Ok(SetLikeReply { changed: true })
    }

    async fn add_comment(&self, request: AddCommentRequest) -> Result<MomentComment, Status> {
        let post = post_key(request.post.as_ref())?;
        let mut comment = request
            .comment
            .ok_or_else(|| Status::invalid_argument("no comment given"))?;
        let prefix = pair_key(post.author, post.seq);
        let _guard = self.engine.lock(&prefix).await;
        self.post(&post)?;
        let mut count = 0;
        let mut last_id = 0;
        for item in self.comments.prefix(prefix) {
            let key = item.key().map_err(StorageError::from)?;
            last_id = word(&key, 2);
            count += 1;
        }
        if count >= MAX_COMMENTS {
            return Err(Status::resource_exhausted(format!(
                "a post takes at most {MAX_COMMENTS} comments"
            )));
        }
        if comment.reply_to != 0
            && !exists(
                &self.comments,
                &triple_key(post.author, post.seq, comment.reply_to),
            )?
        {
            return Err(Status::not_found(format!(
                "no comment {} on this post",
                comment.reply_to
            )));
        }
        // Ids count up, never reused while a later comment exists.
        comment.comment_id = last_id + 1;
        if comment.created_ms == 0 {
            comment.created_ms = wx_api::now_ms();
        }
        let mut batch = self.engine.batch();
        batch.insert(
            &self.comments,
            triple_key(post.author, post.seq, comment.comment_id).to_vec(),
            comment.encode_to_vec(),
        );
        self.engine.commit(batch).await?;
        Ok(comment)
    }

    async fn delete_comment(
        &self,
        request: DeleteCommentRequest,
    ) -> Result<DeleteCommentReply, Status> {
        let post = post_key(request.post.as_ref())?;
        let key = triple_key(post.author, post.seq, request.comment_id);
        let _guard = self.engine.lock(&pair_key(post.author, post.seq)).await;
        let Some(comment) = get::<MomentComment>(&self.comments, &key)? else {
            return Ok(DeleteCommentReply {});
        };
        if comment.from != request.by {
            return Err(
                Status::permission_denied("only its author deletes a comment")
                    .with_reason("not_author"),
            );
        }
        let mut batch = self.engine.batch();
        batch.remove(&self.comments, key.to_vec());
        self.engine.commit(batch).await?;
        Ok(DeleteCommentReply {})
    }

    async fn add_to_timelines(
        &self,
        request: AddToTimelinesRequest,
    ) -> Result<AddToTimelinesReply, Status> {
        if request.items.len() > MAX_TIMELINE_ITEMS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_TIMELINE_ITEMS} pointers at a time"
            )));
        }
        let mut batch = self.engine.batch();
        let mut added = 0;
        for item in &request.items {
            let Some(entry) = &item.entry else { continue };
            let key = timeline_key(item.reader, entry);
            if !exists(&self.timelines, &key)? {
                added += 1;
            }
            batch.insert(&self.timelines, key.to_vec(), Vec::new());
        }
        self.engine.commit(batch).await?;
        metrics::counter!("wx_momentsstore_pointers_total").increment(u64::from(added));
        Ok(AddToTimelinesReply { added })
    }

    async fn read_timeline_nearby(
        &self,
        request: ReadTimelineRequest,
    ) -> Result<ReadTimelineReply, Status> {
        self.read_timeline(request).await
    }

    async fn read_timeline(
        &self,
        request: ReadTimelineRequest,
    ) -> Result<ReadTimelineReply, Status> {
        let limit = match request.limit as usize {
            0 => 20,
            n => n.min(MAX_TIMELINE),
        };
        let keyspace = if request.outbox {
            &self.outbox
        } else {
            &self.timelines
        };
        let from = timeline_key(request.reader, &TimelineEntry::default());
        let mut entries = Vec::new();
        let mut has_more = false;
        let scan = match &request.before {
            Some(before) => {
                let to = timeline_key(request.reader, before);
                keyspace.range(from..to)
            }
            None => {
                let to = timeline_key(
                    request.reader,
                    &TimelineEntry {
                        created_ms: u64::MAX,
                        author: u64::MAX,
                        seq: u64::MAX,
                    },
                );
                keyspace.range(from..=to)
            }
        };
        for item in scan.rev() {
            let key = item.key().map_err(StorageError::from)?;
            if entries.len() == limit {
                has_more = true;
                break;
            }
            entries.push(TimelineEntry {
                created_ms: word(&key, 1),
                author: word(&key, 2),
                seq: word(&key, 3),
            });
        }
        Ok(ReadTimelineReply { entries, has_more })
    }

    async fn lease_timeline_jobs(
        &self,
        request: LeaseJobsRequest,
    ) -> Result<LeaseJobsReply, Status> {
        let reply = self.jobs.answer_lease(&request)?;
        if request.job_id == 0 {
            metrics::gauge!("wx_momentsstore_fanout_depth").set(reply.depth as f64);
        }
        Ok(reply)
    }

    async fn ack_timeline_job(&self, request: AckJobRequest) -> Result<AckJobReply, Status> {
        self.jobs.ack(request.job_id).await?;
        Ok(AckJobReply {})
    }

    async fn mark_pull_author(
        &self,
        request: MarkPullAuthorRequest,
    ) -> Result<MarkPullAuthorReply, Status> {
        if request.author == 0 {
            return Err(Status::invalid_argument("no author given"));
        }
        let key = id_key(request.author);
        if exists(&self.pull_authors, &key)? {
            return Ok(MarkPullAuthorReply {});
        }
        let _guard = self.engine.lock(b"pull_authors").await;
        if self.pull_authors.len().map_err(StorageError::from)? >= MAX_PULL_AUTHORS {
            return Err(Status::resource_exhausted(format!(
                "the pull list holds at most {MAX_PULL_AUTHORS} authors"
            )));
        }
        let mut batch = self.engine.batch();
        batch.insert(&self.pull_authors, key.to_vec(), Vec::new());
        self.engine.commit(batch).await?;
        Ok(MarkPullAuthorReply {})
    }

    async fn list_pull_authors(
        &self,
        _request: ListPullAuthorsRequest,
    ) -> Result<ListPullAuthorsReply, Status> {
        let mut authors = Vec::new();
        for item in self.pull_authors.iter() {
            let key = item.key().map_err(StorageError::from)?;
            authors.push(word(&key, 0));
        }
        Ok(ListPullAuthorsReply { authors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use svrkit::Code;
    use wx_api::storage::TimelineItem;

    fn store() -> (MomentsStoreService, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "wx-momentsstore-{}-{:x}",
            std::process::id(),
            svrkit::context::random_u64()
        ));
        let engine = Engine::open(&dir).expect("open");
        (MomentsStoreService::new(engine).expect("store"), dir)
    }

    fn entry(created_ms: u64, author: u64, seq: u64) -> TimelineEntry {
        TimelineEntry {
            created_ms,
            author,
            seq,
        }
    }

    async fn timeline(
        s: &MomentsStoreService,
        reader: u64,
        before: Option<TimelineEntry>,
        limit: u32,
        outbox: bool,
    ) -> ReadTimelineReply {
        s.read_timeline(ReadTimelineRequest {
            reader,
            before,
            limit,
            outbox,
        })
        .await
        .expect("read")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timelines_page_newest_first_and_pointers_are_idempotent() {
        let (s, dir) = store();
        let items: Vec<TimelineItem> = [(30, 5, 1), (10, 6, 1), (20, 7, 2), (20, 6, 2)]
            .into_iter()
            .map(|(t, a, q)| TimelineItem {
                reader: 9,
                entry: Some(entry(t, a, q)),
            })
            .collect();
        let added = s
            .add_to_timelines(AddToTimelinesRequest {
                items: items.clone(),
            })
            .await
            .expect("add");
        assert_eq!(added.added, 4);
        let again = s
            .add_to_timelines(AddToTimelinesRequest { items })
            .await
            .expect("add again");
        assert_eq!(again.added, 0, "a pointer added twice is there once");
        let first = timeline(&s, 9, None, 2, false).await;
        assert_eq!(first.entries, [entry(30, 5, 1), entry(20, 7, 2)]);
        assert!(first.has_more);
        let rest = timeline(&s, 9, first.entries.last().copied(), 10, false).await;
        assert_eq!(rest.entries, [entry(20, 6, 2), entry(10, 6, 1)]);
        assert!(!rest.has_more);
        assert!(
            timeline(&s, 8, None, 10, false).await.entries.is_empty(),
            "another reader's"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn posts_likes_comments_and_deletion() {
        let (s, dir) = store();
        let post = MomentPost {
            author: 1,
            seq: 3,
            text: "hi".into(),
            media: vec!["m".into()],
            created_ms: 100,
            ..MomentPost::default()
        };
        let published = s
            .publish(PublishRequest {
                post: Some(post.clone()),
                recipients: vec![2, 3],
            })
            .await
            .expect("publish");
        assert_ne!(published.job_id, 0);
        let again = s
            .publish(PublishRequest {
                post: Some(post),
                recipients: vec![2, 3],
            })
            .await
            .expect("publish again");
        assert_eq!(again.job_id, 0, "no second job for the same post");
        let outbox = timeline(&s, 1, None, 10, true).await;
        assert_eq!(outbox.entries, [entry(100, 1, 3)]);
        let jobs = s
            .lease_timeline_jobs(LeaseJobsRequest {
                max: 10,
                lease_ms: 60_000,
                job_id: 0,
            })
            .await
            .expect("lease");
        assert_eq!(jobs.jobs.len(), 1);
        let job = wx_api::storage::TimelineJob::decode(jobs.jobs[0].job.clone()).expect("a job");
        assert_eq!(job.recipients, [2, 3]);

        let key = PostKey { author: 1, seq: 3 };
        let like = |from, on| SetLikeRequest {
            post: Some(key),
            from,
            on,
        };
        assert!(s.set_like(like(2, true)).await.expect("like").changed);
        assert!(!s.set_like(like(2, true)).await.expect("like again").changed);
        let comment = |from, reply_to| AddCommentRequest {
            post: Some(key),
            comment: Some(MomentComment {
                from,
                text: "c".into(),
                reply_to,
                ..MomentComment::default()
            }),
        };
        let c1 = s.add_comment(comment(2, 0)).await.expect("comment");
        let c2 = s
            .add_comment(comment(1, c1.comment_id))
            .await
            .expect("reply");
        assert_eq!((c1.comment_id, c2.comment_id), (1, 2));
        let missing = s
            .add_comment(comment(1, 77))
            .await
            .expect_err("no such comment");
        assert_eq!(missing.code(), Code::NotFound);
        let denied = s
            .delete_comment(DeleteCommentRequest {
                post: Some(key),
                comment_id: 1,
                by: 3,
            })
            .await
            .expect_err("not the author");
        assert_eq!(denied.code(), Code::PermissionDenied);
        let got = s
            .get_posts(GetPostsRequest {
                keys: vec![key, PostKey { author: 1, seq: 4 }],
                interactions: true,
                max_each: 1,
            })
            .await
            .expect("get");
        assert_eq!(got.moments.len(), 1, "absent posts are left out");
        assert_eq!(got.moments[0].likes.len(), 1);
        assert_eq!(
            got.moments[0]
                .comments
                .iter()
                .map(|c| c.comment_id)
                .collect::<Vec<_>>(),
            [2],
            "the newest comment within max_each"
        );

        s.delete_post(key).await.expect("delete");
        s.delete_post(key).await.expect("delete again");
        let gone = s
            .get_posts(GetPostsRequest {
                keys: vec![key],
                interactions: true,
                max_each: 0,
            })
            .await
            .expect("get");
        let post = gone.moments[0].post.clone().unwrap_or_default();
        assert!(post.deleted && post.text.is_empty() && post.media.is_empty());
        assert!(gone.moments[0].comments.is_empty());
        let late = s.set_like(like(3, true)).await.expect_err("deleted");
        assert_eq!(late.code(), Code::NotFound);
        let late = s.add_comment(comment(3, 0)).await.expect_err("deleted");
        assert_eq!(late.code(), Code::NotFound);
        let _ = std::fs::remove_dir_all(dir);
    }
}
