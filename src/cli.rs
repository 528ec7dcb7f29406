//! The command line. Every subcommand parses its flags here and hands over to the module that
//! does the work, so `main` stays a one-liner and the logic stays testable in the library.

use std::{
    error::Error,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand};

use crate::telemetry::{self, LogFormat};

/// Declarative, durable and observable webhooks for Strapi CMS.
#[derive(Parser, Debug)]
#[command(name = "strapi-webhook-operator", version, about, long_about = None)]
pub struct Cli {
    // One flag for every subcommand, before or after its name; each subcommand's help lists it
    // apart from its own flags, so it does not read as one more flag of each.
    /// Log format, for every subcommand (before or after its name).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "LOG_FORMAT",
        help_heading = "Global options"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller: reconcile StrapiInstances and StrapiWebhooks in the cluster.
    Controller(ControllerArgs),
    /// Print the CustomResourceDefinitions as YAML (for `kubectl apply -f -`).
    Crd {
        /// Write one `<name>.yaml` per CRD into this folder instead of printing them.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Run the receiver: take Strapi's webhook calls, store them durably, deliver them to sinks.
    Receiver(ReceiverArgs),
    /// List, inspect and replay deliveries through the receiver's admin port.
    Deliveries(DeliveriesArgs),
    /// Run without a cluster: read the YAML from files, register in Strapi, receive and deliver.
    Local(LocalArgs),
    /// Check manifest files offline as the API server and the controller would; exit 1 on any
    /// error.
    Validate(ValidateArgs),
    /// Show what each sink would receive for one Strapi event, from manifest files alone.
    Render(RenderArgs),
}

impl Cli {
    /// Runs the chosen subcommand and maps its outcome to an exit code.
    pub async fn run(self) -> ExitCode {
        telemetry::init(self.log_format);
        let outcome = match self.command {
            Command::Controller(args) => run_controller(args).await,
            Command::Crd { output_dir } => print_crds(output_dir.as_deref()),
            Command::Receiver(args) => run_receiver(args).await,
            Command::Deliveries(args) => run_deliveries(args).await,
            Command::Local(args) => run_local(args).await,
            Command::Validate(args) => run_validate(&args),
            Command::Render(args) => run_render(&args),
        };
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Flags of `controller`.
#[derive(Args, Debug)]
struct ControllerArgs {
    /// Base URL at which Strapi reaches the receiver's ingest port (per-instance override:
    /// `spec.receiverUrl`).
    #[arg(long, env = "RECEIVER_URL")]
    receiver_url: String,
    /// Base URL of the receiver's admin API, used to verify registrations end to end and to
    /// read delivery counters; also the one receiver asked what it routes unless
    /// `--receiver-replicas` is set.
    #[arg(long, env = "RECEIVER_ADMIN_URL")]
    receiver_admin_url: String,
    /// `<namespace>/<service>` of the receiver's admin Service: every ready endpoint of its
    /// EndpointSlices is a replica that must route a StrapiWebhook's current generation before
    /// the webhook is Ready (needs list/watch on EndpointSlices in that namespace).
    #[arg(long, env = "RECEIVER_REPLICAS")]
    receiver_replicas: Option<crate::controller::ServiceRef>,
    /// The receiver's admin API token (the chart mounts it from a Secret).
    #[command(flatten)]
    admin_token: AdminTokenArgs,
    /// Address for `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: std::net::SocketAddr,
    /// Hold a Lease so that only one replica reconciles.
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "strapi-system")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "strapi-webhook-operator")]
    lease_name: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "strapi-webhook-operator")]
    identity: String,
    /// How long the previous shared secret is still accepted after a rotation.
    #[arg(long, env = "SECRET_GRACE", default_value = "15m")]
    secret_grace: kube::core::Duration,
    /// How long to wait for the receiver to see Strapi's trigger.
    #[arg(long, env = "VERIFY_TIMEOUT", default_value = "10s")]
    verify_timeout: kube::core::Duration,
    /// Accept loopback sinks, as a receiver started with `--allow-loopback-sinks` does.
    #[arg(long, env = "ALLOW_LOOPBACK_SINKS")]
    allow_loopback_sinks: bool,
    /// Gap repair: how long Strapi's calls must have stopped before a change that no call
    /// showed is taken for lost (a newer call from Strapi proves it sooner).
    #[arg(long, env = "REPAIR_SETTLE", default_value = "15s")]
    repair_settle: kube::core::Duration,
}

