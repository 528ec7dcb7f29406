//! A real Strapi 5 (the app in `tests/strapi`) for tests, started and stopped through
//! `scripts/strapi.sh` so humans, CI and tests share one way of running it.
//!
//! Under `scripts/with-strapi.sh` (what `make test` uses) one Strapi serves the whole suite and
//! [`StrapiServer::shared`] hands out its URL and admin credentials; tests on it must not depend on
//! global state (use unique webhook names, look for your own entries). Tests that stop Strapi or
//! need it configured differently start a private one, which is stopped, process group and all,
//! when the value is dropped. Nothing is installed here: CI runs `scripts/ensure-strapi-app.sh`
//! first, and a missing install fails with that instruction.

use std::{path::Path, process::Command, sync::Mutex, time::Duration};

use serde_json::{Value, json};
use strapi_webhook_operator::{
    registration,
    strapi::{ClientOptions, Credentials, StrapiClient, StrapiError},
};
use tempfile::TempDir;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/strapi.sh");

/// A running Strapi with its first admin created.
pub struct StrapiServer {
    base_url: String,
    email: String,
    password: String,
    // Set for a Strapi this value started; its run directory holds the pid, log and database.
    private: Option<TempDir>,
}

impl StrapiServer {
    /// The suite's shared Strapi when `STRAPI_TEST_URL`, `STRAPI_TEST_EMAIL` and
    /// `STRAPI_TEST_PASSWORD` are set (by `scripts/with-strapi.sh`), else a private one.
    pub async fn shared() -> Self {
        match (
            std::env::var("STRAPI_TEST_URL"),
            std::env::var("STRAPI_TEST_EMAIL"),
            std::env::var("STRAPI_TEST_PASSWORD"),
        ) {
            (Ok(base_url), Ok(email), Ok(password)) => StrapiServer {
                base_url,
                email,
                password,
                private: None,
            },
            _ => Self::private().await,
        }
    }

    /// A Strapi of this test's own, with a fresh database.
    pub async fn private() -> Self {
        Self::private_with_env(&[]).await
    }

