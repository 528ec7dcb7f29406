//! What the benchmarks share: their error type, the result table and its markdown file, the
//! resident memory of a process, and polling for a condition. Every result is a row with a baseline measured in the same run, because on
//! a shared machine only ratios travel.

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

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
