//! `wx.moments.Moments`: posts, albums, timelines, likes and comments.
//!
//! ## Data
//!
//! A post lives on its author's momentsstore shard, keyed by (author, seq) where seq is
//! the author's next number from `wx.seq.Seq`; its likes and comments live beside it. The
//! author's outbox (the same shard) lists their posts by time: it is the album, and what
//! readers pull. Each reader's timeline, on the reader's shard, holds pointers
//! (created ms, author, seq) to friends' posts, never copies.
//!
//! ## Fan-out: hybrid push and pull
//!
//! Posting computes the friends the visibility admits. When there are at most
//! `push_threshold` of them, the post is **pushed**: the post and a job naming them are
//! written in one durable write, and the [`fanout`] worker adds the pointer to every
//! timeline (one batch per shard). Above it the post is **pulled**: only the author's own
//! timeline gets a pointer, the author is recorded as a pull author, and readers merge
//! the newest posts of the pull authors among their friends into each timeline page by
//! time. A push costs one write per friend when posting; a pull costs one read per pull
//! friend on every timeline page, so the threshold keeps pulls for the few authors with
//! very many friends. It is live gray-release configuration of `wx.moments.Moments`
//! (`{"push_threshold": N}`, or a bare number), so an operator moves it without a
//! restart; [`DEFAULT_PUSH_THRESHOLD`] applies when nothing is published (why it sits
//! where it does is measured there). An author once pulled stays a pull author, since
//! their pulled posts must still be found; the list lives on one momentsstore shard
//! (that of uid 0), at most 100,000 authors, and each instance rereads it every second.
//!
//! ## Who sees what
//!
//! Decided at read time, for pushed and pulled posts alike, so a pointer already pushed
//! never leaks a post:
//! - a deleted post is seen by nobody;
//! - the author sees their own posts;
//! - anyone else must be the author's friend both ways at the time of reading (a removal
//!   or a block on either side ends it) and be admitted by the post's visibility (all
//!   friends, only listed friends, all but listed friends);
//! - a like or comment is shown to the post's author, to its own author, and to a viewer
//!   who is its author's friend both ways.
//!
//! Because visibility follows the current relation, re-friending brings back the posts
//! one could see before (as their albums show them); posts made while the two were not
//! friends were never pushed to the other's timeline, and appear in the album only.
//!
//! Only someone who may see a post likes it or comments on it (PERMISSION_DENIED with
//! reason `not_visible` otherwise; the same answer whether the post exists or not, so a
//! stranger learns nothing).

pub mod cursor;
pub mod events;
pub mod fanout;
pub mod relations;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use svrkit::config::LiveConfig;
use svrkit::{Channel, Status};
use wx_api::acting_user;
use wx_api::by_uid;
use wx_api::moments::moments_server::Moments;
use wx_api::moments::{
    AlbumRequest, CommentRequest, CommentView, DeleteReply, LikeReply, LikeView, PostRef,
    PostReply, PostRequest, PostView, PostsReply, TimelineRequest, UncommentRequest,
};
use wx_api::seq::{NextRequest, SeqClient};
use wx_api::storage::{
    AddCommentRequest, DeleteCommentRequest, GetPostsRequest, ListPullAuthorsRequest,
    MarkPullAuthorRequest, MomentComment, MomentPost, MomentVisibility, MomentsStoreClient,
    PostKey, PublishRequest, ReadTimelineRequest, SetLikeRequest, StoredMoment, TimelineEntry,
};

pub use events::Events;
pub use fanout::Fanout;
pub use relations::Relations;

