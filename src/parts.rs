//! Compression workers: encoded TSV blocks in, gzipped parts out, on all cores.
//!
//! ```text
//! source --Block (whole records, ~1 MiB)--> N workers (threads) --chunks--> uploader tasks
//! ```
//! Each worker owns one open part at a time and appends every block it receives to it as
//! one gzip member; when the part's compressed size reaches `part_size` it is finished and
//! a new one is opened. Blocks hold whole records, so every part ends on a record boundary.
//! Row order across parts is not preserved (COPY does not need it). Compressed output is
//! shipped in `chunk_size` pieces; at most `in_flight` chunks upload at once, and a worker
//! waits for a slot, so memory stays near `chunk_size × (in_flight + workers)`.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest as _, Sha256};

use crate::logging::Progress;
use crate::sink::{part_name, Dest, OpenPart, Uploads};

/// Encoded records on their way to a compression worker.
#[derive(Debug, Default)]
pub struct Block {
    /// Whole TSV records.
    pub data: Vec<u8>,
    /// How many records `data` holds.
    pub rows: u64,
    /// Its share of the block byte budget, given back when the block is dropped.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Settings for the workers.
#[derive(Clone, Debug)]
pub struct PartsConfig {
    /// Rotate parts at this compressed size.
    pub part_size: u64,
    /// Multipart chunk size.
    pub chunk_size: usize,
    /// gzip level.
    pub level: u32,
    /// Worker threads.
    pub threads: usize,
    /// Chunks uploading at once.
    pub in_flight: usize,
}

/// A part that a worker finished (or was writing when it stopped).
pub struct PartResult {
    /// Part index (its name is `part-{index:05}.tsv.gz`).
    pub index: usize,
    /// Records in the part.
    pub rows: u64,
    /// Uncompressed bytes.
    pub raw_bytes: u64,
    /// Compressed bytes (the object's size).
    pub compressed_bytes: u64,
    /// sha256 of the compressed bytes, hex.
    pub sha256: String,
    /// Whether the gzip member was finished (false: the worker stopped mid-part).
    pub finished: bool,
    /// The pending output, to commit or abort.
    pub out: OpenPart,
}

/// What a worker hands back: its parts (finished or not) and the error that stopped it.
pub struct WorkerOutput {
    /// Every part the worker opened.
    pub parts: Vec<PartResult>,
    /// Why it stopped early, if it did.
    pub error: Option<anyhow::Error>,
}

struct Current {
    index: usize,
    encoder: GzEncoder<Vec<u8>>,
    hasher: Sha256,
    rows: u64,
    raw: u64,
    shipped: u64,
    next_chunk: i32,
    out: OpenPart,
    /// The buffer slot of the chunk being filled (see [`Workers::buffers`]).
    buffer: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Room past `chunk_size` in a chunk buffer: one block's compressed output, so that the
/// buffer never reallocates (and doubles) while the last block of a chunk is written.
const HEADROOM: usize = (1 << 20) + (256 << 10);

/// Shared state of a set of workers.
pub struct Workers {
    cfg: PartsConfig,
    dest: Arc<Dest>,
    next_index: Arc<AtomicUsize>,
    /// Uploads in flight (`--uploads-in-flight`).
    slots: Arc<tokio::sync::Semaphore>,
    /// Chunk buffers in existence: one per worker being filled plus those uploading or
    /// waiting to upload. A worker takes one before it starts filling a chunk, so memory
    /// stays at chunk × (uploads in flight + threads) however slow S3 is.
    buffers: Arc<tokio::sync::Semaphore>,
    rt: tokio::runtime::Handle,
    progress: Arc<Progress>,
    /// The chunk uploads of every part: running count and first failure (see [`Uploads`]).
    uploads: Arc<Uploads>,
}

impl Workers {
    fn first_failure(&self) -> Option<crate::error::S3Error> {
        self.uploads.chunk_failure()
    }

