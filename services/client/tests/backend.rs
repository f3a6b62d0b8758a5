//! The backend end to end with the embedded registry: every service its own process,
//! every request through the access tier.

mod common;

use common::{Backend, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_session() {
    // Debug logs everywhere: secrets must stay out of them too.
    let backend = Backend::start_with(Registry::Embedded, &[("RUST_LOG", "debug")]).await;
    common::scripted_session(&backend).await;
    // Passwords, wrong ones too, and tokens crossed every tier: no log holds one.
    common::messaging::send_push_sync_and_catch_up(&backend).await;
    let user = backend.user(&common::unique("wrong_pw")).await;
    let wrong = serde_json::json!({ "name": user.name, "password": "not the password" });
    common::refused(&backend.http, "login", wrong, None, 401, "unauthenticated").await;
    backend.assert_logs_hold_no_secrets();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_and_their_limits() {
    let backend = Backend::start(Registry::Embedded).await;
    common::relations_and_their_limits(&backend).await;
    common::finding_people_and_the_long_connection(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_errors() {
    let backend = Backend::start(Registry::Embedded).await;
    common::bad_input_gets_precise_errors(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_every_process_loses_nothing() {
    let mut backend = Backend::start(Registry::Embedded).await;
    common::restarting_every_process_loses_nothing(&mut backend, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_is_rate_limited() {
    // A budget of 30 requests that practically never refills.
    let backend = Backend::start_with(
        Registry::Embedded,
        &[("WX_RATE_PER_SEC", "0.0001"), ("WX_RATE_BURST", "30")],
    )
    .await;
    common::each_user_is_rate_limited(&backend, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_accept_is_finished_by_accepting_again() {
    let backend = Backend::start(Registry::Embedded).await;
    common::an_interrupted_accept_is_finished_by_accepting_again(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_pushed_synced_and_caught_up() {
    let backend = Backend::start(Registry::Embedded).await;
    common::messaging::send_push_sync_and_catch_up(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_refuses_precisely_and_never_reveals_a_block() {
    let backend = Backend::start(Registry::Embedded).await;
    common::messaging::messaging_refusals(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_reaches_every_member_once() {
    let backend = Backend::start(Registry::Embedded).await;
    common::messaging::group_chat(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_fifty() {
    let backend = Backend::start_with(Registry::Embedded, &[("WX_MAX_FRIENDS", "60")]).await;
    common::messaging::group_of_fifty(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_fan_out_survives_a_crash_mid_job() {
    let mut backend = Backend::start_with(
        Registry::Embedded,
        &[
            ("WX_MAX_FRIENDS", "20"),
            ("WX_FAILPOINT_FANOUT_ABORT_AFTER", "4"),
            ("WX_FANOUT_LEASE_MS", "300"),
        ],
    )
    .await;
    common::messaging::fanout_survives_a_crash_mid_job(&mut backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_messages_flow_loses_and_duplicates_nothing() {
    let mut backend =
        Backend::start_with(Registry::Embedded, &[("WX_FANOUT_LEASE_MS", "300")]).await;
    common::messaging::chaos_loses_and_duplicates_nothing(&mut backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moments_visibility_matrix() {
    let backend = Backend::start_with(Registry::Embedded, &[("WX_MAX_FRIENDS", "20")]).await;
    common::moments::visibility_matrix(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moments_likes_comments_deletion_and_refusals() {
    let backend = Backend::start(Registry::Embedded).await;
    common::moments::likes_comments_deletion_and_refusals(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moments_pagination_is_stable_while_posts_arrive() {
    let backend = Backend::start(Registry::Embedded).await;
    common::moments::pagination_is_stable_while_posts_arrive(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moments_pull_authors_merge_with_pushed_posts() {
    let backend = Backend::start(Registry::Embedded).await;
    common::moments::pull_authors_merge_with_pushed_posts(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moments_fanout_survives_a_crash() {
    let mut backend = Backend::start_with(
        Registry::Embedded,
        &[
            ("WX_MAX_FRIENDS", "20"),
            ("WX_FAILPOINT_MOMENTS_ABORT_AFTER", "1"),
        ],
    )
    .await;
    common::moments::fanout_survives_a_crash(&mut backend).await;
}

/// The edge's bounds, on a backend with short timeouts and a small connection cap.
async fn tight_edge() -> Backend {
    let cap = common::edge::MAX_CONNECTIONS.to_string();
    Backend::start_with(
        Registry::Embedded,
        &[
            ("WX_HEADER_TIMEOUT_MS", "500"),
            ("WX_BODY_TIMEOUT_MS", "500"),
            ("WX_MAX_CONNECTIONS", cap.as_str()),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_short_requests_end_within_the_timeouts() {
    let backend = tight_edge().await;
    common::edge::slow_and_short_requests_end(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once() {
    // The default 10 s header timeout: served connections keep their places meanwhile.
    let cap = common::edge::MAX_CONNECTIONS.to_string();
    let backend =
        Backend::start_with(Registry::Embedded, &[("WX_MAX_CONNECTIONS", cap.as_str())]).await;
    common::edge::connections_are_capped(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_websocket_frames_are_refused_from_their_header() {
    let backend = tight_edge().await;
    common::edge::oversized_websocket_frames_are_refused(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_fields_batches_and_tokens_are_bounded() {
    let backend = Backend::start(Registry::Embedded).await;
    common::edge::inputs_are_bounded(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_sessions_live_connections() {
    let backend = Backend::start(Registry::Embedded).await;
    common::edge::logout_ends_the_sessions_connections(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_slow_down_per_account() {
    let backend = Backend::start(Registry::Embedded).await;
    common::edge::failed_logins_slow_down_per_account(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_expiry_ends_its_live_connection() {
    let backend = Backend::start_with(Registry::Embedded, &[("WX_SESSION_TTL_SECS", "2")]).await;
    common::edge::expiry_ends_the_connection(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_user_and_per_address_are_capped() {
    let backend = Backend::start_with(
        Registry::Embedded,
        &[("WX_MAX_CONNECTIONS_PER_ADDRESS", "4")],
    )
    .await;
    common::edge::connections_per_user_are_capped(&backend).await;
    common::edge::connections_per_address_are_capped(&backend).await;
}

#[test]
fn the_log_scan_knows_a_token_when_it_sees_one() {
    assert!(common::holds_token(
        "verified 4242.0123456789abcdef0123456789abcdef ok"
    ));
    assert!(!common::holds_token("version 1.2 and 0123456789abcdef"));
    assert!(!common::holds_token(
        "4242.0123456789ABCDEF0123456789abcdef"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_metrics_pass_promtool() {
    let backend = Backend::start_with(Registry::Embedded, &[("SVRKIT_ADMIN", "127.0.0.1:0")]).await;
    // Traffic through every tier first, so the metrics exist.
    common::scripted_session(&backend).await;
    common::moments::pagination_is_stable_while_posts_arrive(&backend).await;
    common::metrics::promtool_passes_every_process(&backend).await;
}
