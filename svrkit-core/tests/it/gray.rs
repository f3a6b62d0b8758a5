//! Gray-release configuration through the embedded registry, observed from real requests.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use svrkit::discovery::EmbeddedRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_ten_percent_promote_and_roll_back() {
    let dir_dir = svrkit_testkit::tempdir("gray");
    let dir = dir_dir.path();
    let store = Arc::new(EmbeddedRegistry::new(dir).poll(Duration::from_millis(20)));
    common::gray_release_scenario(store).await;
}
