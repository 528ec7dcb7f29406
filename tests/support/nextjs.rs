//! A real Next.js 16 site for tests: the app in `tests/nextjs`, whose route handlers are the ones
//! `docs/nextjs.md` documents and whose pages are cached (ISR) and print a unique render id, so a
//! test sees whether a revalidation really refreshed a page.
//!
//! Each [`NextjsSite`] is a `next start` of its own, on a free loopback port, with its own copy of
//! the build (so its cache is its own), started and stopped through `scripts/nextjs.sh`. Nothing is
//! built here: `make test` runs `scripts/ensure-nextjs-app.sh` first, and a missing build fails
//! with that instruction.

use std::time::Duration;

use tempfile::TempDir;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/nextjs.sh");

/// The secret the site's handlers check (`REVALIDATE_SECRET`), as in `examples/secrets.yaml`.
pub const SITE_SECRET: &str = "change-me";

/// A running test site, stopped (process group and all) when dropped.
pub struct NextjsSite {
    base_url: String,
    run_dir: TempDir,
    http: reqwest::Client,
}

/// One rendering of a page, as the page printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendering {
    /// Unique per render: equal ids mean the page came from the cache.
    pub id: String,
    /// When the page was rendered (ISO 8601).
    pub at: String,
}

impl NextjsSite {
    /// Starts a site of this test's own.
    pub async fn start() -> Self {
        let run_dir = tempfile::Builder::new()
            .prefix("nextjs-test-")
            .tempdir()
            .expect("create a run directory");
        let output = tokio::process::Command::new(SCRIPT)
            .arg("start")
            .env("NEXTJS_RUN_DIR", run_dir.path())
            .env("NEXTJS_OWNER_PID", std::process::id().to_string())
            .env("REVALIDATE_SECRET", SITE_SECRET)
            .output()
            .await
            .unwrap_or_else(|error| panic!("running {SCRIPT} start: {error}"));
        if !output.status.success() {
            panic!(
                "starting the test Next.js site failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let exports = String::from_utf8_lossy(&output.stdout);
        let base_url = exports
            .lines()
            .find_map(|line| line.strip_prefix("export NEXTJS_TEST_URL="))
            .unwrap_or_else(|| panic!("{SCRIPT} start printed no NEXTJS_TEST_URL: {exports}"))
            .to_owned();
        let http = strapi_webhook_operator::http::client_builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        Self {
            base_url,
            run_dir,
            http,
        }
    }

    /// `base URL + path`, e.g. `at("/api/revalidate")`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The `Revalidate`-mode handler of docs/nextjs.md.
    pub fn revalidate_url(&self) -> String {
        self.at("/api/revalidate")
    }

    /// The `Forward`-mode handler of docs/nextjs.md.
    pub fn forward_url(&self) -> String {
        self.at("/api/strapi-webhook")
    }

    /// Fetches `path` and returns the rendering it shows; panics unless it is a 200 page.
    pub async fn render(&self, path: &str) -> Rendering {
        let response = self
            .http
            .get(self.at(path))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error}"));
        let status = response.status();
        let html = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "GET {path}: {status}\n{html}");
        let attribute = |name: &str| {
            let start = html
                .find(&format!("{name}=\""))
                .unwrap_or_else(|| panic!("GET {path}: no {name} in\n{html}"))
                + name.len()
                + 2;
            let end = html[start..].find('"').expect("a closing quote") + start;
            html[start..end].to_owned()
        };
        Rendering {
            id: attribute("data-render-id"),
            at: attribute("data-rendered-at"),
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.run_dir.path().join("next.log")).unwrap_or_default()
    }
}

impl Drop for NextjsSite {
    fn drop(&mut self) {
        let _ = std::process::Command::new(SCRIPT)
            .arg("stop")
            .env("NEXTJS_RUN_DIR", self.run_dir.path())
            .status();
    }
}
