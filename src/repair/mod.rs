//! Gap repair (anti-entropy): Strapi sends each webhook once, so whatever it fired while no
//! receiver answered is gone. A check compares what Strapi holds with what the receiver stored
//! and stores what is missing as **recovered** events, in Strapi's own body shape.
//!
//! The component that holds Strapi's admin credentials (the controller, local mode) drives it;
//! the receiver only answers through its admin API ([`RepairClient`]). One [`check`] of an
//! instance, for every content type an enabled webhook may route:
//!
//! 1. reads the receiver's watermark of the type (the Strapi time up to which earlier checks
//!    compared); without one the check only sets it, and its floor, to now: a first check
//!    repairs nothing, and nothing from before it is ever compared;
//! 2. lists through the content manager what changed since the watermark minus an overlap (not
//!    before the floor): drafts by `updatedAt` and published versions by `publishedAt`, in every
//!    locale;
//! 3. asks the receiver which of those versions it stored, leaving out changes Strapi may still
//!    be sending: Strapi sends webhooks from an in-memory queue (five at a time, every registered
//!    webhook in turn), so under a burst its calls trail its writes by many seconds. A change is
//!    compared once it is older than `settle` and either the receiver has stored a call from
//!    Strapi showing a newer change (the queue got past it) or no call came for `settle`. The
//!    others are compared at the next check;
//! 4. posts each version still missing as a recovered `entry.publish` (publications first: a
//!    publish moves the draft's `updatedAt` too), `entry.create` (created after the watermark) or
//!    `entry.update`; the receiver routes it like Strapi's call and marks it recovered;
//! 5. moves the watermarks forward.
//!
//! Listing cannot see deletions and unpublications: a window in which the receiver may have
//! missed events is reported as a gap instead (see `docs/design/gap-repair.md`).

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::{
    queue::{DocumentVersion, UnixMillis, VersionKind, Watermark, Watermarks, now_millis},
    receiver::repair::{Progress, ReceiverRepairState, RecoveredAnswer, strapi_millis},
    strapi::{ContentType, ContentTypeKind, Entry, StrapiClient, StrapiError, VersionStatus},
};

/// Fields the content manager adds to an entry that Strapi's webhook bodies do not carry.
const ADMIN_ONLY_FIELDS: [&str; 4] = ["createdBy", "updatedBy", "localizations", "status"];

/// Why a check could not finish. Each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// Strapi's admin API failed.
    #[error("asking Strapi: {0}")]
    Strapi(#[from] StrapiError),
    /// The receiver's admin API failed.
    #[error("asking the receiver: {0}")]
    Receiver(String),
}

impl RepairError {
    /// A bounded label for metrics and Event reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            RepairError::Strapi(_) => "StrapiFailed",
            RepairError::Receiver(_) => "ReceiverFailed",
        }
    }
}

/// A client for the receiver's repair routes (`crate::receiver::repair`).
#[derive(Clone, Debug)]
pub struct RepairClient {
    http: reqwest::Client,
    base: String,
}

impl RepairClient {
    /// A client for the admin API at `base`, e.g. `http://receiver:9091`, authenticated with
    /// `token` (the receiver refuses its admin API without one).
    pub fn new(base: &str, token: Option<&crate::http::AdminToken>) -> Self {
        let http = crate::http::client_builder()
            .default_headers(
                token
                    .map(crate::http::AdminToken::authorization)
                    .unwrap_or_default(),
            )
            .timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds once the crypto provider is installed");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// The receiver process's boot id, start and ingest failures.
    pub async fn state(&self) -> Result<ReceiverRepairState, RepairError> {
        let url = format!("{}/v1/repair", self.base);
        self.send(self.http.get(&url), &url).await
    }

    /// How far Strapi's calls of `instance` have got.
    pub async fn progress(&self, instance: &str) -> Result<Progress, RepairError> {
        let url = format!("{}/v1/instances/{instance}/progress", self.base);
        self.send(self.http.get(&url), &url).await
    }

    /// The watermarks of `instance` (`namespace/name`).
    pub async fn watermarks(&self, instance: &str) -> Result<Watermarks, RepairError> {
        let url = format!("{}/v1/instances/{instance}/watermarks", self.base);
        self.send(self.http.get(&url), &url).await
    }

    /// Moves watermarks of `instance` forward.
    pub async fn advance(&self, instance: &str, marks: &Watermarks) -> Result<(), RepairError> {
        let url = format!("{}/v1/instances/{instance}/watermarks", self.base);
        let response = self
            .http
            .post(&url)
            .json(marks)
            .send()
            .await
            .map_err(|error| RepairError::Receiver(format!("{url}: {error}")))?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(RepairError::Receiver(format!("{url} answered {status}"))),
        }
    }

