//! Who sees what, decided at read time for pushed and pulled posts alike (see the crate
//! docs): the rule, as a pure function of the post, the viewer and the relation.

use std::collections::HashSet;

use svrkit::Status;
use wx_api::storage::{MomentPost, MomentVisibility};

/// Whether `viewer` may see `post`, given who is a friend of theirs both ways (`mutual`).
pub(crate) fn may_see(post: &MomentPost, viewer: u64, mutual: &HashSet<u64>) -> bool {
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
pub(crate) fn admits(visibility: MomentVisibility, listed: bool) -> bool {
    match visibility {
        MomentVisibility::AllFriends => true,
        MomentVisibility::Only => listed,
        MomentVisibility::Except => !listed,
    }
}

/// The one answer to a post the viewer may not see, whether or not it exists.
pub(crate) fn not_visible() -> Status {
    Status::permission_denied("you may not see this post").with_reason("not_visible")
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
}
