//! The S3 store: keys live under `s3://bucket/prefix/`, compare-and-swap uses S3's conditional
//! writes (`If-None-Match: *`, `If-Match: <etag>`), large objects go up as multipart uploads.
//!
//! Memory stays bounded: an upload holds at most two 8 MiB part buffers (the one filling waits
//! until no more than one other is in flight). A multipart upload that fails is aborted before
//! the error is returned; one whose future is dropped is aborted by a task spawned from `Drop` when
//! a runtime is still there, and otherwise left for `remove_unfinished`, which the engine runs for
//! prefixes of dead runs.
//! Retries are the SDK's own (its standard retry mode); this module never loops on an error.
//!
//! Server-side encryption (`[store] sse`): every write goes through `put_request` (PutObject: plain,
//! `If-None-Match`, `If-Match`) or `start_multipart` (CreateMultipartUpload; UploadPart and
//! CompleteMultipartUpload inherit the upload's encryption), which both ask for it. There is no
//! CopyObject here; one added later must ask for it too, as S3 does not carry a source object's
//! encryption over to its copy.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption,
};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::{ByteRx, Finding, Metadata, ObjectInfo, Sse, Store, Versioned};
use crate::error::{Error, Result, Transience};

/// S3 wants at least 5 MiB for every part but the last, and at most 10 000 parts: 8 MiB parts
/// allow objects up to ~78 GiB, above the 64 GiB objects backups are split into.
const PART_SIZE: usize = 8 << 20;
const MAX_PARTS: i32 = 10_000;
/// Parts uploading at once; also the most parts in memory, the one being filled included: once part
/// n is sent, filling part n+1 waits until part n-1 is done.
const PARTS_IN_FLIGHT: usize = 2;
const DOWNLOAD_QUEUE: usize = 4;

pub struct S3Store {
    url: String,
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// Asked for on every write; `None`: the bucket's default encryption, if any, applies.
    sse: Option<Sse>,
}