async fn run_controller(args: ControllerArgs) -> Result<(), Box<dyn Error>> {
    use crate::controller::{self, LeaderElection, Options};
    let client = kube::Client::try_default().await?;
    let options = Options {
        receiver_url: args.receiver_url,
        receiver_admin_url: args.receiver_admin_url,
        receiver_replicas: args.receiver_replicas,
        receiver_admin_token: args.admin_token.token()?,
        secret_header: crate::event::SECRET_HEADER.to_owned(),
        secret_grace: std::time::Duration::from(args.secret_grace).try_into()?,
        verify_timeout: args.verify_timeout.into(),
        allow_loopback_sinks: args.allow_loopback_sinks,
        repair: crate::repair::CheckSettings {
            settle: args.repair_settle.into(),
            ..crate::repair::CheckSettings::default()
        },
        // Set by the Deployment's downward API; unset, Events name no reporting instance.
        pod_name: std::env::var("POD_NAME").ok(),
    };
    let election = args.leader_elect.then_some(LeaderElection {
        namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity: args.identity,
    });
    controller::run(client, options, args.metrics_addr, election).await?;
    Ok(())
}

/// Flags of `receiver`.
#[derive(Args, Debug)]
struct ReceiverArgs {
    /// Address of the ingest port that Strapi calls.
    #[arg(long, env = "INGEST_ADDR", default_value = "0.0.0.0:8080")]
    ingest_addr: String,
    /// Address of the admin port (probes, metrics, delivery API).
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:9091")]
    admin_addr: String,
    /// Where the durable queue lives: `sqlite:<path>`, or `nats://<host>:<port>[?replicas=N]` for
    /// a NATS JetStream shared by several receivers.
    #[arg(
        long,
        env = "QUEUE",
        default_value = "sqlite:/var/lib/strapi-webhook-operator/queue.db"
    )]
    queue: crate::receiver::QueueSpec,
    /// `full` (the default) makes every stored event survive power loss; `normal` only a crash
    /// of the process, for more throughput on slow disks.
    #[arg(long, env = "QUEUE_DURABILITY", default_value = "full")]
    queue_durability: crate::queue::sqlite::Durability,
    /// Where routing configuration comes from: `kubernetes` or `file:<manifests.yaml>`.
    #[arg(long, env = "CONFIG_SOURCE", default_value = "kubernetes")]
    config_source: String,
    /// Largest request body accepted from Strapi, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1_048_576)]
    max_body_bytes: usize,
    /// Strapi's duplicate `entry.delete`/`publish`/`unpublish` events within this window are
    /// stored once.
    #[arg(long, env = "DEDUP_WINDOW", default_value = "2s")]
    dedup_window: kube::core::Duration,
    /// On SIGTERM, how long in-flight deliveries may take before they are handed back.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s")]
    shutdown_grace: kube::core::Duration,
    /// How long delivered deliveries stay listable before they are pruned (dead letters stay
    /// until replayed).
    #[arg(long, env = "RETENTION", default_value = "24h")]
    retention: kube::core::Duration,
    /// Let sinks call loopback addresses (never the receiver's own ports). For development and
    /// tests where sinks run on the same machine; off in a cluster.
    #[arg(long, env = "ALLOW_LOOPBACK_SINKS")]
    allow_loopback_sinks: bool,
    /// The receiver's pod IP (the chart sets it from the downward API); sinks may not call it.
    #[arg(long, env = "POD_IP")]
    pod_ip: Option<std::net::IpAddr>,
    /// The admin API's bearer token; without one the delivery API is off.
    #[command(flatten)]
    admin_token: AdminTokenArgs,
    /// On both ports, how long a client has to send a request's headers; a keep-alive
    /// connection idle this long is closed too (the idle timeout).
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s")]
    header_read_timeout: kube::core::Duration,
    /// On both ports, how long a request's body may take to arrive.
    #[arg(long, env = "BODY_TIMEOUT", default_value = "30s")]
    body_timeout: kube::core::Duration,
    /// Connections each port serves at once; more wait in the accept backlog. Lowered at start
    /// if both ports would not fit in the open-files limit (raised to its hard limit first).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    #[command(flatten)]
    tenant: TenantArgs,
    /// Trace export.
    #[command(flatten)]
    traces: TracesArgs,
}

