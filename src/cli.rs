//! The command line. Every subcommand parses its flags here and hands over to the module that
//! does the work, so `main` stays a one-liner and the logic stays testable in the library.

use std::{
    error::Error,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand};

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
