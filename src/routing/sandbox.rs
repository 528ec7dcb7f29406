//! Tenant processes: where route filters and templates are evaluated when a receiver runs them.
//!
//! Filters and templates are written by whoever may create a `StrapiWebhook`, and the receiver
//! is shared. Their compile-time bounds (CEL cost budget, minijinja fuel, no `*`) stop the bombs
//! that can be seen in the text, but not every one that only shows on an event: a template can
//! still grow a string by doubling it through built-in filters (`replace`, `join`, `indent`, …)
//! faster than fuel counts, and a filter over a list far longer than the estimate assumed can run
//! for seconds. A thread cannot be stopped or have its memory capped, a process can. So once
//! [`install`] is called (the receiver and local mode do, with the operator's own executable),
//! every evaluation is sent to a child process of the same binary that
//!
//! - has its own data limit (`RLIMIT_DATA`, [`Limits::memory_bytes`]): an allocation past it fails
//!   and the child aborts, never the receiver;
//! - is killed when an evaluation outlives its time limit, so nothing keeps running after the
//!   caller stopped waiting;
//! - dies with the receiver (`PR_SET_PDEATHSIG`) and is the kernel's first choice when the
//!   container runs out of memory (`oom_score_adj` 1000).
//!
//! A child serves one evaluation at a time over a pipe, one JSON line each way, and keeps the
//! filters and templates it compiled, so a route is compiled once per child. Children are reused
//! and replaced after a failure. Without [`install`] (unit tests, the controller, `validate`)
//! evaluations run in the calling thread, bounded only by the compile-time limits.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio},
    sync::{Mutex, OnceLock, PoisonError, mpsc},
    time::{Duration, Instant},
};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{EventVars, FilterError, filter::Filter, template::Templates};

/// The first argument that makes the binary a tenant process instead of the operator.
pub const WORKER_ARGUMENT: &str = "__tenant-process";
/// Memory a tenant process may allocate unless configured (`--tenant-memory-limit`).
pub const DEFAULT_MEMORY_BYTES: u64 = 64 * 1024 * 1024;
/// Longest a filter may evaluate in a tenant process before it is killed.
pub const FILTER_TIME_LIMIT: Duration = Duration::from_secs(1);
/// Longest a template may render in a tenant process before it is killed.
pub const TEMPLATE_TIME_LIMIT: Duration = Duration::from_secs(1);
// Idle children kept for reuse: one per evaluation slot of each kind (`receiver::tenant`).
const IDLE_KEPT: usize = 8;
// Children started when the pool is installed.
const PRESTARTED: usize = 4;
// Compiled filters or template sets a child keeps before it starts over.
const CACHE_ENTRIES: usize = 256;

/// The bounds of every tenant process.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `RLIMIT_DATA` of each child: heap and private mappings. The allocator maps memory in
    /// extents that count whole, so one allocation can take about half of it.
    pub memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