    /// Prepares workers writing to `dest`.
    pub fn new(cfg: PartsConfig, dest: Arc<Dest>, progress: Arc<Progress>) -> Self {
        let slots = Arc::new(tokio::sync::Semaphore::new(cfg.in_flight.max(1)));
        let buffers = Arc::new(tokio::sync::Semaphore::new(
            cfg.in_flight.max(1) + cfg.threads.max(1),
        ));
        Self {
            cfg,
            dest,
            next_index: Arc::new(AtomicUsize::new(0)),
            slots,
            buffers,
            rt: tokio::runtime::Handle::current(),
            progress,
            uploads: Arc::default(),
        }
    }

    /// Starts the worker threads reading from `rx`. Each thread closes `rx` when it fails,
    /// so that the source's next send fails and reading stops.
    pub fn spawn(
        &self,
        rx: &async_channel::Receiver<Block>,
    ) -> anyhow::Result<Vec<std::thread::JoinHandle<WorkerOutput>>> {
        let mut handles = Vec::new();
        for n in 0..self.cfg.threads.max(1) {
            let w = self.clone_shared();
            let rx = rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("ductwork-gzip-{n}"))
                .spawn(move || {
                    let out = w.run(&rx);
                    if out.error.is_some() {
                        rx.close();
                    }
                    out
                })
                .context("starting a compression thread")?;
            handles.push(h);
        }
        Ok(handles)
    }

    /// Another handle on the same workers (shared counters, slots and destination).
    pub fn clone_shared(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            dest: Arc::clone(&self.dest),
            next_index: Arc::clone(&self.next_index),
            slots: Arc::clone(&self.slots),
            buffers: Arc::clone(&self.buffers),
            rt: self.rt.clone(),
            progress: Arc::clone(&self.progress),
            uploads: Arc::clone(&self.uploads),
        }
    }

    /// Writes one part holding no records (for an empty result, or padding). Blocks: call
    /// it from a blocking thread, never from an async task.
    pub fn empty_part(&self) -> anyhow::Result<PartResult> {
        let mut cur = self.open()?;
        let r = self.finish(&mut cur);
        let part = Self::result(cur, true);
        r.map(|()| part)
    }

    /// The number of parts opened so far.
    pub fn parts_opened(&self) -> usize {
        self.next_index.load(Ordering::SeqCst)
    }

    fn run(&self, rx: &async_channel::Receiver<Block>) -> WorkerOutput {
        let mut parts = Vec::new();
        let mut cur: Option<Current> = None;
        let error = loop {
            let Ok(block) = rx.recv_blocking() else {
                break None;
            };
            if cur.is_none() {
                match self.open() {
                    Ok(c) => cur = Some(c),
                    Err(e) => break Some(e),
                }
            }
            let Some(c) = cur.as_mut() else { break None };
            if let Err(e) = self.append(c, &block) {
                break Some(e);
            }
            if c.shipped + c.encoder.get_ref().len() as u64 >= self.cfg.part_size {
                let r = self.finish(c);
                if let Some(done) = cur.take() {
                    parts.push(Self::result(done, r.is_ok()));
                }
                if let Err(e) = r {
                    break Some(e);
                }
            }
        };
        if let Some(mut c) = cur.take() {
            let mut error = error;
            let ok = if error.is_none() {
                match self.finish(&mut c) {
                    Ok(()) => true,
                    Err(e) => {
                        error = Some(e);
                        false
                    }
                }
            } else {
                false
            };
            parts.push(Self::result(c, ok));
            return WorkerOutput { parts, error };
        }
        WorkerOutput { parts, error }
    }

    fn open(&self) -> anyhow::Result<Current> {
        let index = self.next_index.fetch_add(1, Ordering::SeqCst);
        let name = part_name(index);
        let out = self.dest.begin_part(&name, &self.rt, &self.uploads)?;
        tracing::debug!(part = %name, "Part started.");
        let buffer = self.take_buffer()?;
        Ok(Current {
            index,
            encoder: GzEncoder::new(
                Vec::with_capacity(self.cfg.chunk_size + HEADROOM),
                Compression::new(self.cfg.level),
            ),
            hasher: Sha256::new(),
            rows: 0,
            raw: 0,
            shipped: 0,
            next_chunk: 1,
            out,
            buffer: Some(buffer),
        })
    }