    /// Which versions the receiver stored an event for (or a newer one).
    pub async fn covered(
        &self,
        instance: &str,
        versions: &[DocumentVersion],
    ) -> Result<Vec<bool>, RepairError> {
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        let url = format!("{}/v1/instances/{instance}/versions", self.base);
        self.send(self.http.post(&url).json(versions), &url).await
    }

    /// Stores a recovered event.
    pub async fn recover(
        &self,
        instance: &str,
        event: &Value,
    ) -> Result<RecoveredAnswer, RepairError> {
        let url = format!("{}/v1/instances/{instance}/recovered", self.base);
        self.send(self.http.post(&url).json(event), &url).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, RepairError> {
        let failed = |error: reqwest::Error| RepairError::Receiver(format!("{url}: {error}"));
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(RepairError::Receiver(format!(
                "{url} answered {status}: {body}"
            )));
        }
        response.json().await.map_err(failed)
    }
}

/// How a check compares.
#[derive(Clone, Debug)]
pub struct CheckSettings {
    /// When Strapi's calls have stopped for this long, changes older than this are compared
    /// even if no newer call came: Strapi's queue is drained, or cannot reach the receiver.
    pub settle: Duration,
    /// How far before the watermark each listing starts: writes that commit out of order, and
    /// clock skew between Strapi and this process up to this much, are still seen.
    pub overlap: Duration,
}

impl Default for CheckSettings {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(15),
            overlap: Duration::from_secs(30),
        }
    }
}

/// What to check: one instance, its Strapi, and what its webhooks subscribe to.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    /// `namespace/name`.
    pub instance: &'a str,
    /// Its Strapi's admin API.
    pub strapi: &'a StrapiClient,
    /// Events the enabled webhooks subscribe to; only these are recovered.
    pub events: &'a BTreeSet<String>,
    /// Models and uids the webhooks' routes can take ([`routed_models`]), `None` when some
    /// route takes every model.
    pub models: Option<&'a BTreeSet<String>>,
}

/// One recovered event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// `entry.create`, `entry.update` or `entry.publish`.
    pub event: String,
    /// The content type's uid.
    pub uid: String,
    /// The document.
    pub document_id: String,
    /// When the change happened, in Strapi's clock.
    pub changed_at: UnixMillis,
}

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// When the check started.
    pub started_at: UnixMillis,
    /// Content types compared.
    pub content_types: usize,
    /// Calls made to Strapi's admin API.
    pub strapi_calls: u32,
    /// Document versions compared with the receiver.
    pub compared: usize,
    /// Events stored as recovered.
    pub recovered: Vec<Recovered>,
    /// Recoveries the receiver answered as already stored (Strapi's call won the race).
    pub already_stored: usize,
    /// Content types seen for the first time: their watermark was set, nothing compared.
    pub baselined: usize,
    /// Changes Strapi may still be sending, left for the next check.
    pub deferred: usize,
}

impl Report {
    /// The span of Strapi time of the recovered changes.
    pub fn recovered_span(&self) -> Option<(UnixMillis, UnixMillis)> {
        let times = self.recovered.iter().map(|recovered| recovered.changed_at);
        Some((times.clone().min()?, times.max()?))
    }
}

/// A version Strapi holds that may be missing, and the event that would carry it.
struct Candidate {
    version: DocumentVersion,
    event: Value,
    name: &'static str,
}

