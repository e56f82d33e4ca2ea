//! Output destinations for extracted parts: an S3 prefix or a local folder.
//!
//! Either way a part becomes visible under its final name only when the whole extract has
//! succeeded: S3 parts are multipart uploads completed at the end; local parts are written to
//! a hidden temporary file and renamed at the end. `manifest.json` is written last.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _};
use bytes::Bytes;

use crate::config::{S3Config, S3Uri};
use crate::error::S3Error;
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

    /// Starts writing a part; it stays invisible until [`OpenPart::commit`]. Every part of
    /// one extract shares `uploads`.
    pub fn begin_part(
        &self,
        name: &str,
        rt: &tokio::runtime::Handle,
        uploads: &Arc<Uploads>,
    ) -> anyhow::Result<OpenPart> {
        match self {
            Self::S3 { s3, prefix } => {
                let uri = prefix.join(name);
                let upload = rt.block_on(s3.create_upload(&uri))?;
                Ok(OpenPart::S3 {
                    upload: Arc::new(upload),
                    chunks: Vec::new(),
                    uploads: Arc::clone(uploads),
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

    /// Deletes the named objects under the prefix (absent ones are not an error).
    pub async fn remove_names(&self, names: &[String]) -> anyhow::Result<()> {
        match self {
            Self::S3 { s3, prefix } => {
                let keys: Vec<String> = names.iter().map(|n| prefix.join(n).key).collect();
                if !keys.is_empty() {
                    s3.delete(&prefix.bucket, &keys).await?;
                }
            }
            Self::Local { dir } => {
                for n in names {
                    let path = dir.join(n);
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(e).with_context(|| format!("removing {}", path.display()));
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes `part-NNNNN.tsv.gz` objects under the prefix that `keep` does not list, and
    /// aborts the open uploads under it that this process did not open (left by earlier
    /// attempts: this run's own are all completed by now, and the lease keeps other runs
    /// out). `started` is only logged. Returns the names deleted.
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
                // Not by initiation time: an upload of an attempt that failed within the same
                // second (S3 lists whole seconds, or milliseconds) would be kept, and clocks
                // of the worker and S3 differ.
                for (key, id, initiated) in s3.open_uploads(prefix).await? {
                    if !crate::s3::opened_here(&id) {
                        tracing::debug!(key = %key, upload_id = %id, initiated = ?initiated, started = ?started, "Aborting an upload left by an earlier attempt.");
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
    let written = std::fs::File::create(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))
        .and_then(|mut f| {
            f.write_all(body)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", tmp.display()))
        })
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
        });
    if written.is_err() {
        // Whole or absent: no temp file stays behind (a full disk, say).
        let _ = std::fs::remove_file(&tmp);
    }
    written
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
        /// Shared by every part of the extract.
        uploads: Arc<Uploads>,
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
            Self::S3 { upload, .. } => format!("{} (upload {})", upload.uri, upload.upload_id),
            Self::Local { final_path, .. } => final_path.display().to_string(),
        }
    }

    /// Makes the part visible under its final name (S3: waits for its chunks, then completes);
    /// `len` is its compressed size.
    pub async fn commit(self, len: u64) -> anyhow::Result<()> {
        match self {
            Self::S3 {
                upload,
                chunks,
                uploads,
            } => {
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
                let uri = upload.uri.clone();
                if let Some(e) = first_err {
                    abort_logged(upload).await;
                    return Err(e.context(format!("uploading {uri}")));
                }
                // No part is completed while a chunk of another part may still fail: wait
                // until every chunk of the extract has settled, and complete nothing if any
                // failed (else completed parts would sit there without a manifest).
                uploads.settle().await;
                if let Some(e) = uploads.chunk_failure() {
                    abort_logged(upload).await;
                    return Err(anyhow::Error::new(e).context(format!(
                        "not completing {uri}: a chunk of another part failed"
                    )));
                }
                if let Some(e) = uploads.commit_failure() {
                    abort_logged(upload).await;
                    return Err(anyhow::Error::new(e).context(format!(
                        "not completing {uri}: another part could not be completed"
                    )));
                }
                let s3 = upload.store().clone();
                match upload.complete(done, len).await {
                    Ok(()) => {
                        match uploads.completed(&s3, &uri) {
                            None => Ok(()),
                            Some(failure) => {
                                // Another part failed to complete meanwhile: no manifest will
                                // list this one, so it goes again.
                                if let Err(e) = s3.delete_one(&uri).await {
                                    tracing::error!(key = %uri, error = %e, "Deleting a completed part after another part failed; the next run at this prefix removes it.");
                                }
                                Err(anyhow::Error::new(failure).context(format!(
                                    "{uri} was deleted again: another part could not be completed"
                                )))
                            }
                        }
                    }
                    Err(e) => {
                        // Parts completed so far will never be in a manifest: delete them.
                        for (s3, done_uri) in uploads.fail_commit(&e) {
                            if let Err(d) = s3.delete_one(&done_uri).await {
                                tracing::error!(key = %done_uri, error = %d, "Deleting a completed part after another part failed; the next run at this prefix removes it.");
                            }
                        }
                        Err(e.into())
                    }
                }
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
            Self::S3 { upload, chunks, .. } => {
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

/// Aborts an upload, logging a failure (the next run at the prefix cleans up).
async fn abort_logged(upload: MultipartUpload) {
    let (uri, id) = (upload.uri.to_string(), upload.upload_id.clone());
    if let Err(e) = upload.abort().await {
        tracing::error!(key = %uri, upload_id = %id, error = %e, "Abort failed; the next run at this prefix cleans it up.");
    }
}

/// The S3 uploads of one extract, shared by all its parts: how many chunk uploads are still
/// running, the first chunk that failed, whether a Complete failed, and the parts completed
/// so far. With it no part is completed once any chunk failed, and parts completed before
/// another part's Complete failed are deleted again, so a failed extract leaves neither
/// open uploads nor objects outside a manifest (short of S3 itself being unreachable).
#[derive(Debug, Default)]
pub struct Uploads {
    running: AtomicUsize,
    settled: tokio::sync::Notify,
    state: Mutex<UploadsState>,
}

#[derive(Debug, Default)]
struct UploadsState {
    chunk_failure: Option<S3Error>,
    commit_failure: Option<S3Error>,
    completed: Vec<(S3, S3Uri)>,
}

/// One running chunk upload; dropping it (also when the task is cancelled) counts it done.
#[derive(Debug)]
pub struct ChunkRunning(Arc<Uploads>);

impl ChunkRunning {
    /// The chunk ended; records its error, if any.
    pub fn done(self, err: Option<&S3Error>) {
        if let Some(e) = err {
            self.0
                .state()
                .chunk_failure
                .get_or_insert_with(|| e.clone());
        }
    }
}

impl Drop for ChunkRunning {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

impl Uploads {
    fn state(&self) -> std::sync::MutexGuard<'_, UploadsState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a chunk upload as running until the returned guard is done or dropped.
    pub fn chunk_started(self: &Arc<Self>) -> ChunkRunning {
        self.running.fetch_add(1, Ordering::SeqCst);
        ChunkRunning(Arc::clone(self))
    }

    /// The first chunk upload that failed (after the SDK's retries).
    pub fn chunk_failure(&self) -> Option<S3Error> {
        self.state().chunk_failure.clone()
    }

    /// The first Complete that failed.
    pub fn commit_failure(&self) -> Option<S3Error> {
        self.state().commit_failure.clone()
    }

    /// Waits until no chunk upload is running.
    pub async fn settle(&self) {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Records a completed part; when a Complete already failed, returns that failure
    /// instead (the caller deletes its part again).
    fn completed(&self, s3: &S3, uri: &S3Uri) -> Option<S3Error> {
        let mut st = self.state();
        if let Some(e) = &st.commit_failure {
            return Some(e.clone());
        }
        st.completed.push((s3.clone(), uri.clone()));
        None
    }

    /// Records a failed Complete; returns the parts completed so far, to delete.
    fn fail_commit(&self, err: &S3Error) -> Vec<(S3, S3Uri)> {
        let mut st = self.state();
        st.commit_failure.get_or_insert_with(|| err.clone());
        std::mem::take(&mut st.completed)
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

    fn s3_error(key: &str) -> S3Error {
        S3Error {
            op: "UploadPart 1 of".into(),
            key: key.into(),
            upload_id: Some("U".into()),
            code: Some("SlowDown".into()),
            message: None,
            retriable: true,
        }
    }

    #[tokio::test]
    async fn uploads_settle_after_every_chunk_and_keep_the_first_failure() {
        let u = Arc::new(Uploads::default());
        u.settle().await; // nothing running
        let a = u.chunk_started();
        let b = u.chunk_started();
        let c = u.chunk_started();
        let waiter = tokio::spawn({
            let u = Arc::clone(&u);
            async move {
                u.settle().await;
                u.chunk_failure()
            }
        });
        a.done(None);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "settled with chunks still running");
        b.done(Some(&s3_error("s3://b/first")));
        // A cancelled chunk task (its guard dropped) counts as ended too.
        drop(c);
        let failure = waiter.await.expect("join");
        assert_eq!(failure.map(|e| e.key).as_deref(), Some("s3://b/first"));
        let d = u.chunk_started();
        d.done(Some(&s3_error("s3://b/second")));
        assert_eq!(
            u.chunk_failure().map(|e| e.key).as_deref(),
            Some("s3://b/first")
        );
        assert!(u.commit_failure().is_none());
    }
}
