//! S3: client set-up, multipart uploads that are always completed or aborted, small objects,
//! listings and clean-up. Errors become [`S3Error`] at the call site, naming the operation, key
//! and upload id (the SDK alone displays "service error").

use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};
use aws_sdk_s3::Client;
use bytes::Bytes;

use crate::config::{S3Config, S3Uri};
use crate::error::S3Error;

/// An S3 client plus the settings every write needs.
#[derive(Clone, Debug)]
pub struct S3 {
    /// The SDK client.
    pub client: Client,
    sse: Option<ServerSideEncryption>,
    kms_key_id: Option<String>,
    expected_owner: Option<String>,
}

impl S3 {
    /// Builds a client from the standard AWS chain (env, profile, instance role) plus the
    /// `[s3]` config; an endpoint (config, `$DUCTWORK_S3_ENDPOINT`, `$AWS_ENDPOINT_URL`)
    /// switches to path-style addressing for S3-compatible stores.
    pub async fn connect(cfg: &S3Config) -> anyhow::Result<Self> {
        let endpoint = cfg
            .endpoint
            .clone()
            .or_else(|| std::env::var("DUCTWORK_S3_ENDPOINT").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|e| !e.is_empty());
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &cfg.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let shared = loader.load().await;
        // A stalled S3 answer ends after the read timeout and the attempt is retried.
        // `$DUCTWORK_S3_READ_TIMEOUT` (e.g. `5s`) shortens it (tests, fast-fail setups).
        let read_timeout = match std::env::var("DUCTWORK_S3_READ_TIMEOUT") {
            Ok(v) if !v.trim().is_empty() => crate::config::parse_duration(&v)
                .map_err(|e| anyhow::anyhow!("$DUCTWORK_S3_READ_TIMEOUT: {e}"))?,
            _ => Duration::from_secs(120),
        };
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(300).max(read_timeout * 2))
            .read_timeout(read_timeout)
            .build();
        // Integrity comes from our own Content-MD5 on every chunk (S3 recomputes it and
        // answers BadDigest on a mismatch). The SDK's default flexible checksums are off:
        // S3-compatible stores (moto, s3s-fs) mishandle them on multipart uploads.
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .timeout_config(timeouts)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
            .retry_classifier(NoRetryOnUnknownHost);
        if shared.region().is_none() {
            b = b.region(aws_config::Region::new("us-east-1"));
        }
        if let Some(ep) = endpoint {
            b = b.endpoint_url(ep).force_path_style(true);
        }
        let sse = match cfg.sse.as_deref() {
            None | Some("AES256") | Some("aes256") => Some(ServerSideEncryption::Aes256),
            Some("aws:kms") => Some(ServerSideEncryption::AwsKms),
            Some("none") => None,
            Some(other) => anyhow::bail!("[s3] sse = {other:?}: use AES256, aws:kms or none"),
        };
        Ok(Self {
            client: Client::from_conf(b.build()),
            sse,
            kms_key_id: cfg.kms_key_id.clone(),
            expected_owner: cfg.expected_bucket_owner.clone(),
        })
    }

    /// Starts a multipart upload; the returned value must be completed or aborted.
    pub async fn create_upload(&self, uri: &S3Uri) -> Result<MultipartUpload, S3Error> {
        // Counted before the check, so the signal handler's drain sees every create that
        // got past it (see `abort_registered_uploads`).
        let _creating = Creating::start();
        if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(S3Error {
                op: "CreateMultipartUpload".into(),
                key: uri.to_string(),
                upload_id: None,
                code: None,
                message: Some("interrupted: no new upload is started".into()),
                retriable: false,
            });
        }
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type("application/gzip")
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key_id.clone())
            .set_expected_bucket_owner(self.expected_owner.clone());
        if self.sse.is_none() {
            req = req.set_server_side_encryption(None);
        }
        let out = req
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", uri, None, e))?;
        let upload_id = out.upload_id().unwrap_or_default().to_owned();
        if upload_id.is_empty() {
            return Err(S3Error {
                op: "CreateMultipartUpload".into(),
                key: uri.to_string(),
                upload_id: None,
                code: None,
                message: Some("the response held no upload id".into()),
                retriable: false,
            });
        }
        register(self, uri, &upload_id);
        Ok(MultipartUpload {
            s3: self.clone(),
            uri: uri.clone(),
            upload_id,
        })
    }

    /// Writes a small object in one request (atomic: it is either whole or absent).
    pub async fn put(&self, uri: &S3Uri, body: Bytes, content_type: &str) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type(content_type)
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key_id.clone())
            .set_expected_bucket_owner(self.expected_owner.clone())
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| s3_error("PutObject", uri, None, e))?;
        Ok(())
    }

    /// Writes a small object only if no object has that key (`If-None-Match: *`). Returns
    /// `false` when one already exists (412 PreconditionFailed or 409 ConditionalRequestConflict).
    pub async fn put_if_absent(
        &self,
        uri: &S3Uri,
        body: Bytes,
        content_type: &str,
    ) -> Result<bool, S3Error> {
        let r = self
            .client
            .put_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .content_type(content_type)
            .if_none_match("*")
            .set_server_side_encryption(self.sse.clone())
            .set_ssekms_key_id(self.kms_key_id.clone())
            .set_expected_bucket_owner(self.expected_owner.clone())
            .body(ByteStream::from(body))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se)) if matches!(se.raw().status().as_u16(), 409 | 412) => {
                Ok(false)
            }
            Err(e) => Err(s3_error("PutObject (If-None-Match)", uri, None, e)),
        }
    }

    /// Deletes one object (missing is fine).
    pub async fn delete_one(&self, uri: &S3Uri) -> Result<(), S3Error> {
        self.client
            .delete_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", uri, None, e))?;
        Ok(())
    }

    /// Reads a whole object (for small objects: manifests, metadata).
    pub async fn get(&self, uri: &S3Uri) -> Result<Bytes, S3Error> {
        let out = self
            .client
            .get_object()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .send()
            .await
            .map_err(|e| s3_error("GetObject", uri, None, e))?;
        let data = out.body.collect().await.map_err(|e| S3Error {
            op: "GetObject (reading the body of)".into(),
            key: uri.to_string(),
            upload_id: None,
            code: None,
            message: Some(e.to_string()),
            retriable: true,
        })?;
        Ok(data.into_bytes())
    }

    /// Lists every key under a prefix, with its size.
    pub async fn list(&self, prefix: &S3Uri) -> Result<Vec<(String, i64)>, S3Error> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&prefix.bucket)
                .prefix(&prefix.key)
                .set_continuation_token(token.take())
                .set_expected_bucket_owner(self.expected_owner.clone())
                .send()
                .await
                .map_err(|e| s3_error("ListObjectsV2", prefix, None, e))?;
            for o in out.contents() {
                if let Some(k) = o.key() {
                    keys.push((k.to_owned(), o.size().unwrap_or(0)));
                }
            }
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(keys)
    }

    /// Deletes keys in one bucket (batches of 1000).
    pub async fn delete(&self, bucket: &str, keys: &[String]) -> Result<(), S3Error> {
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| S3Error {
                    op: "DeleteObjects".into(),
                    key: format!("s3://{bucket}/"),
                    upload_id: None,
                    code: None,
                    message: Some(e.to_string()),
                    retriable: false,
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| S3Error {
                    op: "DeleteObjects".into(),
                    key: format!("s3://{bucket}/"),
                    upload_id: None,
                    code: None,
                    message: Some(e.to_string()),
                    retriable: false,
                })?;
            let uri = S3Uri {
                bucket: bucket.to_owned(),
                key: batch.first().cloned().unwrap_or_default(),
            };
            let out = self
                .client
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .set_expected_bucket_owner(self.expected_owner.clone())
                .send()
                .await
                .map_err(|e| s3_error("DeleteObjects", &uri, None, e))?;
            if let Some(err) = out.errors().first() {
                return Err(S3Error {
                    op: "DeleteObjects".into(),
                    key: format!("s3://{bucket}/{}", err.key().unwrap_or_default()),
                    upload_id: None,
                    code: err.code().map(str::to_owned),
                    message: err.message().map(str::to_owned),
                    retriable: false,
                });
            }
        }
        Ok(())
    }

    /// Open multipart uploads under a prefix: (key, upload id, initiated).
    pub async fn open_uploads(
        &self,
        prefix: &S3Uri,
    ) -> Result<Vec<(String, String, Option<aws_smithy_types::DateTime>)>, S3Error> {
        let mut found = Vec::new();
        let mut key_marker = None;
        let mut id_marker = None;
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&prefix.bucket)
                .prefix(&prefix.key)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .set_expected_bucket_owner(self.expected_owner.clone())
                .send()
                .await
                .map_err(|e| s3_error("ListMultipartUploads", prefix, None, e))?;
            for u in out.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    found.push((k.to_owned(), id.to_owned(), u.initiated().cloned()));
                }
            }
            if out.is_truncated() == Some(true) {
                key_marker = out.next_key_marker().map(str::to_owned);
                id_marker = out.next_upload_id_marker().map(str::to_owned);
                if key_marker.is_none() {
                    break;
                }
            } else {
                break;
            }
        }
        Ok(found)
    }

    /// Aborts one upload by id.
    pub async fn abort(&self, uri: &S3Uri, upload_id: &str) -> Result<(), S3Error> {
        self.client
            .abort_multipart_upload()
            .bucket(&uri.bucket)
            .key(&uri.key)
            .upload_id(upload_id)
            .set_expected_bucket_owner(self.expected_owner.clone())
            .send()
            .await
            .map_err(|e| s3_error("AbortMultipartUpload", uri, Some(upload_id), e))?;
        unregister(upload_id);
        Ok(())
    }
}

