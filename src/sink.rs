//! Output destinations for extracted parts: an S3 prefix or a local folder.
//!
//! Either way a part becomes visible under its final name only when the whole extract has
//! succeeded: S3 parts are multipart uploads completed at the end; local parts are written to
//! a hidden temporary file and renamed at the end. `manifest.json` is written last.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use bytes::Bytes;

use crate::config::{S3Config, S3Uri};
use crate::s3::{MultipartUpload, S3};

/// Where parts go.
#[derive(Clone, Debug)]
pub enum Dest {
    /// `s3://bucket/prefix/`.
    S3 {
        /// The client.
        s3: S3,
        /// The prefix (key ends with `/` or is empty).
        prefix: S3Uri,
    },
    /// `file:///dir/`.
    Local {
        /// The folder (created if missing).
        dir: PathBuf,
    },
}

/// The name of part `index`.
pub fn part_name(index: usize) -> String {
    format!("part-{index:05}.tsv.gz")
}

/// Whether a name (relative to the prefix) is one of ours: `part-NNNNN.tsv.gz`.
pub fn is_part_name(name: &str) -> bool {
    name.strip_prefix("part-")
        .and_then(|r| r.strip_suffix(".tsv.gz"))
        .is_some_and(|n| n.len() >= 5 && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Dest {
    /// Parses `--to` and prepares the destination (creates a local folder).
    pub async fn open(to: &str, s3cfg: &S3Config) -> anyhow::Result<Self> {
        if to.starts_with("s3://") {
            let mut prefix = S3Uri::parse(to)?;
            if !prefix.key.is_empty() && !prefix.key.ends_with('/') {
                prefix.key.push('/');
            }
            let s3 = S3::connect(s3cfg).await?;
            Ok(Self::S3 { s3, prefix })
        } else if let Some(path) = to.strip_prefix("file://") {
            if !path.starts_with('/') {
                bail!("--to {to:?}: file:// needs an absolute path (file:///dir/)");
            }
            let dir = PathBuf::from(path);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating output folder {}", dir.display()))?;
            Ok(Self::Local { dir })
        } else {
            bail!("--to {to:?}: use s3://bucket/prefix/ or file:///dir/")
        }
    }

    /// The URL of an object under this destination (what the manifest lists).
    pub fn url(&self, name: &str) -> String {
        match self {
            Self::S3 { prefix, .. } => prefix.join(name).to_string(),
            Self::Local { dir } => format!("file://{}", dir.join(name).display()),
        }
    }

    /// Starts writing a part; it stays invisible until [`OpenPart::commit`].
    pub fn begin_part(&self, name: &str, rt: &tokio::runtime::Handle) -> anyhow::Result<OpenPart> {
        match self {
            Self::S3 { s3, prefix } => {
                let uri = prefix.join(name);
                let upload = rt.block_on(s3.create_upload(&uri))?;
                Ok(OpenPart::S3 {
                    upload: Arc::new(upload),
                    chunks: Vec::new(),
                })
            }
            Self::Local { dir } => {
                let final_path = dir.join(name);
                let tmp_path = dir.join(format!(".{name}.{}.tmp", std::process::id()));
                let file = std::fs::File::create(&tmp_path)
                    .with_context(|| format!("creating {}", tmp_path.display()))?;
                Ok(OpenPart::Local {
                    file: Some(file),
                    tmp_path,
                    final_path,
                })
            }
        }
    }

    /// Writes a small object whole (metadata, manifest).
    pub async fn put_small(
        &self,
        name: &str,
        body: Bytes,
        content_type: &str,
    ) -> anyhow::Result<()> {
        match self {
            Self::S3 { s3, prefix } => Ok(s3.put(&prefix.join(name), body, content_type).await?),
            Self::Local { dir } => write_atomic(&dir.join(name), &body),
        }
    }

    /// Deletes `part-NNNNN.tsv.gz` objects under the prefix that `keep` does not list, and
    /// aborts uploads under it that were opened before `started` (left by earlier attempts).
    /// Returns the names deleted.
    pub async fn remove_stale(
        &self,
        keep: &[String],
        started: std::time::SystemTime,
    ) -> anyhow::Result<Vec<String>> {
        let mut removed = Vec::new();
        match self {
            Self::S3 { s3, prefix } => {
                let listed = s3.list(prefix).await?;
                let stale: Vec<String> = listed
                    .into_iter()
                    .map(|(k, _)| k)
                    .filter(|k| {
                        let rel = &k[prefix.key.len().min(k.len())..];
                        is_part_name(rel) && !keep.iter().any(|n| n == rel)
                    })
                    .collect();
                if !stale.is_empty() {
                    s3.delete(&prefix.bucket, &stale).await?;
                }
                removed.extend(stale);
                let cutoff = aws_smithy_types::DateTime::from(started);
                for (key, id, initiated) in s3.open_uploads(prefix).await? {
                    let older = initiated.is_some_and(|t| t.secs() < cutoff.secs());
                    if older {
                        let uri = S3Uri {
                            bucket: prefix.bucket.clone(),
                            key,
                        };
                        s3.abort(&uri, &id).await?;
                        removed.push(format!("{uri} (upload {id})"));
                    }
                }
            }
            Self::Local { dir } => {
                for entry in
                    std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?
                {
                    let entry = entry?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if is_part_name(&name) && !keep.contains(&name) {
                        std::fs::remove_file(entry.path()).with_context(|| {
                            format!("removing stale {}", entry.path().display())
                        })?;
                        removed.push(name);
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// Writes a file via a temporary name and a rename, so that it is whole or absent.
pub fn write_atomic(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(body)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// A part being written. Must end in [`OpenPart::commit`] or [`OpenPart::abort`].
pub enum OpenPart {
    /// An S3 multipart upload and its chunk uploads (spawned tasks).
    S3 {
        /// The upload.
        upload: Arc<MultipartUpload>,
        /// One task per chunk, each returning the chunk's ETag.
        chunks:
            Vec<tokio::task::JoinHandle<Result<crate::s3::UploadedChunk, crate::error::S3Error>>>,
    },
    /// A local temporary file.
    Local {
        /// The open file (None once closed).
        file: Option<std::fs::File>,
        /// The temporary path.
        tmp_path: PathBuf,
        /// The final path.
        final_path: PathBuf,
    },
}

impl OpenPart {
    /// Where this part ends up, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::S3 { upload, .. } => upload.uri.to_string(),
            Self::Local { final_path, .. } => final_path.display().to_string(),
        }
    }

    /// Makes the part visible under its final name (S3: waits for its chunks, then completes);
    /// `len` is its compressed size.
    pub async fn commit(self, len: u64) -> anyhow::Result<()> {
        match self {
            Self::S3 { upload, chunks } => {
                let mut done = Vec::with_capacity(chunks.len());
                let mut first_err = None;
                for c in chunks {
                    match c.await {
                        Ok(Ok(chunk)) => done.push(chunk),
                        Ok(Err(e)) => {
                            first_err.get_or_insert(anyhow::Error::new(e));
                        }
                        Err(join) => {
                            first_err.get_or_insert(anyhow::anyhow!(
                                "a chunk upload task failed: {join}"
                            ));
                        }
                    }
                }
                let upload = Arc::try_unwrap(upload)
                    .map_err(|_| anyhow::anyhow!("internal: upload still shared at commit"))?;
                if let Some(e) = first_err {
                    let uri = upload.uri.to_string();
                    if let Err(abort) = upload.abort().await {
                        tracing::error!(error = %abort, "Abort failed after a chunk failure.");
                    }
                    return Err(e.context(format!("uploading {uri}")));
                }
                upload.complete(done, len).await?;
                Ok(())
            }
            Self::Local {
                file,
                tmp_path,
                final_path,
            } => {
                if let Some(f) = file {
                    f.sync_all()
                        .with_context(|| format!("syncing {}", tmp_path.display()))?;
                }
                std::fs::rename(&tmp_path, &final_path).with_context(|| {
                    format!(
                        "renaming {} to {}",
                        tmp_path.display(),
                        final_path.display()
                    )
                })?;
                Ok(())
            }
        }
    }

    /// Discards the part: aborts the upload or removes the temporary file.
    pub async fn abort(self) -> anyhow::Result<()> {
        match self {
            Self::S3 { upload, chunks } => {
                for c in chunks {
                    // Let in-flight chunks end first, so that none lands after the abort.
                    let _ = c.await;
                }
                let upload = Arc::try_unwrap(upload)
                    .map_err(|_| anyhow::anyhow!("internal: upload still shared at abort"))?;
                upload.abort().await?;
                Ok(())
            }
            Self::Local { file, tmp_path, .. } => {
                drop(file);
                match std::fs::remove_file(&tmp_path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => {
                        Err(anyhow::Error::new(e)
                            .context(format!("removing {}", tmp_path.display())))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_are_recognised_exactly() {
        assert_eq!(part_name(7), "part-00007.tsv.gz");
        assert!(is_part_name("part-00007.tsv.gz"));
        assert!(is_part_name("part-123456.tsv.gz"));
        assert!(!is_part_name("part-1.tsv.gz"));
        assert!(!is_part_name("manifest.json"));
        assert!(!is_part_name("sub/part-00001.tsv.gz"));
    }
}