/// Compares one instance's Strapi with what the receiver stored and recovers what is missing.
pub async fn check(
    target: &Target<'_>,
    receiver: &RepairClient,
    settings: &CheckSettings,
) -> Result<Report, RepairError> {
    let mut report = Report {
        started_at: now_millis(),
        ..Report::default()
    };
    let types: Vec<ContentType> = target
        .strapi
        .list_content_types()
        .await?
        .into_iter()
        .filter(|content_type| routable(content_type, target.models))
        .collect();
    report.strapi_calls += 1;
    report.content_types = types.len();
    let locales = if types.iter().any(|content_type| content_type.localized) {
        report.strapi_calls += 1;
        target.strapi.list_locales().await?
    } else {
        Vec::new()
    };
    let marks = receiver.watermarks(target.instance).await?;
    let mut advanced = Watermarks::new();
    let mut candidates = Vec::new();
    let ripe = ripeness(
        &receiver.progress(target.instance).await?,
        settings,
        report.started_at,
    );
    for content_type in &types {
        let Some(&Watermark { at: mark, floor }) = marks.get(&content_type.uid) else {
            let now = report.started_at;
            let first = Watermark {
                at: now,
                floor: now,
            };
            advanced.insert(content_type.uid.clone(), first);
            report.baselined += 1;
            continue;
        };
        let since = (mark - i64::try_from(settings.overlap.as_millis()).unwrap_or(0)).max(floor);
        let localised: Vec<Option<&str>> = if content_type.localized {
            locales.iter().map(|code| Some(code.as_str())).collect()
        } else {
            vec![None]
        };
        // The mark moves to the newest change compared, in Strapi's own clock; deferred
        // changes are newer than every compared one (ripeness only grows with age), so the
        // next listing sees them again.
        let mut newest = mark;
        for locale in localised {
            let found = changed(target, content_type, since, mark, locale, &mut report).await?;
            for candidate in found {
                if !ripe(candidate.version.at) {
                    report.deferred += 1;
                    continue;
                }
                newest = newest.max(candidate.version.at);
                candidates.push(candidate);
            }
        }
        advanced.insert(content_type.uid.clone(), Watermark { at: newest, floor });
    }
    report.compared = candidates.len();
    recover_missing(target, receiver, candidates, &mut report).await?;
    receiver.advance(target.instance, &advanced).await?;
    Ok(report)
}

/// Strapi runs five calls at once, so calls for changes this close together may arrive in
/// either order.
const REORDERING_MS: i64 = 2_000;

/// Whether a change at a time (Strapi's clock) can be compared: see the module docs, step 3.
fn ripeness(
    progress: &Progress,
    settings: &CheckSettings,
    now: UnixMillis,
) -> impl Fn(UnixMillis) -> bool + use<> {
    let settle = i64::try_from(settings.settle.as_millis()).unwrap_or(i64::MAX);
    let passed = progress.strapi_time.map(|newest| newest - REORDERING_MS);
    let quiet = progress
        .idle_ms
        .is_none_or(|idle| i64::try_from(idle).unwrap_or(i64::MAX) >= settle);
    // Old enough in any case (a call can sit behind another webhook's 10 s timeout in one of
    // Strapi's workers while the others move on), and either Strapi's queue is past it or Strapi
    // has gone quiet.
    move |at| at <= now - settle && (quiet || passed.is_some_and(|passed| at <= passed))
}

/// Whether an enabled webhook could route events of this content type.
fn routable(content_type: &ContentType, models: Option<&BTreeSet<String>>) -> bool {
    content_type.uid.starts_with("api::")
        && models.is_none_or(|models| {
            models.contains(&content_type.singular_name) || models.contains(&content_type.uid)
        })
}

