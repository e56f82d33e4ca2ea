//! In-process S3 emulator for tests and local scripts (SPEC §11, §13).
//!
//! [`S3Emulator`] serves s3s-fs's `FileSystem` over HTTP/1.1 on `127.0.0.1` from a dedicated
//! std thread with its own multi-thread tokio runtime, so it works from plain `#[test]`s and
//! from `#[tokio::test]`s alike. It stops (and removes its temp root, if it made one) when
//! dropped.
//!
//! Requests are checked with SigV4 (access key `test`, secret `test`); the region in the
//! signature is taken from the request (clients use `us-east-1`). Addressing is path-style
//! only: `http://127.0.0.1:PORT/<bucket>/<key>`.
//!
//! [`EmuS3`] wraps `FileSystem` and fills the gaps SPEC §13 lists:
//!
//! - `ListMultipartUploads` (s3s-fs answers 501): open uploads are read from s3s-fs's own files
//!   under the root (`.upload-<id>.json` marks an open upload, and
//!   `.bucket-<b64>.object-<b64>.upload-<id>.metadata.json` names its bucket and key), with
//!   prefix, delimiter, markers and `max-uploads`.
//! - `ListParts` is sorted by part number, carries each part's ETag, and honours
//!   `part-number-marker`/`max-parts`.
//! - Conditional writes (`PutObject` and `CompleteMultipartUpload` with `If-None-Match` or
//!   `If-Match`) run under one mutex, so exactly one of several racing `If-None-Match: *`
//!   writers wins and the rest get 412 `PreconditionFailed`. A conditional `PutObject` body is
//!   read into memory before the lock is taken, so a slow client cannot hold the lock.
//! - An unknown (or malformed, or already completed/aborted) upload id gives 404 `NoSuchUpload`
//!   for `UploadPart`, `UploadPartCopy`, `ListParts`, `CompleteMultipartUpload` and
//!   `AbortMultipartUpload` (s3s-fs answers 403 `AccessDenied`, or an empty part list).
//!
//! Known differences from S3 that remain (inherited from s3s-fs 0.14.1): `UploadPart` verifies
//! no checksum or `Content-MD5`; `PutObject` writes the object before it verifies a checksum, so
//! a `BadDigest` reply leaves the new bytes in place; `CompleteMultipartUpload` needs the part
//! list to be exactly 1..=n (no gaps) and forgets the upload before it reads the parts.
//!
//! Extension point: [`start_with`] takes a function that wraps [`EmuS3`] in another `s3s::S3`
//! implementation (e.g. a fault-injection layer), and [`build_service`] is the one place the
//! HTTP service (auth included) is built from an `s3s::S3` implementation.

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use futures::TryStreamExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CommonPrefix,
    CompleteMultipartUploadInput, CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput,
    CreateBucketInput, CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput,
    DeleteBucketInput, DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput,
    DeleteObjectsInput, DeleteObjectsOutput, ETag, GetBucketLocationInput, GetBucketLocationOutput,
    GetObjectInput, GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput,
    HeadObjectOutput, ListBucketsInput, ListBucketsOutput, ListMultipartUploadsInput,
    ListMultipartUploadsOutput, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input,
    ListObjectsV2Output, ListPartsInput, ListPartsOutput, MultipartUpload, PutObjectInput,
    PutObjectOutput, StreamingBlob, Timestamp, UploadPartCopyInput, UploadPartCopyOutput,
    UploadPartInput, UploadPartOutput,
};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use s3s_fs::FileSystem;
use tokio::sync::{oneshot, Mutex};

/// Access key the emulator accepts.
pub const ACCESS_KEY: &str = "test";
/// Secret key the emulator accepts.
pub const SECRET_KEY: &str = "test";
/// Region clients should sign for.
pub const REGION: &str = "us-east-1";

/// A running emulator. Dropping it stops the server (open connections are cut; file work
/// in flight gets up to 1 s) and, for [`S3Emulator::start`], removes the temp root.
pub struct S3Emulator {
    /// `http://127.0.0.1:PORT`, for `DUCTWORK_S3_ENDPOINT` or an SDK `endpoint_url`.
    pub endpoint: String,
    /// The directory s3s-fs stores into (canonical path); buckets are its subdirectories.
    pub root: PathBuf,
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    // Declared last: removed after the server thread has stopped.
    tempdir: Option<tempfile::TempDir>,
}

impl S3Emulator {
    /// Starts an emulator on a free port with a fresh temp root. Panics if it cannot.
    pub fn start() -> S3Emulator {
        let tempdir = tempfile::Builder::new()
            .prefix("ductwork-s3emu-")
            .tempdir()
            .expect("s3 emulator: creating a temp root");
        let mut emu = start_with(0, tempdir.path(), |s3| s3).expect("s3 emulator: starting");
        emu.tempdir = Some(tempdir);
        emu
    }