impl S3Store {
    pub fn new(url: &str, client: aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Self {
        S3Store {
            url: url.to_string(),
            client,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            sse: None,
        }
    }

    /// `[store] sse` (and `kms_key_id`), applied to every object this store writes.
    pub fn with_sse(mut self, sse: Option<Sse>) -> Self {
        self.sse = sse;
        self
    }

    /// (algorithm, KMS key id) for a write request's `x-amz-server-side-encryption` headers.
    fn sse_headers(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.sse {
            None => (None, None),
            Some(Sse::Aes256) => (Some(ServerSideEncryption::Aes256), None),
            Some(Sse::Kms { key_id }) => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
        }
    }

    /// A PutObject of `object_key` with the store's encryption: every PutObject starts here, so
    /// none can go out without it (an overwrite with no SSE header would store the new version
    /// unencrypted, whatever the old one was).
    fn put_request(&self, object_key: &str, data: Bytes) -> PutObjectFluentBuilder {
        let (algorithm, key_id) = self.sse_headers();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(object_key)
            .set_server_side_encryption(algorithm)
            .set_ssekms_key_id(key_id)
            .body(ByteStream::from(data))
    }

    fn object_key(&self, key: &str) -> String {
        if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) }
    }

    fn store_key<'k>(&self, object_key: &'k str) -> &'k str {
        if self.prefix.is_empty() {
            object_key
        } else {
            object_key.strip_prefix(self.prefix.as_str()).and_then(|k| k.strip_prefix('/')).unwrap_or(object_key)
        }
    }

    /// GetObject; `Ok(None)` only for NoSuchKey (a definite "not there"), every other failure an error.
    async fn get_object(
        &self,
        op: &str,
        key: &str,
    ) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>> {
        let ok = self.object_key(key);
        match self.client.get_object().bucket(&self.bucket).key(&ok).send().await {
            Ok(out) => Ok(Some(out)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(self.sdk_err(op, &ok, &e)),
        }
    }

    fn sdk_err<E>(&self, op: &str, object_key: &str, e: &SdkError<E>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (detail, transience, whole_bucket) = describe(e, &self.bucket, op);
        if whole_bucket {
            // Not about this key or operation: say what is wrong with the bucket or the credentials.
            return Error::Store { url: self.url.clone(), problem: detail, transience };
        }
        self.fail(op, object_key, detail, transience)
    }

    fn fail(&self, op: &str, object_key: &str, detail: impl std::fmt::Display, t: Transience) -> Error {
        Error::Store {
            url: self.url.clone(),
            problem: format!("{op} s3://{}/{object_key}: {detail}", self.bucket),
            transience: t,
        }
    }

    async fn put_object(&self, op: &str, object_key: &str, data: Bytes) -> Result<()> {
        self.put_request(object_key, data).send().await.map_err(|e| self.sdk_err(op, object_key, &e))?;
        Ok(())
    }

    async fn start_multipart(&self, object_key: &str) -> Result<Multipart> {
        // The encryption is the upload's, named here once: S3 refuses SSE headers on UploadPart
        // (for SSE-S3 and SSE-KMS) and applies the upload's to the completed object.
        let (algorithm, key_id) = self.sse_headers();
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(object_key)
            .set_server_side_encryption(algorithm)
            .set_ssekms_key_id(key_id)
            // The SDK adds a CRC32 to each part by default; naming it here too keeps S3 from
            // rejecting the parts for a checksum type the upload was not created with.
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| self.sdk_err("upload (create multipart)", object_key, &e))?;
        let upload_id = out.upload_id().ok_or_else(|| {
            self.fail("upload", object_key, "CreateMultipartUpload returned no upload id", Transience::Temporary)
        })?;
        Ok(Multipart {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: object_key.to_string(),
            upload_id: upload_id.to_string(),
            in_flight: JoinSet::new(),
            done: Vec::new(),
            next_number: 1,
            finished: false,
        })
    }

    /// Waits for one in-flight part and records it.
    async fn finish_one_part(&self, mp: &mut Multipart) -> Result<()> {
        let Some(joined) = mp.in_flight.join_next().await else {
            return Ok(());
        };
        let part = match joined {
            Ok(Ok(part)) => part,
            Ok(Err(e)) => return Err(self.sdk_err("upload (part)", &mp.key, &e)),
            Err(join) => {
                return Err(self.fail("upload (part)", &mp.key, join, Transience::Permanent));
            }
        };
        mp.done.push(part);
        Ok(())
    }

    async fn send_part(&self, mp: &mut Multipart, data: Bytes) -> Result<()> {
        if mp.next_number > MAX_PARTS {
            let limit = MAX_PARTS as usize * PART_SIZE;
            return Err(self.fail(
                "upload",
                &mp.key,
                format!("object exceeds {limit} bytes ({MAX_PARTS} parts of {PART_SIZE} bytes)"),
                Transience::Permanent,
            ));
        }
        let number = mp.next_number;
        mp.next_number += 1;
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&mp.key)
            .upload_id(&mp.upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(data));
        // Spawned, so parts travel while the caller keeps reading the next part from the channel.
        mp.in_flight.spawn(async move {
            let out = req.send().await?;
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .set_checksum_crc32(out.checksum_crc32().map(str::to_string))
                .build())
        });
        // Wait for a free slot before the caller fills the next part, not after it is full: a
        // full part waiting for a slot would be one more PART_SIZE of memory for no extra speed.
        while mp.in_flight.len() >= PARTS_IN_FLIGHT {
            self.finish_one_part(mp).await?;
        }
        Ok(())
    }

    async fn complete(&self, mp: &mut Multipart) -> Result<()> {
        while !mp.in_flight.is_empty() {
            self.finish_one_part(mp).await?;
        }
        mp.done.sort_by_key(|p| p.part_number());
        let parts = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut mp.done))).build();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&mp.key)
            .upload_id(&mp.upload_id)
            .multipart_upload(parts)
            .send()
            .await
            .map_err(|e| self.sdk_err("upload (complete multipart)", &mp.key, &e))?;
        mp.finished = true;
        Ok(())
    }

    /// Reads `rx` into parts; a stream that ends within the first part is one PutObject.
    async fn upload_parts(
        &self,
        object_key: &str,
        rx: &mut ByteRx,
        mp: &mut Option<Multipart>,
    ) -> Result<(u64, BytesMut)> {
        let mut buf = BytesMut::with_capacity(PART_SIZE);
        let mut total = 0u64;
        while let Some(chunk) = rx.recv().await {
            let mut chunk = chunk.map_err(|e| self.fail("upload", object_key, e, Transience::Permanent))?;
            total += chunk.len() as u64;
            while !chunk.is_empty() {
                let take = (PART_SIZE - buf.len()).min(chunk.len());
                buf.extend_from_slice(&chunk.split_to(take));
                if buf.len() == PART_SIZE {
                    let part = std::mem::replace(&mut buf, BytesMut::with_capacity(PART_SIZE)).freeze();
                    if mp.is_none() {
                        *mp = Some(self.start_multipart(object_key).await?);
                    }
                    let m = mp.as_mut().expect("multipart upload started above");
                    self.send_part(m, part).await?;
                }
            }
        }
        Ok((total, buf))
    }

    /// ListObjectsV2 under `prefix`, starting after `after` (S3's own `StartAfter`, so a listing
    /// of the journal's tail costs one request however long the journal is).
    async fn list_from(&self, prefix: &str, after: Option<&str>) -> Result<Vec<ObjectInfo>> {
        let full = self.object_key(prefix);
        let mut req = self.client.list_objects_v2().bucket(&self.bucket).prefix(&full);
        if let Some(after) = after {
            req = req.start_after(self.object_key(after));
        }
        let mut pages = req.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.sdk_err("list", &full, &e))?;
            for obj in page.contents() {
                let Some(k) = obj.key() else { continue };
                let size = obj.size().unwrap_or(0).max(0) as u64;
                out.push(ObjectInfo { key: self.store_key(k).to_string(), size });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The `Date` header of a HeadBucket response: S3's clock, the one every host agrees on.
    async fn server_date(&self) -> Result<SystemTime> {
        let seen = DateHeader::default();
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .customize()
            .interceptor(seen.clone())
            .send()
            .await
            .map_err(|e| self.sdk_err("now (HeadBucket)", "", &e))?;
        let header = seen.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match header {
            Some(date) => parse_http_date(&date).ok_or_else(|| {
                self.fail("now (HeadBucket)", "", format!("unparseable Date header {date:?}"), Transience::Permanent)
            }),
            // Only a proxy that strips Date gets here; this host's clock is then the best there is.
            None => Ok(SystemTime::now()),
        }
    }
}

/// The four settings of a public-access block, as the AWS CLI names them.
const PUBLIC_ACCESS_SETTINGS: [&str; 4] =
    ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"];

