//! The `replication-vw` binary: command-line parsing and logging set-up. Three roles: the
//! embedded all-in-one or a shard (`serve`), the cache server alone (`cache-server`) and the
//! Replication virtual workspace alone (`virtual-workspace`).

#![forbid(unsafe_code)]

mod log_fields;

use clap::{Args, Parser, Subcommand};
use replication_vw::server::flags::{FrontProxyFlags, ShutdownFlags, TlsFlags};
use replication_vw::server::{self, CacheOptions, ListenOptions, ServeOptions, StorageKind};
use std::path::PathBuf;

/// mimalloc rather than the system allocator: freed memory goes back to the system, so a
/// long-running role's RSS follows what it holds instead of its busiest moment (see the soak in
/// benches/README.md); allocations of 1 MiB and more get pages of their own, given back when
/// freed (`crates/allocator`; the large-objects rows of benches/README.md).
#[global_allocator]
static ALLOCATOR: allocator::Allocator = allocator::Allocator;

#[derive(Parser)]
#[command(
    name = "replication-vw",
    version,
    about = "kcp's cache server and Replication virtual workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: `text` (human-readable, on stderr) or `json` (every line on stdout and stderr
    /// one JSON object, start-up hints and command output included).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log one line per request (request id, user, verb, resource, cluster, code, bytes,
    /// latency). Refused writes and refused authentication or authorization are always logged
    /// (target `audit`).
    #[arg(long, global = true)]
    log_requests: bool,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Print command output: a plain line, or with `--log-format json` one JSON object.
fn out(text: &str) {
    if server::json_logs() {
        println!(
            "{}",
            serde_json::json!({"level": "INFO", "target": "replication_vw", "fields": {"message": text}})
        );
    } else {
        println!("{text}");
    }
}

/// Flags every role has.
#[derive(Args, Debug, Clone)]
struct Common {
    /// Address to listen on (TLS; port 0 picks a free port, the kubeconfig has the real one).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: String,
    /// Directory for generated certificates and the admin kubeconfig (`ca.crt`,
    /// `admin.kubeconfig`: a system:masters client certificate for this role's own API).
    #[arg(long, default_value = "./.replication-vw")]
    data_dir: PathBuf,
    /// kube-apiserver static token file (`token,user,uid,"group1,group2"`).
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsFlags,
    #[command(flatten)]
    front_proxy: FrontProxyFlags,
    #[command(flatten)]
    shutdown: ShutdownFlags,
    #[command(flatten)]
    limits: replication_vw::server::limits::LimitFlags,
}

/// Where the remote cache server is.
#[derive(Args, Debug, Clone)]
struct Cache {
    /// Kubeconfig whose current context names the cache server, its CA and a client
    /// certificate (the cache server's `admin.kubeconfig` works).
    #[arg(long)]
    cache_kubeconfig: Option<PathBuf>,
    /// Cache server URL (`https://host:port`), overriding the kubeconfig's.
    #[arg(long)]
    cache_server: Option<String>,
}