/// The versions of one content type (and locale) that changed since `since`, publications
/// first, each with the event that would carry it.
async fn changed(
    target: &Target<'_>,
    content_type: &ContentType,
    since: UnixMillis,
    mark: UnixMillis,
    locale: Option<&str>,
    report: &mut Report,
) -> Result<Vec<Candidate>, RepairError> {
    let statuses: &[VersionStatus] = if content_type.draft_and_publish {
        &[VersionStatus::Published, VersionStatus::Draft]
    } else {
        &[VersionStatus::Draft]
    };
    let since_text = Timestamp::from_millisecond(since)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string();
    let mut candidates = Vec::new();
    for &status in statuses {
        let entries = match content_type.kind {
            ContentTypeKind::Collection => {
                let listed = target
                    .strapi
                    .list_changed(&content_type.uid, status, &since_text, locale)
                    .await?;
                report.strapi_calls += listed.calls;
                listed.entries
            }
            ContentTypeKind::Single => {
                report.strapi_calls += 1;
                target
                    .strapi
                    .single_entry(&content_type.uid, status, locale)
                    .await?
                    .into_iter()
                    .collect()
            }
        };
        for entry in entries {
            if let Some(candidate) = candidate(content_type, status, entry, since, mark)
                .and_then(|candidate| subscribed(candidate, target.events))
            {
                candidates.push(candidate);
            }
        }
    }
    Ok(candidates)
}

/// The candidate as the webhooks subscribe to it: a document created since the watermark whose
/// creation nobody subscribes to still carries an update for those who subscribe to updates,
/// if it was changed after it was created.
fn subscribed(mut candidate: Candidate, events: &BTreeSet<String>) -> Option<Candidate> {
    if events.contains(candidate.name) {
        return Some(candidate);
    }
    let entry = &candidate.event["entry"];
    let changed_after_creation = entry["updatedAt"].as_str().and_then(strapi_millis)
        > entry["createdAt"].as_str().and_then(strapi_millis);
    if candidate.name == "entry.create" && changed_after_creation && events.contains("entry.update")
    {
        candidate.name = "entry.update";
        candidate.event["event"] = Value::from("entry.update");
        return Some(candidate);
    }
    None
}

/// The candidate an entry of a listing makes, if it changed since `since`.
fn candidate(
    content_type: &ContentType,
    status: VersionStatus,
    entry: Entry,
    since: UnixMillis,
    mark: UnixMillis,
) -> Option<Candidate> {
    let time = |field: &str| {
        entry
            .fields
            .get(field)
            .and_then(Value::as_str)
            .and_then(strapi_millis)
    };
    let at = time(status.changed_field()).filter(|at| *at >= since)?;
    let (kind, name) = match status {
        VersionStatus::Published => (VersionKind::Publication, "entry.publish"),
        // A draft identical to its published version was last changed by the publication,
        // which moves the draft's `updatedAt` too; the publication stands for that change.
        VersionStatus::Draft
            if content_type.draft_and_publish
                && entry.fields.get("status").and_then(Value::as_str) == Some("published") =>
        {
            return None;
        }
        VersionStatus::Draft if time("createdAt").is_some_and(|created| created > mark) => {
            (VersionKind::Content, "entry.create")
        }
        VersionStatus::Draft => (VersionKind::Content, "entry.update"),
    };
    let version = DocumentVersion {
        uid: content_type.uid.clone(),
        document_id: entry.document_id.clone(),
        locale: entry
            .fields
            .get("locale")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        kind,
        at,
    };
    Some(Candidate {
        event: strapi_body(name, content_type, entry),
        version,
        name,
    })
}

/// The body Strapi would have sent for this change.
fn strapi_body(name: &str, content_type: &ContentType, entry: Entry) -> Value {
    let mut fields: Map<String, Value> = entry.fields;
    for field in ADMIN_ONLY_FIELDS {
        fields.remove(field);
    }
    fields.insert("documentId".to_owned(), Value::String(entry.document_id));
    json!({
        "event": name,
        "createdAt": Timestamp::now().to_string(),
        "model": content_type.singular_name,
        "uid": content_type.uid,
        "entry": fields,
    })
}

/// Asks which candidates are missing and posts them: publications first, then the drafts still
/// missing once the publications are stored.
async fn recover_missing(
    target: &Target<'_>,
    receiver: &RepairClient,
    candidates: Vec<Candidate>,
    report: &mut Report,
) -> Result<(), RepairError> {
    let missing = still_missing(target, receiver, candidates).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let (publications, drafts): (Vec<_>, Vec<_>) = missing
        .into_iter()
        .partition(|candidate| candidate.version.kind == VersionKind::Publication);
    post(target, receiver, publications, report).await?;
    let drafts = still_missing(target, receiver, drafts).await?;
    post(target, receiver, drafts, report).await
}

