//! A real headless Chromium for page tests, driven over WebDriver by [`crate::webdriver`].
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a free loopback port; each
//! [`Browser::session`] is a separate Chromium with its own profile (its own cookies and
//! storage: a separate person). Without chromedriver the tests skip with a message, and
//! fail under CI, where `tools/test` installs `chromium` and `chromium-driver`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use crate::webdriver::{Client, Element, Locator};

use crate::{PATIENCE, free_port, tempdir};

/// A running chromedriver.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    sessions: usize,
}

impl Browser {
    /// Starts chromedriver, or `None` (with a message) where it is not installed and this
    /// is not CI.
    pub async fn start(test: &str) -> Option<Browser> {
        let Some(driver) = find("chromedriver") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromedriver is missing under CI: tools/test installs chromium and chromium-driver"
            );
            eprintln!(
                "{test}: skipped: chromedriver is not installed (apt-get install chromium chromium-driver)"
            );
            return None;
        };
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let browser = Browser {
            child,
            port,
            dir: tempdir("browser"),
            sessions: 0,
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not listen within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(browser)
    }

    /// A new headless Chromium with a window of `width` × `height` CSS pixels.
    pub async fn session(&mut self, width: u32, height: u32) -> Client {
        self.sessions += 1;
        let profile = self.dir.path().join(format!("profile-{}", self.sessions));
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
            }
        });
        tokio::time::timeout(
            PATIENCE * 3,
            Client::connect(&format!("http://127.0.0.1:{}", self.port), capabilities),
        )
        .await
        .expect("Chromium started within the patience")
        .expect("a WebDriver session")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium outlives its chromedriver when a test fails before closing its
        // sessions (a failed run once left 100 renderers behind): end every process
        // started with a profile under this browser's directory.
        let _ = Command::new("pkill")
            .arg("-KILL")
            .arg("-f")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The profile directory goes with the struct, after the browser.
    }
}

/// `name` on the PATH.
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| Path::new(p).is_file())
}

/// Saves a screenshot of `client`'s page as `docs/screenshots/NAME.png` in the
/// repository (the README shows them).
pub async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&dir).expect("docs/screenshots");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("the screenshot is written");
}

/// Waits until the first element matching `css` on `client`'s page shows `needle` in its
/// text (a bounded wait: fails after three patiences), and returns that text.
pub async fn wait_for_text(client: &Client, css: &str, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    let mut last = String::new();
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if text.contains(needle) {
                return text;
            }
            last = text;
        }
        if tokio::time::Instant::now() >= deadline {
            let errors = page_errors(client).await;
            let shot =
                std::env::temp_dir().join(format!("svrkit-failed-{}.png", std::process::id()));
            if let Ok(png) = client.screenshot().await {
                let _ = std::fs::write(&shot, png);
            }
            eprintln!("the page at the failure: {}", shot.display());
            panic!("{css} never showed {needle:?} (last: {last:?}; errors on the page: {errors})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until an element matching `css` is displayed, and returns it.
pub async fn wait_for(client: &Client, css: &str) -> Element {
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && element.is_displayed().await.unwrap_or(false)
        {
            return element;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{css} was never displayed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clicks the element `css` once it is displayed (finding it again if the page replaced
/// it in between).
pub async fn click(client: &Client, css: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    loop {
        match wait_for(client, css).await.click().await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("clicking {css} again: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
}

/// What the page shows in its visible `.error` elements (for failure messages).
pub async fn page_errors(client: &Client) -> String {
    let script = "return [...document.querySelectorAll('.error')].map(e => e.id + ': ' + e.textContent).filter(t => !t.endsWith(': ')).join('; ')";
    match client.execute(script, vec![]).await {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// Types `text` into the field `css` once it is displayed (after clearing it).
pub async fn type_into(client: &Client, css: &str, text: &str) {
    let field = wait_for(client, css).await;
    field
        .clear()
        .await
        .unwrap_or_else(|e| panic!("clearing {css}: {e}"));
    field
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("typing into {css}: {e}"));
}
