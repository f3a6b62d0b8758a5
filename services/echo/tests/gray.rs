//! Gray-release configuration through the embedded registry, observed from real requests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use svrkit::discovery::EmbeddedRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_ten_percent_promote_and_roll_back() {
    let dir = std::env::temp_dir().join(format!(
        "svrkit-gray-{}-{:x}",
        std::process::id(),
        svrkit::context::random_u64()
    ));
    let store = Arc::new(EmbeddedRegistry::new(&dir).poll(Duration::from_millis(20)));
    common::gray_release_scenario(store).await;
    let _ = std::fs::remove_dir_all(&dir);
}