    /// Waits for a free chunk buffer slot: the backpressure that bounds memory.
    fn take_buffer(&self) -> anyhow::Result<tokio::sync::OwnedSemaphorePermit> {
        self.rt
            .block_on(Arc::clone(&self.buffers).acquire_owned())
            .context("chunk buffer slots closed")
    }

    fn append(&self, c: &mut Current, block: &Block) -> anyhow::Result<()> {
        let before = c.encoder.get_ref().len();
        c.encoder
            .write_all(&block.data)
            .context("compressing a block")?;
        c.rows += block.rows;
        c.raw += block.data.len() as u64;
        let grown = c.encoder.get_ref().len().saturating_sub(before) as u64;
        self.progress.out_bytes.fetch_add(grown, Ordering::Relaxed);
        if c.encoder.get_ref().len() >= self.cfg.chunk_size {
            let data = std::mem::take(c.encoder.get_mut());
            let slot = c.buffer.take();
            self.ship(c, data, slot)?;
            // Allocate the next chunk only once a buffer slot is free.
            c.buffer = Some(self.take_buffer()?);
            *c.encoder.get_mut() = Vec::with_capacity(self.cfg.chunk_size + HEADROOM);
        }
        Ok(())
    }

    fn finish(&self, c: &mut Current) -> anyhow::Result<()> {
        c.encoder.try_finish().context("finishing a gzip member")?;
        let data = std::mem::take(c.encoder.get_mut());
        // An empty part still gets its (header-only) chunk: S3 needs at least one.
        let slot = c.buffer.take();
        if !data.is_empty() || c.next_chunk == 1 {
            self.ship(c, data, slot)?;
        }
        tracing::debug!(
            part = c.index,
            rows = c.rows,
            bytes = c.shipped,
            "Part finished."
        );
        Ok(())
    }

    fn ship(
        &self,
        c: &mut Current,
        data: Vec<u8>,
        buffer: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> anyhow::Result<()> {
        c.hasher.update(&data);
        c.shipped += data.len() as u64;
        let number = c.next_chunk;
        c.next_chunk += 1;
        match &mut c.out {
            OpenPart::S3 { upload, chunks, .. } => {
                if number > 10_000 {
                    anyhow::bail!(
                        "{} would need more than 10,000 chunks; raise --upload-chunk or lower --part-size",
                        upload.uri
                    );
                }
                // Fail fast: once any chunk failed (after the SDK's retries), stop compressing.
                if let Some(e) = self.first_failure() {
                    return Err(e.into());
                }
                let up = Arc::clone(upload);
                let bytes = Bytes::from(data);
                let uploads = Arc::clone(&self.uploads);
                let slots = Arc::clone(&self.slots);
                // Counted before the task exists, so that a commit waiting for every chunk
                // to settle cannot miss it.
                let running = uploads.chunk_started();
                chunks.push(self.rt.spawn(async move {
                    // At most `in_flight` chunks upload at once; the others wait here, each
                    // holding its buffer slot.
                    let _uploading = slots.acquire_owned().await;
                    let r = up.upload_chunk(number, bytes).await;
                    drop(buffer);
                    running.done(r.as_ref().err());
                    r
                }));
            }
            OpenPart::Local { file, tmp_path, .. } => {
                if let Some(f) = file.as_mut() {
                    f.write_all(&data)
                        .with_context(|| format!("writing {}", tmp_path.display()))?;
                }
                drop(buffer);
            }
        }
        Ok(())
    }

    fn result(c: Current, finished: bool) -> PartResult {
        PartResult {
            index: c.index,
            rows: c.rows,
            raw_bytes: c.raw,
            compressed_bytes: c.shipped,
            sha256: hex::encode(c.hasher.finalize()),
            finished,
            out: c.out,
        }
    }
}