    /// Starts an emulator on `127.0.0.1:port` (0 = any free port) storing under `root`,
    /// which is created if missing and kept on drop.
    pub fn start_at(port: u16, root: &Path) -> io::Result<S3Emulator> {
        start_with(port, root, |s3| s3)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Creates a bucket (a directory under the root); succeeds if it already exists.
    pub fn create_bucket(&self, name: &str) -> io::Result<()> {
        let valid = (3..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !name.starts_with(['-', '.'])
            && !name.ends_with(['-', '.']);
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid bucket name {name:?}"),
            ));
        }
        std::fs::create_dir_all(self.root.join(name))
    }

    /// Stops the server and waits for its thread (also done on drop).
    pub fn stop(mut self) {
        self.shutdown_and_join();
    }

    fn shutdown_and_join(&mut self) {
        // Dropping the sender wakes the accept loop (the receiver sees it closed).
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for S3Emulator {
    fn drop(&mut self) {
        self.shutdown_and_join();
    }
}

/// Starts an emulator whose `s3s::S3` implementation is `wrap(EmuS3)`: the hook for layers
/// (fault injection, request logging) that sit in front of the gap-filling wrapper.
pub fn start_with<S, F>(port: u16, root: &Path, wrap: F) -> io::Result<S3Emulator>
where
    S: S3,
    F: FnOnce(EmuS3) -> S,
{
    std::fs::create_dir_all(root)?;
    let emu_s3 = EmuS3::new(root)?;
    let root = emu_s3.root().to_path_buf();
    let service = build_service(wrap(emu_s3));

    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("s3-emulator-rt")
        .build()?;
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("s3-emulator-{}", addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, service, shutdown_rx).await,
                    Err(e) => eprintln!("s3-emulator: cannot register the listener: {e}"),
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;

    Ok(S3Emulator {
        endpoint: format!("http://{addr}"),
        root,
        addr,
        shutdown: Some(shutdown_tx),
        thread: Some(thread),
        tempdir: None,
    })
}

/// Builds the HTTP service for an `s3s::S3` implementation: SigV4 with `test`/`test`,
/// path-style addressing (no virtual-host parsing).
pub fn build_service(s3: impl S3) -> S3Service {
    let mut builder = S3ServiceBuilder::new(s3);
    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    builder.build()
}

/// Accepts connections until `shutdown` fires or its sender is dropped.
async fn serve(
    listener: tokio::net::TcpListener,
    service: S3Service,
    mut shutdown: oneshot::Receiver<()>,
) {
    let http = ConnBuilder::new(TokioExecutor::new());
    loop {
        let socket = tokio::select! {
            res = listener.accept() => match res {
                Ok((socket, _)) => socket,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    eprintln!("s3-emulator: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = socket.set_nodelay(true);
        let conn = http
            .serve_connection(TokioIo::new(socket), service.clone())
            .into_owned();
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    // Open connections are cut when the runtime shuts down (see `start_with`).
}

/// s3s-fs's `FileSystem` plus the behaviour SPEC §13 says it lacks (see the module doc).
pub struct EmuS3 {
    fs: FileSystem,
    root: PathBuf,
    conditional_writes: Mutex<()>,
}

impl EmuS3 {
    /// Serves `root` (must exist).
    pub fn new(root: &Path) -> io::Result<EmuS3> {
        let root = root.canonicalize()?;
        let fs = FileSystem::new(&root).map_err(|e| io::Error::other(format!("{e:?}")))?;
        Ok(EmuS3 {
            fs,
            root,
            conditional_writes: Mutex::new(()),
        })
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The s3s-fs backend, for layers that want to bypass the gap fillers.
    pub fn inner(&self) -> &FileSystem {
        &self.fs
    }

    /// Open multipart uploads of `bucket` (any key), sorted by key, then initiation time,
    /// then upload id.
    pub async fn open_uploads(&self, bucket: &str) -> S3Result<Vec<OpenUpload>> {
        let mut uploads = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.root)
            .await
            .map_err(S3Error::internal_error)?;
        while let Some(entry) = dir.next_entry().await.map_err(S3Error::internal_error)? {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((b, key, upload_id)) = parse_upload_metadata_name(name) else {
                continue;
            };
            if b != bucket {
                continue;
            }
            // Complete removes the upload marker first, abort removes it last: an upload is
            // open exactly while its marker exists.
            let marker = self.root.join(upload_marker_name(&upload_id));
            let Ok(meta) = tokio::fs::metadata(&marker).await else {
                continue;
            };
            let initiated = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            uploads.push(OpenUpload {
                key,
                upload_id,
                initiated,
            });
        }
        uploads.sort_by(|a, b| {
            (&a.key, a.initiated, &a.upload_id).cmp(&(&b.key, b.initiated, &b.upload_id))
        });
        Ok(uploads)
    }

    /// True while `upload_id` is an open upload for exactly `bucket`/`key`.
    pub fn upload_is_open(&self, bucket: &str, key: &str, upload_id: &str) -> bool {
        let Some(id) = normalize_upload_id(upload_id) else {
            return false;
        };
        self.root.join(upload_marker_name(&id)).is_file()
            && self
                .root
                .join(upload_metadata_name(bucket, key, &id))
                .is_file()
    }

    fn require_open_upload(&self, bucket: &str, key: &str, upload_id: &str) -> S3Result<()> {
        if self.upload_is_open(bucket, key, upload_id) {
            Ok(())
        } else {
            Err(s3_error!(
                NoSuchUpload,
                "The specified multipart upload does not exist: {upload_id}"
            ))
        }
    }
}

/// One open multipart upload, as listed from s3s-fs's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: SystemTime,
}

#[async_trait::async_trait]
impl S3 for EmuS3 {
    // ---- forwarded unchanged -------------------------------------------------------------

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.fs.copy_object(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.fs.delete_bucket(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.fs.get_object(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    // ---- gap fillers ---------------------------------------------------------------------

    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let conditional = req.input.if_none_match.is_some() || req.input.if_match.is_some();
        if !conditional {
            return self.fs.put_object(req).await;
        }
        // Read the body first so the lock is held only for check + write.
        if let Some(body) = req.input.body.take() {
            let chunks: Vec<bytes::Bytes> = body
                .try_collect()
                .await
                .map_err(|e| S3Error::with_source(S3ErrorCode::IncompleteBody, e))?;
            let body = bytes::Bytes::from(chunks.concat());
            req.input.body = Some(StreamingBlob::from(s3s::Body::from(body)));
        }
        let _guard = self.conditional_writes.lock().await;
        self.fs.put_object(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let i = &req.input;
        self.require_open_upload(&i.bucket, &i.key, &i.upload_id)?;
        self.fs.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let i = &req.input;
        self.require_open_upload(&i.bucket, &i.key, &i.upload_id)?;
        self.fs.upload_part_copy(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = &req.input;
        self.require_open_upload(&i.bucket, &i.key, &i.upload_id)?;
        // s3s-fs keeps the overwritten object's stored checksums (it only replaces the ETag),
        // so a GetObject of the new object would carry the old checksum and fail the SDK's
        // validation. Real S3 replaces the object whole: forget the old checksums first.
        let internal = self.root.join(format!(
            ".bucket-{}.object-{}.internal.json",
            b64url_encode(i.bucket.as_bytes()),
            b64url_encode(i.key.as_bytes())
        ));
        let _ = std::fs::remove_file(internal);
        if i.if_none_match.is_some() || i.if_match.is_some() {
            let _guard = self.conditional_writes.lock().await;
            // Re-check under the lock: a racing Complete may have consumed the upload.
            let i = &req.input;
            self.require_open_upload(&i.bucket, &i.key, &i.upload_id)?;
            return self.fs.complete_multipart_upload(req).await;
        }
        self.fs.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = &req.input;
        self.require_open_upload(&i.bucket, &i.key, &i.upload_id)?;
        self.fs.abort_multipart_upload(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = &req.input;
        self.require_open_upload(&i.bucket, &i.key, &i.upload_id)?;
        let upload_id = normalize_upload_id(&i.upload_id).unwrap_or_default();
        let marker = i.part_number_marker.unwrap_or(0);
        let max_parts = i.max_parts.unwrap_or(1000).clamp(0, 1000);
        let max_parts = usize::try_from(max_parts).unwrap_or(0);

        let mut resp = self.fs.list_parts(req).await?;
        let out = &mut resp.output;
        let mut parts = out.parts.take().unwrap_or_default();
        parts.retain(|p| p.part_number.unwrap_or(0) > marker);
        parts.sort_by_key(|p| p.part_number.unwrap_or(0));
        let truncated = parts.len() > max_parts;
        parts.truncate(max_parts);
        for part in &mut parts {
            let Some(n) = part.part_number else { continue };
            let path = self.root.join(format!(".upload_id-{upload_id}.part-{n}"));
            if let Ok(data) = tokio::fs::read(&path).await {
                let mut md5 = Md5::new();
                md5.update(&data);
                part.e_tag = Some(ETag::Strong(to_hex(&md5.finalize())));
            }
        }
        out.part_number_marker = Some(marker);
        out.max_parts = Some(i32::try_from(max_parts).unwrap_or(1000));
        out.is_truncated = Some(truncated);
        out.next_part_number_marker = if truncated {
            parts.last().and_then(|p| p.part_number)
        } else {
            None
        };
        out.parts = Some(parts);
        Ok(resp)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        if !self.root.join(&input.bucket).is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let max_uploads = input.max_uploads.unwrap_or(1000).clamp(0, 1000);
        let max_uploads = usize::try_from(max_uploads).unwrap_or(0);

        let all = self.open_uploads(&input.bucket).await?;
        let after_marker = |u: &OpenUpload| -> bool {
            let Some(km) = input.key_marker.as_deref().filter(|k| !k.is_empty()) else {
                return true;
            };
            match input.upload_id_marker.as_deref().filter(|m| !m.is_empty()) {
                None => u.key.as_str() > km,
                Some(um) => {
                    if u.key.as_str() != km {
                        return u.key.as_str() > km;
                    }
                    // Same key: uploads listed after the marker upload.
                    let pos = |id: &str| all.iter().position(|x| x.key == km && x.upload_id == id);
                    match (pos(um), pos(&u.upload_id)) {
                        (Some(m), Some(p)) => p > m,
                        _ => u.upload_id.as_str() > um,
                    }
                }
            }
        };

        let mut uploads = Vec::new();
        let mut common_prefixes: Vec<String> = Vec::new();
        let mut truncated = false;
        let mut last: Option<(String, Option<String>)> = None;
        for u in all.iter().filter(|u| u.key.starts_with(&prefix)) {
            if !after_marker(u) {
                continue;
            }
            let grouped = delimiter.as_deref().and_then(|d| {
                u.key[prefix.len()..]
                    .find(d)
                    .map(|at| u.key[..prefix.len() + at + d.len()].to_string())
            });
            if let Some(cp) = &grouped {
                if common_prefixes.last() == Some(cp) {
                    continue;
                }
            }
            if uploads.len() + common_prefixes.len() >= max_uploads {
                truncated = true;
                break;
            }
            match grouped {
                Some(cp) => {
                    last = Some((cp.clone(), None));
                    common_prefixes.push(cp);
                }
                None => {
                    last = Some((u.key.clone(), Some(u.upload_id.clone())));
                    uploads.push(MultipartUpload {
                        key: Some(u.key.clone()),
                        upload_id: Some(u.upload_id.clone()),
                        initiated: Some(Timestamp::from(u.initiated)),
                        ..Default::default()
                    });
                }
            }
        }

        let (next_key_marker, next_upload_id_marker) = match (truncated, last) {
            (true, Some((k, id))) => (Some(k), id),
            _ => (None, None),
        };
        let output = ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            delimiter: input.delimiter,
            key_marker: input.key_marker,
            upload_id_marker: input.upload_id_marker,
            max_uploads: Some(i32::try_from(max_uploads).unwrap_or(1000)),
            is_truncated: Some(truncated),
            next_key_marker,
            next_upload_id_marker,
            uploads: Some(uploads),
            common_prefixes: if common_prefixes.is_empty() {
                None
            } else {
                Some(
                    common_prefixes
                        .into_iter()
                        .map(|p| CommonPrefix { prefix: Some(p) })
                        .collect(),
                )
            },
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }
}

// ---- s3s-fs file naming (s3s-fs 0.14.1 `fs.rs`) ------------------------------------------

/// A canonical (lowercase, hyphenated) UUID, or None: s3s-fs upload ids are UUIDs.
fn normalize_upload_id(id: &str) -> Option<String> {
    let id = id.to_ascii_lowercase();
    let ok = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    ok.then_some(id)
}

fn upload_marker_name(upload_id: &str) -> String {
    format!(".upload-{upload_id}.json")
}

fn upload_metadata_name(bucket: &str, key: &str, upload_id: &str) -> String {
    format!(
        ".bucket-{}.object-{}.upload-{upload_id}.metadata.json",
        b64url_encode(bucket.as_bytes()),
        b64url_encode(key.as_bytes())
    )
}

/// Parses `.bucket-<b64>.object-<b64>.upload-<uuid>.metadata.json` into (bucket, key, id).
/// The URL-safe base64 alphabet has no `.`, so the separators are unambiguous.
fn parse_upload_metadata_name(name: &str) -> Option<(String, String, String)> {
    let rest = name
        .strip_prefix(".bucket-")?
        .strip_suffix(".metadata.json")?;
    let (bucket, rest) = rest.split_once(".object-")?;
    let (key, upload_id) = rest.split_once(".upload-")?;
    let upload_id = normalize_upload_id(upload_id)?;
    let bucket = String::from_utf8(b64url_decode(bucket)?).ok()?;
    let key = String::from_utf8(b64url_decode(key)?).ok()?;
    Some((bucket, key, upload_id))
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64, URL-safe alphabet, no padding (what s3s-fs uses for metadata file names).
fn b64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for s in &sextets[..chunk.len() + 1] {
            out.push(char::from(B64URL[*s as usize]));
        }
    }
    out
}

fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = B64URL.iter().position(|&a| a == c)?;
        acc = (acc << 6) | u32::try_from(v).ok()?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