/// Where route filters and templates run.
#[derive(Args, Debug)]
struct TenantArgs {
    /// Memory each tenant process may allocate, in MiB. Filters and templates, written by
    /// whoever may create a StrapiWebhook, run in child processes of the receiver with this
    /// limit; an evaluation that needs more dead-letters its delivery with the reason.
    #[arg(long, env = "TENANT_MEMORY_MIB", default_value_t = 64)]
    tenant_memory_mib: u64,
}

impl TenantArgs {
    /// Sends filter and template evaluations to tenant processes of this executable.
    fn install(&self) -> Result<(), Box<dyn Error>> {
        let executable = std::env::current_exe()
            .map_err(|error| format!("finding this executable for tenant processes: {error}"))?;
        crate::routing::sandbox::install(
            executable,
            crate::routing::sandbox::Limits {
                memory_bytes: self.tenant_memory_mib.saturating_mul(1024 * 1024),
            },
        );
        Ok(())
    }
}

/// Where the traces of events and delivery attempts go.
#[derive(Args, Debug)]
struct TracesArgs {
    /// Export one trace per event (its ingest and every delivery attempt) to this OTLP/HTTP
    /// collector, e.g. `http://otel-collector:4318` (spans go to `<URL>/v1/traces`). Sinks get
    /// the attempt's `traceparent` header either way. [default: off]
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

impl TracesArgs {
    fn tracer(&self) -> Result<crate::traces::Tracer, crate::traces::TracesError> {
        match &self.otlp_endpoint {
            Some(endpoint) => crate::traces::Tracer::otlp(endpoint, env!("CARGO_PKG_NAME")),
            None => Ok(crate::traces::Tracer::default()),
        }
    }
}

/// Where the receiver's admin API token comes from.
#[derive(Args, Debug)]
struct AdminTokenArgs {
    /// The token itself.
    #[arg(
        long,
        env = "RECEIVER_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    admin_token: Option<String>,
    /// A file holding the token, e.g. a mounted Secret or local mode's `<data-dir>/admin-token`.
    #[arg(
        long,
        env = "RECEIVER_ADMIN_TOKEN_FILE",
        global = true,
        conflicts_with = "admin_token"
    )]
    admin_token_file: Option<PathBuf>,
}

impl AdminTokenArgs {
    fn token(&self) -> Result<Option<crate::http::AdminToken>, Box<dyn Error>> {
        use crate::http::AdminToken;
        if let Some(text) = &self.admin_token {
            return Ok(Some(AdminToken::new(text)?));
        }
        match &self.admin_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| format!("reading {}: {error}", path.display()))?;
                Ok(Some(AdminToken::new(&text)?))
            }
            None => Ok(None),
        }
    }
}

async fn run_receiver(args: ReceiverArgs) -> Result<(), Box<dyn Error>> {
    use crate::receiver::{
        self, ReceiverSettings, RunOptions, engine::EngineSettings, server::ServerLimits,
    };
    args.tenant.install()?;
    let options = RunOptions {
        ingest_addr: args.ingest_addr,
        admin_addr: args.admin_addr,
        queue: args.queue,
        durability: args.queue_durability,
        config_source: args.config_source.parse()?,
        settings: ReceiverSettings {
            max_body_bytes: args.max_body_bytes,
            dedup_window: args.dedup_window.into(),
            engine: EngineSettings {
                shutdown_grace: args.shutdown_grace.into(),
                retention: args.retention.into(),
                tracer: args.traces.tracer()?,
                ..EngineSettings::default()
            },
            egress: crate::sinks::EgressBase {
                allow_loopback: args.allow_loopback_sinks,
                own_ports: Vec::new(),
                own_addresses: args.pod_ip.into_iter().collect(),
            },
            admin_token: args.admin_token.token()?,
            server: ServerLimits {
                header_read_timeout: args.header_read_timeout.into(),
                body_timeout: args.body_timeout.into(),
                max_connections: args.max_connections,
            },
        },
    };
    receiver::run(options).await?;
    Ok(())
}

/// Flags of `deliveries`.
#[derive(Args, Debug)]
struct DeliveriesArgs {
    /// Base URL of the receiver's admin port.
    #[arg(
        long,
        global = true,
        env = "RECEIVER_ADMIN_URL",
        default_value = "http://127.0.0.1:9091"
    )]
    admin_url: String,
    /// The admin API token (local mode keeps it in `<data-dir>/admin-token`).
    #[command(flatten)]
    admin_token: AdminTokenArgs,
    #[command(subcommand)]
    command: DeliveriesCommand,
}

