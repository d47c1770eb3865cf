//! The `replication-vw` binary: command-line parsing and logging set-up.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "replication-vw",
    version,
    about = "kcp's cache server and Replication virtual workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded server: cache server and Replication virtual workspace in one process.
    Serve {
        /// Address to listen on (TLS).
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: String,
        /// Directory for generated certificates and the admin kubeconfig.
        #[arg(long, default_value = "./.replication-vw")]
        data_dir: PathBuf,
        /// Directory of YAML manifests to load at start (repeatable).
        #[arg(long = "seed")]
        seed: Vec<PathBuf>,
        /// kube-apiserver static token file (`token,user,uid,"group1,group2"`).
        #[arg(long)]
        token_auth_file: Option<PathBuf>,
        /// Base URL published in endpoint slices (default `https://<listen address>`).
        #[arg(long)]
        external_url: Option<String>,
    },
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve {
            listen,
            data_dir,
            seed,
            token_auth_file,
            external_url,
        } => {
            replication_vw::server::run(replication_vw::server::ServeOptions {
                listen,
                data_dir,
                seeds: seed,
                token_auth_file,
                external_url,
            })
            .await
        }
        Command::Version => {
            println!("replication-vw {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}
