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
