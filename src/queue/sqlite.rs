//! The embedded queue: one SQLite file in WAL mode, owned by one receiver process.
//!
//! Durability: `synchronous = FULL`. In WAL mode `NORMAL` survives a crash of the process but
//! can lose the last commits on power loss or a kernel panic — and those are events Strapi was
//! already told are safe, which Strapi never resends. `FULL` syncs the WAL on every commit, and
//! to keep that affordable all writes go through one writer thread that folds every request
//! waiting at the moment into one transaction (group commit): under load, one fsync covers many
//! ingests. Each request runs in its own savepoint, so one failing request does not undo the
//! others in its batch. [`Durability::Normal`] relaxes this to `NORMAL` for benchmarks and for
//! operators who accept that trade. Reads (lists, counters, next due time) use a second connection and never
//! wait for the writer.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    thread,
};

use futures::{FutureExt, future::BoxFuture};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use super::{
    ClaimedDelivery, Completion, DeliveryDetail, DeliveryFilter, DeliveryState, DeliverySummary,
    DocumentVersion, Due, Handshake, IngestOutcome, KnownInstance, KnownInstances, NewDelivery,
    NewEvent, Queue, QueueError, ReplaySelector, RoutedEvent, SinkCounters, SinkKey, UnixMillis,
    UnroutedEvent, VersionSeen, Watermark, Watermarks, is_stored_copy, now_millis,
};

// Requests folded into one commit at most; bounds the latency one batch adds to the next.
const MAX_BATCH: usize = 512;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id          TEXT PRIMARY KEY,
    instance    TEXT NOT NULL,
    event       TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    dedup_key   TEXT,
    raw         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_dedup ON events (dedup_key, received_at)
    WHERE dedup_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS deliveries (
    id              TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events (id),
    webhook         TEXT NOT NULL,
    route           TEXT NOT NULL,
    sink            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    enqueued_at     INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    delivered_at    INTEGER,
    last_error      TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (webhook, sink, state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_id);
CREATE TABLE IF NOT EXISTS sink_counters (
    webhook         TEXT NOT NULL,
    sink            TEXT NOT NULL,
    delivered       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    dead_lettered   INTEGER NOT NULL DEFAULT 0,
    last_success_at INTEGER,
    last_error      TEXT,
    PRIMARY KEY (webhook, sink)
);
CREATE TABLE IF NOT EXISTS handshakes (
    instance TEXT PRIMARY KEY,
    count    INTEGER NOT NULL,
    last_at  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS document_versions (
    instance    TEXT NOT NULL,
    key         TEXT NOT NULL,
    at          INTEGER NOT NULL,
    recovered   INTEGER NOT NULL,
    event_id    TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (instance, key, at)
);
CREATE TABLE IF NOT EXISTS known_instances (
    instance       TEXT PRIMARY KEY,
    secret_digests TEXT NOT NULL,
    generation     INTEGER
);
CREATE TABLE IF NOT EXISTS repair_watermarks (
    instance TEXT NOT NULL,
    uid      TEXT NOT NULL,
    at       INTEGER NOT NULL,
    floor    INTEGER NOT NULL,
    PRIMARY KEY (instance, uid)
);
";

// Columns added after the first release, with their definition; added to older files on open.
// Events stored before store-first routing had their deliveries stored with them: routed.
const ADDED_COLUMNS: [(&str, &str, &str); 2] = [
    ("events", "recovered", "INTEGER NOT NULL DEFAULT 0"),
    ("events", "routed", "INTEGER NOT NULL DEFAULT 1"),
];

// Indexes on added columns, created once the columns exist.
const ADDED_INDEXES: &str =
    "CREATE INDEX IF NOT EXISTS events_unrouted ON events (routed) WHERE routed = 0;";

/// How hard each commit is pushed to disk: SQLite's `synchronous` setting in WAL mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = FULL`: a commit Strapi was answered for survives power loss.
    #[default]
    Full,
    /// `synchronous = NORMAL`: survives a crash of the process but not of the machine; the last
    /// commits before a power loss may be gone although Strapi was told they are safe.
    Normal,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            other => Err(format!(
                "{other:?} is not a durability; expected full or normal"
            )),
        }
    }
}

/// The SQLite queue. Cheap to share behind an `Arc`; dropping the last handle stops the writer
/// thread after it finishes the requests already sent.
pub struct SqliteQueue {
    writer: mpsc::UnboundedSender<Box<dyn WriteJob>>,
    reader: Arc<Mutex<Closing>>,
    path: PathBuf,
    // The error of the writer's last commit, if it failed.
    write_failure: Arc<Mutex<Option<String>>>,
    // An exclusive lock on the file for as long as this queue lives: a second receiver on the
    // same file would reset this one's in-flight deliveries and send them twice.
    _lock: std::fs::File,
}

impl SqliteQueue {
    /// Opens (or creates) the queue file with [`Durability::Full`]. Deliveries left in flight by
    /// a previous process are made pending again: this process owns the file, so nobody else is
    /// sending them.
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        Self::open_with(path, Durability::Full)
    }

    /// Like [`SqliteQueue::open`], with the given durability.
    pub fn open_with(path: &Path, durability: Durability) -> Result<Self, QueueError> {
        let open_error = |error: rusqlite::Error| QueueError::Open {
            location: path.display().to_string(),
            message: error.to_string(),
        };
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|error| QueueError::Open {
                location: path.display().to_string(),
                message: format!("creating {}: {error}", parent.display()),
            })?;
        }
        let lock = lock_exclusively(path)?;
        let mut writer = Closing::open(path).map_err(open_error)?;
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = 5000;",
                durability.pragma()
            ))
            .map_err(open_error)?;
        check_integrity(&writer, path)?;
        writer.execute_batch(SCHEMA).map_err(open_error)?;
        add_missing_columns(&writer).map_err(open_error)?;
        writer.execute_batch(ADDED_INDEXES).map_err(open_error)?;
        writer
            .execute(
                "UPDATE deliveries SET state = 'pending', lease_until = NULL WHERE state = 'inflight'",
                [],
            )
            .map_err(open_error)?;
        let reader = Closing::open(path).map_err(open_error)?;
        reader
            .execute_batch("PRAGMA busy_timeout = 5000;")
            .map_err(open_error)?;

        let (sender, jobs) = mpsc::unbounded_channel();
        let thread_path = path.display().to_string();
        let write_failure = Arc::new(Mutex::new(None));
        let failure = Arc::clone(&write_failure);
        thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || run_writer(&mut writer, jobs, &thread_path, &failure))
            .map_err(|error| QueueError::Open {
                location: path.display().to_string(),
                message: format!("starting the writer thread: {error}"),
            })?;
        Ok(Self {
            writer: sender,
            reader: Arc::new(Mutex::new(reader)),
            path: path.to_owned(),
            write_failure,
            _lock: lock,
        })
    }

    /// The file this queue lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write<T, F>(&self, step: &'static str, work: F) -> BoxFuture<'_, Result<T, QueueError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Job {
            step,
            work: Some(work),
            result: None,
            reply,
        });
        let sent = self.writer.send(job).map_err(|_| QueueError::Closed);
        async move {
            sent?;
            answer.await.map_err(|_| QueueError::Closed)?
        }
        .boxed()
    }

    fn read<T, F>(&self, step: &'static str, work: F) -> BoxFuture<'_, Result<T, QueueError>>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        async move {
            tokio::task::spawn_blocking(move || {
                // A panic while holding the lock leaves no half-done state in a read connection.
                let connection = reader
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                work(&connection)
            })
            .await
            .map_err(|error| storage(step, error))?
        }
        .boxed()
    }
}

