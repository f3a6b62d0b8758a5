//! The `moments.*` actions: JSON in, `wx.moments.Moments` calls, JSON out.
//!
//! A post is named by `{"author": uid, "seq": n}` (`moments.delete` takes `seq` alone: the
//! author is the caller). Pages take `cursor` (a previous page's `next_cursor`) and
//! `limit`; `moments.album` takes `author` (default: the caller).

use serde_json::{Value, json};
use wx_api::moments::{
    AlbumRequest, CommentRequest, CommentView, PostRef, PostRequest, PostView, PostsReply,
    TimelineRequest, UncommentRequest,
};
use wx_api::storage::MomentVisibility;

use super::Call;
use crate::error::ApiError;
use crate::json::{ids, limit, number, optional_id, optional_number, optional_text, text};

fn post_ref(body: &Value, me: u64) -> Result<PostRef, ApiError> {
    Ok(PostRef {
        author: optional_id(body, "author")?.unwrap_or(me),
        seq: number(body, "seq")?,
    })
}

fn visibility(body: &Value) -> Result<(MomentVisibility, Vec<u64>), ApiError> {
    let v = match optional_text(body, "visibility")?.as_deref() {
        None | Some("all_friends") => MomentVisibility::AllFriends,
        Some("only") => MomentVisibility::Only,
        Some("except") => MomentVisibility::Except,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "\"visibility\" is all_friends, only or except, not {other:?}"
            )));
        }
    };
    let listed = match body.get("listed") {
        None | Some(Value::Null) => Vec::new(),
        Some(_) => ids(body, "listed")?,
    };
    Ok((v, listed))
}

fn visibility_name(v: i32) -> &'static str {
    match MomentVisibility::try_from(v) {
        Ok(MomentVisibility::Only) => "only",
        Ok(MomentVisibility::Except) => "except",
        _ => "all_friends",
    }
}

fn media(body: &Value) -> Result<Vec<String>, ApiError> {
    match body.get("media") {
        None | Some(Value::Null) => Ok(Vec::new()),
        // Refused before the list is read (the moments service checks it again).
        Some(Value::Array(list)) if list.len() > wx_api::MAX_POST_MEDIA => {
            Err(ApiError::invalid(format!(
                "a post carries at most {} media, this one {}",
                wx_api::MAX_POST_MEDIA,
                list.len()
            ))
            .reason("too_many_media"))
        }
        Some(Value::Array(list)) => list
            .iter()
            .map(|m| {
                m.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::invalid("\"media\" must be a list of strings"))
            })
            .collect(),
        Some(_) => Err(ApiError::invalid("\"media\" must be a list of strings")),
    }
}

fn comment_json(c: &CommentView) -> Value {
    json!({
        "comment_id": c.comment_id,
        "from": c.from,
        "text": c.text,
        "reply_to": c.reply_to,
        "created_ms": c.created_ms,
    })
}

fn post_json(p: &PostView, me: u64) -> Value {
    let r = p.post.unwrap_or_default();
    let mut out = json!({
        "author": r.author,
        "seq": r.seq,
        "text": p.text,
        "media": p.media,
        "created_ms": p.created_ms,
        "likes": p.likes.iter().map(|l| json!({ "from": l.from, "created_ms": l.created_ms })).collect::<Vec<_>>(),
        "comments": p.comments.iter().map(comment_json).collect::<Vec<_>>(),
    });
    if r.author == me {
        out["visibility"] = json!(visibility_name(p.visibility));
        out["listed"] = json!(p.listed);
    }
    out
}

fn page_json(reply: &PostsReply, me: u64) -> Value {
    json!({
        "posts": reply.posts.iter().map(|p| post_json(p, me)).collect::<Vec<_>>(),
        "next_cursor": reply.next_cursor,
    })
}

// Refusals carry the reason the moments service states: `not_visible`, `not_friend`,
// `not_author`, `bad_cursor`, …

pub(super) async fn post(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let (visibility, listed) = visibility(body)?;
    let reply = call
        .clients
        .moments
        .post(PostRequest {
            text: optional_text(body, "text")?.unwrap_or_default(),
            media: media(body)?,
            visibility: visibility as i32,
            listed,
        })
        .await?;
    let r = reply.post.unwrap_or_default();
    Ok(
        json!({ "author": r.author, "seq": r.seq, "created_ms": reply.created_ms, "pushed": reply.pushed }),
    )
}

pub(super) async fn delete(call: Call<'_>) -> Result<Value, ApiError> {
    call.clients
        .moments
        .delete(post_ref(call.body, call.me)?)
        .await?;
    Ok(json!({}))
}

pub(super) async fn album(call: Call<'_>) -> Result<Value, ApiError> {
    let (body, me) = (call.body, call.me);
    let reply = call
        .clients
        .moments
        .album(AlbumRequest {
            author: optional_id(body, "author")?.unwrap_or(me),
            cursor: optional_text(body, "cursor")?.unwrap_or_default(),
            limit: limit(body)?,
        })
        .await?;
    Ok(page_json(&reply, me))
}

pub(super) async fn timeline(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let reply = call
        .clients
        .moments
        .timeline(TimelineRequest {
            cursor: optional_text(body, "cursor")?.unwrap_or_default(),
            limit: limit(body)?,
        })
        .await?;
    Ok(page_json(&reply, call.me))
}

pub(super) async fn get(call: Call<'_>) -> Result<Value, ApiError> {
    let post = call
        .clients
        .moments
        .get(post_ref(call.body, call.me)?)
        .await?;
    Ok(json!({ "post": post_json(&post, call.me) }))
}

pub(super) async fn like(call: Call<'_>) -> Result<Value, ApiError> {
    let reply = call
        .clients
        .moments
        .like(post_ref(call.body, call.me)?)
        .await?;
    Ok(json!({ "changed": reply.changed }))
}

pub(super) async fn unlike(call: Call<'_>) -> Result<Value, ApiError> {
    let reply = call
        .clients
        .moments
        .unlike(post_ref(call.body, call.me)?)
        .await?;
    Ok(json!({ "changed": reply.changed }))
}

pub(super) async fn comment(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    let reply = call
        .clients
        .moments
        .comment(CommentRequest {
            post: Some(post_ref(body, call.me)?),
            text: text(body, "text")?,
            reply_to: optional_number(body, "reply_to")?.unwrap_or(0),
        })
        .await?;
    Ok(json!({ "comment": comment_json(&reply) }))
}

pub(super) async fn uncomment(call: Call<'_>) -> Result<Value, ApiError> {
    let body = call.body;
    call.clients
        .moments
        .uncomment(UncommentRequest {
            post: Some(post_ref(body, call.me)?),
            comment_id: number(body, "comment_id")?,
        })
        .await?;
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_lists_are_bounded_before_they_are_read() {
        let nine = json!({ "media": vec!["p.jpg"; wx_api::MAX_POST_MEDIA] });
        assert_eq!(
            media(&nine).map(|m| m.len()).ok(),
            Some(wx_api::MAX_POST_MEDIA)
        );
        let ten = json!({ "media": vec!["p.jpg"; wx_api::MAX_POST_MEDIA + 1] });
        let refused = media(&ten).expect_err("one too many").body();
        assert_eq!(refused["error"]["reason"], "too_many_media");
        assert_eq!(
            refused["error"]["message"],
            "a post carries at most 9 media, this one 10"
        );
        assert!(media(&json!({ "media": [1] })).is_err());
        assert_eq!(media(&json!({})).map(|m| m.len()).ok(), Some(0));
    }
}