/// Sends every filter and template evaluation of this process to tenant processes started from
/// `executable` (a build of this crate's binary). The first call wins; later ones are ignored,
/// so several receivers in one process share the children.
pub fn install(executable: PathBuf, limits: Limits) {
    // Children are started from one thread that lives as long as the process, because the
    // parent-death signal fires when the thread that started a child ends, and the blocking
    // pool's threads come and go.
    let (spawner, requests) = mpsc::channel::<mpsc::Sender<std::io::Result<Worker>>>();
    let pool = Pool {
        limits,
        spawner: Mutex::new(spawner),
        idle: Mutex::new(Vec::new()),
    };
    if POOL.set(pool).is_ok() {
        std::thread::spawn(move || {
            for reply in requests {
                let _ = reply.send(Worker::start(&executable, limits));
            }
        });
        // The first evaluations should not wait for a process to start.
        std::thread::spawn(|| {
            if let Some(pool) = POOL.get() {
                pool.prestart(PRESTARTED);
            }
        });
        tracing::info!(
            memory_limit_bytes = limits.memory_bytes,
            "filters and templates run in tenant processes"
        );
    }
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// What a tenant process is asked.
#[derive(Serialize, Deserialize)]
enum Request {
    /// Evaluate a filter on the event's variables ([`super::EventVars`], in their order).
    Filter { source: String, vars: Vec<Json> },
    /// Render `fields` of a route's template set with `context`, each on its own.
    Template {
        sources: Vec<(String, String)>,
        fields: Vec<String>,
        context: Json,
    },
}

/// A tenant process's answer.
#[derive(Serialize, Deserialize)]
enum Response {
    Filter(Result<bool, FilterError>),
    /// One result per field asked, in the order asked.
    Template(Vec<Result<String, String>>),
    /// The filter or template set did not compile in the child (it compiled in the parent, so
    /// this means the two binaries differ).
    NotCompiled(String),
}

/// Evaluates `filter` in a tenant process, or `None` when none is installed.
pub(super) fn filter(source: &str, vars: &EventVars) -> Option<Result<bool, FilterError>> {
    let pool = POOL.get()?;
    let request = Request::Filter {
        source: source.to_owned(),
        vars: vars.iter().map(|(_, value)| value.clone()).collect(),
    };
    Some(match pool.call(&request, FILTER_TIME_LIMIT) {
        Ok(Response::Filter(result)) => result,
        Ok(Response::NotCompiled(message)) => Err(FilterError::Evaluation(message)),
        Ok(Response::Template(_)) => Err(FilterError::Evaluation(
            "the tenant process answered a different request".to_owned(),
        )),
        Err(failure) => Err(FilterError::Evaluation(failure.explain(FILTER_TIME_LIMIT))),
    })
}

/// Renders `fields` of the template set `sources` in a tenant process, one result per field,
/// or `None` when none is installed. The fields go in one request (a delivery's tags and paths
/// cost one round trip, not one each) and share [`TEMPLATE_TIME_LIMIT`]. When the process ends
/// without answering (a field past the memory limit), each field is rendered again on its own,
/// so only the field at fault fails, as if it had been asked alone.
pub(super) fn templates(
    sources: &[(String, String)],
    fields: &[String],
    context: &minijinja::Value,
) -> Option<Vec<Result<String, String>>> {
    let pool = POOL.get()?;
    let context = match serde_json::to_value(context) {
        Ok(context) => context,
        Err(error) => {
            let error = format!("the event could not be passed on: {error}");
            return Some(vec![Err(error); fields.len()]);
        }
    };
    let answer = |answer: Result<Response, Failure>, asked: usize| match answer {
        Ok(Response::Template(results)) if results.len() == asked => results,
        Ok(Response::NotCompiled(message)) => vec![Err(message); asked],
        Ok(_) => vec![Err("the tenant process answered a different request".into()); asked],
        Err(failure) => vec![Err(failure.explain(TEMPLATE_TIME_LIMIT)); asked],
    };
    let mut request = Request::Template {
        sources: sources.to_vec(),
        fields: fields.to_vec(),
        context,
    };
    Some(match pool.call(&request, TEMPLATE_TIME_LIMIT) {
        Err(Failure::OutOfMemory(_) | Failure::Ended(_)) if fields.len() > 1 => fields
            .iter()
            .flat_map(|field| {
                // The same request, for this field alone.
                if let Request::Template { fields: asked, .. } = &mut request {
                    *asked = vec![field.clone()];
                }
                answer(pool.call(&request, TEMPLATE_TIME_LIMIT), 1)
            })
            .collect(),
        whole => answer(whole, fields.len()),
    })
}

/// Why an evaluation in a tenant process gave no answer.
#[derive(Debug)]
enum Failure {
    /// It outlived its time limit and was killed.
    TimeLimit,
    /// The child ended without answering: an allocation past its memory limit aborts it
    /// (`SIGABRT`), the kernel's OOM killer ends it (`SIGKILL`).
    OutOfMemory(String),
    /// The child ended without answering for another reason (how it ended).
    Ended(String),
    /// No child could be started or spoken to.
    Io(std::io::Error),
}

impl Failure {
    fn explain(&self, limit: Duration) -> String {
        match self {
            Self::TimeLimit => format!(
                "exceeded the time limit of {} ms and was stopped",
                limit.as_millis()
            ),
            Self::OutOfMemory(how) => {
                let limit = POOL
                    .get()
                    .map_or(DEFAULT_MEMORY_BYTES, |pool| pool.limits.memory_bytes);
                format!(
                    "exceeded the memory limit of {} MiB (its tenant process {how})",
                    limit / (1024 * 1024)
                )
            }
            Self::Ended(how) => format!("its tenant process {how} without answering"),
            Self::Io(error) => format!("could not run in a tenant process: {error}"),
        }
    }
}

struct Pool {
    limits: Limits,
    spawner: Mutex<mpsc::Sender<mpsc::Sender<std::io::Result<Worker>>>>,
    idle: Mutex<Vec<Worker>>,
}

impl Pool {
    fn start(&self) -> std::io::Result<Worker> {
        let (reply, started) = mpsc::channel();
        let sent = self
            .spawner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(reply);
        if sent.is_err() {
            return Err(std::io::Error::other(
                "the tenant process starter has stopped",
            ));
        }
        started.recv().unwrap_or_else(|_| {
            Err(std::io::Error::other(
                "the tenant process starter has stopped",
            ))
        })
    }

    /// An idle child that is still alive, or a new one.
    fn take(&self) -> std::io::Result<Worker> {
        loop {
            let taken = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(mut worker) = taken else {
                return self.start();
            };
            if matches!(worker.child.try_wait(), Ok(None)) {
                return Ok(worker);
            }
        }
    }

    fn prestart(&self, count: usize) {
        for _ in 0..count {
            match self.start() {
                Ok(worker) => self.release(worker),
                Err(error) => {
                    tracing::warn!(%error, "starting a tenant process failed");
                    return;
                }
            }
        }
    }

    fn release(&self, worker: Worker) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_KEPT {
            idle.push(worker);
        }
    }

    fn call(&self, request: &Request, limit: Duration) -> Result<Response, Failure> {
        let line = serde_json::to_string(request).map_err(|error| Failure::Io(error.into()))?;
        let mut worker = self.take().map_err(Failure::Io)?;
        let answer = worker.ask(&line, limit);
        if answer.is_ok() {
            self.release(worker);
        }
        // A child that failed is dropped, which stops it.
        answer
    }
}