impl Common {
    fn listen_options(&self, external_url: Option<String>) -> ListenOptions {
        ListenOptions {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            token_auth_file: self.token_auth_file.clone(),
            external_url,
            tls: self.tls.clone(),
            front_proxy: self.front_proxy.clone(),
            shutdown: self.shutdown.clone(),
            limits: self.limits.clone(),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded server (cache server, shard and virtual workspace in one process), or
    /// with `--cache-kubeconfig` a shard writing into that remote cache server plus a virtual
    /// workspace reading from it.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Directory of YAML manifests (or one manifest file) to load at start (repeatable).
        #[arg(long = "seed")]
        seed: Vec<PathBuf>,
        /// Base URL published in endpoint slices (default `https://<listen address>`).
        #[arg(long)]
        external_url: Option<String>,
        #[command(flatten)]
        cache: Cache,
        /// This shard's name in the cache server (`kcp.io/shard`).
        #[arg(long, default_value = "root")]
        shard_name: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Run the cache server alone: the API kcp shards write into and virtual workspaces read
    /// from. Its `DATA_DIR/admin.kubeconfig` is their `--cache-kubeconfig`.
    CacheServer {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Run the Replication virtual workspace alone, reading everything it serves from a remote
    /// cache server; stateless, so any number of replicas can share one cache server.
    VirtualWorkspace {
        #[command(flatten)]
        common: Common,
        /// Base URL of this virtual workspace as clients reach it (default `https://<listen address>`).
        #[arg(long)]
        external_url: Option<String>,
        #[command(flatten)]
        cache: Cache,
        /// Kubeconfig of a kcp shard whose consumers this virtual workspace serves
        /// (repeatable, one per shard): its LogicalClusters and APIBindings are read from its
        /// wildcard endpoints and looked up before the cache's (kcp does not replicate
        /// APIBindings to the cache). Optional with our own shards, which replicate them.
        #[arg(long = "shard-kubeconfig")]
        shard_kubeconfig: Vec<PathBuf>,
    },
    /// Back up or restore the durable stores of a data directory (`--storage local`).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Maintain the durable stores of a data directory (`--storage local`).
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
    /// Print the version.
    Version,
}

/// Where a role keeps its data, and how values are encrypted at rest.
#[derive(Args)]
struct StorageArgs {
    /// Where the stores keep their data: `local` (crash-safe files `cache.db` and
    /// `workspaces.db` in the data directory; the default), `memory` (gone at exit) or `etcd`
    /// (the default when --etcd-servers is given).
    #[arg(long, value_enum)]
    storage: Option<StorageKind>,
    /// etcd client URLs (comma-separated): the stores keep their data in etcd, every read is
    /// served from the watch cache in memory.
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// etcd key prefix: a shard's workspaces default to /registry (shards sharing one etcd
    /// each need their own); the cache server uses /cache (also when given /registry); the
    /// embedded cache of `serve` always uses /cache.
    #[arg(long, value_name = "PREFIX")]
    etcd_prefix: Option<String>,
    /// Client certificate for etcd (PEM). The three etcd files are re-read when they change
    /// (a renewed pair once its key matches): new requests and the watch use them.
    #[arg(long, value_name = "FILE")]
    etcd_certfile: Option<PathBuf>,
    /// Client key for etcd (PEM).
    #[arg(long, value_name = "FILE")]
    etcd_keyfile: Option<PathBuf>,
    /// CA bundle that signed etcd's serving certificate (PEM).
    #[arg(long, value_name = "FILE")]
    etcd_cafile: Option<PathBuf>,
    /// How often etcd's history is compacted (Go duration: 5m, 30s, 1h; 0 never), as
    /// kube-apiserver's flag.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = server::flags::parse_duration)]
    etcd_compaction_interval: std::time::Duration,
    /// A Kubernetes EncryptionConfiguration (apiserver.config.k8s.io/v1): values of the
    /// resources it names are encrypted at rest with its first provider (aescbc, aesgcm,
    /// secretbox or identity) and read with any listed one.
    #[arg(long, value_name = "FILE")]
    encryption_provider_config: Option<PathBuf>,
}

impl StorageArgs {
    fn options(self) -> server::StorageOptions {
        let etcd = (!self.etcd_servers.is_empty()).then(|| server::EtcdFlags {
            servers: self.etcd_servers.clone(),
            prefix: self.etcd_prefix.clone(),
            certfile: self.etcd_certfile.clone(),
            keyfile: self.etcd_keyfile.clone(),
            cafile: self.etcd_cafile.clone(),
            compaction_interval: self.etcd_compaction_interval,
        });
        server::StorageOptions {
            kind: self.storage.unwrap_or(if etcd.is_some() {
                StorageKind::Etcd
            } else {
                StorageKind::Local
            }),
            encryption_provider_config: self.encryption_provider_config,
            etcd,
        }
    }
}

#[derive(Subcommand)]
enum StorageCommand {
    /// With no server running on the data directory, write every stored value again under the
    /// first provider of FILE (the last step of a key rotation, or of turning encryption on or
    /// off). Each store file is replaced by a fresh one, so no page of old data remains.
    Rewrite {
        /// The data directory.
        #[arg(long, default_value = "./.replication-vw")]
        data_dir: PathBuf,
        /// The EncryptionConfiguration to write with (its other providers read old values).
        #[arg(long, value_name = "FILE")]
        encryption_provider_config: PathBuf,
    },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Save every store of the data directory (the cache and the workspaces, at one instant)
    /// into FILE, with a checksum. Works while a server runs on the directory: it then asks that
    /// server through the directory's `admin.kubeconfig`. The certificates are not included.
    Save {
        /// The snapshot file to write.
        file: PathBuf,
        /// The data directory of the server.
        #[arg(long, default_value = "./.replication-vw")]
        data_dir: PathBuf,
    },
    /// Restore FILE into the data directory, which must be absent or empty; a damaged or
    /// truncated file is refused and nothing is changed. Start the server on it without --seed.
    Restore {
        /// The snapshot file to read.
        file: PathBuf,
        /// The new data directory.
        #[arg(long, default_value = "./.replication-vw")]
        data_dir: PathBuf,
    },
}

fn cache_options(cache: Cache) -> Option<CacheOptions> {
    match (cache.cache_kubeconfig, cache.cache_server) {
        (Some(kubeconfig), server) => Some(CacheOptions { kubeconfig, server }),
        (None, _) => None,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    server::set_log_requests(cli.log_requests);
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    match cli.log_format {
        LogFormat::Text if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
            tracing_subscriber::fmt()
                .with_env_filter(filter())
                .with_writer(std::io::stderr)
                .with_ansi(true)
                .init()
        }
        // The same text without colours, its fields written straight into the line.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .fmt_fields(log_fields::PlainFields)
            .init(),
        LogFormat::Json => {
            server::set_json_logs(true);
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter())
                .with_writer(std::io::stderr)
                .with_current_span(false)
                .init()
        }
    }
    match run(cli.command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Also in JSON: the reason the process stops is one log record.
            if server::json_logs() {
                tracing::error!(error = %format!("{e:#}"), "Exiting.");
            } else {
                eprintln!("Error: {e:?}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            common,
            seed,
            external_url,
            cache,
            shard_name,
            storage,
        } => {
            if cache.cache_server.is_some() && cache.cache_kubeconfig.is_none() {
                anyhow::bail!(
                    "--cache-server needs --cache-kubeconfig (the cache server's CA and a client certificate)"
                );
            }
            server::run(ServeOptions {
                listen: common.listen,
                data_dir: common.data_dir,
                seeds: seed,
                token_auth_file: common.token_auth_file,
                external_url,
                tls: common.tls,
                front_proxy: common.front_proxy,
                shutdown: common.shutdown,
                limits: common.limits,
                cache: cache_options(cache),
                shard_name,
                storage: storage.options(),
            })
            .await
        }
        Command::CacheServer { common, storage } => {
            server::run_cache_server(common.listen_options(None), storage.options()).await
        }
        Command::VirtualWorkspace {
            common,
            external_url,
            cache,
            shard_kubeconfig,
        } => {
            let Some(cache) = cache_options(cache) else {
                anyhow::bail!(
                    "virtual-workspace reads everything from a cache server: --cache-kubeconfig FILE is required"
                );
            };
            server::run_virtual_workspace(
                common.listen_options(external_url),
                cache,
                &shard_kubeconfig,
            )
            .await
        }
        Command::Snapshot { command } => match command {
            SnapshotCommand::Save { file, data_dir } => {
                let bar = Bar::new("saving a snapshot");
                let summary =
                    server::storage_admin::save(&file, &data_dir, bar.progress.clone()).await?;
                drop(bar);
                out(&format!(
                    "Saved {}:\n{}",
                    file.display(),
                    server::storage_admin::describe(&summary)
                ));
                Ok(())
            }
            SnapshotCommand::Restore { file, data_dir } => {
                let bar = Bar::new("restoring a snapshot");
                let summary =
                    server::storage_admin::restore(&file, &data_dir, bar.progress.clone()).await?;
                drop(bar);
                out(&format!(
                    "Restored {} into {}:\n{}\nStart the server with --data-dir {} (without --seed); it generates new certificates unless you copy the old ones in first.",
                    file.display(),
                    data_dir.display(),
                    server::storage_admin::describe(&summary),
                    data_dir.display()
                ));
                Ok(())
            }
        },
        Command::Storage {
            command:
                StorageCommand::Rewrite {
                    data_dir,
                    encryption_provider_config,
                },
        } => {
            let transformer = replication_vw::store::encryption::Transformer::from_file(
                &encryption_provider_config,
            )?;
            let bar = Bar::new("rewriting the stores");
            let progress = bar.progress.clone();
            let done = tokio::task::spawn_blocking(move || {
                server::storage_admin::rewrite(&data_dir, &transformer, &progress)
            })
            .await??;
            drop(bar);
            for r in done {
                out(&format!(
                    "{}: {} records written again ({} were under an older provider or key)",
                    r.file, r.records, r.stale
                ));
            }
            Ok(())
        }
        Command::Version => {
            out(&format!("replication-vw {}", env!("CARGO_PKG_VERSION")));
            Ok(())
        }
    }
}

/// The progress of a long command: a bar on stderr when it is a terminal (the progress log
/// lines are then left out), log lines every few seconds otherwise. Dropping it finishes the bar.
struct Bar {
    progress: std::sync::Arc<replication_vw::store::progress::Progress>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bar {
    fn new(what: &str) -> Bar {
        use std::io::IsTerminal;
        let progress = std::sync::Arc::new(replication_vw::store::progress::Progress::new(what));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            progress.quiet();
            let (p, stop) = (progress.clone(), stop.clone());
            std::thread::spawn(move || {
                let bar = indicatif::ProgressBar::new(0);
                let style = indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} objects, {prefix} ({per_sec}, {eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let f = p.snapshot();
                    bar.set_message(f.what);
                    bar.set_length(f.total.unwrap_or(f.objects));
                    bar.set_position(f.objects);
                    bar.set_prefix(format!("{} MiB", f.bytes >> 20));
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
        });
        Bar {
            progress,
            stop,
            thread,
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
