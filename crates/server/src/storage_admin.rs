//! Offline and online administration of a data directory's durable stores: `snapshot save`
//! (from the files when no server runs on the directory, else from the running server's
//! [`crate::SNAPSHOT_PATH`] through the directory's admin kubeconfig), `snapshot restore`, and
//! `storage rewrite` (every value written again under the first encryption provider).

use crate::{CACHE_STORE_FILE, WORKSPACES_STORE_FILE};
use anyhow::Context;
use futures_util::StreamExt;
use std::path::Path;
use std::sync::Arc;
use store::local::LocalError;
use store::progress::Progress;
use store::snapshot::{self, SnapshotError, StoreSummary};
use tokio::io::AsyncWriteExt;

/// The store files a data directory may hold.
pub const STORE_FILES: [&str; 2] = [CACHE_STORE_FILE, WORKSPACES_STORE_FILE];

/// `replication-vw snapshot save FILE --data-dir DIR`.
pub async fn save(
    target: &Path,
    data_dir: &Path,
    progress: Arc<Progress>,
) -> anyhow::Result<Vec<StoreSummary>> {
    if !STORE_FILES.iter().any(|f| data_dir.join(f).is_file()) {
        anyhow::bail!(
            "{}: no store file ({}) here: is this a data directory of a server with --storage local?",
            data_dir.display(),
            STORE_FILES.join(", ")
        );
    }
    let (dir, file) = (data_dir.to_path_buf(), target.to_path_buf());
    let p = progress.clone();
    let offline =
        tokio::task::spawn_blocking(move || snapshot::save_files(&dir, &STORE_FILES, &file, &p))
            .await?;
    match offline {
        Ok(summary) => Ok(summary),
        Err(SnapshotError::Local(LocalError::Locked { .. })) => {
            tracing::info!(
                "A server is running on the data directory: asking it for the snapshot."
            );
            save_from_server(target, data_dir, progress).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Download the running server's snapshot into `target` (through a `.partial` file), then check
/// it end to end before renaming it into place.
async fn save_from_server(
    target: &Path,
    data_dir: &Path,
    progress: Arc<Progress>,
) -> anyhow::Result<Vec<StoreSummary>> {
    crate::tls::install_crypto_provider();
    let kubeconfig = data_dir.join("admin.kubeconfig");
    let conn = cache_client::Connection::from_kubeconfig(&kubeconfig, None)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let url = conn.url(crate::SNAPSHOT_PATH);
    let resp = conn
        .stream_client()
        .get(&url)
        .send()
        .await
        .with_context(|| format!("asking {url} for a snapshot"))?;
    if !resp.status().is_success() {
        let code = resp.status();
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!("{url} answered {code}: {body}");
    }
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let partial = target.with_file_name(name);
    let result = async {
        let mut out = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("creating {}", partial.display()))?;
        progress.stage(format!("downloading a snapshot from {url}"), None);
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("the snapshot stream broke off")?;
            out.write_all(&chunk).await?;
            progress.add(0, chunk.len() as u64);
        }
        out.sync_all().await?;
        drop(out);
        let check = partial.clone();
        let summary =
            tokio::task::spawn_blocking(move || snapshot::verify(&check, &progress)).await??;
        tokio::fs::rename(&partial, target).await?;
        anyhow::Ok(summary)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}

/// `replication-vw snapshot restore FILE --data-dir DIR`.
pub async fn restore(
    file: &Path,
    data_dir: &Path,
    progress: Arc<Progress>,
) -> anyhow::Result<Vec<StoreSummary>> {
    let (file, dir) = (file.to_path_buf(), data_dir.to_path_buf());
    Ok(tokio::task::spawn_blocking(move || snapshot::restore(&file, &dir, &progress)).await??)
}

/// One line per store of a snapshot, for the command's output.
pub fn describe(summary: &[StoreSummary]) -> String {
    summary
        .iter()
        .map(|s| {
            format!(
                "{}: {} records at revision {}",
                s.file, s.records, s.revision
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `storage rewrite` did to one store file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The store file.
    pub file: String,
    /// Records written again.
    pub records: u64,
    /// Of those, how many had been read with a provider other than the first (stale).
    pub stale: u64,
}

/// `replication-vw storage rewrite --data-dir DIR --encryption-provider-config FILE`: with no
/// server running on DIR, write every record of every store file again under the config's first
/// provider, into a new file (same revisions) that replaces the old one once synced, so no page
/// of the old file (plaintext or an old key's ciphertext) survives. A record that no listed
/// provider can read stops the rewrite and changes nothing.
pub fn rewrite(
    data_dir: &Path,
    transformer: &store::encryption::Transformer,
    progress: &Progress,
) -> anyhow::Result<Vec<Rewritten>> {
    let mut done = Vec::new();
    let present: Vec<&str> = STORE_FILES
        .iter()
        .copied()
        .filter(|f| data_dir.join(f).is_file())
        .collect();
    if present.is_empty() {
        anyhow::bail!(
            "{}: no store file ({}) here",
            data_dir.display(),
            STORE_FILES.join(", ")
        );
    }
    for file in present {
        let path = data_dir.join(file);
        let fresh = data_dir.join(format!("{file}.rewrite"));
        let _ = std::fs::remove_file(&fresh);
        let view = match store::local::StoreView::open(&path) {
            Err(LocalError::Locked { .. }) => anyhow::bail!(
                "{}: a server is running on this data directory; stop it first (or update every object through the API)",
                path.display()
            ),
            other => other?,
        };
        let mut out = store::local::NewFile::create(&fresh, view.revision())?;
        progress.stage(format!("rewriting {file}"), Some(view.len()?));
        let mut stale = 0u64;
        let result = view.for_each(|k, v| -> anyhow::Result<()> {
            let (key, revision, value) = store::local::decode_record(k, v)
                .ok_or_else(|| anyhow::anyhow!("{}: an undecodable record", path.display()))?;
            let storage_key = key.to_string();
            let plain = transformer
                .decode(&key.group, &key.resource, storage_key.as_bytes(), value)
                .with_context(|| format!("{}: reading {key}", path.display()))?;
            stale += u64::from(plain.stale);
            let again = transformer
                .encode(
                    &key.group,
                    &key.resource,
                    storage_key.as_bytes(),
                    &plain.value,
                )
                .with_context(|| format!("{}: writing {key}", path.display()))?;
            let mut raw = Vec::with_capacity(8 + again.len());
            raw.extend_from_slice(&revision.to_be_bytes());
            raw.extend_from_slice(&again);
            out.insert(k, &raw)?;
            progress.add(1, (k.len() + raw.len()) as u64);
            Ok(())
        });
        let finished = result.and_then(|()| Ok(out.finish()?));
        drop(view);
        match finished {
            Ok(records) => {
                std::fs::rename(&fresh, &path)
                    .with_context(|| format!("replacing {}", path.display()))?;
                if let Ok(dir) = std::fs::File::open(data_dir) {
                    let _ = dir.sync_all();
                }
                done.push(Rewritten {
                    file: file.to_string(),
                    records,
                    stale,
                });
            }
            Err(e) => {
                let _ = std::fs::remove_file(&fresh);
                return Err(e);
            }
        }
    }
    Ok(done)
}