/// `check`'s findings about the bucket (`Store::audit`). Each is one read-only request; a failed
/// read is a failed finding naming the permission it needs, never an error of the run.
impl S3Store {
    /// What a failed bucket-settings read says, with the IAM action that allows it.
    fn read_failed<E>(&self, op: &str, action: &str, e: &SdkError<E>) -> String
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (detail, _, _) = describe(e, &self.bucket, op);
        let needs = if detail.contains("AccessDenied") { format!(" (drctl needs {action})") } else { String::new() };
        format!("{op} on s3://{}: {detail}{needs}", self.bucket)
    }

    /// `store-private`: the bucket's public-access block has all four settings on. Without it a
    /// bucket policy or ACL (a typo, a console click) can make every backup readable by anyone.
    async fn public_access_finding(&self) -> Finding {
        const ID: &str = "store-private";
        let fix = format!(
            "aws s3api put-public-access-block --bucket {} --public-access-block-configuration {}",
            self.bucket,
            PUBLIC_ACCESS_SETTINGS.map(|k| format!("{k}=true")).join(",")
        );
        match self.client.get_public_access_block().bucket(&self.bucket).send().await {
            Ok(out) => {
                let c = out.public_access_block_configuration();
                let on = [
                    c.and_then(|c| c.block_public_acls()),
                    c.and_then(|c| c.ignore_public_acls()),
                    c.and_then(|c| c.block_public_policy()),
                    c.and_then(|c| c.restrict_public_buckets()),
                ];
                let off: Vec<&str> =
                    PUBLIC_ACCESS_SETTINGS.iter().zip(on).filter(|(_, v)| *v != Some(true)).map(|(k, _)| *k).collect();
                if off.is_empty() {
                    Finding::pass(
                        ID,
                        format!("s3://{}: public-access block on ({})", self.bucket, PUBLIC_ACCESS_SETTINGS.join(", ")),
                    )
                } else {
                    Finding::fail(
                        ID,
                        format!(
                            "s3://{}: the public-access block leaves {} off, so a bucket policy or ACL could make the backups public; run {fix}",
                            self.bucket,
                            off.join(", ")
                        ),
                    )
                }
            }
            Err(e) if e.code() == Some("NoSuchPublicAccessBlockConfiguration") => Finding::fail(
                ID,
                format!(
                    "s3://{}: no public-access block on the bucket (an account-wide one is not looked at), so a bucket policy or ACL could make the backups public; run {fix}",
                    self.bucket
                ),
            ),
            Err(e) => Finding::fail(ID, self.read_failed("GetPublicAccessBlock", "s3:GetBucketPublicAccessBlock", &e)),
        }
    }

    /// `bucket-encryption`: objects are encrypted at rest, by the bucket's default encryption or
    /// by drctl asking for `[store] sse` on every write (either is enough).
    async fn encryption_finding(&self) -> Finding {
        const ID: &str = "bucket-encryption";
        let default = match self.client.get_bucket_encryption().bucket(&self.bucket).send().await {
            Ok(out) => {
                let rules = out.server_side_encryption_configuration().map(|c| c.rules()).unwrap_or_default();
                let shown: Vec<String> = rules
                    .iter()
                    .filter_map(|r| r.apply_server_side_encryption_by_default())
                    .map(|d| match d.kms_master_key_id() {
                        Some(k) => format!("{} (key {k})", d.sse_algorithm().as_str()),
                        None => d.sse_algorithm().as_str().to_string(),
                    })
                    .collect();
                Ok((!shown.is_empty()).then(|| shown.join(", ")))
            }
            Err(e) if e.code() == Some("ServerSideEncryptionConfigurationNotFoundError") => Ok(None),
            Err(e) => Err(self.read_failed("GetBucketEncryption", "s3:GetEncryptionConfiguration", &e)),
        };
        let bucket = &self.bucket;
        match (&self.sse, default) {
            (Some(sse), Ok(Some(d))) => Finding::pass(
                ID,
                format!(
                    "s3://{bucket}: default encryption {d}; drctl also asks for {} on every object",
                    sse.describe()
                ),
            ),
            (Some(sse), Ok(None)) => Finding::pass(
                ID,
                format!(
                    "s3://{bucket}: no default encryption, but drctl asks for {} on every object it writes ([store] sse)",
                    sse.describe()
                ),
            ),
            (Some(sse), Err(why)) => Finding::pass(
                ID,
                format!(
                    "drctl asks for {} on every object it writes ([store] sse); the bucket's default: {why}",
                    sse.describe()
                ),
            ),
            (None, Ok(Some(d))) => {
                Finding::pass(ID, format!("s3://{bucket}: default encryption {d} ([store] sse not set)"))
            }
            (None, Ok(None)) => Finding::fail(
                ID,
                format!(
                    "s3://{bucket}: no default encryption and [store] sse is not set, so backups would be stored unencrypted; \
                     set [store] sse = \"AES256\" (or \"aws:kms\" with kms_key_id), or run aws s3api put-bucket-encryption --bucket {bucket} \
                     --server-side-encryption-configuration '{{\"Rules\":[{{\"ApplyServerSideEncryptionByDefault\":{{\"SSEAlgorithm\":\"AES256\"}}}}]}}'"
                ),
            ),
            (None, Err(why)) => {
                Finding::fail(ID, format!("{why}; or set [store] sse = \"AES256\" so drctl asks for encryption itself"))
            }
        }
    }

    /// `bucket-versioning`: Enabled, so an overwritten or deleted object (a journal entry, a
    /// manifest, a backup: by a bug, an operator, or stolen credentials) stays recoverable.
    async fn versioning_finding(&self) -> Finding {
        const ID: &str = "bucket-versioning";
        let bucket = &self.bucket;
        let fix = format!(
            "run aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled \
             (a lifecycle rule expiring noncurrent versions bounds the cost)"
        );
        let status = match self.client.get_bucket_versioning().bucket(bucket).send().await {
            Ok(out) => Ok(out.status().cloned()),
            // A 200 the SDK could not read: moto 5.2 names the root element
            // `GetBucketVersioningResponse` where S3 says `VersioningConfiguration`, and the SDK
            // insists on the latter. The answer is still there: `<Status>` holds it, and no
            // `<Status>` means versioning was never enabled (S3's empty `<VersioningConfiguration/>`).
            Err(e) if status_of(&e) == Some(200) && e.raw_response().and_then(|r| r.body().bytes()).is_some() => {
                let body = e.raw_response().and_then(|r| r.body().bytes()).unwrap_or_default();
                Ok(xml_element(&String::from_utf8_lossy(body), "Status")
                    .map(|v| BucketVersioningStatus::from(v.as_str())))
            }
            Err(e) => Err(e),
        };
        match status {
            Ok(status) => match status {
                Some(BucketVersioningStatus::Enabled) => Finding::pass(
                    ID,
                    format!("s3://{bucket}: versioning Enabled (overwritten or deleted objects stay recoverable)"),
                ),
                Some(other) => Finding::fail(
                    ID,
                    format!(
                        "s3://{bucket}: versioning is {}, so an overwritten or deleted journal entry or backup cannot be recovered; {fix}",
                        other.as_str()
                    ),
                ),
                None => Finding::fail(
                    ID,
                    format!(
                        "s3://{bucket}: versioning was never enabled, so an overwritten or deleted journal entry or backup cannot be recovered; {fix}"
                    ),
                ),
            },
            Err(e) => Finding::fail(ID, self.read_failed("GetBucketVersioning", "s3:GetBucketVersioning", &e)),
        }
    }
}

/// The text of the first `<name>…</name>` in `xml`, trimmed (no entities are expected in it).
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].trim().to_string())
}