#[derive(Subcommand, Debug)]
enum DeliveriesCommand {
    /// List deliveries, newest first.
    List {
        /// Only dead letters (same as `--state dead`).
        #[arg(long, conflicts_with = "state")]
        dead: bool,
        /// Only deliveries in this state: pending, inflight, delivered or dead.
        #[arg(long, value_parser = parse_state)]
        state: Option<crate::queue::DeliveryState>,
        /// Only this webhook, as `namespace/name`.
        #[arg(long)]
        webhook: Option<String>,
        /// Only sinks of this name.
        #[arg(long)]
        sink: Option<String>,
        /// Only deliveries of this event id.
        #[arg(long)]
        event: Option<String>,
        /// At most this many (1 to 1000).
        #[arg(
            long,
            default_value_t = crate::receiver::admin::DEFAULT_LIST_LIMIT,
            value_parser = clap::value_parser!(u32)
                .range(1..=i64::from(crate::receiver::admin::MAX_LIST_LIMIT))
        )]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one delivery and the event it carries, as JSON.
    Show {
        /// The delivery id (the `webhook-id` the sink saw).
        id: String,
    },
    /// Re-queue one dead or delivered delivery, or every dead letter with `--dead`.
    Replay {
        /// The delivery id.
        #[arg(required_unless_present = "dead", conflicts_with = "dead")]
        id: Option<String>,
        /// Replay every dead letter (optionally only of `--webhook` and/or `--sink`).
        #[arg(long)]
        dead: bool,
        /// With `--dead`: only this webhook, as `namespace/name`.
        #[arg(long, requires = "dead")]
        webhook: Option<String>,
        /// With `--dead`: only sinks of this name.
        #[arg(long, requires = "dead")]
        sink: Option<String>,
    },
}

fn parse_state(name: &str) -> Result<crate::queue::DeliveryState, String> {
    crate::queue::DeliveryState::parse(name)
        .ok_or_else(|| format!("{name:?} is not one of pending, inflight, delivered, dead"))
}

async fn run_deliveries(args: DeliveriesArgs) -> Result<(), Box<dyn Error>> {
    use crate::receiver::deliveries::{AdminClient, ListQuery, table};
    let token = args.admin_token.token()?.ok_or(
        "the admin API needs a token: set RECEIVER_ADMIN_TOKEN or RECEIVER_ADMIN_TOKEN_FILE \
         (local mode keeps it in <data-dir>/admin-token)",
    )?;
    let client = AdminClient::new(&args.admin_url, &token)?;
    match args.command {
        DeliveriesCommand::List {
            dead,
            state,
            webhook,
            sink,
            event,
            limit,
            json,
        } => {
            let state = if dead {
                Some(crate::queue::DeliveryState::Dead)
            } else {
                state
            };
            let query = ListQuery {
                state,
                webhook,
                sink,
                event,
                limit: Some(limit),
            };
            let deliveries = client.list(&query).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&deliveries)?);
            } else {
                print!("{}", table(&deliveries));
            }
        }
        DeliveriesCommand::Show { id } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&client.show(&id).await?)?
            );
        }
        DeliveriesCommand::Replay {
            id,
            dead,
            webhook,
            sink,
        } => {
            let replayed = match id {
                Some(id) if !dead => client.replay(&id).await?,
                _ => {
                    client
                        .replay_dead(webhook.as_deref(), sink.as_deref())
                        .await?
                }
            };
            println!("replayed {}", replayed.replayed);
        }
    }
    Ok(())
}

