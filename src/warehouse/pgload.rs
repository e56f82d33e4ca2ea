//! The PostgreSQL warehouse loader: the manifest's parts, streamed from S3 (or disk),
//! gunzipped and decoded by Redshift's ESCAPE rules, re-encoded in PostgreSQL's COPY text
//! format and fed to one `COPY … FROM STDIN`.
//!
//! Each part is decoded on a blocking thread while the previous chunk is being sent, so the
//! one PostgreSQL backend (the bottleneck of any load) is kept busy. Memory is bounded by the
//! channel: a few 256 KiB chunks.

use std::io::BufReader;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use futures::SinkExt as _;

use crate::manifest::Entry;
use crate::store::Store;
use crate::tsv::{Decoder, Record};

/// How one field is re-encoded for the target column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Text form as is.
    Text,
    /// bytea: the extract wrote hex; PostgreSQL wants `\x` + hex.
    HexToBytea,
}

/// Appends one record in PostgreSQL COPY text format (LF-terminated).
pub fn encode_pg_record(rec: &Record, targets: &[Target], out: &mut Vec<u8>) {
    for (i, field) in rec.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match field {
            None => out.extend_from_slice(b"\\N"),
            Some(v) => {
                if targets.get(i) == Some(&Target::HexToBytea) {
                    out.extend_from_slice(b"\\\\x");
                }
                escape_pg(v, out);
            }
        }
    }
    out.push(b'\n');
}

fn escape_pg(v: &[u8], out: &mut Vec<u8>) {
    let mut start = 0;
    for (i, &b) in v.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        out.extend_from_slice(&v[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&v[start..]);
}

/// Which lines of the COPY stream came from which part, to name the part of a failing line.
#[derive(Debug, Default)]
pub struct LineMap {
    parts: Vec<(String, u64, u64)>,
}

impl LineMap {
    /// The part and its own 1-based line for a 1-based line of the whole COPY stream.
    pub fn locate(&self, line: u64) -> Option<(&str, u64)> {
        self.parts
            .iter()
            .find(|(_, first, count)| line >= *first && line < first + count)
            .map(|(url, first, _)| (url.as_str(), line - first + 1))
    }
}

/// What a COPY of parts did.
#[derive(Debug)]
pub struct CopyOutcome {
    /// Rows PostgreSQL reported (`COPY n`).
    pub rows: u64,
    /// Compressed bytes read.
    pub bytes_read: u64,
}

const CHUNK: usize = 256 << 10;

/// Streams every entry into `COPY … FROM STDIN` on `client` (inside the caller's transaction).
pub async fn copy_parts(
    client: &tokio_postgres::Client,
    copy_sql: &str,
    store: Arc<Store>,
    entries: Vec<Entry>,
    targets: Arc<Vec<Target>>,
    lines: Arc<Mutex<LineMap>>,
) -> anyhow::Result<CopyOutcome> {
    let sink = client
        .copy_in::<_, Bytes>(copy_sql)
        .await
        .context("starting COPY FROM STDIN")?;
    let mut sink = std::pin::pin!(sink);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let producer = tokio::spawn(produce(store, entries, targets, lines, tx));
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = sink.send(chunk).await {
            producer.abort();
            return Err(anyhow::Error::new(e).context("sending COPY data"));
        }
    }
    let bytes_read = match producer.await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(e),
        Err(e) => anyhow::bail!("the decoding task failed: {e}"),
    };
    let rows = sink.as_mut().finish().await.context("finishing COPY")?;
    Ok(CopyOutcome { rows, bytes_read })
}

async fn produce(
    store: Arc<Store>,
    entries: Vec<Entry>,
    targets: Arc<Vec<Target>>,
    lines: Arc<Mutex<LineMap>>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> anyhow::Result<u64> {
    let mut next_line = 1u64;
    let mut bytes_read = 0u64;
    for entry in entries {
        let (reader, len) = store
            .open(&entry.url)
            .await
            .with_context(|| format!("opening part {}", entry.url))?;
        if let Some(expected) = entry.meta.as_ref().and_then(|m| m.content_length) {
            if expected != len {
                anyhow::bail!(
                    "part {} is {len} bytes but the manifest says {expected}",
                    entry.url
                );
            }
        }
        bytes_read += len;
        let tx2 = tx.clone();
        let targets2 = Arc::clone(&targets);
        let url = entry.url.clone();
        let records = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
            let bridge = tokio_util::io::SyncIoBridge::new(reader);
            let gz = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(256 << 10, bridge));
            let mut dec =
                Decoder::new(BufReader::with_capacity(256 << 10, gz)).with_columns(targets2.len());
            let mut rec = Record::new();
            let mut buf = Vec::with_capacity(CHUNK + (64 << 10));
            while dec
                .next_record(&mut rec)
                .with_context(|| format!("decoding part {url}"))?
            {
                encode_pg_record(&rec, &targets2, &mut buf);
                if buf.len() >= CHUNK {
                    let chunk = Bytes::from(std::mem::replace(
                        &mut buf,
                        Vec::with_capacity(CHUNK + (64 << 10)),
                    ));
                    if tx2.blocking_send(chunk).is_err() {
                        anyhow::bail!("the COPY stopped");
                    }
                }
            }
            if !buf.is_empty() && tx2.blocking_send(Bytes::from(buf)).is_err() {
                anyhow::bail!("the COPY stopped");
            }
            Ok(dec.records_read())
        })
        .await
        .context("the decoding thread failed")??;
        let mut map = lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.parts.push((entry.url.clone(), next_line, records));
        next_line += records;
    }
    Ok(bytes_read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_encodes_redshift_fields_for_postgres_copy() {
        let mut tsv = Vec::new();
        crate::tsv::push_text(
            &mut tsv,
            b"a\tb\\c\nd\re",
            Default::default(),
            &mut Default::default(),
        )
        .unwrap();
        tsv.push(b'\t');
        crate::tsv::push_null(&mut tsv);
        tsv.push(b'\t');
        tsv.extend_from_slice(b"00ff");
        tsv.push(b'\n');
        let mut dec = Decoder::new(&tsv[..]);
        let mut rec = Record::new();
        assert!(dec.next_record(&mut rec).unwrap());
        let mut out = Vec::new();
        encode_pg_record(
            &rec,
            &[Target::Text, Target::Text, Target::HexToBytea],
            &mut out,
        );
        assert_eq!(out, b"a\\tb\\\\c\\nd\\re\t\\N\t\\\\x00ff\n");
    }

    #[test]
    fn maps_stream_lines_to_parts() {
        let m = LineMap {
            parts: vec![
                ("p0".into(), 1, 3),
                ("p1".into(), 4, 0),
                ("p2".into(), 4, 5),
            ],
        };
        assert_eq!(m.locate(2), Some(("p0", 2)));
        assert_eq!(m.locate(4), Some(("p2", 1)));
        assert_eq!(m.locate(9), None);
    }
}
