//! Reading objects by URL, `s3://` or `file://`: small ones whole (manifests, metadata) and
//! large ones as a stream (parts), so that memory never holds a whole part.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::config::{S3Config, S3Uri};
use crate::s3::{s3_error, S3};

/// Reads objects from S3 (client made on first use) and the local file system.
#[derive(Debug)]
pub struct Store {
    s3cfg: S3Config,
    s3: tokio::sync::OnceCell<S3>,
}

/// Where a URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// An S3 object.
    S3(S3Uri),
    /// A local file.
    File(PathBuf),
}

impl Location {
    /// Parses `s3://bucket/key` or `file:///path`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("s3://") {
            Ok(Self::S3(S3Uri::parse(url)?))
        } else if let Some(p) = url.strip_prefix("file://") {
            if !p.starts_with('/') {
                bail!("{url:?}: file:// needs an absolute path");
            }
            Ok(Self::File(PathBuf::from(p)))
        } else {
            bail!("{url:?}: expected s3:// or file://")
        }
    }
}

impl Store {
    /// A store using the `[s3]` settings for s3:// URLs.
    pub fn new(s3cfg: &S3Config) -> Self {
        Self {
            s3cfg: s3cfg.clone(),
            s3: tokio::sync::OnceCell::new(),
        }
    }

    async fn s3(&self) -> anyhow::Result<&S3> {
        self.s3.get_or_try_init(|| S3::connect(&self.s3cfg)).await
    }

    /// Reads a whole (small) object.
    pub async fn get(&self, url: &str) -> anyhow::Result<Bytes> {
        match Location::parse(url)? {
            Location::S3(uri) => Ok(self.s3().await?.get(&uri).await?),
            Location::File(p) => Ok(Bytes::from(
                tokio::fs::read(&p)
                    .await
                    .with_context(|| format!("reading {}", p.display()))?,
            )),
        }
    }

    /// Whether an object exists.
    pub async fn exists(&self, url: &str) -> anyhow::Result<bool> {
        match Location::parse(url)? {
            Location::S3(uri) => {
                let s3 = self.s3().await?;
                match s3
                    .client
                    .head_object()
                    .bucket(&uri.bucket)
                    .key(&uri.key)
                    .send()
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                        Ok(false)
                    }
                    Err(e) => Err(s3_error("HeadObject", &uri, None, e).into()),
                }
            }
            Location::File(p) => Ok(p.exists()),
        }
    }

    /// Writes a small object whole (S3 PutObject; a local temp file + rename).
    pub async fn put(&self, url: &str, body: Bytes) -> anyhow::Result<()> {
        match Location::parse(url)? {
            Location::S3(uri) => Ok(self.s3().await?.put(&uri, body, "application/json").await?),
            Location::File(p) => crate::sink::write_atomic(&p, &body),
        }
    }

    /// Every object URL matching `pattern`, where `*` matches within one path segment
    /// (`s3://b/run/chunk-*/manifest.json`), sorted.
    pub async fn glob(&self, pattern: &str) -> anyhow::Result<Vec<String>> {
        if !pattern.contains('*') {
            return Ok(vec![pattern.to_owned()]);
        }
        let mut out = Vec::new();
        match Location::parse(pattern)? {
            Location::S3(uri) => {
                let fixed = &uri.key[..uri.key.find('*').unwrap_or(uri.key.len())];
                let prefix = S3Uri {
                    bucket: uri.bucket.clone(),
                    key: fixed.to_owned(),
                };
                for (key, _) in self.s3().await?.list(&prefix).await? {
                    if crate::split::glob_match(&uri.key, &key) {
                        out.push(format!("s3://{}/{key}", uri.bucket));
                    }
                }
            }
            Location::File(p) => {
                let text = p.display().to_string();
                let star = text.find('*').unwrap_or(text.len());
                let root = PathBuf::from(&text[..text[..star].rfind('/').unwrap_or(0).max(1)]);
                let depth = text[star..].matches('/').count() + 1;
                let mut stack = vec![(root, 0usize)];
                while let Some((dir, d)) = stack.pop() {
                    let Ok(rd) = std::fs::read_dir(&dir) else {
                        continue;
                    };
                    for e in rd.flatten() {
                        let path = e.path();
                        let shown = path.display().to_string();
                        if crate::split::glob_match(&text, &shown) {
                            out.push(format!("file://{shown}"));
                        } else if d + 1 < depth && path.is_dir() {
                            stack.push((path, d + 1));
                        }
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Writes a small object only if none exists at `url` (S3 `If-None-Match: *`, a local
    /// `create_new` + rename). Returns false when one exists.
    pub async fn put_if_absent(&self, url: &str, body: Bytes) -> anyhow::Result<bool> {
        match Location::parse(url)? {
            Location::S3(uri) => Ok(self
                .s3()
                .await?
                .put_if_absent(&uri, body, "application/json")
                .await?),
            Location::File(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                let tmp = p.with_extension(format!("{}.tmp", std::process::id()));
                std::fs::write(&tmp, &body)
                    .with_context(|| format!("writing {}", tmp.display()))?;
                // A hard link fails if the target exists: an atomic create-if-absent.
                let r = std::fs::hard_link(&tmp, &p);
                let _ = std::fs::remove_file(&tmp);
                match r {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e).with_context(|| format!("creating {}", p.display())),
                }
            }
        }
    }

    /// Opens an object as a byte stream; also returns its size.
    pub async fn open(
        &self,
        url: &str,
    ) -> anyhow::Result<(Box<dyn AsyncRead + Send + Unpin>, u64)> {
        match Location::parse(url)? {
            Location::S3(uri) => {
                let s3 = self.s3().await?;
                let out = s3
                    .client
                    .get_object()
                    .bucket(&uri.bucket)
                    .key(&uri.key)
                    .send()
                    .await
                    .map_err(|e| s3_error("GetObject", &uri, None, e))?;
                let len = u64::try_from(out.content_length().unwrap_or(0)).unwrap_or(0);
                Ok((Box::new(out.body.into_async_read()), len))
            }
            Location::File(p) => {
                let f = tokio::fs::File::open(&p)
                    .await
                    .with_context(|| format!("opening {}", p.display()))?;
                let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                Ok((Box::new(f), len))
            }
        }
    }
}