/// SQLite 3.51.1's unix VFS can deadlock when one connection to a file closes while another
/// opens or closes: closing a WAL connection holds the file's lock mutex while it asks for
/// SQLite's global mutex, and opening or closing the other asks for them the other way round
/// (seen as tests hung with both threads in `sqlite3_close`, and with one in `sqlite3_close` and
/// the other in `sqlite3_open_v2`'s `findReusableFd`: a queue reopened in the same process while
/// the previous one's writer thread closed). So every connection of a queue opens and closes
/// under this one lock.
static OPENING_OR_CLOSING: Mutex<()> = Mutex::new(());

/// A connection that opens and closes under [`OPENING_OR_CLOSING`].
struct Closing(Option<Connection>);

impl Closing {
    fn open(path: &Path) -> rusqlite::Result<Self> {
        let _one_at_a_time = OPENING_OR_CLOSING
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Connection::open(path).map(|connection| Self(Some(connection)))
    }
}

impl std::ops::Deref for Closing {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.0
            .as_ref()
            .expect("a connection stays open until dropped")
    }
}

impl std::ops::DerefMut for Closing {
    fn deref_mut(&mut self) -> &mut Connection {
        self.0
            .as_mut()
            .expect("a connection stays open until dropped")
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        let _one_at_a_time = OPENING_OR_CLOSING
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(self.0.take());
    }
}

