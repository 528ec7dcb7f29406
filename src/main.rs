use clap::Parser;
use strapi_webhook_operator::{cli::Cli, routing::sandbox};

// Why jemalloc: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // A tenant process evaluates filters and templates for a receiver; it starts no runtime, so
    // its memory limit holds only what it evaluates.
    let mut arguments = std::env::args().skip(1);
    if arguments.next().as_deref() == Some(sandbox::WORKER_ARGUMENT) {
        return sandbox::serve(&arguments.next().unwrap_or_default());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(Cli::parse().run()),
        Err(error) => {
            eprintln!("error: starting the async runtime failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