/// Flags of `local`.
#[derive(Args, Debug)]
struct LocalArgs {
    /// YAML files or folders of StrapiInstances, StrapiWebhooks and Secrets (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
    /// Folder for the queue and the generated shared secrets.
    #[arg(long, env = "SWO_DATA_DIR", default_value = ".swo-data")]
    data_dir: PathBuf,
    /// Address of the ingest port that Strapi calls.
    #[arg(long, env = "INGEST_ADDR", default_value = "127.0.0.1:8080")]
    ingest_addr: String,
    /// Address of the admin port (probes, metrics, delivery API).
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:9091")]
    admin_addr: String,
    /// Base URL at which Strapi reaches the ingest port [default: http://<ingest address>].
    #[arg(long, env = "RECEIVER_URL")]
    receiver_url: Option<String>,
    /// Remove the registrations from Strapi on exit.
    #[arg(long, env = "CLEANUP")]
    cleanup: bool,
    /// How long to wait for the receiver to record Strapi's test call.
    #[arg(long, env = "VERIFY_TIMEOUT", default_value = "10s")]
    verify_timeout: kube::core::Duration,
    /// The admin API token [default: generated once into <data-dir>/admin-token].
    #[command(flatten)]
    admin_token: AdminTokenArgs,
    /// Gap repair: how long Strapi's calls must have stopped before a change that no call
    /// showed is taken for lost (a newer call from Strapi proves it sooner).
    #[arg(long, env = "REPAIR_SETTLE", default_value = "15s")]
    repair_settle: kube::core::Duration,
    #[command(flatten)]
    tenant: TenantArgs,
    /// Trace export.
    #[command(flatten)]
    traces: TracesArgs,
}

async fn run_local(args: LocalArgs) -> Result<(), Box<dyn Error>> {
    args.tenant.install()?;
    let options = crate::local::Options {
        paths: args.paths,
        data_dir: args.data_dir,
        ingest_addr: args.ingest_addr,
        admin_addr: args.admin_addr,
        receiver_url: args.receiver_url,
        cleanup: args.cleanup,
        verify_timeout: args.verify_timeout.into(),
        repair: crate::repair::CheckSettings {
            settle: args.repair_settle.into(),
            ..crate::repair::CheckSettings::default()
        },
        settings: crate::receiver::ReceiverSettings {
            admin_token: args.admin_token.token()?,
            engine: crate::receiver::engine::EngineSettings {
                tracer: args.traces.tracer()?,
                ..crate::receiver::engine::EngineSettings::default()
            },
            ..crate::receiver::ReceiverSettings::default()
        },
    };
    let env = std::env::vars().collect();
    crate::local::run(options, env, crate::receiver::shutdown_signal()).await?;
    Ok(())
}

/// How `validate` and `render` print.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
enum Output {
    /// Lines for people (`file:line: field: reason`).
    #[default]
    Human,
    /// JSON, for CI annotations and tests.
    Json,
}

/// Flags of `validate`.
#[derive(Args, Debug)]
struct ValidateArgs {
    /// YAML files or folders (their `*.yaml`/`*.yml` files); other kinds are ignored.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

fn run_validate(args: &ValidateArgs) -> Result<(), Box<dyn Error>> {
    let report = crate::validate::validate(&args.paths);
    match args.output {
        Output::Human => print!("{}", report.human()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    match report.errors.len() {
        0 => Ok(()),
        count => Err(format!("{count} problem(s) found").into()),
    }
}

/// Flags of `render`.
#[derive(Args, Debug)]
struct RenderArgs {
    /// YAML files or folders (their `*.yaml`/`*.yml` files); other kinds are ignored.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
    /// The Strapi event: a file of its JSON body, `-` for standard input, or a built-in sample
    /// such as `entry.update:article` or `media.create` (`--event list` lists them).
    #[arg(long, value_name = "FILE|-|SAMPLE")]
    event: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Output,
}

fn run_render(args: &RenderArgs) -> Result<(), Box<dyn Error>> {
    use crate::render::samples;
    let raw = match args.event.as_str() {
        "list" => {
            println!("{}", samples::names().join("\n"));
            return Ok(());
        }
        "-" => {
            let mut raw = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut raw)?;
            raw
        }
        name => match samples::sample(name) {
            Some(raw) => raw,
            None => std::fs::read(name).map_err(|error| {
                format!("{name}: {error} (not a file, and not a sample: see --event list)")
            })?,
        },
    };
    let rendering = crate::render::render(&args.paths, &raw)
        .map_err(|error| format!("the event is not a Strapi webhook body: {error}"))?;
    match args.output {
        Output::Human => print!("{}", rendering.human()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&rendering)?),
    }
    Ok(())
}

fn print_crds(output_dir: Option<&Path>) -> Result<(), Box<dyn Error>> {
    for crd in crate::api::crds() {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        let yaml = crate::api::crd_yaml(&crd)?;
        match output_dir {
            Some(dir) => std::fs::write(dir.join(format!("{name}.yaml")), yaml)?,
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