/// The longest post text, in characters.
pub const MAX_POST_CHARS: usize = 2_000;
/// The most media references a post carries.
pub const MAX_MEDIA: usize = wx_api::MAX_POST_MEDIA;
/// The longest media reference, in bytes.
pub const MAX_MEDIA_BYTES: usize = 256;
/// The longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 500;
/// The fan-out above which a post is pulled rather than pushed, when no configuration
/// says otherwise: the friend ceiling, so by default every post is pushed.
///
/// Pushing a big author's post and pulling it cost readers about the same (`svrkit-bench
/// moments`; figures in `docs/MEASUREMENTS.md`). Pushing is
/// bounded by the friend ceiling (5,000 pointer writes, one batch per shard), while every
/// pull is paid again on every read by every friend, and reads far outnumber posts; so
/// the default pushes everything, and an operator lowers the threshold live (gray
/// release) to shed write load in a posting spike, at some cost to readers.
pub const DEFAULT_PUSH_THRESHOLD: usize = wx_api::MAX_FRIENDS as usize;
/// The default and the largest page.
const PAGE: (usize, usize) = (20, 50);
/// The most likes, and the newest comments, read with each post of a page (before
/// hiding those the viewer may not see).
const PAGE_INTERACTIONS: u32 = 50;
/// The same for a single post (`Get`, and the checks of a like or comment).
const POST_INTERACTIONS: u32 = 200;
/// Rounds of reading a page refills when posts it read were not visible.
const FILL_ROUNDS: usize = 4;
/// How long the list of pull authors is reused before it is read again.
const PULL_LIST_TTL: Duration = Duration::from_secs(1);

/// The Moments service.
#[derive(Debug, Clone)]
pub struct MomentsService {
    store: MomentsStoreClient,
    shards: Channel,
    seq: SeqClient,
    relations: Relations,
    config: Option<LiveConfig>,
    events: Option<Events>,
    fanout: Arc<Fanout>,
    pull: Arc<Mutex<PullList>>,
}

/// This instance's copy of the pull authors.
#[derive(Debug, Default)]
struct PullList {
    authors: Arc<HashSet<u64>>,
    read_at: Option<Instant>,
}

/// Whether `viewer` may see `post`, given who is a friend of theirs both ways (`mutual`).
fn may_see(post: &MomentPost, viewer: u64, mutual: &HashSet<u64>) -> bool {
    if post.deleted {
        return false;
    }
    if post.author == viewer {
        return true;
    }
    if !mutual.contains(&post.author) {
        return false;
    }
    admits(post.visibility(), post.listed.contains(&viewer))
}

/// Whether a post's visibility admits a friend (who is `listed` in it or not).
fn admits(visibility: MomentVisibility, listed: bool) -> bool {
    match visibility {
        MomentVisibility::AllFriends => true,
        MomentVisibility::Only => listed,
        MomentVisibility::Except => !listed,
    }
}

fn not_visible() -> Status {
    Status::permission_denied("you may not see this post").with_reason("not_visible")
}

fn key_of(post: Option<&PostRef>) -> Result<PostKey, Status> {
    match post {
        Some(p) if p.author != 0 && p.seq != 0 => Ok(PostKey {
            author: p.author,
            seq: p.seq,
        }),
        _ => Err(Status::invalid_argument(
            "a post is named by its author and seq",
        )),
    }
}

/// The push threshold in a configuration value: `{"push_threshold": N}` or `N`.
pub fn parse_threshold(value: &str) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_str(value.trim()).ok()?;
    let n = v.get("push_threshold").unwrap_or(&v).as_u64()?;
    usize::try_from(n).ok()
}

impl MomentsService {
    /// A service over momentsstore (`shards`, its sharded channel), `seq` and contactstore
    /// (`relations`), following `config` for the push threshold, telling users through
    /// `events`, fanning out through `fanout`.
    pub fn new(
        shards: Channel,
        seq: SeqClient,
        relations: Relations,
        config: Option<LiveConfig>,
        events: Option<Events>,
        fanout: Arc<Fanout>,
    ) -> MomentsService {
        MomentsService {
            store: MomentsStoreClient::new(shards.clone()),
            shards,
            seq,
            relations,
            config,
            events,
            fanout,
            pull: Arc::new(Mutex::new(PullList::default())),
        }
    }

    /// The push threshold for the current request (gray release selects by author).
    pub fn push_threshold(&self) -> usize {
        self.config
            .as_ref()
            .map(LiveConfig::for_request)
            .and_then(|(version, value)| (version > 0).then(|| parse_threshold(&value)).flatten())
            .unwrap_or(DEFAULT_PUSH_THRESHOLD)
    }

