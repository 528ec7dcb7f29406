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
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t, env = "LOG_FORMAT")]
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
}

impl Cli {
    /// Runs the chosen subcommand and maps its outcome to an exit code.
    pub async fn run(self) -> ExitCode {
        telemetry::init(self.log_format);
        let outcome = match self.command {
            Command::Controller(args) => run_controller(args).await,
            Command::Crd { output_dir } => print_crds(output_dir.as_deref()),
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
    /// Base URL of the receiver's admin API, used to verify registrations end to end.
    #[arg(long, env = "RECEIVER_ADMIN_URL")]
    receiver_admin_url: String,
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
}

async fn run_controller(args: ControllerArgs) -> Result<(), Box<dyn Error>> {
    use crate::controller::{self, LeaderElection, Options};
    let client = kube::Client::try_default().await?;
    let options = Options {
        receiver_url: args.receiver_url,
        receiver_admin_url: args.receiver_admin_url,
        secret_header: crate::event::SECRET_HEADER.to_owned(),
        secret_grace: std::time::Duration::from(args.secret_grace).try_into()?,
        verify_timeout: args.verify_timeout.into(),
    };
    let election = args.leader_elect.then_some(LeaderElection {
        namespace: args.lease_namespace,
        lease_name: args.lease_name,
        identity: args.identity,
    });
    controller::run(client, options, args.metrics_addr, election).await?;
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