/// What happened, in words an operator acts on, with the service's code in parentheses (never
/// request headers, so never credentials); whether a later retry could succeed; and whether it
/// concerns the whole bucket (missing, credentials refused) rather than the key at hand.
/// `crate::error` reads the `(S3 CODE)` at the end to choose the hint.
fn describe<E>(e: &SdkError<E>, bucket: &str, op: &str) -> (String, Transience, bool)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let code = e.code();
            let temporary = matches!(status, Some(429 | 500..=599))
                || matches!(
                    code,
                    Some(
                        "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeout"
                            | "RequestTimeTooSkewed"
                            | "InternalError"
                            | "ServiceUnavailable"
                    )
                );
            let t = if temporary { Transience::Temporary } else { Transience::Permanent };
            // HeadBucket has no body, so its 404 carries no code (or the SDK's `NotFound`).
            let head_bucket_404 = op.contains("HeadBucket") && status == Some(404);
            match code {
                Some("NoSuchBucket") => {
                    return (format!("the bucket `{bucket}` does not exist (S3 NoSuchBucket)"), t, true);
                }
                _ if head_bucket_404 => {
                    return (format!("the bucket `{bucket}` does not exist (S3 NoSuchBucket)"), t, true);
                }
                Some(
                    c @ ("InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "InvalidToken"
                    | "TokenRefreshRequired"),
                ) => {
                    return (format!("S3 refused this host's AWS credentials (S3 {c})"), t, true);
                }
                _ => {}
            }
            if status == Some(403) && matches!(code, None | Some("AccessDenied" | "Forbidden")) {
                // About this key and operation (a bucket policy may allow some and not others).
                return ("access denied (S3 AccessDenied)".to_string(), t, false);
            }
            let mut detail = match (code, e.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                (None, Some(m)) => m.to_string(),
                // HEAD responses have no body, so no code: say what the status means.
                (None, None) => match status {
                    Some(404) => "not found (no such bucket or key)".to_string(),
                    _ => DisplayErrorContext(e).to_string(),
                },
            };
            if let Some(s) = status {
                detail.push_str(&format!(" (HTTP {s})"));
            }
            (detail, t, false)
        }
        other => {
            let context = DisplayErrorContext(e).to_string();
            if context.contains("credential") {
                return (
                    format!("no usable AWS credentials: {context} (S3 NoCredentials)"),
                    Transience::Permanent,
                    true,
                );
            }
            match other {
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                    (format!("S3 could not be reached: {context} (S3 Unreachable)"), Transience::Temporary, false)
                }
                _ => (context, Transience::Permanent, false),
            }
        }
    }
}

fn status_of<E>(e: &SdkError<E>) -> Option<u16> {
    match e {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => e.raw_response().map(|r| r.status().as_u16()),
        _ => None,
    }
}

/// The key is not in the state the condition named: 412, or 409 ConditionalRequestConflict (a
/// concurrent conditional write to the key is under way; whoever it is, it is not us). Other 409s
/// (OperationAborted) are errors.
fn condition_failed<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    match status_of(e) {
        Some(412) => true,
        Some(409) => e.code() == Some("ConditionalRequestConflict"),
        _ => false,
    }
}

/// A multipart upload in progress. Dropped unfinished, it asks S3 to abort it.
struct Multipart {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    in_flight: JoinSet<Result<CompletedPart, SdkError<aws_sdk_s3::operation::upload_part::UploadPartError>>>,
    done: Vec<CompletedPart>,
    next_number: i32,
    finished: bool,
}

impl Multipart {
    fn abort_request(
        &self,
    ) -> aws_sdk_s3::operation::abort_multipart_upload::builders::AbortMultipartUploadFluentBuilder {
        self.client.abort_multipart_upload().bucket(&self.bucket).key(&self.key).upload_id(&self.upload_id)
    }

    /// Best effort: the upload's own error is what the caller needs; a failed abort leaves the
    /// upload for `remove_unfinished`.
    async fn abort(mut self) {
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        self.finished = true;
        let _ = self.abort_request().send().await;
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Cannot await here: hand the abort to the runtime if there still is one.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let req = self.abort_request();
            rt.spawn(async move {
                let _ = req.send().await;
            });
        }
    }
}

/// Captures the `Date` response header, which the SDK's output types do not expose.
#[derive(Debug, Default, Clone)]
struct DateHeader(Arc<Mutex<Option<String>>>);

impl Intercept for DateHeader {
    fn name(&self) -> &'static str {
        "DateHeader"
    }

    fn read_after_transmit(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(date) = context.response().headers().get("date") {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(date.to_string());
        }
        Ok(())
    }
}

/// RFC 7231 IMF-fixdate, the only form S3 sends: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let rest = s.trim().split_once(", ")?.1;
    let f: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = f.as_slice() else {
        return None;
    };
    let day: u32 = day.parse().ok()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)? as u32
        + 1;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<u64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[async_trait]
impl Store for S3Store {
    fn url(&self) -> &str {
        &self.url
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>> {
        let ok = self.object_key(key);
        let Some(out) = self.get_object("get", key).await? else {
            return Ok(None);
        };
        let etag = out
            .e_tag()
            .ok_or_else(|| self.fail("get", &ok, "response has no ETag", Transience::Permanent))?
            .to_string();
        let data = out.body.collect().await.map_err(|e| self.fail("get", &ok, e, Transience::Temporary))?;
        Ok(Some(Versioned { data: data.into_bytes(), etag }))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_object("put", &self.object_key(key), data).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let ok = self.object_key(key);
        let sent = self.put_request(&ok, data).if_none_match("*").send().await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(self.sdk_err("put_if_absent", &ok, &e)),
        }
    }