    /// The pull authors (read again once older than [`PULL_LIST_TTL`]).
    async fn pull_authors(&self) -> Result<Arc<HashSet<u64>>, Status> {
        {
            let list = self.pull.lock().unwrap_or_else(PoisonError::into_inner);
            if list.read_at.is_some_and(|t| t.elapsed() < PULL_LIST_TTL) {
                return Ok(Arc::clone(&list.authors));
            }
        }
        let reply = self
            .store
            .list_pull_authors_with(ListPullAuthorsRequest {}, by_uid(0))
            .await?;
        let authors: Arc<HashSet<u64>> = Arc::new(reply.authors.into_iter().collect());
        let mut list = self.pull.lock().unwrap_or_else(PoisonError::into_inner);
        list.authors = Arc::clone(&authors);
        list.read_at = Some(Instant::now());
        Ok(authors)
    }

    /// Posts by key, from every shard holding some, with at most `max_each` likes and the
    /// newest `max_each` comments.
    async fn fetch(
        &self,
        keys: &[PostKey],
        max_each: u32,
    ) -> Result<HashMap<(u64, u64), StoredMoment>, Status> {
        let mut by_shard: HashMap<String, Vec<PostKey>> = HashMap::new();
        for k in keys {
            let shard = self.shards.owner_of(k.author).unwrap_or_default();
            by_shard.entry(shard).or_default().push(*k);
        }
        let calls = by_shard.into_values().map(|keys| {
            let route = by_uid(keys[0].author);
            self.store.get_posts_with(
                GetPostsRequest {
                    keys,
                    interactions: true,
                    max_each,
                },
                route,
            )
        });
        let mut out = HashMap::new();
        for reply in join_all(calls).await {
            for m in reply?.moments {
                if let Some(p) = &m.post {
                    out.insert((p.author, p.seq), m);
                }
            }
        }
        Ok(out)
    }

    /// The views of `moments` (in order) that `viewer` may see, with the likes and
    /// comments shown to them.
    async fn views(
        &self,
        viewer: u64,
        moments: Vec<StoredMoment>,
    ) -> Result<Vec<PostView>, Status> {
        let mut people: Vec<u64> = Vec::new();
        for m in &moments {
            if let Some(p) = &m.post {
                people.push(p.author);
            }
            people.extend(m.likes.iter().map(|l| l.from));
            people.extend(m.comments.iter().map(|c| c.from));
        }
        let mutual = self.relations.mutual(viewer, &people).await?;
        Ok(moments
            .into_iter()
            .filter_map(|m| {
                let post = m.post?;
                if !may_see(&post, viewer, &mutual) {
                    return None;
                }
                let shown =
                    |from: u64| from == viewer || post.author == viewer || mutual.contains(&from);
                let own = post.author == viewer;
                Some(PostView {
                    post: Some(PostRef {
                        author: post.author,
                        seq: post.seq,
                    }),
                    visibility: if own { post.visibility } else { 0 },
                    listed: if own { post.listed } else { Vec::new() },
                    text: post.text,
                    media: post.media,
                    created_ms: post.created_ms,
                    likes: m
                        .likes
                        .into_iter()
                        .filter(|l| shown(l.from))
                        .map(|l| LikeView {
                            from: l.from,
                            created_ms: l.created_ms,
                        })
                        .collect(),
                    comments: m
                        .comments
                        .into_iter()
                        .filter(|c| shown(c.from))
                        .map(comment_view)
                        .collect(),
                })
            })
            .collect())
    }

    /// Fills one page from `sources` (each a user, and whether to read their outbox rather
    /// than their timeline), newest first, skipping what the viewer may not see; the page
    /// and the next cursor.
    async fn page(
        &self,
        viewer: u64,
        sources: &[(u64, bool)],
        cursor: &str,
        limit: u32,
    ) -> Result<PostsReply, Status> {
        let limit = match limit as usize {
            0 => PAGE.0,
            n => n.min(PAGE.1),
        };
        let mut position = cursor::decode(cursor)?;
        let mut posts = Vec::new();
        let mut more = true;
        for _ in 0..FILL_ROUNDS {
            if !more || posts.len() >= limit {
                break;
            }
            let want = limit - posts.len();
            let reads = sources.iter().map(|&(reader, outbox)| {
                self.store.read_timeline_with(
                    ReadTimelineRequest {
                        reader,
                        before: position,
                        limit: u32::try_from(want).unwrap_or(u32::MAX),
                        outbox,
                    },
                    by_uid(reader),
                )
            });
            let mut entries: Vec<TimelineEntry> = Vec::new();
            let mut source_more = false;
            for reply in join_all(reads).await {
                let reply = reply?;
                source_more |= reply.has_more;
                entries.extend(reply.entries);
            }
            // Newest first by (created, author, seq); a pushed post also in a pull
            // author's outbox comes once.
            entries.sort_unstable_by(|a, b| {
                (b.created_ms, b.author, b.seq).cmp(&(a.created_ms, a.author, a.seq))
            });
            entries.dedup();
            more = source_more || entries.len() > want;
            entries.truncate(want);
            let Some(last) = entries.last().copied() else {
                more = false;
                break;
            };
            position = Some(last);
            let keys: Vec<PostKey> = entries
                .iter()
                .map(|e| PostKey {
                    author: e.author,
                    seq: e.seq,
                })
                .collect();
            let mut found = self.fetch(&keys, PAGE_INTERACTIONS).await?;
            let ordered: Vec<StoredMoment> = keys
                .iter()
                .filter_map(|k| found.remove(&(k.author, k.seq)))
                .collect();
            posts.extend(self.views(viewer, ordered).await?);
        }
        let next_cursor = match (more, position) {
            (true, Some(p)) => cursor::encode(&p),
            _ => String::new(),
        };
        Ok(PostsReply { posts, next_cursor })
    }

