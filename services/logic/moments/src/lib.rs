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
mod paging;
mod pull;
mod visibility;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use svrkit::config::LiveConfig;
use svrkit::{Channel, Status};
use wx_api::acting_user;
use wx_api::by_uid;
use wx_api::moments::moments_server::Moments;
use wx_api::moments::{
    AlbumRequest, CommentRequest, CommentView, DeleteReply, LikeReply, PostRef, PostReply,
    PostRequest, PostView, PostsReply, TimelineRequest, UncommentRequest,
};
use wx_api::seq::{NextRequest, SeqClient};
use wx_api::storage::{
    AddCommentRequest, DeleteCommentRequest, MarkPullAuthorRequest, MomentComment, MomentPost,
    MomentVisibility, MomentsStoreClient, PostKey, PublishRequest, SetLikeRequest,
};

pub use events::Events;
pub use fanout::Fanout;
pub use pull::parse_threshold;
pub use wx_api::relations::Relations;

use paging::comment_view;
use pull::PullList;
use visibility::{admits, not_visible};

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

    fn tell(&self, uids: &[u64], body: serde_json::Value) {
        if let Some(events) = &self.events {
            events.send(uids, body);
        }
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
        // The reader's own outbox too: their post shows at once, before the fan-out
        // (run after the post is acknowledged) has put it on their timeline; the merge
        // keeps one copy once it has.
        let mut sources = vec![(me, false), (me, true)];
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
        self.visible(me, key).await?;
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
        // Whoever may not see the post hears what they would of a post that does not
        // exist, whether it has comments or not.
        self.visible(me, key).await?;
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