struct Worker {
    child: Child,
    input: ChildStdin,
    output: ChildStdout,
    pending: Vec<u8>,
}

impl Worker {
    fn start(executable: &Path, limits: Limits) -> std::io::Result<Self> {
        let mut child = Command::new(executable)
            .arg(WORKER_ARGUMENT)
            .arg(limits.memory_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // What a child prints as it aborts ("memory allocation of … failed") is not in the
            // receiver's log format; the failure is reported with the delivery instead.
            .stderr(Stdio::null())
            .env_clear()
            .spawn()?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(std::io::Error::other("the tenant process has no pipes"));
        };
        Ok(Self {
            child,
            input,
            output,
            pending: Vec::new(),
        })
    }

    /// Sends one request line and reads one answer line within `limit`.
    fn ask(&mut self, line: &str, limit: Duration) -> Result<Response, Failure> {
        let deadline = Instant::now() + limit;
        let sent = self
            .input
            .write_all(line.as_bytes())
            .and_then(|()| self.input.write_all(b"\n"))
            .and_then(|()| self.input.flush());
        if sent.is_err() {
            return Err(self.ended());
        }
        loop {
            if let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
                let answer: Vec<u8> = self.pending.drain(..=end).collect();
                return serde_json::from_slice(&answer).map_err(|error| {
                    Failure::Io(std::io::Error::other(format!("unreadable answer: {error}")))
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.readable_within(left)? {
                return Err(Failure::TimeLimit);
            }
            let mut buffer = [0_u8; 64 * 1024];
            match self.output.read(&mut buffer) {
                Ok(0) | Err(_) => return Err(self.ended()),
                Ok(read) => self.pending.extend_from_slice(&buffer[..read]),
            }
        }
    }

    fn readable_within(&self, left: Duration) -> Result<bool, Failure> {
        let timeout = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&self.output, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(ready) => Ok(ready > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(error) => Err(Failure::Io(error.into())),
        }
    }

    /// How the child ended, once it has.
    fn ended(&mut self) -> Failure {
        const SIGKILL: i32 = 9;
        const SIGABRT: i32 = 6;
        match self.child.wait() {
            Ok(status) => match status.signal() {
                Some(signal @ (SIGABRT | SIGKILL)) => {
                    Failure::OutOfMemory(format!("was ended by signal {signal}"))
                }
                Some(signal) => Failure::Ended(format!("was ended by signal {signal}")),
                None => Failure::Ended(format!("exited with {status}")),
            },
            Err(error) => Failure::Ended(format!("could not be waited for: {error}")),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The main function of a tenant process (`<binary> __tenant-process <memory bytes>`): applies
/// its limits, then answers requests on stdin until it closes.
pub fn serve(memory_bytes: &str) -> ExitCode {
    let Ok(memory_bytes) = memory_bytes.parse::<u64>() else {
        eprintln!("tenant process: the memory limit {memory_bytes:?} is not a number of bytes");
        return ExitCode::FAILURE;
    };
    if let Err(error) = confine(memory_bytes) {
        eprintln!("tenant process: applying its limits failed: {error}");
        return ExitCode::FAILURE;
    }
    let mut compiled = Compiled::default();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in BufReader::new(stdin.lock()).lines() {
        let Ok(line) = line else {
            return ExitCode::FAILURE;
        };
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(request) => compiled.answer(request),
            Err(error) => Response::NotCompiled(format!("unreadable request: {error}")),
        };
        let written = serde_json::to_writer(&mut stdout, &response)
            .map_err(std::io::Error::from)
            .and_then(|()| stdout.write_all(b"\n"))
            .and_then(|()| stdout.flush());
        if written.is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn confine(memory_bytes: u64) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, Signal, set_parent_process_death_signal, setrlimit};
    set_parent_process_death_signal(Some(Signal::KILL))?;
    setrlimit(
        Resource::Data,
        Rlimit {
            current: Some(memory_bytes),
            maximum: Some(memory_bytes),
        },
    )?;
    // Raising one's own OOM score needs no privilege; a read-only /proc only loses the hint.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    Ok(())
}

/// What a tenant process compiled, by source.
#[derive(Default)]
struct Compiled {
    filters: HashMap<String, Filter>,
    templates: HashMap<u64, (Vec<(String, String)>, Templates)>,
}

impl Compiled {
    fn answer(&mut self, request: Request) -> Response {
        match request {
            Request::Filter { source, vars } => {
                if self.filters.len() >= CACHE_ENTRIES {
                    self.filters.clear();
                }
                if !self.filters.contains_key(&source) {
                    match Filter::compile("filter", &source) {
                        Ok(filter) => self.filters.insert(source.clone(), filter),
                        Err(errors) => return Response::NotCompiled(describe(&errors)),
                    };
                }
                let vars = EventVars::from_values(vars);
                Response::Filter(self.filters[&source].evaluate_here(&vars))
            }
            Request::Template {
                sources,
                fields,
                context,
            } => {
                let key = {
                    let mut hasher = DefaultHasher::new();
                    sources.hash(&mut hasher);
                    hasher.finish()
                };
                let fresh = self
                    .templates
                    .get(&key)
                    .is_none_or(|(compiled, _)| *compiled != sources);
                if fresh {
                    if self.templates.len() >= CACHE_ENTRIES {
                        self.templates.clear();
                    }
                    let mut templates = Templates::new();
                    for (field, source) in &sources {
                        if let Err(error) = templates.add(field, source) {
                            return Response::NotCompiled(error.to_string());
                        }
                    }
                    self.templates.insert(key, (sources, templates));
                }
                let context = minijinja::Value::from_serialize(&context);
                let templates = &self.templates[&key].1;
                Response::Template(
                    fields
                        .iter()
                        .map(|field| templates.render_here(field, &context))
                        .collect(),
                )
            }
        }
    }
}

fn describe(errors: &[super::CompileError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