    /// The post `key` and its likes and comments, if `viewer` may see it.
    async fn visible(&self, viewer: u64, key: PostKey) -> Result<StoredMoment, Status> {
        let moment = self
            .fetch(&[key], POST_INTERACTIONS)
            .await?
            .remove(&(key.author, key.seq))
            .ok_or_else(not_visible)?;
        let post = moment.post.as_ref().ok_or_else(not_visible)?;
        let mutual = self.relations.mutual(viewer, &[post.author]).await?;
        if may_see(post, viewer, &mutual) {
            Ok(moment)
        } else {
            Err(not_visible())
        }
    }

    fn tell(&self, uids: &[u64], body: serde_json::Value) {
        if let Some(events) = &self.events {
            events.send(uids, body);
        }
    }
}

fn comment_view(c: MomentComment) -> CommentView {
    CommentView {
        comment_id: c.comment_id,
        from: c.from,
        text: c.text,
        reply_to: c.reply_to,
        created_ms: c.created_ms,
    }
}

/// Checks a post's content; errors name their reason first.
fn check_post(request: &PostRequest) -> Result<(), Status> {
    let chars = request.text.chars().count();
    if chars > MAX_POST_CHARS {
        return Err(Status::invalid_argument(format!(
            "a post is at most {MAX_POST_CHARS} characters, this one is {chars}"
        ))
        .with_reason("text_too_long"));
    }
    if request.text.trim().is_empty() && request.media.is_empty() {
        return Err(
            Status::invalid_argument("a post needs text or media").with_reason("empty_post")
        );
    }
    if request.media.len() > MAX_MEDIA {
        return Err(Status::invalid_argument(format!(
            "a post carries at most {MAX_MEDIA} media, this one {}",
            request.media.len()
        ))
        .with_reason("too_many_media"));
    }
    if request
        .media
        .iter()
        .any(|m| m.is_empty() || m.len() > MAX_MEDIA_BYTES)
    {
        return Err(Status::invalid_argument(format!(
            "a media reference is 1 to {MAX_MEDIA_BYTES} bytes"
        ))
        .with_reason("bad_media"));
    }
    if MomentVisibility::try_from(request.visibility).is_err() {
        return Err(
            Status::invalid_argument("all_friends, only or except").with_reason("bad_visibility")
        );
    }
    if request.listed.len() > wx_api::MAX_FRIENDS as usize {
        return Err(Status::invalid_argument(format!(
            "a post lists at most {} friends",
            wx_api::MAX_FRIENDS
        )));
    }
    Ok(())
}

