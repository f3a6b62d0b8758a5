//! The same end-to-end suite with a real etcd as the registry.

use crate::harness::{Backend, Registry};
use crate::scenarios;
use svrkit_testkit::Etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_contact_scenario_with_etcd() {
    let etcd = Etcd::start().await;
    let backend = Backend::start(Registry::Etcd(etcd.endpoint())).await;
    scenarios::contacts::every_contact_scenario(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_and_their_limits_with_etcd() {
    let etcd = Etcd::start().await;
    let backend = Backend::start(Registry::Etcd(etcd.endpoint())).await;
    scenarios::contacts::relations_and_their_limits(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_errors_with_etcd() {
    let etcd = Etcd::start().await;
    let backend = Backend::start(Registry::Etcd(etcd.endpoint())).await;
    scenarios::input::bad_input_gets_precise_errors(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_of_every_process_loses_nothing_with_etcd() {
    let etcd = Etcd::start().await;
    let mut backend = Backend::start(Registry::Etcd(etcd.endpoint())).await;
    scenarios::durability::restarting_every_process_loses_nothing(&mut backend, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_pushed_synced_and_caught_up_with_etcd() {
    let etcd = Etcd::start().await;
    let backend = Backend::start(Registry::Etcd(etcd.endpoint())).await;
    scenarios::messaging::send_push_sync_and_catch_up(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_message_reaches_every_member_once_with_etcd() {
    let etcd = Etcd::start().await;
    let backend = Backend::start(Registry::Etcd(etcd.endpoint())).await;
    scenarios::messaging::group_chat(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moments_visibility_matrix_with_etcd() {
    let etcd = Etcd::start().await;
    let backend =
        Backend::start_with(Registry::Etcd(etcd.endpoint()), &[("WX_MAX_FRIENDS", "20")]).await;
    scenarios::moments::visibility_matrix(&backend).await;
}