/// Takes an exclusive advisory lock on the queue file itself (SQLite's own locks are
/// separate), released when the process exits however it exits.
fn lock_exclusively(path: &Path) -> Result<std::fs::File, QueueError> {
    let refuse = |message: String| QueueError::Open {
        location: path.display().to_string(),
        message,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|error| refuse(error.to_string()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(refuse(format!(
            "another receiver holds {}; one receiver owns one SQLite queue (several replicas \
             need --queue nats://…)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(refuse(format!("locking {}: {error}", path.display())))
        }
    }
}

/// `PRAGMA quick_check`: refuses a file with damaged pages at start, rather than answering
/// Strapi 200 and failing later when the damaged pages are read.
fn check_integrity(connection: &Connection, path: &Path) -> Result<(), QueueError> {
    let problems = connection
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut check| {
            check
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .unwrap_or_else(|error| vec![error.to_string()]);
    if problems == ["ok"] {
        return Ok(());
    }
    let shown = path.display();
    Err(QueueError::Open {
        location: shown.to_string(),
        message: format!(
            "the queue file is damaged ({}); stop, keep a copy, and recover what is readable \
             with `sqlite3 {shown} .recover | sqlite3 {shown}.recovered`, then start on \
             {shown}.recovered (or move the file aside to start empty)",
            problems.join("; ")
        ),
    })
}

fn add_missing_columns(connection: &Connection) -> rusqlite::Result<()> {
    for (table, column, definition) in ADDED_COLUMNS {
        let exists: bool = connection.query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
            params![table, column],
            |row| row.get(0),
        )?;
        if !exists {
            connection.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

/// What the store knows of each version: see [`VersionSeen`].
fn versions_seen(
    connection: &Connection,
    instance: &str,
    versions: &[DocumentVersion],
) -> rusqlite::Result<Vec<VersionSeen>> {
    let mut newest = connection
        .prepare_cached("SELECT MAX(at) FROM document_versions WHERE instance = ?1 AND key = ?2")?;
    let mut exact = connection.prepare_cached(
        "SELECT recovered FROM document_versions WHERE instance = ?1 AND key = ?2 AND at = ?3",
    )?;
    versions
        .iter()
        .map(|version| {
            let key = version.key();
            let newest: Option<i64> = newest.query_row(params![instance, key], |row| row.get(0))?;
            let recovered: Option<bool> = exact
                .query_row(params![instance, key, version.at], |row| row.get(0))
                .optional()?;
            Ok(VersionSeen {
                covered: newest.is_some_and(|newest| newest >= version.at),
                recovered_exactly: recovered == Some(true),
            })
        })
        .collect()
}

fn storage(step: &'static str, error: impl ToString) -> QueueError {
    QueueError::Storage {
        step,
        message: error.to_string(),
    }
}

/// One request to the writer thread, type-erased so requests of any result type share a batch.
trait WriteJob: Send {
    /// Runs the request inside the batch's transaction.
    fn run(&mut self, transaction: &mut Transaction<'_>);
    /// Answers the caller once the batch's commit (or its failure to start) is known.
    fn finish(self: Box<Self>, batch: Result<(), &str>);
    /// The storage error the request failed with, if it did (not a refusal such as a replay
    /// of a queued delivery).
    fn storage_failure(&self) -> Option<String>;
}

struct Job<T, F> {
    step: &'static str,
    work: Option<F>,
    result: Option<Result<T, QueueError>>,
    reply: oneshot::Sender<Result<T, QueueError>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, QueueError> + Send,
{
    fn run(&mut self, transaction: &mut Transaction<'_>) {
        let Some(work) = self.work.take() else { return };
        let result = match transaction.savepoint() {
            Ok(savepoint) => {
                let result = work(&savepoint);
                // Dropping a savepoint without commit rolls back only this request's writes.
                match result {
                    Ok(value) => savepoint
                        .commit()
                        .map(|()| value)
                        .map_err(|e| storage(self.step, e)),
                    Err(error) => Err(error),
                }
            }
            Err(error) => Err(storage(self.step, error)),
        };
        self.result = Some(result);
    }

    fn storage_failure(&self) -> Option<String> {
        match &self.result {
            Some(Err(error @ QueueError::Storage { .. })) => Some(error.to_string()),
            _ => None,
        }
    }

    fn finish(self: Box<Self>, batch: Result<(), &str>) {
        let step = self.step;
        let answer = match (batch, self.result) {
            (Err(message), _) => Err(storage(step, format!("commit: {message}"))),
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(storage(step, "the request was not run")),
        };
        // The caller may have gone away (its HTTP request was cancelled); nothing to tell then.
        let _ = self.reply.send(answer);
    }
}

fn run_writer(
    connection: &mut Connection,
    mut jobs: mpsc::UnboundedReceiver<Box<dyn WriteJob>>,
    path: &str,
    write_failure: &Mutex<Option<String>>,
) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = match connection.transaction() {
            Ok(mut transaction) => {
                for job in &mut batch {
                    job.run(&mut transaction);
                }
                transaction.commit().map_err(|error| error.to_string())
            }
            Err(error) => Err(error.to_string()),
        };
        if let Err(message) = &outcome {
            tracing::error!(path, batch = batch.len(), error = %message, "queue commit failed");
        }
        let failure = outcome
            .clone()
            .err()
            .or_else(|| batch.iter().find_map(|job| job.storage_failure()));
        *write_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = failure;
        for job in batch {
            job.finish(outcome.as_ref().map(|_| ()).map_err(String::as_str));
        }
    }
}

fn execute_cached(
    connection: &Connection,
    statement: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    connection.prepare_cached(statement)?.execute(params)
}

fn sql(step: &'static str) -> impl Fn(rusqlite::Error) -> QueueError {
    move |error| storage(step, error)
}

impl Queue for SqliteQueue {
    fn write_failure(&self) -> Option<String> {
        self.write_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn probe_write(&self) -> BoxFuture<'_, Result<(), QueueError>> {
        self.write("probe", |connection| {
            connection
                .execute_batch(
                    "CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY, at INTEGER);
                     INSERT OR REPLACE INTO write_probe VALUES (1, unixepoch());",
                )
                .map_err(sql("probe"))
        })
    }

    fn ingest(&self, event: NewEvent) -> BoxFuture<'_, Result<IngestOutcome, QueueError>> {
        self.write("ingest", move |connection| {
            let map = sql("ingest");
            if let Some(key) = &event.dedup_key {
                let original: Option<String> = connection
                    .prepare_cached(
                        "SELECT id FROM events WHERE dedup_key = ?1 AND received_at >= ?2 LIMIT 1",
                    )
                    .map_err(&map)?
                    .query_row(
                        params![key, event.received_at - event.dedup_window_ms],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(&map)?;
                if let Some(original) = original {
                    return Ok(IngestOutcome::Duplicate { original });
                }
            }
            let seen = versions_seen(connection, &event.instance, &event.versions).map_err(&map)?;
            if is_stored_copy(event.recovered, &seen) {
                let original = connection
                    .query_row(
                        "SELECT event_id FROM document_versions WHERE instance = ?1 AND key = ?2
                         ORDER BY at = ?3 DESC, at DESC LIMIT 1",
                        params![
                            event.instance,
                            event.versions[0].key(),
                            event.versions[0].at
                        ],
                        |row| row.get(0),
                    )
                    .map_err(&map)?;
                return Ok(IngestOutcome::Duplicate { original });
            }
            connection
                .prepare_cached(
                    "INSERT INTO events
                       (id, instance, event, received_at, dedup_key, raw, recovered, routed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(&map)?
                .execute(params![
                    event.id,
                    event.instance,
                    event.event,
                    event.received_at,
                    event.dedup_key,
                    event.raw,
                    event.recovered,
                    event.deliveries.is_some()
                ])
                .map_err(&map)?;
            if let Some(deliveries) = &event.deliveries {
                insert_deliveries(connection, &event.id, event.received_at, deliveries)
                    .map_err(&map)?;
            }
            let mut record = connection
                .prepare_cached(
                    "INSERT OR IGNORE INTO document_versions
                       (instance, key, at, recovered, event_id, recorded_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(&map)?;
            for version in &event.versions {
                record
                    .execute(params![
                        event.instance,
                        version.key(),
                        version.at,
                        event.recovered,
                        event.id,
                        event.received_at
                    ])
                    .map_err(&map)?;
            }
            Ok(IngestOutcome::Stored)
        })
    }

    fn unrouted(&self, limit: u32) -> BoxFuture<'_, Result<Vec<UnroutedEvent>, QueueError>> {
        // One receiver owns the file and runs one router, so what is unrouted here is not being
        // routed by anyone else.
        self.read("list unrouted events", move |connection| {
            let map = sql("list unrouted events");
            connection
                .prepare_cached(
                    "SELECT id, instance, event, received_at, raw, recovered FROM events
                     WHERE routed = 0 ORDER BY rowid LIMIT ?1",
                )
                .map_err(&map)?
                .query_map(params![limit], |row| {
                    Ok(UnroutedEvent {
                        id: row.get(0)?,
                        instance: row.get(1)?,
                        event: row.get(2)?,
                        received_at: row.get(3)?,
                        raw: row.get(4)?,
                        recovered: row.get(5)?,
                    })
                })
                .map_err(&map)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&map)
        })
    }

    fn route(&self, routed: Vec<RoutedEvent>) -> BoxFuture<'_, Result<(), QueueError>> {
        self.write("route", move |connection| {
            let map = sql("route");
            for RoutedEvent { event, deliveries } in &routed {
                let marked = execute_cached(
                    connection,
                    "UPDATE events SET routed = 1 WHERE id = ?1 AND routed = 0",
                    params![event.id],
                )
                .map_err(&map)?;
                if marked == 1 {
                    insert_deliveries(connection, &event.id, event.received_at, deliveries)
                        .map_err(&map)?;
                }
            }
            Ok(())
        })
    }

    fn unrouted_count(&self) -> BoxFuture<'_, Result<u64, QueueError>> {
        self.read("count unrouted events", |connection| {
            connection
                .query_row("SELECT COUNT(*) FROM events WHERE routed = 0", [], |row| {
                    row.get::<_, i64>(0)
                })
                .map(|count| u64::try_from(count).unwrap_or(0))
                .map_err(sql("count unrouted events"))
        })
    }

    fn save_known_instances(&self, known: KnownInstances) -> BoxFuture<'_, Result<(), QueueError>> {
        self.write("save known instances", move |connection| {
            let map = sql("save known instances");
            connection
                .execute("DELETE FROM known_instances", [])
                .map_err(&map)?;
            for (instance, known) in &known {
                let digests = serde_json::to_string(&known.secret_digests)
                    .map_err(|error| storage("save known instances", error))?;
                execute_cached(
                    connection,
                    "INSERT INTO known_instances (instance, secret_digests, generation)
                     VALUES (?1, ?2, ?3)",
                    params![instance, digests, known.generation],
                )
                .map_err(&map)?;
            }
            Ok(())
        })
    }

    fn known_instances(&self) -> BoxFuture<'_, Result<KnownInstances, QueueError>> {
        self.read("read known instances", |connection| {
            let map = sql("read known instances");
            let rows = connection
                .prepare_cached("SELECT instance, secret_digests, generation FROM known_instances")
                .map_err(&map)?
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get(2)?,
                    ))
                })
                .map_err(&map)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&map)?;
            rows.into_iter()
                .map(|(instance, digests, generation)| {
                    let secret_digests = serde_json::from_str(&digests)
                        .map_err(|error| storage("read known instances", error))?;
                    Ok((
                        instance,
                        KnownInstance {
                            secret_digests,
                            generation,
                        },
                    ))
                })
                .collect()
        })
    }

    fn record_handshake(
        &self,
        instance: String,
        at: UnixMillis,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        self.write("record handshake", move |connection| {
            connection
                .execute(
                    "INSERT INTO handshakes (instance, count, last_at) VALUES (?1, 1, ?2)
                     ON CONFLICT (instance) DO UPDATE SET count = count + 1, last_at = ?2",
                    params![instance, at],
                )
                .map(drop)
                .map_err(sql("record handshake"))
        })
    }

    fn handshake(&self, instance: String) -> BoxFuture<'_, Result<Handshake, QueueError>> {
        self.read("read handshake", move |connection| {
            connection
                .query_row(
                    "SELECT count, last_at FROM handshakes WHERE instance = ?1",
                    params![instance],
                    |row| {
                        Ok(Handshake {
                            count: row.get(0)?,
                            last_at: row.get(1)?,
                        })
                    },
                )
                .optional()
                .map(Option::unwrap_or_default)
                .map_err(sql("read handshake"))
        })
    }

    fn claim(
        &self,
        sink: SinkKey,
        now: UnixMillis,
        limit: u32,
        lease_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<ClaimedDelivery>, QueueError>> {
        self.write("claim", move |connection| {
            let map = sql("claim");
            // Two queries, each answered from the (webhook, sink, state, next_attempt_at) index
            // without scanning the backlog: leases that ran out first (they are the oldest
            // work), then pending deliveries in due order.
            let mut claimed = Vec::new();
            for statement in [
                "SELECT d.id, d.event_id, d.route, d.attempts, d.enqueued_at, e.raw, e.recovered
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                 WHERE d.webhook = ?1 AND d.sink = ?2 AND d.state = 'inflight'
                   AND d.lease_until <= ?3
                 LIMIT ?4",
                "SELECT d.id, d.event_id, d.route, d.attempts, d.enqueued_at, e.raw, e.recovered
                 FROM deliveries d JOIN events e ON e.id = d.event_id
                 WHERE d.webhook = ?1 AND d.sink = ?2 AND d.state = 'pending'
                   AND d.next_attempt_at <= ?3
                 ORDER BY d.next_attempt_at LIMIT ?4",
            ] {
                let room = limit.saturating_sub(u32::try_from(claimed.len()).unwrap_or(u32::MAX));
                if room == 0 {
                    break;
                }
                let mut select = connection.prepare_cached(statement).map_err(&map)?;
                let found = select
                    .query_map(params![sink.webhook, sink.sink, now, room], |row| {
                        Ok(ClaimedDelivery {
                            id: row.get(0)?,
                            event_id: row.get(1)?,
                            sink: sink.clone(),
                            route: row.get(2)?,
                            attempts: row.get(3)?,
                            enqueued_at: row.get(4)?,
                            raw: row.get(5)?,
                            recovered: row.get(6)?,
                        })
                    })
                    .map_err(&map)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(&map)?;
                claimed.extend(found);
            }
            let mut lease = connection
                .prepare_cached(
                    // The attempt counts now, not when it ends: a delivery that crashes the
                    // receiver every time it is tried still reaches max attempts.
                    "UPDATE deliveries SET state = 'inflight', lease_until = ?2,
                       attempts = attempts + 1 WHERE id = ?1",
                )
                .map_err(&map)?;
            for delivery in &claimed {
                lease
                    .execute(params![delivery.id, now + lease_ms])
                    .map_err(&map)?;
            }
            Ok(claimed)
        })
    }

    fn next_due(&self, sink: SinkKey) -> BoxFuture<'_, Result<Option<UnixMillis>, QueueError>> {
        self.read("next due", move |connection| {
            // Each MIN is one index lookup; one MIN over both states would scan the backlog.
            let earliest = |statement: &str| {
                connection
                    .prepare_cached(statement)?
                    .query_row(params![sink.webhook, sink.sink], |row| {
                        row.get::<_, Option<i64>>(0)
                    })
            };
            let pending = earliest(
                "SELECT MIN(next_attempt_at) FROM deliveries
                 WHERE webhook = ?1 AND sink = ?2 AND state = 'pending'",
            )
            .map_err(sql("next due"))?;
            let leased = earliest(
                "SELECT MIN(lease_until) FROM deliveries
                 WHERE webhook = ?1 AND sink = ?2 AND state = 'inflight'",
            )
            .map_err(sql("next due"))?;
            Ok(pending.into_iter().chain(leased).min())
        })
    }

    fn due(
        &self,
        sink: SinkKey,
        now: UnixMillis,
        limit: u32,
    ) -> BoxFuture<'_, Result<Due, QueueError>> {
        self.read("due", move |connection| {
            // Pending deliveries past their due time, then leases that ran out; each counted
            // from the (webhook, sink, state, next_attempt_at) index, at most `limit` of them.
            let mut due = Due::default();
            for statement in [
                "SELECT COUNT(*), MIN(at) FROM (SELECT next_attempt_at AS at FROM deliveries
                 WHERE webhook = ?1 AND sink = ?2 AND state = 'pending' AND next_attempt_at <= ?3
                 ORDER BY next_attempt_at LIMIT ?4)",
                "SELECT COUNT(*), MIN(at) FROM (SELECT lease_until AS at FROM deliveries
                 WHERE webhook = ?1 AND sink = ?2 AND state = 'inflight' AND lease_until <= ?3
                 LIMIT ?4)",
            ] {
                let (count, since): (u32, Option<UnixMillis>) = connection
                    .prepare_cached(statement)
                    .and_then(|mut select| {
                        select.query_row(params![sink.webhook, sink.sink, now, limit], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                    })
                    .map_err(sql("due"))?;
                due.count = due.count.saturating_add(count).min(limit);
                due.since = due.since.into_iter().chain(since).min();
            }
            Ok(due)
        })
    }

    fn complete(
        &self,
        id: String,
        completion: Completion,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        self.write("complete", move |connection| {
            let map = sql("complete");
            let sink: Option<SinkKey> = connection
                .prepare_cached(
                    "SELECT webhook, sink FROM deliveries WHERE id = ?1 AND state = 'inflight'",
                )
                .map_err(&map)?
                .query_row(params![id], |row| {
                    Ok(SinkKey {
                        webhook: row.get(0)?,
                        sink: row.get(1)?,
                    })
                })
                .optional()
                .map_err(&map)?;
            // Not in flight any more: its lease ran out and it was handed to another attempt,
            // or it was replayed or dead-lettered meanwhile. That attempt's record wins.
            let Some(sink) = sink else { return Ok(()) };
            let now = now_millis();
            match &completion {
                Completion::Delivered => execute_cached(
                    connection,
                    "UPDATE deliveries SET state = 'delivered',
                           delivered_at = ?2, lease_until = NULL WHERE id = ?1",
                    params![id, now],
                ),
                Completion::Retry {
                    next_attempt_at,
                    error,
                } => execute_cached(
                    connection,
                    "UPDATE deliveries SET state = 'pending',
                       next_attempt_at = ?2, last_error = ?3, lease_until = NULL WHERE id = ?1",
                    params![id, next_attempt_at, error],
                ),
                Completion::DeadLetter { error } => execute_cached(
                    connection,
                    "UPDATE deliveries SET state = 'dead',
                       last_error = ?2, lease_until = NULL WHERE id = ?1",
                    params![id, error],
                ),
                Completion::DeadLetterUntried { error } => execute_cached(
                    connection,
                    "UPDATE deliveries SET state = 'dead', attempts = MAX(attempts - 1, 0),
                       last_error = ?2, lease_until = NULL WHERE id = ?1",
                    params![id, error],
                ),
                Completion::Release { next_attempt_at } => execute_cached(
                    connection,
                    // Handed back untried: the attempt counted at the claim is taken back.
                    "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2,
                       attempts = MAX(attempts - 1, 0), lease_until = NULL WHERE id = ?1",
                    params![id, next_attempt_at],
                ),
            }
            .map_err(&map)?;
            match &completion {
                Completion::Delivered => bump_counters(connection, &sink, Counter::Delivered, None),
                Completion::Retry { error, .. } => {
                    bump_counters(connection, &sink, Counter::Failed, Some(error))
                }
                Completion::DeadLetter { error } | Completion::DeadLetterUntried { error } => {
                    bump_counters(connection, &sink, Counter::DeadLettered(1), Some(error))
                }
                Completion::Release { .. } => Ok(()),
            }
            .map_err(&map)
        })
    }

    fn waiting_sinks(&self) -> BoxFuture<'_, Result<Vec<SinkKey>, QueueError>> {
        self.read("list waiting sinks", |connection| {
            let map = sql("list waiting sinks");
            let mut select = connection
                .prepare_cached(
                    "SELECT DISTINCT webhook, sink FROM deliveries
                     WHERE state IN ('pending', 'inflight')",
                )
                .map_err(&map)?;
            select
                .query_map([], |row| {
                    Ok(SinkKey {
                        webhook: row.get(0)?,
                        sink: row.get(1)?,
                    })
                })
                .map_err(&map)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&map)
        })
    }

    fn dead_letter_waiting(
        &self,
        sink: SinkKey,
        reason: String,
    ) -> BoxFuture<'_, Result<u64, QueueError>> {
        self.write("dead-letter waiting", move |connection| {
            let map = sql("dead-letter waiting");
            let count = connection
                .execute(
                    "UPDATE deliveries SET state = 'dead', last_error = ?3, lease_until = NULL
                     WHERE webhook = ?1 AND sink = ?2 AND state IN ('pending', 'inflight')",
                    params![sink.webhook, sink.sink, reason],
                )
                .map_err(&map)?;
            if count > 0 {
                let dead = i64::try_from(count).unwrap_or(i64::MAX);
                bump_counters(
                    connection,
                    &sink,
                    Counter::DeadLettered(dead),
                    Some(&reason),
                )
                .map_err(&map)?;
            }
            Ok(count as u64)
        })
    }

    fn list(
        &self,
        filter: DeliveryFilter,
    ) -> BoxFuture<'_, Result<Vec<DeliverySummary>, QueueError>> {
        self.read("list deliveries", move |connection| {
            let map = sql("list deliveries");
            let mut select = connection
                .prepare_cached(&format!(
                    "{SUMMARY_SELECT}
                     WHERE (?1 IS NULL OR d.state = ?1) AND (?2 IS NULL OR d.webhook = ?2)
                       AND (?3 IS NULL OR d.sink = ?3) AND (?4 IS NULL OR d.event_id = ?4)
                     ORDER BY d.id DESC LIMIT ?5"
                ))
                .map_err(&map)?;
            select
                .query_map(
                    params![
                        filter.state.map(DeliveryState::as_str),
                        filter.webhook,
                        filter.sink,
                        filter.event,
                        filter.limit
                    ],
                    summary_row,
                )
                .map_err(&map)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&map)
        })
    }

    fn show(&self, id: String) -> BoxFuture<'_, Result<DeliveryDetail, QueueError>> {
        self.read("show delivery", move |connection| {
            let map = sql("show delivery");
            let found = connection
                .query_row(
                    &format!("{SUMMARY_SELECT} WHERE d.id = ?1"),
                    params![id],
                    |row| Ok((summary_row(row)?, row.get::<_, Vec<u8>>(13)?)),
                )
                .optional()
                .map_err(&map)?;
            let (summary, raw) = found.ok_or(QueueError::NotFound(id))?;
            let payload = serde_json::from_slice(&raw).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&raw).into_owned())
            });
            Ok(DeliveryDetail { summary, payload })
        })
    }

    fn replay(
        &self,
        selector: ReplaySelector,
    ) -> BoxFuture<'_, Result<Vec<(SinkKey, i64)>, QueueError>> {
        self.write("replay", move |connection| {
            let map = sql("replay");
            let now = now_millis();
            let (webhook, sink, id) = match &selector {
                ReplaySelector::Id(id) => {
                    let state: Option<String> = connection
                        .query_row(
                            "SELECT state FROM deliveries WHERE id = ?1",
                            params![id],
                            |row| row.get(0),
                        )
                        .optional()
                        .map_err(&map)?;
                    let state = state.ok_or_else(|| QueueError::NotFound(id.clone()))?;
                    let state = DeliveryState::parse(&state)
                        .ok_or_else(|| storage("replay", format!("unknown state {state}")))?;
                    if matches!(state, DeliveryState::Pending | DeliveryState::Inflight) {
                        return Err(QueueError::NotReplayable {
                            id: id.clone(),
                            state,
                        });
                    }
                    (None, None, Some(id.clone()))
                }
                ReplaySelector::DeadLetters { webhook, sink } => {
                    (webhook.clone(), sink.clone(), None)
                }
            };
            let condition = "(?1 IS NULL OR webhook = ?1) AND (?2 IS NULL OR sink = ?2)
                 AND ((?3 IS NULL AND state = 'dead') OR id = ?3)";
            let mut select = connection
                .prepare_cached(&format!(
                    "SELECT webhook, sink, COUNT(*) FROM deliveries WHERE {condition}
                     GROUP BY webhook, sink"
                ))
                .map_err(&map)?;
            let affected = select
                .query_map(params![webhook, sink, id], |row| {
                    Ok((
                        SinkKey {
                            webhook: row.get(0)?,
                            sink: row.get(1)?,
                        },
                        row.get(2)?,
                    ))
                })
                .map_err(&map)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&map)?;
            connection
                .execute(
                    &format!(
                        "UPDATE deliveries SET state = 'pending', attempts = 0, enqueued_at = ?4,
                           next_attempt_at = ?4, lease_until = NULL, delivered_at = NULL
                         WHERE {condition}"
                    ),
                    params![webhook, sink, id, now],
                )
                .map_err(&map)?;
            Ok(affected)
        })
    }

    fn counters(&self) -> BoxFuture<'_, Result<Vec<(SinkKey, SinkCounters)>, QueueError>> {
        self.read("read counters", |connection| {
            let map = sql("read counters");
            let mut select = connection
                .prepare_cached(
                    "WITH waiting AS (
                         SELECT webhook, sink, COUNT(*) AS count, MIN(enqueued_at) AS oldest
                         FROM deliveries WHERE state IN ('pending', 'inflight')
                         GROUP BY webhook, sink),
                     dead AS (
                         SELECT webhook, sink, COUNT(*) AS count
                         FROM deliveries WHERE state = 'dead' GROUP BY webhook, sink)
                     SELECT k.webhook, k.sink, COALESCE(c.delivered, 0), COALESCE(c.failed, 0),
                            COALESCE(c.dead_lettered, 0), COALESCE(w.count, 0),
                            c.last_success_at, c.last_error, w.oldest, COALESCE(d.count, 0)
                     FROM (SELECT webhook, sink FROM sink_counters
                           UNION SELECT webhook, sink FROM waiting
                           UNION SELECT webhook, sink FROM dead) k
                     LEFT JOIN sink_counters c ON c.webhook = k.webhook AND c.sink = k.sink
                     LEFT JOIN waiting w ON w.webhook = k.webhook AND w.sink = k.sink
                     LEFT JOIN dead d ON d.webhook = k.webhook AND d.sink = k.sink
                     ORDER BY k.webhook, k.sink",
                )
                .map_err(&map)?;
            select
                .query_map([], |row| {
                    Ok((
                        SinkKey {
                            webhook: row.get(0)?,
                            sink: row.get(1)?,
                        },
                        SinkCounters {
                            delivered: row.get(2)?,
                            failed: row.get(3)?,
                            dead_lettered: row.get(4)?,
                            pending: row.get(5)?,
                            last_success_at: row.get(6)?,
                            last_error: row.get(7)?,
                            oldest_pending_at: row.get(8)?,
                            dead_letters: row.get(9)?,
                        },
                    ))
                })
                .map_err(&map)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&map)
        })
    }

    fn prune(&self, before: UnixMillis) -> BoxFuture<'_, Result<u64, QueueError>> {
        self.write("prune", move |connection| {
            let map = sql("prune");
            let deliveries = connection
                .execute(
                    "DELETE FROM deliveries WHERE state = 'delivered' AND delivered_at < ?1",
                    params![before],
                )
                .map_err(&map)?;
            connection
                .execute(
                    "DELETE FROM events WHERE received_at < ?1 AND routed = 1
                       AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
                    params![before],
                )
                .map_err(&map)?;
            // The gap repair compares only versions after its watermark, which moves every
            // check; older versions answer nothing any more.
            connection
                .execute(
                    "DELETE FROM document_versions WHERE recorded_at < ?1",
                    params![before],
                )
                .map_err(&map)?;
            Ok(deliveries as u64)
        })
    }

    fn covered(
        &self,
        instance: String,
        versions: Vec<DocumentVersion>,
    ) -> BoxFuture<'_, Result<Vec<bool>, QueueError>> {
        self.read("covered", move |connection| {
            versions_seen(connection, &instance, &versions)
                .map(|seen| seen.iter().map(|version| version.covered).collect())
                .map_err(sql("covered"))
        })
    }

    fn watermarks(&self, instance: String) -> BoxFuture<'_, Result<Watermarks, QueueError>> {
        self.read("watermarks", move |connection| {
            let map = sql("watermarks");
            connection
                .prepare_cached("SELECT uid, at, floor FROM repair_watermarks WHERE instance = ?1")
                .map_err(&map)?
                .query_map(params![instance], |row| {
                    Ok((
                        row.get(0)?,
                        Watermark {
                            at: row.get(1)?,
                            floor: row.get(2)?,
                        },
                    ))
                })
                .map_err(&map)?
                .collect::<Result<Watermarks, _>>()
                .map_err(&map)
        })
    }

    fn advance_watermarks(
        &self,
        instance: String,
        marks: Watermarks,
    ) -> BoxFuture<'_, Result<(), QueueError>> {
        self.write("advance watermarks", move |connection| {
            let map = sql("advance watermarks");
            let mut upsert = connection
                .prepare_cached(
                    "INSERT INTO repair_watermarks (instance, uid, at, floor) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO UPDATE SET at = MAX(at, ?3)",
                )
                .map_err(&map)?;
            for (uid, mark) in &marks {
                upsert
                    .execute(params![instance, uid, mark.at, mark.floor])
                    .map_err(&map)?;
            }
            Ok(())
        })
    }
}

