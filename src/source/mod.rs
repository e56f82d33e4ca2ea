//! Sources: PostgreSQL and MySQL/MariaDB, each streaming rows as Redshift TSV records into a
//! [`BlockWriter`]. A source never collects a result set: it pushes each row and waits when
//! the compressors are busy, so the database socket takes the pressure.

pub mod mysql;
pub mod postgres;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{SpecialArg, ZeroDatesArg};
use crate::config::{ConnSpec, DbKind};
use crate::logging::Progress;
use crate::parts::Block;
use crate::tsv::CellPolicy;

/// A result column: its name and the source's type name (recorded in `ductwork.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnInfo {
    /// Column name as the source reports it.
    pub name: String,
    /// The source type, e.g. `timestamptz`, `varchar`, `bigint unsigned`.
    pub source_type: String,
}

/// How cells are encoded.
#[derive(Clone, Debug)]
pub struct SourceOpts {
    /// NUL and invalid UTF-8 handling.
    pub cell: CellPolicy,
    /// MySQL zero dates.
    pub zero_dates: ZeroDatesArg,
    /// NaN/Infinity, infinite and BC timestamps.
    pub special: SpecialArg,
    /// `application_name` / connection attribute, so operators can find the session.
    pub app_name: String,
    /// Value of the shard column to append, if any.
    pub shard_value: Option<String>,
    /// Longest wait for the next row before the read is declared stalled.
    pub read_timeout: Duration,
    /// PostgreSQL: a snapshot exported by the split planner, imported before reading.
    pub snapshot: Option<String>,
}

/// What a source counted, for the summary.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SourceStats {
    /// Rows read and encoded.
    pub rows: u64,
    /// NUL bytes replaced (`--nul replace`).
    pub nul_replaced: u64,
    /// NUL bytes stripped (`--nul strip`).
    pub nul_stripped: u64,
    /// Invalid UTF-8 sequences replaced.
    pub invalid_utf8_replaced: u64,
    /// MySQL zero dates written as NULL.
    pub zero_dates_nulled: u64,
    /// NaN/Infinity/BC values written as NULL.
    pub special_values_nulled: u64,
}

impl SourceStats {
    /// Adds another source's counts (sharded extracts).
    pub fn add(&mut self, o: &SourceStats) {
        self.rows += o.rows;
        self.nul_replaced += o.nul_replaced;
        self.nul_stripped += o.nul_stripped;
        self.invalid_utf8_replaced += o.invalid_utf8_replaced;
        self.zero_dates_nulled += o.zero_dates_nulled;
        self.special_values_nulled += o.special_values_nulled;
    }
}

/// Target size of a block handed to the compressors.
pub const BLOCK_SIZE: usize = 1 << 20;

/// The bytes of blocks sent and not yet compressed, shared by every writer of an extract:
/// with rows of several MiB a block holds one row, and a bound in blocks alone would let
/// megabytes pile up in the channel (RELIABILITY F29). Counted in KiB.
#[derive(Clone, Debug)]
pub struct BlockBudget {
    kib: Arc<tokio::sync::Semaphore>,
    cap_kib: u32,
}

impl BlockBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        let cap_kib = u32::try_from((bytes >> 10).max(1)).unwrap_or(u32::MAX);
        Self {
            kib: Arc::new(tokio::sync::Semaphore::new(cap_kib as usize)),
            cap_kib,
        }
    }

    /// Waits until a block of `len` bytes fits (a block larger than the whole budget waits
    /// until it is alone).
    async fn reserve(&self, len: usize) -> anyhow::Result<tokio::sync::OwnedSemaphorePermit> {
        let kib = u32::try_from(len.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.cap_kib);
        Arc::clone(&self.kib)
            .acquire_many_owned(kib)
            .await
            .map_err(|_| anyhow::anyhow!("the compression stage stopped"))
    }
}

/// Accumulates whole records into blocks and sends them to the compression workers.
pub struct BlockWriter {
    tx: async_channel::Sender<Block>,
    block: Block,
    progress: Arc<Progress>,
    budget: BlockBudget,
}

fn empty_block() -> Block {
    Block {
        data: Vec::with_capacity(BLOCK_SIZE + (64 << 10)),
        rows: 0,
        permit: None,
    }
}

impl BlockWriter {
    /// A writer sending to `tx`, within `budget`.
    pub fn new(
        tx: async_channel::Sender<Block>,
        progress: Arc<Progress>,
        budget: BlockBudget,
    ) -> Self {
        Self {
            tx,
            block: empty_block(),
            progress,
            budget,
        }
    }

    /// The buffer the current record is appended to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.block.data
    }

    /// Ends the current record (appends LF) and sends the block when it is full.
    pub async fn end_record(&mut self) -> anyhow::Result<()> {
        self.block.data.push(b'\n');
        self.block.rows += 1;
        if self.block.data.len() >= BLOCK_SIZE {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what is buffered.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.block.rows == 0 {
            return Ok(());
        }
        let mut full = std::mem::replace(&mut self.block, empty_block());
        // A block of one wide row grew by doubling: give the slack back before it waits.
        if full.data.capacity() > full.data.len() + full.data.len() / 4 {
            full.data.shrink_to_fit();
        }
        full.permit = Some(self.budget.reserve(full.data.len()).await?);
        self.progress.rows.fetch_add(full.rows, Ordering::Relaxed);
        self.progress
            .raw_bytes
            .fetch_add(full.data.len() as u64, Ordering::Relaxed);
        self.tx
            .send(full)
            .await
            .map_err(|_| anyhow::anyhow!("the compression stage stopped"))?;
        Ok(())
    }
}

/// Runs `query` on a source and streams every row into `out`.
pub async fn extract(
    spec: &ConnSpec,
    query: &str,
    opts: &SourceOpts,
    out: &mut BlockWriter,
) -> anyhow::Result<(Vec<ColumnInfo>, SourceStats)> {
    match spec.kind {
        DbKind::Postgres | DbKind::Redshift => postgres::extract(spec, query, opts, out).await,
        DbKind::Mysql => mysql::extract(spec, query, opts, out).await,
    }
}

/// A short, printable rendering of a row's first column, for error messages.
pub fn key_text(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut t: String = s.chars().take(64).collect();
    if s.chars().count() > 64 {
        t.push('…');
    }
    t
}