impl Moments for MomentsService {
    async fn post(&self, request: PostRequest) -> Result<PostReply, Status> {
        let me = acting_user()?;
        check_post(&request)?;
        let (seq, friends) = tokio::try_join!(
            self.seq.next_with(
                NextRequest { uid: me },
                wx_api::by_section(wx_api::seq_section(me)),
            ),
            self.relations.friends(me),
        )?;
        let listed: HashSet<u64> = request.listed.iter().copied().collect();
        let post = MomentPost {
            author: me,
            seq: seq.seq,
            text: request.text,
            media: request.media,
            visibility: request.visibility,
            listed: request.listed,
            created_ms: wx_api::now_ms(),
            deleted: false,
            pulled: false,
        };
        let admitted: Vec<u64> = friends
            .into_iter()
            .filter(|f| admits(post.visibility(), listed.contains(f)))
            .collect();
        let pushed = admitted.len() <= self.push_threshold();
        // Readers must know to pull before the post exists.
        if !pushed {
            self.store
                .mark_pull_author_with(MarkPullAuthorRequest { author: me }, by_uid(0))
                .await?;
            let mut list = self.pull.lock().unwrap_or_else(PoisonError::into_inner);
            if !list.authors.contains(&me) {
                let mut authors = (*list.authors).clone();
                authors.insert(me);
                list.authors = Arc::new(authors);
            }
        }
        let mut recipients = if pushed { admitted } else { Vec::new() };
        recipients.push(me);
        let created_ms = post.created_ms;
        let published = self
            .store
            .publish_with(
                PublishRequest {
                    post: Some(MomentPost {
                        pulled: !pushed,
                        ..post
                    }),
                    recipients,
                },
                by_uid(me),
            )
            .await?;
        // Accepted: the job is durable. Run it now; the sweep retries if this fails.
        let (fanout, job_id) = (Arc::clone(&self.fanout), published.job_id);
        if job_id != 0 {
            tokio::spawn(async move {
                if let Err(status) = fanout.run_job(me, job_id).await {
                    tracing::debug!(%status, job_id, "timeline fan-out left to the sweep");
                }
            });
        }
        metrics::counter!("wx_moments_posts_total", "mode" => if pushed { "push" } else { "pull" })
            .increment(1);
        Ok(PostReply {
            post: Some(PostRef {
                author: me,
                seq: seq.seq,
            }),
            created_ms,
            pushed,
        })
    }

    async fn delete(&self, request: PostRef) -> Result<DeleteReply, Status> {
        let me = acting_user()?;
        let key = key_of(Some(&request))?;
        if key.author != me {
            return Err(Status::permission_denied("only its author deletes a post")
                .with_reason("not_author"));
        }
        self.store.delete_post_with(key, by_uid(me)).await?;
        Ok(DeleteReply {})
    }

    async fn album(&self, request: AlbumRequest) -> Result<PostsReply, Status> {
        let me = acting_user()?;
        let author = if request.author == 0 {
            me
        } else {
            request.author
        };
        if author != me
            && !self
                .relations
                .mutual(me, &[author])
                .await?
                .contains(&author)
        {
            return Err(
                Status::permission_denied("only friends see each other's albums")
                    .with_reason("not_friend"),
            );
        }
        self.page(me, &[(author, true)], &request.cursor, request.limit)
            .await
    }

    async fn timeline(&self, request: TimelineRequest) -> Result<PostsReply, Status> {
        let me = acting_user()?;
        let pull = self.pull_authors().await?;
        let mut sources = vec![(me, false)];
        if !pull.is_empty() {
            let candidates: Vec<u64> = pull.iter().copied().filter(|a| *a != me).collect();
            let friends = self.relations.mutual(me, &candidates).await?;
            sources.extend(friends.into_iter().map(|a| (a, true)));
        }
        self.page(me, &sources, &request.cursor, request.limit)
            .await
    }

    async fn get(&self, request: PostRef) -> Result<PostView, Status> {
        let me = acting_user()?;
        let key = key_of(Some(&request))?;
        let moment = self.visible(me, key).await?;
        self.views(me, vec![moment])
            .await?
            .pop()
            .ok_or_else(not_visible)
    }

    async fn like(&self, request: PostRef) -> Result<LikeReply, Status> {
        let me = acting_user()?;
        let key = key_of(Some(&request))?;
        self.visible(me, key).await?;
        let reply = self
            .store
            .set_like_with(
                SetLikeRequest {
                    post: Some(key),
                    from: me,
                    on: true,
                },
                by_uid(key.author),
            )
            .await?;
        if reply.changed && key.author != me {
            self.tell(
                &[key.author],
                serde_json::json!({ "type": "like", "author": key.author, "seq": key.seq, "from": me }),
            );
        }
        Ok(LikeReply {
            changed: reply.changed,
        })
    }