const SUMMARY_SELECT: &str = "
    SELECT d.id, d.event_id, e.instance, e.event, d.webhook, d.route, d.sink, d.state, d.attempts,
           d.enqueued_at, d.next_attempt_at, d.delivered_at, d.last_error, e.raw, e.recovered
    FROM deliveries d JOIN events e ON e.id = d.event_id";

/// Stores the deliveries of a routed event, received at `received_at`; one stored dead (its
/// route could not be evaluated) counts as dead-lettered.
fn insert_deliveries(
    connection: &Connection,
    event_id: &str,
    received_at: UnixMillis,
    deliveries: &[NewDelivery],
) -> rusqlite::Result<()> {
    let mut insert = connection.prepare_cached(
        "INSERT INTO deliveries
           (id, event_id, webhook, route, sink, state, enqueued_at, next_attempt_at, last_error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
    )?;
    for delivery in deliveries {
        let state = match delivery.dead_on_arrival {
            Some(_) => DeliveryState::Dead,
            None => DeliveryState::Pending,
        };
        insert.execute(params![
            delivery.id,
            event_id,
            delivery.sink.webhook,
            delivery.route,
            delivery.sink.sink,
            state.as_str(),
            received_at,
            delivery.dead_on_arrival,
        ])?;
        if let Some(reason) = &delivery.dead_on_arrival {
            bump_counters(
                connection,
                &delivery.sink,
                Counter::DeadLettered(1),
                Some(reason),
            )?;
        }
    }
    Ok(())
}

fn summary_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeliverySummary> {
    let state: String = row.get(7)?;
    let state = DeliveryState::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            7,
            rusqlite::types::Type::Text,
            format!("unknown delivery state {state}").into(),
        )
    })?;
    Ok(DeliverySummary {
        id: row.get(0)?,
        event_id: row.get(1)?,
        instance: row.get(2)?,
        event: row.get(3)?,
        webhook: row.get(4)?,
        route: row.get(5)?,
        sink: row.get(6)?,
        state,
        attempts: row.get(8)?,
        enqueued_at: row.get(9)?,
        next_attempt_at: (state == DeliveryState::Pending).then_some(row.get(10)?),
        delivered_at: row.get(11)?,
        last_error: row.get(12)?,
        recovered: row.get(14)?,
    })
}