    /// A private Strapi with extra environment, e.g. `("ADMIN_ACCESS_TOKEN_LIFESPAN", "2")` or
    /// `("ADMIN_RATE_LIMIT", "true")` (see `tests/strapi/config/admin.js`).
    pub async fn private_with_env(env: &[(&str, &str)]) -> Self {
        let run_dir = tempfile::Builder::new()
            .prefix("strapi-test-")
            .tempdir()
            .expect("create a run directory");
        let output = tokio::process::Command::new(SCRIPT)
            .arg("start")
            .env("STRAPI_RUN_DIR", run_dir.path())
            // Strapi is stopped on drop; this also stops it if the test process is killed.
            .env("STRAPI_OWNER_PID", std::process::id().to_string())
            .envs(env.iter().copied())
            .output()
            .await
            .unwrap_or_else(|error| panic!("running {SCRIPT} start: {error}"));
        if !output.status.success() {
            panic!(
                "starting the test Strapi failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let exports = String::from_utf8_lossy(&output.stdout);
        let value = |name: &str| {
            exports
                .lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("{SCRIPT} start printed no {name}: {exports}"))
                .to_owned()
        };
        StrapiServer {
            base_url: value("STRAPI_TEST_URL"),
            email: value("STRAPI_TEST_EMAIL"),
            password: value("STRAPI_TEST_PASSWORD"),
            private: Some(run_dir),
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The first admin's email.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// The first admin's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The first admin's credentials.
    pub fn credentials(&self) -> Credentials {
        Credentials::password(self.email.clone(), self.password.clone())
    }

    /// A client logged in (on first use) as the first admin, with default options.
    pub fn client(&self) -> StrapiClient {
        self.client_with(ClientOptions::default())
    }

    /// A client for the first admin with the given timeouts and retries.
    pub fn client_with(&self, options: ClientOptions) -> StrapiClient {
        StrapiClient::with_options(&self.base_url, self.credentials(), options)
            .expect("a valid base URL")
    }

    /// A guard that removes, when dropped, the webhooks the test tells it about.
    pub fn cleanup(&self) -> StrapiCleanup {
        StrapiCleanup {
            base_url: self.base_url.clone(),
            credentials: self.credentials(),
            instances: Mutex::default(),
            webhooks: Mutex::default(),
        }
    }

    /// Creates an admin API token with the given permission actions (e.g.
    /// `admin::webhooks.read`) and returns its secret. Strapi's admin-token API is set-up only
    /// the tests need, so it is called here rather than through the operator's client.
    pub async fn create_admin_token(&self, name: &str, actions: &[&str]) -> String {
        let permissions: Vec<Value> = actions
            .iter()
            .map(|action| json!({ "action": action }))
            .collect();
        let body = json!({ "name": name, "adminPermissions": permissions });
        let created = self
            .admin_post("admin/admin-tokens", &self.login().await, &body)
            .await;
        created["data"]["accessKey"]
            .as_str()
            .expect("the new token's accessKey")
            .to_owned()
    }

    /// Ends every session of the first admin, as "log out" without a device does in Strapi:
    /// access tokens stop working and refresh tokens are revoked.
    pub async fn revoke_all_sessions(&self) {
        let token = self.login().await;
        self.admin_post("admin/logout", &token, &json!({})).await;
    }

    /// The statuses Strapi logged for `request` (e.g. `"POST /admin/login"`), oldest first, so a
    /// test can see which calls a client made. Only for a private Strapi, whose log is its own.
    pub fn logged_statuses(&self, request: &str) -> Vec<u16> {
        let run_dir = self
            .private
            .as_ref()
            .expect("only a private Strapi's log is the test's own");
        let log = std::fs::read_to_string(run_dir.path().join("strapi.log"))
            .expect("read the Strapi log");
        let marker = format!(": {request} (");
        log.lines()
            .filter(|line| line.contains(&marker))
            .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
            .collect()
    }

    /// Stops a private Strapi now (its process group) and waits until it is gone.
    pub fn stop(&mut self) {
        let run_dir = self
            .private
            .as_ref()
            .expect("only a private Strapi can be stopped");
        stop(run_dir.path());
    }

    async fn login(&self) -> String {
        let body = json!({ "email": self.email, "password": self.password });
        let answer = http()
            .post(format!("{}/admin/login", self.base_url))
            .json(&body)
            .send()
            .await
            .expect("log in to the test Strapi");
        let answer: Value = answer
            .error_for_status()
            .expect("log in accepted")
            .json()
            .await
            .expect("login JSON");
        answer["data"]["token"]
            .as_str()
            .expect("login token")
            .to_owned()
    }

    async fn admin_post(&self, path: &str, token: &str, body: &Value) -> Value {
        let answer = http()
            .post(format!("{}/{path}", self.base_url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST {path}: {error}"));
        let status = answer.status();
        let text = answer.text().await.expect("answer body");
        assert!(status.is_success(), "POST {path}: HTTP {status}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("POST {path}: {error}: {text}"))
    }
}

impl Drop for StrapiServer {
    fn drop(&mut self) {
        if let Some(run_dir) = &self.private {
            stop(run_dir.path());
        }
    }
}

/// Removes what a test registered in Strapi when it is dropped, whether the test passed or
/// panicked: the managed registrations of every instance it was told about ([`Self::instance`])
/// and every webhook made by hand ([`Self::webhook`]).
///
/// Strapi calls every registered webhook for each event, one after the other, so registrations
/// left behind by one test slow every later test on the shared Strapi.
pub struct StrapiCleanup {
    base_url: String,
    credentials: Credentials,
    instances: Mutex<Vec<String>>,
    webhooks: Mutex<Vec<String>>,
}

impl StrapiCleanup {
    /// Removes the registrations marked with instance `key` (`namespace/name`) on drop.
    pub fn instance(&self, key: &str) {
        self.instances.lock().unwrap().push(key.to_owned());
    }

    /// Deletes the webhook with Strapi id `id` on drop, if it is still there.
    pub fn webhook(&self, id: &str) {
        self.webhooks.lock().unwrap().push(id.to_owned());
    }

    async fn remove_all(&self) -> Result<(), StrapiError> {
        // A client of its own: the test's clients pool connections on the test's runtime, which
        // is blocked while this runs.
        let options = ClientOptions {
            timeout: Duration::from_secs(10),
            ..ClientOptions::default()
        };
        let client = StrapiClient::with_options(&self.base_url, self.credentials.clone(), options)?;
        let instances = self.instances.lock().unwrap().clone();
        for instance in instances {
            registration::remove(&client, &instance).await?;
        }
        let made_by_hand = self.webhooks.lock().unwrap().clone();
        for webhook in client.list_webhooks().await? {
            if made_by_hand.contains(&webhook.id) {
                client.delete_webhook(&webhook.id).await?;
            }
        }
        Ok(())
    }
}

impl Drop for StrapiCleanup {
    fn drop(&mut self) {
        let nothing_registered =
            self.instances.lock().unwrap().is_empty() && self.webhooks.lock().unwrap().is_empty();
        if nothing_registered {
            return;
        }
        // Drop cannot await, and the test's runtime may be a single thread that is running this
        // drop: the removal gets a thread and a runtime of its own.
        let removed = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime for the cleanup")
                        .block_on(self.remove_all())
                })
                .join()
        });
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("removing the test's webhooks from Strapi failed: {error}"),
            Err(_) => eprintln!("removing the test's webhooks from Strapi panicked"),
        }
    }
}

/// A plain HTTP client for the set-up calls above.
fn http() -> reqwest::Client {
    strapi_webhook_operator::http::client_builder()
        .build()
        .expect("an HTTP client")
}

fn stop(run_dir: &Path) {
    let status = Command::new(SCRIPT)
        .arg("stop")
        .env("STRAPI_RUN_DIR", run_dir)
        .status();
    if !matches!(status, Ok(status) if status.success()) {
        eprintln!(
            "stopping the test Strapi in {} failed: {status:?}",
            run_dir.display()
        );
    }
}