async fn still_missing(
    target: &Target<'_>,
    receiver: &RepairClient,
    candidates: Vec<Candidate>,
) -> Result<Vec<Candidate>, RepairError> {
    let versions: Vec<DocumentVersion> = candidates
        .iter()
        .map(|candidate| candidate.version.clone())
        .collect();
    let covered = receiver.covered(target.instance, &versions).await?;
    Ok(candidates
        .into_iter()
        .zip(covered)
        .filter(|(_, covered)| !covered)
        .map(|(candidate, _)| candidate)
        .collect())
}

async fn post(
    target: &Target<'_>,
    receiver: &RepairClient,
    candidates: Vec<Candidate>,
    report: &mut Report,
) -> Result<(), RepairError> {
    for candidate in candidates {
        let answer = receiver.recover(target.instance, &candidate.event).await?;
        if answer.duplicate_of.is_some() {
            report.already_stored += 1;
            continue;
        }
        tracing::info!(
            instance = target.instance,
            event = candidate.name,
            uid = %candidate.version.uid,
            document = %candidate.version.document_id,
            "recovered an event Strapi's call never stored"
        );
        report.recovered.push(Recovered {
            event: candidate.name.to_owned(),
            uid: candidate.version.uid,
            document_id: candidate.version.document_id,
            changed_at: candidate.version.at,
        });
    }
    Ok(())
}

/// When checks are due: every instance on its interval, and every instance at once when the
/// receiver restarted or failed to store Strapi's calls since the last look.
#[derive(Debug, Default)]
pub struct Schedule {
    last_check: HashMap<String, Instant>,
    receiver: Option<(ReceiverRepairState, UnixMillis)>,
    // A window in which the receiver missed (or may have missed) Strapi's calls, reported with
    // each instance's next check.
    outages: HashMap<String, (UnixMillis, UnixMillis)>,
}

impl Schedule {
    /// Looks at the receiver; true when it restarted or failed ingests since the last look,
    /// which makes every instance in `instances` due now with the outage window noted.
    pub fn observe<'a>(
        &mut self,
        state: ReceiverRepairState,
        instances: impl IntoIterator<Item = &'a str>,
    ) -> bool {
        let now = now_millis();
        let outage = match &self.receiver {
            None => None,
            Some((previous, _)) if previous.boot_id != state.boot_id => Some((
                self.receiver.as_ref().map_or(now, |(_, seen)| *seen),
                state.started_at,
            )),
            Some((previous, seen)) if previous.ingest_failures < state.ingest_failures => {
                Some((*seen, now))
            }
            Some(_) => None,
        };
        self.receiver = Some((state, now));
        let Some((from, to)) = outage else {
            return false;
        };
        for instance in instances {
            self.last_check.remove(instance);
            let window = self
                .outages
                .entry(instance.to_owned())
                .or_insert((from, to));
            *window = (window.0.min(from), window.1.max(to));
        }
        true
    }

    /// Whether `instance` is due for a check on `interval`.
    pub fn due(&self, instance: &str, interval: Duration) -> bool {
        self.last_check
            .get(instance)
            .is_none_or(|last| last.elapsed() >= interval)
    }

    /// How long until `instance` is due. An instance whose check could not even start (no
    /// credentials, no client) counts as due an interval from now, never as due at once: the
    /// caller sleeps this long, and zero would make it spin.
    pub fn due_in(&self, instance: &str, interval: Duration) -> Duration {
        self.last_check
            .get(instance)
            .map_or(interval, |last| interval.saturating_sub(last.elapsed()))
    }

    /// Records a finished check; returns the outage window noted for it, if any.
    pub fn checked(&mut self, instance: &str) -> Option<(UnixMillis, UnixMillis)> {
        self.last_check.insert(instance.to_owned(), Instant::now());
        self.outages.remove(instance)
    }
}