#[derive(Clone, Copy)]
enum Counter {
    Delivered,
    Failed,
    DeadLettered(i64),
}

fn bump_counters(
    connection: &Connection,
    sink: &SinkKey,
    counter: Counter,
    error: Option<&String>,
) -> rusqlite::Result<()> {
    let (delivered, failed, dead, success_at) = match counter {
        Counter::Delivered => (1, 0, 0, Some(now_millis())),
        Counter::Failed => (0, 1, 0, None),
        Counter::DeadLettered(count) => (0, 0, count, None),
    };
    connection
        .prepare_cached(
            "INSERT INTO sink_counters
               (webhook, sink, delivered, failed, dead_lettered, last_success_at, last_error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT DO UPDATE SET delivered = delivered + ?3, failed = failed + ?4,
               dead_lettered = dead_lettered + ?5,
               last_success_at = COALESCE(?6, last_success_at),
               last_error = COALESCE(?7, last_error)",
        )?
        .execute(params![
            sink.webhook,
            sink.sink,
            delivered,
            failed,
            dead,
            success_at,
            error
        ])
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event and the deliveries its routing stores.
    fn event(id: &str, dedup_key: Option<&str>, sinks: &[&str]) -> (NewEvent, Vec<NewDelivery>) {
        let event = NewEvent {
            id: id.into(),
            instance: "cms/strapi".into(),
            event: "entry.delete".into(),
            received_at: now_millis(),
            raw: br#"{"event":"entry.delete"}"#.to_vec(),
            dedup_key: dedup_key.map(str::to_owned),
            dedup_window_ms: 60_000,
            recovered: false,
            versions: Vec::new(),
            deliveries: None,
        };
        let deliveries = sinks
            .iter()
            .map(|sink| NewDelivery {
                id: format!("{id}-{sink}"),
                sink: SinkKey {
                    webhook: "cms/site".into(),
                    sink: (*sink).into(),
                },
                route: "all".into(),
                dead_on_arrival: None,
            })
            .collect();
        (event, deliveries)
    }

    impl SqliteQueue {
        /// Ingests an event and routes it to `deliveries`, as ingest and the router do.
        async fn ingest_routed(
            &self,
            (event, deliveries): (NewEvent, Vec<NewDelivery>),
        ) -> Result<IngestOutcome, QueueError> {
            let outcome = self.ingest(event.clone()).await?;
            let unrouted = self.unrouted(100).await?;
            let routed = unrouted
                .into_iter()
                .filter(|unrouted| unrouted.id == event.id)
                .map(|unrouted| RoutedEvent {
                    event: unrouted,
                    deliveries: deliveries.clone(),
                })
                .collect();
            self.route(routed).await?;
            Ok(outcome)
        }
    }

    fn sink(name: &str) -> SinkKey {
        SinkKey {
            webhook: "cms/site".into(),
            sink: name.into(),
        }
    }

    #[tokio::test]
    async fn a_duplicate_within_the_window_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let queue = SqliteQueue::open(&dir.path().join("q.db")).unwrap();
        let first = queue
            .ingest_routed(event("e1", Some("k"), &["next"]))
            .await
            .unwrap();
        let second = queue
            .ingest_routed(event("e2", Some("k"), &["next"]))
            .await
            .unwrap();
        assert_eq!(first, IngestOutcome::Stored);
        assert_eq!(
            second,
            IngestOutcome::Duplicate {
                original: "e1".into()
            }
        );
        let claimed = queue
            .claim(sink("next"), now_millis(), 10, 60_000)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
    }

    #[tokio::test]
    async fn an_expired_lease_makes_a_delivery_claimable_again() {
        let dir = tempfile::tempdir().unwrap();
        let queue = SqliteQueue::open(&dir.path().join("q.db")).unwrap();
        queue
            .ingest_routed(event("e1", None, &["next"]))
            .await
            .unwrap();
        let now = now_millis();
        assert_eq!(
            queue
                .claim(sink("next"), now, 10, 1_000)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            queue
                .claim(sink("next"), now + 999, 10, 1_000)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            queue
                .claim(sink("next"), now + 1_000, 10, 1_000)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn reopening_releases_what_a_crashed_process_had_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        {
            let queue = SqliteQueue::open(&path).unwrap();
            queue
                .ingest_routed(event("e1", None, &["next", "slack"]))
                .await
                .unwrap();
            let claimed = queue
                .claim(sink("next"), now_millis(), 10, 600_000)
                .await
                .unwrap();
            assert_eq!(claimed.len(), 1);
        }
        let queue = SqliteQueue::open(&path).unwrap();
        let claimed = queue
            .claim(sink("next"), now_millis(), 10, 600_000)
            .await
            .unwrap();
        assert_eq!(
            claimed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["e1-next"]
        );
        // The attempt the crashed process claimed counts.
        assert_eq!(claimed[0].attempts, 1);
    }

    #[tokio::test]
    async fn an_unrouted_event_outlives_a_restart_and_prune_and_is_routed_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        {
            let queue = SqliteQueue::open(&path).unwrap();
            let (stored, _) = event("e1", None, &[]);
            queue.ingest(stored).await.unwrap();
            assert_eq!(queue.unrouted_count().await.unwrap(), 1);
        }
        let queue = SqliteQueue::open(&path).unwrap();
        queue.prune(now_millis() + 60_000).await.unwrap();
        let unrouted = queue.unrouted(10).await.unwrap();
        assert_eq!(
            unrouted.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["e1"]
        );
        let (_, deliveries) = event("e1", None, &["next"]);
        let routed = RoutedEvent {
            event: unrouted[0].clone(),
            deliveries,
        };
        queue.route(vec![routed.clone()]).await.unwrap();
        // A routing retried (the first one's answer was lost) stores nothing more.
        queue.route(vec![routed]).await.unwrap();
        assert!(queue.unrouted(10).await.unwrap().is_empty());
        assert_eq!(queue.unrouted_count().await.unwrap(), 0);
        let claimed = queue
            .claim(sink("next"), now_millis(), 10, 60_000)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
    }

    #[tokio::test]
    async fn the_known_instances_are_replaced_and_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let known = |instance: &str, digest: &str| {
            KnownInstances::from([(
                instance.to_owned(),
                KnownInstance {
                    secret_digests: vec![digest.to_owned()],
                    generation: Some(3),
                },
            )])
        };
        {
            let queue = SqliteQueue::open(&path).unwrap();
            assert!(queue.known_instances().await.unwrap().is_empty());
            queue
                .save_known_instances(known("cms/old", "aa"))
                .await
                .unwrap();
            queue
                .save_known_instances(known("cms/strapi", "bb"))
                .await
                .unwrap();
        }
        let queue = SqliteQueue::open(&path).unwrap();
        assert_eq!(
            queue.known_instances().await.unwrap(),
            known("cms/strapi", "bb")
        );
    }

    #[tokio::test]
    async fn a_second_queue_on_the_same_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let first = SqliteQueue::open(&path).unwrap();
        let Err(error) = SqliteQueue::open(&path) else {
            panic!("a second queue opened the same file")
        };
        let message = error.to_string();
        assert!(
            message.contains("another receiver holds")
                && message.contains(&path.display().to_string()),
            "{message}"
        );
        drop(first);
        SqliteQueue::open(&path).expect("the lock goes with the first queue");
    }

    #[tokio::test]
    async fn a_damaged_file_is_refused_with_the_recovery_command() {
        use std::io::{Seek, SeekFrom, Write};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        {
            let queue = SqliteQueue::open(&path).unwrap();
            for n in 0..300 {
                let (mut stored, _) = event(&format!("e{n}"), None, &["next"]);
                stored.raw =
                    format!(r#"{{"event":"x","pad":"{}"}}"#, "x".repeat(2000)).into_bytes();
                queue.ingest(stored).await.unwrap();
            }
        }
        // Checkpoint the WAL into the file, then damage pages in its middle.
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        let length = std::fs::metadata(&path).unwrap().len();
        assert!(length > 64 * 1024, "{length}");
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(length / 2 - 16 * 1024)).unwrap();
        let noise: Vec<u8> = (0..32 * 1024u32)
            .map(|n| (n.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        file.write_all(&noise).unwrap();
        drop(file);
        let Err(error) = SqliteQueue::open(&path) else {
            panic!("a damaged file opened")
        };
        let message = error.to_string();
        assert!(
            message.contains("damaged") && message.contains(".recover"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn failing_writes_are_reported_until_a_write_succeeds_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let queue = SqliteQueue::open(&path).unwrap();
        queue
            .ingest_routed(event("e1", None, &["next"]))
            .await
            .unwrap();
        assert_eq!(queue.write_failure(), None);
        // Another connection holding the write lock makes every commit fail (after the busy
        // timeout), as a full disk or a read-only file would.
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE;").unwrap();
        assert!(
            queue
                .ingest_routed(event("e2", None, &["next"]))
                .await
                .is_err()
        );
        assert!(queue.write_failure().is_some());
        assert!(queue.probe_write().await.is_err());
        blocker.execute_batch("COMMIT;").unwrap();
        queue.probe_write().await.unwrap();
        assert_eq!(queue.write_failure(), None);
    }

    #[tokio::test]
    async fn a_claim_counts_as_an_attempt_and_a_hand_back_takes_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let queue = SqliteQueue::open(&dir.path().join("q.db")).unwrap();
        queue
            .ingest_routed(event("e1", None, &["next"]))
            .await
            .unwrap();
        let attempts = || async {
            queue
                .list(DeliveryFilter {
                    limit: 10,
                    ..DeliveryFilter::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|delivery| delivery.attempts)
                .collect::<Vec<_>>()
        };
        let claimed = queue
            .claim(sink("next"), now_millis(), 10, 60_000)
            .await
            .unwrap();
        assert_eq!(claimed[0].attempts, 0, "attempts before this one");
        assert_eq!(attempts().await, [1]);
        let release = Completion::Release {
            next_attempt_at: now_millis(),
        };
        queue.complete("e1-next".into(), release).await.unwrap();
        assert_eq!(attempts().await, [0]);
        queue
            .claim(sink("next"), now_millis(), 10, 60_000)
            .await
            .unwrap();
        let retry = Completion::Retry {
            next_attempt_at: now_millis(),
            error: "503".into(),
        };
        queue.complete("e1-next".into(), retry).await.unwrap();
        assert_eq!(attempts().await, [1], "an attempt counts once");
    }

    #[tokio::test]
    async fn dead_letters_keep_the_error_and_replay_requeues_them() {
        let dir = tempfile::tempdir().unwrap();
        let queue = SqliteQueue::open(&dir.path().join("q.db")).unwrap();
        queue
            .ingest_routed(event("e1", None, &["crm"]))
            .await
            .unwrap();
        let claimed = queue
            .claim(sink("crm"), now_millis(), 10, 60_000)
            .await
            .unwrap();
        let error = "400 Bad Request: missing email".to_string();
        queue
            .complete(
                claimed[0].id.clone(),
                Completion::DeadLetter {
                    error: error.clone(),
                },
            )
            .await
            .unwrap();
        let detail = queue.show("e1-crm".into()).await.unwrap();
        assert_eq!(detail.summary.state, DeliveryState::Dead);
        assert_eq!(detail.summary.last_error.as_deref(), Some(error.as_str()));
        assert_eq!(detail.payload["event"], "entry.delete");

        let replayed = queue
            .replay(ReplaySelector::DeadLetters {
                webhook: None,
                sink: Some("crm".into()),
            })
            .await
            .unwrap();
        assert_eq!(replayed, vec![(sink("crm"), 1)]);
        let again = queue
            .claim(sink("crm"), now_millis(), 10, 60_000)
            .await
            .unwrap();
        assert_eq!(again[0].attempts, 0);

        let counters = queue.counters().await.unwrap();
        assert_eq!(counters[0].1.dead_lettered, 1);
        assert_eq!(counters[0].1.pending, 1);
    }

    #[tokio::test]
    async fn replaying_a_queued_delivery_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let queue = SqliteQueue::open(&dir.path().join("q.db")).unwrap();
        queue
            .ingest_routed(event("e1", None, &["crm"]))
            .await
            .unwrap();
        let error = queue
            .replay(ReplaySelector::Id("e1-crm".into()))
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            QueueError::NotReplayable {
                state: DeliveryState::Pending,
                ..
            }
        ));
        let missing = queue
            .replay(ReplaySelector::Id("nope".into()))
            .await
            .unwrap_err();
        assert!(matches!(missing, QueueError::NotFound(_)));
    }
}
