//! Pages of posts: reading posts by key from their shards, the views a viewer may see
//! (likes and comments filtered), and timeline and album pages merged from pushed
//! pointers and pull authors' outboxes, continued by cursor.

use std::collections::HashMap;

use futures_util::future::join_all;
use svrkit::Status;
use wx_api::by_uid;
use wx_api::moments::{CommentView, LikeView, PostRef, PostView, PostsReply};
use wx_api::storage::{
    GetPostsRequest, MomentComment, PostKey, ReadTimelineRequest, StoredMoment, TimelineEntry,
};

use crate::{MomentsService, cursor};

use crate::visibility::{may_see, not_visible};

/// The default and the largest page.
const PAGE: (usize, usize) = (20, 50);
/// The most likes, and the newest comments, read with each post of a page (before
/// hiding those the viewer may not see).
const PAGE_INTERACTIONS: u32 = 50;
/// The same for a single post (`Get`, and the checks of a like or comment).
pub(crate) const POST_INTERACTIONS: u32 = 200;
/// Rounds of reading a page refills when posts it read were not visible.
const FILL_ROUNDS: usize = 4;

impl MomentsService {
    /// Posts by key, from every shard holding some, with at most `max_each` likes and the
    /// newest `max_each` comments.
    pub(crate) async fn fetch(
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
    pub(crate) async fn views(
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
    pub(crate) async fn page(
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
                let request = ReadTimelineRequest {
                    reader,
                    before: position,
                    limit: u32::try_from(want).unwrap_or(u32::MAX),
                    outbox,
                };
                // Timeline pointers from any replica (see ReadTimelineNearby); posts from
                // their author's shard leader, so an author sees their own at once.
                async move {
                    if outbox {
                        self.store.read_timeline_with(request, by_uid(reader)).await
                    } else {
                        self.store
                            .read_timeline_nearby_with(request, by_uid(reader))
                            .await
                    }
                }
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
    pub(crate) async fn visible(&self, viewer: u64, key: PostKey) -> Result<StoredMoment, Status> {
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
}

/// A stored comment as clients see it.
pub(crate) fn comment_view(c: MomentComment) -> CommentView {
    CommentView {
        comment_id: c.comment_id,
        from: c.from,
        text: c.text,
        reply_to: c.reply_to,
        created_ms: c.created_ms,
    }
}