/// A window of Strapi time in which events may have been lost: the outage the receiver showed
/// and the span of what was recovered, merged.
pub fn gap(
    outage: Option<(UnixMillis, UnixMillis)>,
    report: &Report,
) -> Option<(UnixMillis, UnixMillis)> {
    match (outage, report.recovered_span()) {
        (None, None) => None,
        (Some(window), None) | (None, Some(window)) => Some(window),
        (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
    }
}

/// The models and uids a set of routes can take, from each route's `match.models` and
/// `match.uids`: `None` when a route restricts neither and so takes every model.
pub fn routed_models<'a>(
    routes: impl IntoIterator<Item = (Option<&'a Vec<String>>, Option<&'a Vec<String>>)>,
) -> Option<BTreeSet<String>> {
    let mut names = BTreeSet::new();
    for (models, uids) in routes {
        if models.is_none() && uids.is_none() {
            return None;
        }
        names.extend(models.into_iter().chain(uids).flatten().cloned());
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article(draft_and_publish: bool) -> ContentType {
        ContentType {
            uid: "api::article.article".into(),
            kind: ContentTypeKind::Collection,
            singular_name: "article".into(),
            plural_name: "articles".into(),
            display_name: "Article".into(),
            draft_and_publish,
            visible: true,
            localized: false,
        }
    }

    fn entry(fields: Value) -> Entry {
        serde_json::from_value(fields).unwrap()
    }

    const MARK: UnixMillis = 1_795_980_750_000; // 2026-11-29T19:32:30Z

    #[test]
    fn a_draft_created_after_the_watermark_is_a_create_and_an_older_one_an_update() {
        let created = entry(
            json!({"documentId": "d1", "createdAt": "2026-11-29T19:32:31.000Z",
            "updatedAt": "2026-11-29T19:32:31.000Z", "status": "draft", "createdBy": {"id": 1}}),
        );
        let candidate =
            candidate(&article(true), VersionStatus::Draft, created, MARK, MARK).unwrap();
        assert_eq!(candidate.name, "entry.create");
        assert_eq!(candidate.event["model"], "article");
        assert_eq!(candidate.event["entry"]["documentId"], "d1");
        assert!(candidate.event["entry"].get("createdBy").is_none());
        let older = entry(
            json!({"documentId": "d2", "createdAt": "2026-11-29T19:00:00.000Z",
            "updatedAt": "2026-11-29T19:32:31.000Z", "status": "modified"}),
        );
        let candidate = candidate_of(older);
        assert_eq!(candidate.name, "entry.update");
        assert_eq!(candidate.version.kind, VersionKind::Content);
    }

    fn candidate_of(entry: Entry) -> Candidate {
        candidate(&article(true), VersionStatus::Draft, entry, MARK, MARK).unwrap()
    }

    #[test]
    fn a_new_documents_update_is_recovered_for_webhooks_that_take_only_updates() {
        let edited = entry(
            json!({"documentId": "d1", "createdAt": "2026-11-29T19:32:31.000Z",
            "updatedAt": "2026-11-29T19:32:33.000Z", "status": "draft"}),
        );
        let updates = BTreeSet::from(["entry.update".to_owned()]);
        let candidate = subscribed(candidate_of(edited), &updates).unwrap();
        assert_eq!(candidate.name, "entry.update");
        assert_eq!(candidate.event["event"], "entry.update");
        let untouched = entry(
            json!({"documentId": "d2", "createdAt": "2026-11-29T19:32:31.000Z",
            "updatedAt": "2026-11-29T19:32:31.000Z", "status": "draft"}),
        );
        assert!(subscribed(candidate_of(untouched), &updates).is_none());
    }

    #[test]
    fn a_draft_equal_to_its_publication_and_an_unchanged_entry_make_no_candidate() {
        let published = entry(
            json!({"documentId": "d1", "createdAt": "2026-11-29T19:00:00.000Z",
            "updatedAt": "2026-11-29T19:32:31.000Z", "status": "published"}),
        );
        assert!(
            candidate(
                &article(true),
                VersionStatus::Draft,
                published.clone(),
                MARK,
                MARK
            )
            .is_none()
        );
        // Without drafts every entry is "published"; its updates still count.
        assert!(candidate(&article(false), VersionStatus::Draft, published, MARK, MARK).is_some());
        let old = entry(json!({"documentId": "d1", "updatedAt": "2026-11-29T19:00:00.000Z"}));
        assert!(candidate(&article(false), VersionStatus::Draft, old, MARK, MARK).is_none());
    }

    #[test]
    fn a_published_version_is_a_publish_at_its_publication_time() {
        let published = entry(
            json!({"documentId": "d1", "updatedAt": "2026-11-29T19:32:31.000Z",
            "publishedAt": "2026-11-29T19:32:32.000Z"}),
        );
        let candidate = candidate(
            &article(true),
            VersionStatus::Published,
            published,
            MARK,
            MARK,
        )
        .unwrap();
        assert_eq!(candidate.name, "entry.publish");
        assert_eq!(candidate.version.kind, VersionKind::Publication);
        assert_eq!(candidate.version.at, MARK + 2_000);
    }

    #[test]
    fn a_receiver_restart_makes_every_instance_due_with_the_outage_window() {
        let mut schedule = Schedule::default();
        let state = |boot: &str, failures| ReceiverRepairState {
            boot_id: boot.into(),
            started_at: 5,
            ingest_failures: failures,
        };
        assert!(!schedule.observe(state("a", 0), ["cms/strapi"]));
        schedule.checked("cms/strapi");
        assert!(!schedule.due("cms/strapi", Duration::from_secs(60)));
        assert!(schedule.due_in("cms/strapi", Duration::from_secs(60)) > Duration::ZERO);
        assert_eq!(
            schedule.due_in("cms/other", Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert!(!schedule.observe(state("a", 0), ["cms/strapi"]));
        assert!(schedule.observe(state("b", 0), ["cms/strapi"]));
        assert!(schedule.due("cms/strapi", Duration::from_secs(60)));
        assert!(schedule.checked("cms/strapi").is_some());
        assert!(schedule.observe(state("b", 2), ["cms/strapi"]));
        assert!(schedule.checked("cms/strapi").is_some());
        assert!(schedule.checked("cms/strapi").is_none());
    }

    #[test]
    fn a_change_is_compared_once_strapi_sent_a_newer_one_or_went_quiet() {
        let settings = CheckSettings {
            settle: Duration::from_secs(10),
            ..CheckSettings::default()
        };
        let now = MARK + 60_000;
        let busy = Progress {
            strapi_time: Some(MARK),
            idle_ms: Some(100),
        };
        let ripe = ripeness(&busy, &settings, now);
        assert!(ripe(MARK - REORDERING_MS));
        // Older than the settle time, but Strapi is still sending and has not got there.
        assert!(!ripe(MARK + 1));
        // Strapi is past it, but it is younger than the settle time.
        let recent = Progress {
            strapi_time: Some(now),
            idle_ms: Some(100),
        };
        assert!(!ripeness(&recent, &settings, now)(now - 9_999));
        assert!(ripeness(&recent, &settings, now)(now - 10_000));
        let quiet = Progress {
            idle_ms: Some(10_000),
            ..busy
        };
        let ripe = ripeness(&quiet, &settings, now);
        assert!(ripe(now - 10_000));
        assert!(!ripe(now - 9_999));
        // A receiver that restarted and got no call yet knows nothing of Strapi's queue.
        let ripe = ripeness(&Progress::default(), &settings, now);
        assert!(ripe(now - 10_000));
        assert!(!ripe(now - 9_999));
    }

    #[test]
    fn routes_without_models_take_every_model() {
        let article = vec!["article".to_owned()];
        let page = vec!["api::page.page".to_owned()];
        assert_eq!(
            routed_models([(Some(&article), None), (None, Some(&page))]),
            Some(BTreeSet::from([
                "api::page.page".to_owned(),
                "article".to_owned()
            ]))
        );
        assert_eq!(routed_models([(Some(&article), None), (None, None)]), None);
    }
}