    async fn unlike(&self, request: PostRef) -> Result<LikeReply, Status> {
        let me = acting_user()?;
        let key = key_of(Some(&request))?;
        let reply = self
            .store
            .set_like_with(
                SetLikeRequest {
                    post: Some(key),
                    from: me,
                    on: false,
                },
                by_uid(key.author),
            )
            .await?;
        Ok(LikeReply {
            changed: reply.changed,
        })
    }

    async fn comment(&self, request: CommentRequest) -> Result<CommentView, Status> {
        let me = acting_user()?;
        let key = key_of(request.post.as_ref())?;
        let chars = request.text.chars().count();
        if request.text.trim().is_empty() {
            return Err(
                Status::invalid_argument("a comment needs some text").with_reason("empty_text")
            );
        }
        if chars > MAX_COMMENT_CHARS {
            return Err(Status::invalid_argument(format!(
                "a comment is at most {MAX_COMMENT_CHARS} characters, this one is {chars}"
            ))
            .with_reason("text_too_long"));
        }
        let moment = self.visible(me, key).await?;
        let replied = (request.reply_to != 0)
            .then(|| {
                moment
                    .comments
                    .iter()
                    .find(|c| c.comment_id == request.reply_to)
            })
            .flatten()
            .map(|c| c.from);
        let comment = self
            .store
            .add_comment_with(
                AddCommentRequest {
                    post: Some(key),
                    comment: Some(MomentComment {
                        comment_id: 0,
                        from: me,
                        text: request.text,
                        reply_to: request.reply_to,
                        created_ms: wx_api::now_ms(),
                    }),
                },
                by_uid(key.author),
            )
            .await?;
        let mut told: Vec<u64> = [Some(key.author), replied]
            .into_iter()
            .flatten()
            .filter(|u| *u != me)
            .collect();
        told.dedup();
        self.tell(
            &told,
            serde_json::json!({
                "type": "comment", "author": key.author, "seq": key.seq,
                "from": me, "comment_id": comment.comment_id,
            }),
        );
        Ok(comment_view(comment))
    }

    async fn uncomment(&self, request: UncommentRequest) -> Result<DeleteReply, Status> {
        let me = acting_user()?;
        let key = key_of(request.post.as_ref())?;
        self.store
            .delete_comment_with(
                DeleteCommentRequest {
                    post: Some(key),
                    comment_id: request.comment_id,
                    by: me,
                },
                by_uid(key.author),
            )
            .await
            .map_err(|s| {
                if s.code() == svrkit::Code::PermissionDenied {
                    Status::permission_denied("only its author deletes a comment")
                        .with_reason("not_author")
                } else {
                    s
                }
            })?;
        Ok(DeleteReply {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(visibility: MomentVisibility, listed: &[u64]) -> MomentPost {
        MomentPost {
            author: 1,
            seq: 1,
            visibility: visibility as i32,
            listed: listed.to_vec(),
            ..MomentPost::default()
        }
    }

    #[test]
    fn visibility_follows_the_setting_and_the_current_relation() {
        // `mutual` is who the viewer is friends with both ways: here, the author (1).
        let friend_of_author: HashSet<u64> = [1].into_iter().collect();
        let stranger = HashSet::new();
        let all = post(MomentVisibility::AllFriends, &[]);
        assert!(may_see(&all, 1, &stranger), "the author always");
        assert!(may_see(&all, 2, &friend_of_author));
        assert!(!may_see(&all, 4, &stranger), "a stranger never");
        let only = post(MomentVisibility::Only, &[2]);
        assert!(may_see(&only, 2, &friend_of_author));
        assert!(!may_see(&only, 3, &friend_of_author));
        let except = post(MomentVisibility::Except, &[2]);
        assert!(!may_see(&except, 2, &friend_of_author));
        assert!(may_see(&except, 3, &friend_of_author));
        let deleted = MomentPost {
            deleted: true,
            ..all
        };
        assert!(
            !may_see(&deleted, 1, &friend_of_author),
            "deleted: nobody, not even the author"
        );
    }

    #[test]
    fn thresholds_parse_from_json_or_a_number() {
        assert_eq!(parse_threshold(r#"{"push_threshold": 300}"#), Some(300));
        assert_eq!(parse_threshold(" 42 "), Some(42));
        assert_eq!(parse_threshold(r#"{"other": 1}"#), None);
        assert_eq!(parse_threshold("many"), None);
        assert_eq!(parse_threshold("-5"), None);
    }
}