    async fn put_if_absent_with(&self, key: &str, data: Bytes, meta: &Metadata) -> Result<bool> {
        let ok = self.object_key(key);
        let user_meta = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let sent = self.put_request(&ok, data).set_metadata(Some(user_meta)).if_none_match("*").send().await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(self.sdk_err("put_if_absent", &ok, &e)),
        }
    }

    async fn get_with(&self, key: &str) -> Result<Option<(Versioned, Metadata)>> {
        let ok = self.object_key(key);
        let Some(out) = self.get_object("get", key).await? else {
            return Ok(None);
        };
        let meta: Metadata =
            out.metadata().into_iter().flatten().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
        let etag = out
            .e_tag()
            .ok_or_else(|| self.fail("get", &ok, "response has no ETag", Transience::Permanent))?
            .to_string();
        // Into one buffer of the object's size as the chunks arrive: `collect().into_bytes()`
        // would hold the chunks and their copy at once (2 x 16 MiB for a WAL segment).
        let mut data = BytesMut::with_capacity(out.content_length().unwrap_or(0).clamp(0, 1 << 30) as usize);
        let mut body = out.body;
        while let Some(chunk) = body.next().await {
            data.extend_from_slice(&chunk.map_err(|e| self.fail("get", &ok, e, Transience::Temporary))?);
        }
        Ok(Some((Versioned { data: data.freeze(), etag }, meta)))
    }

    async fn head_with(&self, key: &str) -> Result<Option<(ObjectInfo, Metadata)>> {
        let ok = self.object_key(key);
        match self.client.head_object().bucket(&self.bucket).key(&ok).send().await {
            Ok(out) => {
                let size = out.content_length().unwrap_or(0).max(0) as u64;
                let meta: Metadata =
                    out.metadata().into_iter().flatten().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
                Ok(Some((ObjectInfo { key: key.to_string(), size }, meta)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(self.sdk_err("head", &ok, &e)),
        }
    }

    async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<bool> {
        let ok = self.object_key(key);
        let sent = self.put_request(&ok, data).if_match(etag).send().await;
        match sent {
            Ok(_) => Ok(true),
            // NoSuchKey: the object is gone, so it certainly is not at `etag` any more (but
            // NoSuchBucket, also a 404, is an error).
            Err(e) if condition_failed(&e) || e.code() == Some("NoSuchKey") => Ok(false),
            Err(e) => Err(self.sdk_err("put_if_match", &ok, &e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.list_from(prefix, None).await
    }

    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectInfo>> {
        self.list_from(prefix, Some(after)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let ok = self.object_key(key);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&ok)
            .send()
            .await
            .map_err(|e| self.sdk_err("delete", &ok, &e))?;
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let ok = self.object_key(key);
        match self.client.head_object().bucket(&self.bucket).key(&ok).send().await {
            Ok(out) => {
                let size = out.content_length().unwrap_or(0).max(0) as u64;
                Ok(Some(ObjectInfo { key: key.to_string(), size }))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(self.sdk_err("head", &ok, &e)),
        }
    }

    async fn upload(&self, key: &str, mut rx: ByteRx) -> Result<u64> {
        let ok = self.object_key(key);
        let mut mp = None;
        let read = self.upload_parts(&ok, &mut rx, &mut mp).await;
        let Some(mut m) = mp else {
            let (total, buf) = read?;
            self.put_object("upload", &ok, buf.freeze()).await?;
            return Ok(total);
        };
        let finished = match read {
            Ok((total, buf)) => {
                let last = if buf.is_empty() { Ok(()) } else { self.send_part(&mut m, buf.freeze()).await };
                match last {
                    Ok(()) => self.complete(&mut m).await.map(|()| total),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        if finished.is_err() {
            m.abort().await;
        }
        finished
    }

    async fn download(&self, key: &str) -> Result<Option<ByteRx>> {
        let ok = self.object_key(key);
        let Some(out) = self.get_object("download", key).await? else {
            return Ok(None);
        };
        let mut body = out.body;
        let (tx, rx) = mpsc::channel(DOWNLOAD_QUEUE);
        let what = format!("store {}: download s3://{}/{ok}", self.url, self.bucket);
        tokio::spawn(async move {
            while let Some(chunk) = body.next().await {
                let item = chunk.map_err(|e| std::io::Error::other(format!("{what}: {e}")));
                let failed = item.is_err();
                // A closed channel means the reader gave up: stop reading.
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }

    async fn remove_unfinished(&self, prefix: &str) -> Result<usize> {
        let full = self.object_key(prefix);
        let mut removed = 0;
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        // No SDK paginator here: ListMultipartUploads pages by two markers at once.
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.sdk_err("remove_unfinished (list uploads)", &full, &e))?;
            for up in page.uploads() {
                let (Some(k), Some(id)) = (up.key(), up.upload_id()) else {
                    continue;
                };
                match self.client.abort_multipart_upload().bucket(&self.bucket).key(k).upload_id(id).send().await {
                    Ok(_) => removed += 1,
                    // Aborted meanwhile by its own run or another cleaner.
                    Err(e) if e.code() == Some("NoSuchUpload") => {}
                    Err(e) => return Err(self.sdk_err("remove_unfinished (abort upload)", k, &e)),
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(removed);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(removed);
            }
        }
    }

    async fn now(&self) -> Result<SystemTime> {
        self.server_date().await
    }

    async fn audit(&self) -> Vec<Finding> {
        let (private, encryption, versioning) =
            tokio::join!(self.public_access_finding(), self.encryption_finding(), self.versioning_finding());
        vec![private, encryption, versioning]
    }
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;

    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use sha2::{Digest, Sha256};

    use super::*;

    include!("../../tests/it/harness/moto_version.rs");

    /// A moto_server of this test's own, on a free loopback port, killed when the test ends.
    struct Moto {
        child: Child,
        port: u16,
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn start_moto() -> Moto {
        // Checked once per process: an old moto fails these tests with one line naming the fix.
        static VERSION_OK: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
        if let Err(line) = VERSION_OK.get_or_init(moto_version_check) {
            panic!("{line}");
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server on PATH (pip install 'moto[server]')");
        let moto = Moto { child, port };
        for _ in 0..300 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto_server did not listen on 127.0.0.1:{port} within 30 s");
    }

    fn client(moto: &Moto) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{}", moto.port))
            .force_path_style(true)
            .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// moto plus a fresh bucket, and a store on `s3://drctl-test/run/1`.
    async fn setup() -> (Moto, S3Store) {
        let moto = start_moto();
        let c = client(&moto);
        c.create_bucket().bucket("drctl-test").send().await.unwrap();
        let store = S3Store::new("s3://drctl-test/run/1", c, "drctl-test", "run/1/");
        (moto, store)
    }

    async fn open_uploads(s: &S3Store) -> usize {
        let out = s.client.list_multipart_uploads().bucket(&s.bucket).send().await.unwrap();
        out.uploads().len()
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// 1 MiB chunks of a non-repeating pattern, fed through a channel by a task.
    fn feed(total_mib: usize, fail_after_mib: Option<usize>) -> (ByteRx, Vec<u8>) {
        let mut all = Vec::with_capacity(total_mib << 20);
        let mut x: u32 = 0x1234_5678;
        for _ in 0..(total_mib << 20) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            all.push(x as u8);
        }
        let (tx, rx) = mpsc::channel(2);
        let data = Bytes::from(all.clone());
        tokio::spawn(async move {
            for i in 0..total_mib {
                if fail_after_mib == Some(i) {
                    let _ = tx.send(Err(std::io::Error::other("pg_dump exited 1"))).await;
                    return;
                }
                if tx.send(Ok(data.slice(i << 20..(i + 1) << 20))).await.is_err() {
                    return;
                }
            }
        });
        (rx, all)
    }

    async fn collect(mut rx: ByteRx) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = rx.recv().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn put_get_head_list_delete() {
        let (_moto, s) = setup().await;
        assert!(s.get("a/b.json").await.unwrap().is_none());
        assert!(s.head("a/b.json").await.unwrap().is_none());
        s.put("a/b.json", Bytes::from_static(b"hello")).await.unwrap();
        let v = s.get("a/b.json").await.unwrap().unwrap();
        assert_eq!(&v.data[..], b"hello");
        assert_eq!(v.etag.trim_matches('"'), "5d41402abc4b2a76b9719d911017c592", "MD5 ETag");
        assert_eq!(s.head("a/b.json").await.unwrap(), Some(ObjectInfo { key: "a/b.json".into(), size: 5 }));
        // Written under the prefix, and nothing outside it is listed.
        let raw = s.client.head_object().bucket("drctl-test").key("run/1/a/b.json").send().await;
        assert!(raw.is_ok());
        s.client
            .put_object()
            .bucket("drctl-test")
            .key("run/10/outside")
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
        for k in ["b/2", "a", "b/10", "b/1/x", "bz"] {
            s.put(k, Bytes::from(k.to_string())).await.unwrap();
        }
        let keys = |v: Vec<ObjectInfo>| v.into_iter().map(|o| o.key).collect::<Vec<_>>();
        assert_eq!(keys(s.list("").await.unwrap()), ["a", "a/b.json", "b/1/x", "b/10", "b/2", "bz"]);
        assert_eq!(keys(s.list("b").await.unwrap()), ["b/1/x", "b/10", "b/2", "bz"]);
        assert_eq!(keys(s.list("b/").await.unwrap()), ["b/1/x", "b/10", "b/2"]);
        assert!(s.list("nope/").await.unwrap().is_empty());
        assert_eq!(s.list("b/1/").await.unwrap(), [ObjectInfo { key: "b/1/x".into(), size: 5 }]);
        s.delete("a/b.json").await.unwrap();
        assert!(s.get("a/b.json").await.unwrap().is_none());
        s.delete("a/b.json").await.unwrap();
    }

    #[tokio::test]
    async fn metadata_is_user_metadata_written_with_the_object() {
        let (_moto, s) = setup().await;
        let meta: Metadata = [("sha256".to_string(), "ab12".to_string())].into();
        assert!(s.get_with("w/x.zst").await.unwrap().is_none());
        assert!(s.head_with("w/x.zst").await.unwrap().is_none());
        assert!(s.put_if_absent_with("w/x.zst", Bytes::from_static(b"one"), &meta).await.unwrap());
        let other: Metadata = [("sha256".to_string(), "cd34".to_string())].into();
        assert!(!s.put_if_absent_with("w/x.zst", Bytes::from_static(b"two"), &other).await.unwrap());
        let (v, got) = s.get_with("w/x.zst").await.unwrap().unwrap();
        assert_eq!((&v.data[..], &got), (&b"one"[..], &meta));
        let (info, got) = s.head_with("w/x.zst").await.unwrap().unwrap();
        assert_eq!((info.size, &got), (3, &meta));
        // As S3 (and `aws s3api head-object`) shows it: x-amz-meta-sha256.
        let raw = s.client.head_object().bucket("drctl-test").key("run/1/w/x.zst").send().await.unwrap();
        assert_eq!(raw.metadata().and_then(|m| m.get("sha256")).map(String::as_str), Some("ab12"));
    }

    #[tokio::test]
    async fn conditional_writes() {
        let (_moto, s) = setup().await;
        assert!(s.put_if_absent("journal/0", Bytes::from_static(b"first")).await.unwrap());
        assert!(!s.put_if_absent("journal/0", Bytes::from_static(b"second")).await.unwrap());
        assert_eq!(&s.get("journal/0").await.unwrap().unwrap().data[..], b"first");

        assert!(!s.put_if_match("locks/dns.json", Bytes::from_static(b"x"), "\"0\"").await.unwrap());
        assert!(s.get("locks/dns.json").await.unwrap().is_none(), "missing key stays missing");
        assert!(s.put_if_absent("locks/dns.json", Bytes::from_static(b"v1")).await.unwrap());
        let v1 = s.get("locks/dns.json").await.unwrap().unwrap();
        assert!(s.put_if_match("locks/dns.json", Bytes::from_static(b"v2"), &v1.etag).await.unwrap());
        assert!(!s.put_if_match("locks/dns.json", Bytes::from_static(b"v3"), &v1.etag).await.unwrap());
        assert_eq!(&s.get("locks/dns.json").await.unwrap().unwrap().data[..], b"v2");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_put_if_absent_has_exactly_one_winner() {
        let (_moto, s) = setup().await;
        crate::store::conformance::put_if_absent_has_one_winner(Arc::new(s), 16).await;
    }

    #[tokio::test]
    async fn multipart_upload_round_trips() {
        let (_moto, s) = setup().await;
        let (rx, sent) = feed(20, None);
        assert_eq!(s.upload("backups/x.dump.zst", rx).await.unwrap(), 20 << 20);
        assert_eq!(s.head("backups/x.dump.zst").await.unwrap().unwrap().size, 20 << 20);
        // 8 + 8 + 4 MiB: a multipart ETag ends in the part count.
        let etag = s.get("backups/x.dump.zst").await.unwrap().unwrap().etag;
        assert!(etag.trim_matches('"').ends_with("-3"), "etag {etag}");
        let got = collect(s.download("backups/x.dump.zst").await.unwrap().unwrap()).await;
        assert_eq!(sha(&got), sha(&sent));
        assert_eq!(open_uploads(&s).await, 0);

        let (rx, sent) = feed(1, None);
        assert_eq!(s.upload("backups/small", rx).await.unwrap(), 1 << 20);
        assert_eq!(collect(s.download("backups/small").await.unwrap().unwrap()).await, sent);
        assert!(s.download("backups/none").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn failed_upload_is_aborted_and_abandoned_ones_are_removed() {
        let (_moto, s) = setup().await;
        // The error comes after the first 8 MiB part has gone up.
        let (rx, _) = feed(12, Some(10));
        let err = s.upload("backups/broken", rx).await.unwrap_err();
        assert!(err.to_string().contains("pg_dump exited 1"), "{err}");
        assert!(err.to_string().contains("s3://drctl-test/run/1/backups/broken"), "{err}");
        assert!(s.head("backups/broken").await.unwrap().is_none());
        assert_eq!(s.remove_unfinished("backups/").await.unwrap(), 0, "already aborted");

        // A run that died after CreateMultipartUpload.
        s.client.create_multipart_upload().bucket("drctl-test").key("run/1/backups/dead/0").send().await.unwrap();
        s.client.create_multipart_upload().bucket("drctl-test").key("run/1/other/live").send().await.unwrap();
        assert_eq!(s.remove_unfinished("backups/").await.unwrap(), 1);
        assert_eq!(open_uploads(&s).await, 1, "uploads outside the prefix are kept");
    }

    #[tokio::test]
    async fn dropped_upload_is_aborted_in_the_background() {
        let (_moto, s) = setup().await;
        // Capacity 1: once the 10th chunk is accepted, the upload has taken the 9th, so it has
        // finished handling the 8th: the multipart upload is created and its first part sent.
        let (tx, rx) = mpsc::channel(1);
        let (fed_tx, fed_rx) = tokio::sync::oneshot::channel();
        let chunk = Bytes::from(vec![7u8; 1 << 20]);
        let feeder = tokio::spawn(async move {
            for _ in 0..10 {
                tx.send(Ok(chunk.clone())).await.unwrap();
            }
            fed_tx.send(()).unwrap();
            // Keep the channel open so the upload is still running when it is dropped.
            std::future::pending::<()>().await;
        });
        // async_trait boxes the future, so it can be polled by reference and then really dropped.
        let mut upload = s.upload("backups/dropped", rx);
        tokio::select! {
            r = &mut upload => panic!("upload finished: {r:?}"),
            fed = fed_rx => fed.unwrap(),
        }
        assert_eq!(open_uploads(&s).await, 1);
        drop(upload);
        feeder.abort();
        let mut left = 1;
        for _ in 0..100 {
            left = open_uploads(&s).await;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(left, 0, "the dropped upload was not aborted");
        assert!(s.head("backups/dropped").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn missing_bucket_is_a_permanent_store_error_naming_it() {
        let moto = start_moto();
        let s = S3Store::new("s3://no-such-bucket/p", client(&moto), "no-such-bucket", "p");
        for err in [
            s.put("k", Bytes::from_static(b"x")).await.unwrap_err(),
            s.get("k").await.map(|_| ()).unwrap_err(),
            s.list("").await.map(|_| ()).unwrap_err(),
            s.now().await.map(|_| ()).unwrap_err(),
            // Its 404 must not read as "the key changed" or "the key exists".
            s.put_if_match("k", Bytes::from_static(b"x"), "\"0\"").await.map(|_| ()).unwrap_err(),
            s.put_if_absent("k", Bytes::from_static(b"x")).await.map(|_| ()).unwrap_err(),
        ] {
            let Error::Store { url, problem, transience } = &err else { panic!("{err:?}") };
            assert_eq!(url, "s3://no-such-bucket/p");
            assert_eq!(*transience, Transience::Permanent, "{err}");
            assert!(problem.contains("`no-such-bucket` does not exist"), "{problem}");
            assert!(!problem.contains("test"), "credentials leaked? {problem}");
        }
        // Every operation, HeadBucket's bodiless 404 included, says what is wrong and what to do.
        for err in [s.put("k", Bytes::from_static(b"x")).await.unwrap_err(), s.now().await.unwrap_err()] {
            assert_eq!(
                err.to_string(),
                "store s3://no-such-bucket/p: the bucket `no-such-bucket` does not exist (S3 NoSuchBucket)"
            );
            let hint = err.hint().unwrap();
            assert!(hint.contains("aws s3 mb s3://no-such-bucket") && hint.contains("[store] url"), "{hint}");
        }
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_temporary() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .force_path_style(true)
            .credentials_provider(Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI", None, None, "t"))
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        let s = S3Store::new("s3://b/p", aws_sdk_s3::Client::from_conf(conf), "b", "p");
        let err = s.get("k").await.unwrap_err();
        let Error::Store { transience, problem, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*transience, Transience::Temporary, "{err}");
        assert!(problem.starts_with("get s3://b/p/k: "), "{problem}");
        assert!(!problem.contains("AKIDEXAMPLE") && !problem.contains("wJalrXUtnFEMI"), "{problem}");
    }

    #[tokio::test]
    async fn now_is_the_servers_clock() {
        let (_moto, s) = setup().await;
        let server = s.now().await.unwrap();
        let local = SystemTime::now();
        let skew = local.duration_since(server).or_else(|e| Ok::<_, ()>(e.duration())).unwrap();
        assert!(skew < Duration::from_secs(60), "skew {skew:?}");
    }

    /// (algorithm, KMS key id) moto reports for `object_key`.
    async fn encryption_of(s: &S3Store, object_key: &str) -> (Option<String>, Option<String>) {
        let out = s.client.head_object().bucket(&s.bucket).key(object_key).send().await.unwrap();
        (out.server_side_encryption().map(|a| a.as_str().to_string()), out.ssekms_key_id().map(str::to_string))
    }

    #[tokio::test]
    async fn every_write_asks_for_the_configured_encryption() {
        let moto = start_moto();
        let c = client(&moto);
        c.create_bucket().bucket("drctl-sse").send().await.unwrap();
        let kms = Some(Sse::Kms { key_id: Some("alias/drctl-test".into()) });
        for (prefix, sse, want) in [
            ("aes", Some(Sse::Aes256), (Some("AES256"), None)),
            ("kms", kms, (Some("aws:kms"), Some("alias/drctl-test"))),
            ("none", None, (None, None)),
        ] {
            let s = S3Store::new(&format!("s3://drctl-sse/{prefix}"), c.clone(), "drctl-sse", prefix).with_sse(sse);
            s.put("a", Bytes::from_static(b"x")).await.unwrap();
            assert!(s.put_if_absent("b", Bytes::from_static(b"x")).await.unwrap());
            let b = s.get("b").await.unwrap().unwrap();
            // An overwrite carries it too: the new version is what is stored.
            assert!(s.put_if_match("b", Bytes::from_static(b"y"), &b.etag).await.unwrap());
            let (rx, _) = feed(1, None);
            s.upload("small", rx).await.unwrap();
            // 9 MiB: past the 8 MiB part size, so a multipart upload.
            let (rx, _) = feed(9, None);
            s.upload("big", rx).await.unwrap();
            let etag = s.get("big").await.unwrap().unwrap().etag;
            assert!(etag.trim_matches('"').ends_with("-2"), "multipart etag {etag}");
            let want = (want.0.map(str::to_string), want.1.map(str::to_string));
            for key in ["a", "b", "small", "big"] {
                assert_eq!(encryption_of(&s, &s.object_key(key)).await, want, "{prefix}/{key}");
            }
        }
    }

    /// The findings of `audit` by id.
    async fn audit(s: &S3Store) -> std::collections::BTreeMap<&'static str, Finding> {
        s.audit().await.into_iter().map(|f| (f.check, f)).collect()
    }

    #[tokio::test]
    async fn audit_passes_a_bucket_set_up_right_and_says_what_to_do_about_a_bare_one() {
        use aws_sdk_s3::types::{
            BucketVersioningStatus, PublicAccessBlockConfiguration, ServerSideEncryptionByDefault,
            ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
        };
        let (_moto, s) = setup().await;
        let bare = audit(&s).await;
        assert_eq!(
            bare.keys().copied().collect::<Vec<_>>(),
            ["bucket-encryption", "bucket-versioning", "store-private"]
        );
        assert!(bare.values().all(|f| !f.ok), "{bare:?}");
        assert!(bare["store-private"].detail.contains("no public-access block"), "{bare:?}");
        assert!(
            bare["store-private"].detail.contains("aws s3api put-public-access-block --bucket drctl-test"),
            "{bare:?}"
        );
        assert!(bare["bucket-encryption"].detail.contains("[store] sse"), "{bare:?}");
        assert!(bare["bucket-versioning"].detail.contains("never enabled"), "{bare:?}");
        assert!(bare["bucket-versioning"].detail.contains("Status=Enabled"), "{bare:?}");

        // drctl's own sse is enough for encryption.
        let with_sse =
            S3Store::new("s3://drctl-test/run/1", s.client.clone(), "drctl-test", "run/1").with_sse(Some(Sse::Aes256));
        let f = &audit(&with_sse).await["bucket-encryption"];
        assert!(f.ok && f.detail.contains("drctl asks for AES256"), "{f:?}");

        // Half a public-access block names what is off.
        let half = PublicAccessBlockConfiguration::builder().block_public_acls(true).ignore_public_acls(true).build();
        s.client
            .put_public_access_block()
            .bucket("drctl-test")
            .public_access_block_configuration(half)
            .send()
            .await
            .unwrap();
        let f = &audit(&s).await["store-private"];
        assert!(!f.ok && f.detail.contains("leaves BlockPublicPolicy, RestrictPublicBuckets off"), "{f:?}");

        let all = PublicAccessBlockConfiguration::builder()
            .block_public_acls(true)
            .ignore_public_acls(true)
            .block_public_policy(true)
            .restrict_public_buckets(true)
            .build();
        s.client
            .put_public_access_block()
            .bucket("drctl-test")
            .public_access_block_configuration(all)
            .send()
            .await
            .unwrap();
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                ServerSideEncryptionByDefault::builder().sse_algorithm(ServerSideEncryption::Aes256).build().unwrap(),
            )
            .build();
        let conf = ServerSideEncryptionConfiguration::builder().rules(rule).build().unwrap();
        s.client
            .put_bucket_encryption()
            .bucket("drctl-test")
            .server_side_encryption_configuration(conf)
            .send()
            .await
            .unwrap();
        let on = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
        s.client.put_bucket_versioning().bucket("drctl-test").versioning_configuration(on).send().await.unwrap();
        let good = audit(&s).await;
        assert!(good.values().all(|f| f.ok), "{good:?}");
        assert!(good["bucket-encryption"].detail.contains("default encryption AES256"), "{good:?}");

        let off = VersioningConfiguration::builder().status(BucketVersioningStatus::Suspended).build();
        s.client.put_bucket_versioning().bucket("drctl-test").versioning_configuration(off).send().await.unwrap();
        let f = &audit(&s).await["bucket-versioning"];
        assert!(!f.ok && f.detail.contains("versioning is Suspended"), "{f:?}");

        // A missing bucket fails every finding, saying so.
        let gone = S3Store::new("s3://no-such-bucket/p", s.client.clone(), "no-such-bucket", "p");
        for f in gone.audit().await {
            assert!(!f.ok && f.detail.contains("`no-such-bucket` does not exist"), "{f:?}");
        }
    }

    #[test]
    fn an_old_or_missing_moto_is_refused_in_one_line_naming_the_fix() {
        for old in ["5.2.1", "5.1.22", "4.2.14"] {
            let line = moto_version_problem(Some(old)).unwrap();
            assert!(line.contains(old) && line.contains("pip install 'moto[server]==5.2.5'"), "{line}");
            assert!(!line.contains('\n'), "{line}");
        }
        assert!(moto_version_problem(None).unwrap().contains("not installed"));
        for ok in ["5.2.5", "5.2.6.dev0", "5.3.0rc1", "6.0.0"] {
            assert_eq!(moto_version_problem(Some(ok)), None, "{ok}");
        }
    }

    #[test]
    fn http_dates_parse() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        let t = parse_http_date("Thu, 29 Feb 2024 23:59:59 GMT").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1_709_251_199);
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
        for bad in ["", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "Sun, 06 Foo 1994 08:49:37 GMT"] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }
}