/// An open multipart upload: complete it with [`MultipartUpload::complete`] or abort it with
/// [`MultipartUpload::abort`]. Until then it is also in the process-wide registry, which the
/// signal handler aborts.
#[derive(Debug)]
pub struct MultipartUpload {
    s3: S3,
    /// Where the object goes.
    pub uri: S3Uri,
    /// S3's id for this upload.
    pub upload_id: String,
}

/// A chunk that S3 accepted: its number and ETag.
#[derive(Clone, Debug)]
pub struct UploadedChunk {
    /// 1-based chunk (UploadPart) number.
    pub number: i32,
    /// The ETag S3 returned.
    pub etag: String,
}

impl MultipartUpload {
    /// The client this upload goes through.
    pub fn store(&self) -> &S3 {
        &self.s3
    }

    /// Uploads one chunk (the SDK retries transient failures by resending this buffer).
    pub async fn upload_chunk(&self, number: i32, data: Bytes) -> Result<UploadedChunk, S3Error> {
        let op = format!("UploadPart {number} of");
        let digest = {
            use md5::Digest as _;
            md5::Md5::digest(&data)
        };
        let md5 = aws_smithy_types::base64::encode(digest);
        let attempts = AttemptCounter::default();
        let out = self
            .s3
            .client
            .upload_part()
            .bucket(&self.uri.bucket)
            .key(&self.uri.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .content_md5(md5)
            .set_expected_bucket_owner(self.s3.expected_owner.clone())
            .body(ByteStream::from(data))
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await
            .map_err(|e| attempts.note(s3_error(&op, &self.uri, Some(&self.upload_id), e)))?;
        let etag = out.e_tag().unwrap_or_default().to_owned();
        if etag.is_empty() {
            return Err(S3Error {
                op,
                key: self.uri.to_string(),
                upload_id: Some(self.upload_id.clone()),
                code: None,
                message: Some("S3 returned no ETag".into()),
                retriable: false,
            });
        }
        // S3 checks Content-MD5 itself; stores that do not (moto, some S3-compatible
        // servers) still return the MD5 of what they stored as the ETag of a part: a part
        // changed in transit shows. Not under SSE-KMS or SSE-C (requested, or the bucket's
        // default, as the answer says), whose ETags are not MD5s.
        let tag = etag.trim_matches('"');
        let kms = |sse: Option<&ServerSideEncryption>| {
            matches!(
                sse,
                Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
            )
        };
        let not_md5 = kms(self.s3.sse.as_ref())
            || kms(out.server_side_encryption())
            || out.sse_customer_algorithm().is_some();
        if !not_md5 && is_md5_hex(tag) && !tag.eq_ignore_ascii_case(&hex::encode(digest)) {
            return Err(S3Error {
                op,
                key: self.uri.to_string(),
                upload_id: Some(self.upload_id.clone()),
                code: None,
                message: Some(format!(
                    "the store's ETag {tag} is not the MD5 {} of the chunk sent: it was changed in transit",
                    hex::encode(digest)
                )),
                retriable: false,
            });
        }
        Ok(UploadedChunk { number, etag })
    }

    /// Completes the upload with the given chunks (sorted here by number); `expected_len` is
    /// the object's size, used to verify a Complete whose reply the SDK cannot parse.
    pub async fn complete(
        self,
        mut chunks: Vec<UploadedChunk>,
        expected_len: u64,
    ) -> Result<(), S3Error> {
        chunks.sort_by_key(|c| c.number);
        let parts = chunks
            .iter()
            .map(|c| {
                CompletedPart::builder()
                    .part_number(c.number)
                    .e_tag(&c.etag)
                    .build()
            })
            .collect();
        let attempts = AttemptCounter::default();
        let result = self
            .s3
            .client
            .complete_multipart_upload()
            .bucket(&self.uri.bucket)
            .key(&self.uri.key)
            .upload_id(&self.upload_id)
            .set_expected_bucket_owner(self.s3.expected_owner.clone())
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .customize()
            .interceptor(attempts.clone())
            .send()
            .await;
        let expected_etag = multipart_etag(&chunks);
        let outcome = match result {
            Ok(_) => Ok(()),
            Err(e) if unparsable_complete_ok(&e) => {
                // moto answers 200 with a `CompleteMultipartUploadResponse` root, which the SDK
                // refuses. Accept it only when the object now exists with the expected size;
                // a 200 carrying `<Error>` never gets here.
                match self.head_len_etag().await {
                    Ok((len, _)) if len == Some(expected_len) => {
                        tracing::debug!(key = %self.uri, "Complete reply not parsable; object verified by HeadObject.");
                        Ok(())
                    }
                    Ok(_) => Err(s3_error(
                        "CompleteMultipartUpload",
                        &self.uri,
                        Some(&self.upload_id),
                        e,
                    )),
                    Err(h) => Err(h),
                }
            }
            Err(e) => {
                let err = attempts.note(s3_error(
                    "CompleteMultipartUpload",
                    &self.uri,
                    Some(&self.upload_id),
                    e,
                ));
                // A retried Complete whose first attempt did complete (its answer was lost,
                // or was a 200 `<Error>` after the fact) finds the upload gone. The object is
                // ours exactly when its ETag is the multipart ETag of our parts.
                if err.code.as_deref() == Some("NoSuchUpload") {
                    match (self.head_len_etag().await, &expected_etag) {
                        (Ok((len, Some(etag))), Some(want))
                            if len == Some(expected_len) && etag.trim_matches('"') == want =>
                        {
                            tracing::warn!(key = %self.uri, upload_id = %self.upload_id, "Complete answered NoSuchUpload on a retry; the object is there with this upload's ETag, so an earlier attempt completed it.");
                            Ok(())
                        }
                        _ => Err(err),
                    }
                } else {
                    Err(err)
                }
            }
        };
        match outcome {
            Ok(()) => {
                unregister(&self.upload_id);
                Ok(())
            }
            Err(mut err) => {
                // Nothing completes this upload any more: abort it so that its parts are not
                // kept (and billed) until the next run's clean-up.
                let id = self.upload_id.clone();
                let uri = self.uri.clone();
                match self.s3.abort(&uri, &id).await {
                    Ok(()) => err = err.with_note("the upload was aborted"),
                    Err(a) if a.code.as_deref() == Some("NoSuchUpload") => {}
                    Err(a) => {
                        tracing::error!(key = %uri, upload_id = %id, error = %a, "Abort failed after a failed Complete; the next run at this prefix cleans it up.");
                        err = err.with_note(
                            "abort failed too; the next run at this prefix cleans it up",
                        );
                    }
                }
                Err(err)
            }
        }
    }

    /// The object's size and ETag, by HeadObject.
    async fn head_len_etag(&self) -> Result<(Option<u64>, Option<String>), S3Error> {
        let head = self
            .s3
            .client
            .head_object()
            .bucket(&self.uri.bucket)
            .key(&self.uri.key)
            .set_expected_bucket_owner(self.s3.expected_owner.clone())
            .send()
            .await
            .map_err(|h| {
                s3_error(
                    "HeadObject (after Complete)",
                    &self.uri,
                    Some(&self.upload_id),
                    h,
                )
            })?;
        Ok((
            head.content_length().and_then(|l| u64::try_from(l).ok()),
            head.e_tag().map(str::to_owned),
        ))
    }

    /// Aborts the upload, so that no part of it stays stored.
    pub async fn abort(self) -> Result<(), S3Error> {
        self.s3.abort(&self.uri, &self.upload_id).await
    }
}

/// `<md5 of the concatenated part MD5s>-<parts>`: S3's ETag of a multipart object, when
/// every part ETag is an MD5 (not under SSE-KMS).
fn multipart_etag(chunks: &[UploadedChunk]) -> Option<String> {
    use md5::Digest as _;
    let mut all = Vec::with_capacity(chunks.len() * 16);
    for c in chunks {
        let tag = c.etag.trim_matches('"');
        if !is_md5_hex(tag) {
            return None;
        }
        all.extend(hex::decode(tag).ok()?);
    }
    Some(format!(
        "{}-{}",
        hex::encode(md5::Md5::digest(&all)),
        chunks.len()
    ))
}

fn is_md5_hex(tag: &str) -> bool {
    tag.len() == 32 && tag.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether this process opened the upload and has not completed or aborted it.
pub fn opened_here(upload_id: &str) -> bool {
    OPEN_UPLOADS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .any(|r| r.upload_id == upload_id)
}

/// An endpoint whose name does not resolve fails at once: the SDK would retry it like any
/// connection error, for seconds, although the name will not appear meanwhile. (A temporary
/// resolver failure, `EAI_AGAIN`, is still retried.)
#[derive(Debug)]
struct NoRetryOnUnknownHost;

impl aws_sdk_s3::config::retry::ClassifyRetry for NoRetryOnUnknownHost {
    fn classify_retry(
        &self,
        ctx: &aws_sdk_s3::config::interceptors::InterceptorContext,
    ) -> aws_sdk_s3::config::retry::RetryAction {
        use aws_sdk_s3::config::retry::RetryAction;
        let Some(Err(err)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let Some(conn) = err.as_connector_error() else {
            return RetryAction::NoActionIndicated;
        };
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(conn);
        while let Some(c) = cause {
            let text = c.to_string();
            if [
                "Name or service not known",
                "nodename nor servname provided",
                "No address associated with hostname",
            ]
            .iter()
            .any(|m| text.contains(m))
            {
                return RetryAction::RetryForbidden;
            }
            cause = c.source();
        }
        RetryAction::NoActionIndicated
    }

    fn name(&self) -> &'static str {
        "ductwork-no-retry-on-unknown-host"
    }
}

/// Counts the SDK's attempts at one request, for the error message.
#[derive(Clone, Debug, Default)]
struct AttemptCounter(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl AttemptCounter {
    /// Adds "after N attempts" to an error of a request that was retried.
    fn note(&self, err: S3Error) -> S3Error {
        let n = self.0.load(std::sync::atomic::Ordering::SeqCst);
        if n > 1 {
            err.with_note(&format!("after {n} attempts"))
        } else {
            err
        }
    }
}

impl aws_sdk_s3::config::Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "ductwork-attempt-counter"
    }

    fn read_before_attempt(
        &self,
        _context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

struct Registered {
    s3: S3,
    uri: S3Uri,
    upload_id: String,
}

static OPEN_UPLOADS: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

fn register(s3: &S3, uri: &S3Uri, upload_id: &str) {
    let mut open = OPEN_UPLOADS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    open.push(Registered {
        s3: s3.clone(),
        uri: uri.clone(),
        upload_id: upload_id.to_owned(),
    });
}

fn unregister(upload_id: &str) {
    let mut open = OPEN_UPLOADS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    open.retain(|r| r.upload_id != upload_id);
}

/// Set by the signal handler: no new multipart upload starts after it.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// CreateMultipartUpload requests in flight.
static CREATING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One CreateMultipartUpload in flight, until its upload is registered (or it failed).
struct Creating;

impl Creating {
    fn start() -> Self {
        CREATING.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Creating
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        CREATING.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Aborts every upload this process opened and has not completed or aborted (used after a
/// signal, when the step's own clean-up was cancelled). Errors are logged. New uploads are
/// refused from here on, and the ones whose CreateMultipartUpload was already in flight
/// (the compression threads keep running) are waited for, up to 10 s, and aborted too.
pub async fn abort_registered_uploads() {
    use std::sync::atomic::Ordering::SeqCst;
    INTERRUPTED.store(true, SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // Read before taking: a create counted here registers before it stops counting.
        let creating = CREATING.load(SeqCst);
        let open: Vec<Registered> = std::mem::take(
            &mut *OPEN_UPLOADS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let aborts = open.iter().map(|r| async move {
            if let Err(e) = r.s3.abort(&r.uri, &r.upload_id).await {
                tracing::error!(key = %r.uri, upload_id = %r.upload_id, error = %e, "Abort failed; the next run at this prefix cleans it up.");
            }
        });
        futures::future::join_all(aborts).await;
        if creating == 0 {
            break;
        }
        if std::time::Instant::now() > deadline {
            tracing::error!(
                in_flight = creating,
                "Uploads still being created after 10 s; the next run at this prefix aborts them."
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A Complete that S3 answered 200 with a body the SDK could not parse, and no `<Error>`.
fn unparsable_complete_ok<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> bool {
    let SdkError::ServiceError(se) = err else {
        return false;
    };
    let raw = se.raw();
    raw.status().as_u16() == 200
        && raw.body().bytes().is_some_and(|b| {
            let text = String::from_utf8_lossy(b);
            text.contains("<CompleteMultipartUploadResponse") && !text.contains("<Error>")
        })
}

/// The error and its sources, by Display only (the SDK's `DisplayErrorContext` appends a
/// Debug dump), each fact once: `dispatch failure: io error: …: dns error: failed to lookup
/// address information: Name or service not known`.
fn display_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(err);
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// Converts an SDK error into an [`S3Error`] with the operation, key and upload id.
pub fn s3_error<E>(
    op: &str,
    uri: &S3Uri,
    upload_id: Option<&str>,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (code, message, retriable) = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let status = se.raw().status().as_u16();
            let code = e
                .code()
                .map(str::to_owned)
                .or_else(|| Some(format!("HTTP {status}")));
            let retriable = matches!(
                code.as_deref(),
                Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout")
            );
            // With a code, the code says it (shown as `[S3 Code]`); with neither code nor
            // message (an unparsable reply), keep the start of the SDK's own account.
            let message = e.message().map(str::to_owned).or_else(|| {
                e.code().is_none().then(|| {
                    let full = aws_sdk_s3::error::DisplayErrorContext(&err).to_string();
                    full.chars().take(300).collect()
                })
            });
            (code, message, retriable || status >= 500)
        }
        SdkError::TimeoutError(_) => (None, Some("timed out".to_owned()), true),
        SdkError::DispatchFailure(d) => {
            let msg = if d.is_io() {
                "could not reach the endpoint (I/O error)".to_owned()
            } else if d.is_timeout() {
                "timed out connecting".to_owned()
            } else {
                "could not send the request".to_owned()
            };
            let detail = display_chain(&err);
            (None, Some(format!("{msg}: {detail}")), true)
        }
        SdkError::ResponseError(_) => (
            None,
            Some(aws_sdk_s3::error::DisplayErrorContext(&err).to_string()),
            true,
        ),
        _ => (
            err.code().map(str::to_owned),
            Some(aws_sdk_s3::error::DisplayErrorContext(&err).to_string()),
            false,
        ),
    };
    let message = match (&code, message) {
        (Some(c), Some(m)) if c == "AccessDenied" => Some(format!(
            "{m} (check the role's s3:PutObject/s3:AbortMultipartUpload on this prefix, and kms:GenerateDataKey/kms:Decrypt for SSE-KMS)"
        )),
        (_, m) => m,
    };
    S3Error {
        op: op.to_owned(),
        key: uri.to_string(),
        upload_id: upload_id.map(str::to_owned),
        code,
        message,
        retriable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(number: i32, etag: &str) -> UploadedChunk {
        UploadedChunk {
            number,
            etag: etag.to_owned(),
        }
    }

    #[test]
    fn multipart_etag_is_the_md5_of_the_part_md5s() {
        let chunks = [
            chunk(1, "\"0cc175b9c0f1b6a831c399e269772661\""),
            chunk(2, "92eb5ffee6ae2fec3ad71c777531578f"),
        ];
        assert_eq!(
            multipart_etag(&chunks).as_deref(),
            Some("96e024ba2074fe77e8e965ba43a704be-2")
        );
        // A part ETag that is not an MD5 (SSE-KMS): no expectation.
        assert_eq!(multipart_etag(&[chunk(1, "\"abc\"")]), None);
        assert!(is_md5_hex("0cc175b9c0f1b6a831c399e269772661"));
        assert!(!is_md5_hex("0cc175b9c0f1b6a831c399e26977266g"));
    }

    #[test]
    fn display_chain_keeps_each_fact_once_and_no_debug_dump() {
        let inner = std::io::Error::other("Name or service not known");
        let outer = anyhow::Error::new(inner).context("dns error");
        let text = display_chain(outer.as_ref());
        assert_eq!(text, "dns error: Name or service not known");
    }
}
