//! What the benchmarks share: their error type, the result table and its markdown file, the
//! resident memory and CPU time of a process, polling for a condition, percentiles and a recording sink.
//! Every result is a row with a baseline measured in the same run, because on a shared machine
//! only ratios travel.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, http::StatusCode, routing::post};
use tokio::net::TcpListener;

/// Why a benchmark could not produce its numbers; each variant names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A process, port or file the benchmark needs could not be set up.
    #[error("setting up {what}: {source}")]
    Setup {
        /// What was being set up.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A step ran but its outcome is unusable (wrong answers, lost events, unparsable output).
    #[error("{step}: {message}")]
    Step {
        /// The step.
        step: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl BenchError {
    /// A failed step with its explanation.
    pub fn step(step: &'static str, message: impl ToString) -> Self {
        BenchError::Step {
            step,
            message: message.to_string(),
        }
    }

    /// A setup failure, as a `map_err` argument.
    pub fn setup(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| BenchError::Setup { what, source }
    }
}

/// One line of the summary: a measurement next to its baseline from the same run.
pub struct Row {
    /// The scenario, e.g. `ingest ceiling (FULL)`.
    pub scenario: String,
    /// What was measured, with its unit.
    pub metric: String,
    /// The measured value.
    pub value: f64,
    /// The baseline and what it is, when the row has one.
    pub baseline: Option<(f64, String)>,
}

impl Row {
    /// A row with a baseline; the ratio is value / baseline.
    pub fn against(
        scenario: impl Into<String>,
        metric: impl Into<String>,
        value: f64,
        baseline: f64,
        baseline_name: impl Into<String>,
    ) -> Self {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            value,
            baseline: Some((baseline, baseline_name.into())),
        }
    }

    /// A row that is its own reference (a count, a baseline itself).
    pub fn plain(scenario: impl Into<String>, metric: impl Into<String>, value: f64) -> Self {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            value,
            baseline: None,
        }
    }
}

/// Formats a number with at most three significant decimals, without trailing noise.
fn number(value: f64) -> String {
    if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Renders rows as a markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut table = String::from(
        "| scenario | metric | value | baseline (same run) | ratio |\n|---|---|---:|---|---:|\n",
    );
    for row in rows {
        let (baseline, ratio) = match &row.baseline {
            Some((baseline, name)) => (
                format!("{} ({name})", number(*baseline)),
                match row.value / baseline {
                    ratio if !ratio.is_finite() => "n/a".to_owned(),
                    // Small ratios (calls per event) need more than two decimals to say anything.
                    ratio if ratio < 0.1 => format!("{ratio:.4}×"),
                    ratio => format!("{ratio:.2}×"),
                },
            ),
            None => ("—".to_owned(), "—".to_owned()),
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {baseline} | {ratio} |",
            row.scenario,
            row.metric,
            number(row.value)
        );
    }
    table
}

/// Prints the table and writes it to `target/bench/<name>.md`, where `scripts/bench.sh`
/// collects every bench's table into the summary.
pub fn publish(name: &str, rows: &[Row], notes: &[String]) -> Result<(), BenchError> {
    let mut text = markdown(rows);
    for note in notes {
        let _ = writeln!(text, "\n{note}");
    }
    println!("\n{text}");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).map_err(BenchError::setup(dir.display().to_string()))?;
    let path = dir.join(format!("{name}.md"));
    std::fs::write(&path, text).map_err(BenchError::setup(path.display().to_string()))
}

/// Resident memory of a process: (current, peak) in MiB, from `/proc/<pid>/status`.
pub fn rss_mib(pid: u32) -> Result<(f64, f64), BenchError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(BenchError::setup(path))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .ok_or_else(|| BenchError::step("reading memory", format!("no {name} in {pid}")))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time the threads of process `pid` (`"self"` for this one) have used, summed by thread
/// name, from each thread's `/proc` scheduler counters (nanoseconds, unlike the clock ticks of
/// `/proc/<pid>/stat`). A thread that ended since the listing adds nothing.
pub fn cpu_by_thread(pid: &str) -> Result<BTreeMap<String, Duration>, BenchError> {
    let path = format!("/proc/{pid}/task");
    let threads = std::fs::read_dir(&path).map_err(BenchError::setup(path))?;
    let mut by_name: BTreeMap<String, Duration> = BTreeMap::new();
    for thread in threads.flatten() {
        let (Ok(name), Ok(schedstat)) = (
            std::fs::read_to_string(thread.path().join("comm")),
            std::fs::read_to_string(thread.path().join("schedstat")),
        ) else {
            continue;
        };
        let nanos = schedstat
            .split_whitespace()
            .next()
            .and_then(|nanos| nanos.parse::<u64>().ok())
            .unwrap_or(0);
        *by_name.entry(name.trim().to_owned()).or_default() += Duration::from_nanos(nanos);
    }
    Ok(by_name)
}

/// Polls `done` every 20 ms until it holds or `limit` passes; says which.
pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// The value below which `fraction` of the sorted `samples` lie (nearest rank).
pub fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (fraction * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds as a float, for the table.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// One call a [`RecordingSink`] received.
pub struct Arrival {
    /// When it arrived.
    pub at: Instant,
    /// Its body.
    pub body: Bytes,
}

/// A loopback HTTP server that answers every POST with 200 and records when each arrived.
/// Parsing is left to the benchmark so the sink answers as fast as a trivial handler can.
#[derive(Clone)]
pub struct RecordingSink {
    /// Where it listens.
    pub address: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl RecordingSink {
    /// Starts a sink on a free loopback port.
    pub async fn start() -> Result<Self, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(BenchError::setup("the recording sink"))?;
        let address = listener
            .local_addr()
            .map_err(BenchError::setup("the recording sink"))?;
        let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
        let recorded = Arc::clone(&arrivals);
        let app = Router::new().fallback(post(move |body: Bytes| {
            let at = Instant::now();
            recorded
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(Arrival { at, body });
            async { StatusCode::OK }
        }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { address, arrivals })
    }

    /// The URL to send to.
    pub fn url(&self) -> String {
        format!("http://{}/api/revalidate", self.address)
    }

    /// Takes every arrival recorded so far.
    pub fn take(&self) -> Vec<Arrival> {
        std::mem::take(
            &mut *self
                .arrivals
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// How many calls arrived so far.
    pub fn count(&self) -> usize {
        self.arrivals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}
