//! The TSV cell format: the one place that encodes and decodes the bytes Redshift's `COPY` reads.
//!
//! Every part file ductwork writes is loaded with
//! `COPY t FROM '…/manifest.json' MANIFEST GZIP DELIMITER '\t' ESCAPE NULL AS '\001'`
//! ([`NULL_AS_SQL`]), and read back by ductwork's own PostgreSQL loader through [`Decoder`].
//! Encoder and decoder live together so that the property test in `tests/tsv_property.rs` can
//! prove that any row survives the round trip (SPEC.md §5, RELIABILITY.md §4).
//!
//! # Format
//!
//! - One record per line: fields are separated by TAB (0x09) and every record ends with LF (0x0A),
//!   including the last one, so a file cut short is detectable ([`DecodeError::Truncated`]).
//! - With `ESCAPE`, Redshift takes the byte after a backslash literally and expands no sequences:
//!   `\n` loads as the letter `n`, not a line feed
//!   ([ESCAPE](https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-conversion.html#copy-escape),
//!   [examples](https://docs.aws.amazon.com/redshift/latest/dg/r_COPY_command_examples.html)).
//!   So [`escape_into`] writes a backslash before each literal backslash, TAB, LF and CR byte,
//!   and before the NULL marker byte, and keeps the byte itself raw. PostgreSQL's `\n`, `\t`,
//!   `\r` and octal sequences are never written. PostgreSQL's text `COPY FROM` reads these bytes
//!   the same way: a backslash there is followed only by one of those five bytes, never by a
//!   letter, digit or `.`, and PostgreSQL takes such a byte literally. So one encoding serves both
//!   warehouses.
//! - SQL NULL is the field [`NULL_MARKER`], the single control byte 0x01, declared in `COPY` as
//!   `NULL AS '\001'`
//!   ([NULL AS](https://docs.aws.amazon.com/redshift/latest/dg/copy-parameters-data-conversion.html#copy-null-as)).
//!   Redshift's default marker `\N` is not used: its docs say that under `ESCAPE` the text `\\N`
//!   and the marker `\N` load the same. Data never holds the marker byte unescaped (so a raw
//!   field equal to the marker is always a NULL, whatever the field's length), and a text
//!   value that *is* the marker byte is refused ([`CellError::EqualsNullMarker`]) because it is
//!   not yet known whether Redshift compares `NULL AS` before or after un-escaping
//!   (RELIABILITY.md §7). The empty string is an empty field; whitespace is kept as it is.
//! - NUL (0x00) cannot be represented: Redshift treats it as a record terminator and fails the
//!   load ([preparing input data](https://docs.aws.amazon.com/redshift/latest/dg/t_preparing-input-data.html)).
//!   It is an error unless [`NulPolicy`] says to replace or strip it, counted in [`CellStats`].
//! - Text must be valid UTF-8 (Redshift loads only UTF-8 of up to four bytes per character):
//!   an error unless [`Utf8Policy::Replace`] substitutes U+FFFD, counted.
//!
//! The encoder functions are pure and allocation-free on the fast path; they append to a
//! caller-owned buffer that the extractor compresses and uploads.

use std::io::{self, BufRead};

use memchr::{memchr, memchr2, memchr3};

/// The bytes that stand for SQL NULL in a field: the single control byte SOH (0x01).
///
/// Ordinary text never holds it, and the encoder escapes it whenever data does, so a raw
/// field equal to it can only be a NULL.
pub const NULL_MARKER: &[u8] = b"\x01";

/// How `COPY … NULL AS '<marker>'` spells [`NULL_MARKER`]: Redshift accepts octal escapes there.
pub const NULL_AS_SQL: &str = "\\001";

/// The field separator, declared as `DELIMITER '\t'`.
pub const FIELD_SEP: u8 = b'\t';

/// The record terminator.
pub const RECORD_END: u8 = b'\n';

/// The escape byte of Redshift's `ESCAPE` option.
pub const ESCAPE: u8 = b'\\';

/// The one byte of [`NULL_MARKER`], which data escapes.
const MARKER_BYTE: u8 = NULL_MARKER[0];

/// The character written in place of a NUL byte or an invalid UTF-8 sequence when the policy
/// says to replace it.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

// The decoder recognises a NULL as "raw field bytes equal the marker and no escape was used",
// which is only right if the marker holds no byte that the format itself interprets.
const _: () = {
    let mut i = 0;
    while i < NULL_MARKER.len() {
        let b = NULL_MARKER[i];
        assert!(b != ESCAPE && b != FIELD_SEP && b != RECORD_END && b != 0);
        i += 1;
    }
    // escape_into escapes the marker's one byte only.
    assert!(NULL_MARKER.len() == 1);
};

/// Which bytes [`escape_into`] prefixes with a backslash: backslash, TAB, LF, CR and the NULL
/// marker byte.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    table[ESCAPE as usize] = true;
    table[FIELD_SEP as usize] = true;
    table[RECORD_END as usize] = true;
    table[b'\r' as usize] = true;
    table[MARKER_BYTE as usize] = true;
    table
};

/// Whether `byte` is written with a backslash before it: `\`, TAB, LF, CR or 0x01.
#[inline]
pub fn needs_escape(byte: u8) -> bool {
    NEEDS_ESCAPE[usize::from(byte)]
}

/// What to do with a NUL byte in text, which no `COPY` format can carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NulPolicy {
    /// Fail the cell with [`CellError::Nul`] (the default: never silent).
    #[default]
    Error,
    /// Write U+FFFD in place of each NUL byte and count it in [`CellStats::nul_replaced`].
    Replace,
    /// Drop each NUL byte and count it in [`CellStats::nul_stripped`].
    Strip,
}

/// What to do with bytes that are not valid UTF-8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Utf8Policy {
    /// Fail the cell with [`CellError::InvalidUtf8`] (the default: never silent).
    #[default]
    Error,
    /// Write U+FFFD for each maximal invalid sequence (as `String::from_utf8_lossy` does) and
    /// count it in [`CellStats::utf8_replaced`].
    Replace,
}

/// The data-repair choices for one text column; the default repairs nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct CellPolicy {
    /// What to do with NUL bytes.
    pub nul: NulPolicy,
    /// What to do with invalid UTF-8.
    pub utf8: Utf8Policy,
}

/// Counts of repairs made under a [`CellPolicy`], for the run summary.
///
/// [`push_text`] adds to it only when the cell succeeds, so a failed cell counts nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CellStats {
    /// NUL bytes written as U+FFFD.
    pub nul_replaced: u64,
    /// NUL bytes dropped.
    pub nul_stripped: u64,
    /// Invalid UTF-8 sequences written as U+FFFD.
    pub utf8_replaced: u64,
}

impl CellStats {
    /// Adds another set of counts, e.g. from a parallel worker.
    pub fn merge(&mut self, other: &CellStats) {
        self.nul_replaced += other.nul_replaced;
        self.nul_stripped += other.nul_stripped;
        self.utf8_replaced += other.utf8_replaced;
    }

    /// Whether no repair was made.
    pub fn is_zero(&self) -> bool {
        *self == CellStats::default()
    }
}

/// Why a text cell cannot be written. Offsets are byte offsets into the value as given.
///
/// The caller adds table, column and key (RELIABILITY.md §4: never silent).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CellError {
    /// The value holds a NUL byte and the policy is [`NulPolicy::Error`].
    #[error("text holds a NUL byte at offset {offset}")]
    Nul {
        /// Byte offset of the first NUL.
        offset: usize,
    },
    /// The value is not valid UTF-8 and the policy is [`Utf8Policy::Error`].
    #[error("text holds invalid UTF-8 at offset {offset}")]
    InvalidUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The value (after any repair) is exactly [`NULL_MARKER`], which might load as NULL.
    #[error("text equals the NULL marker (the single byte 0x01) and could load as NULL")]
    EqualsNullMarker,
}

/// Appends `value` with a backslash before each byte for which [`needs_escape`] is true.
///
/// No checks: the caller has made sure the value is valid UTF-8, holds no NUL and is not the
/// NULL marker ([`push_text`] does all of that). Runs between special bytes are copied whole;
/// the special bytes are found with `memchr` (SIMD), so text without them costs about two scans
/// and a copy.
pub fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    out.reserve(value.len());
    // Two searchers because memchr offers at most three needles; each keeps its next hit, so
    // every byte is scanned once by each of them however the hits interleave.
    let mut next_a = memchr3(ESCAPE, FIELD_SEP, RECORD_END, value);
    let mut next_b = memchr2(b'\r', MARKER_BYTE, value);
    let mut run_start = 0;
    loop {
        let at = match (next_a, next_b) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => break,
        };
        out.extend_from_slice(&value[run_start..at]);
        out.push(ESCAPE);
        // The special byte itself starts the next run, so it is copied with it.
        run_start = at;
        let after = at + 1;
        let rest = &value[after..];
        if next_a == Some(at) {
            next_a = memchr3(ESCAPE, FIELD_SEP, RECORD_END, rest).map(|i| i + after);
        } else {
            next_b = memchr2(b'\r', MARKER_BYTE, rest).map(|i| i + after);
        }
    }
    out.extend_from_slice(&value[run_start..]);
}

/// Appends one text field: validates UTF-8 and NUL under `policy`, refuses the NULL marker,
/// then escapes.
///
/// On error nothing is appended and `stats` is unchanged. Repairs made under the policy are
/// added to `stats` only when the cell succeeds.
pub fn push_text(
    out: &mut Vec<u8>,
    value: &[u8],
    policy: CellPolicy,
    stats: &mut CellStats,
) -> Result<(), CellError> {
    if std::str::from_utf8(value).is_ok() && memchr(0, value).is_none() {
        if value == NULL_MARKER {
            return Err(CellError::EqualsNullMarker);
        }
        escape_into(out, value);
        return Ok(());
    }
    // Rare path: the value needs repair (or fails). A repaired copy is built once.
    let mut local = CellStats::default();
    let repaired = repair(value, policy, &mut local)?;
    if repaired == NULL_MARKER {
        // E.g. "\x01\x00" with NUL stripping.
        return Err(CellError::EqualsNullMarker);
    }
    escape_into(out, &repaired);
    stats.merge(&local);
    Ok(())
}

/// Returns `value` with NUL bytes and invalid UTF-8 handled by `policy`, or the first error in
/// byte order.
fn repair(value: &[u8], policy: CellPolicy, stats: &mut CellStats) -> Result<Vec<u8>, CellError> {
    let mut out = Vec::with_capacity(value.len() + REPLACEMENT.len());
    let mut offset = 0;
    for chunk in value.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        let mut run_start = 0;
        for nul in memchr::memchr_iter(0, valid) {
            out.extend_from_slice(&valid[run_start..nul]);
            run_start = nul + 1;
            match policy.nul {
                NulPolicy::Error => {
                    return Err(CellError::Nul {
                        offset: offset + nul,
                    })
                }
                NulPolicy::Replace => {
                    out.extend_from_slice(REPLACEMENT);
                    stats.nul_replaced += 1;
                }
                NulPolicy::Strip => stats.nul_stripped += 1,
            }
        }
        out.extend_from_slice(&valid[run_start..]);
        offset += valid.len();
        let invalid = chunk.invalid();
        if !invalid.is_empty() {
            match policy.utf8 {
                Utf8Policy::Error => return Err(CellError::InvalidUtf8 { offset }),
                Utf8Policy::Replace => {
                    out.extend_from_slice(REPLACEMENT);
                    stats.utf8_replaced += 1;
                }
            }
            offset += invalid.len();
        }
    }
    Ok(out)
}

/// Appends a SQL NULL field ([`NULL_MARKER`]).
#[inline]
pub fn push_null(out: &mut Vec<u8>) {
    out.extend_from_slice(NULL_MARKER);
}

/// Appends the separator that goes between two fields of a record.
#[inline]
pub fn field_sep(out: &mut Vec<u8>) {
    out.push(FIELD_SEP);
}

/// Appends the terminator that ends every record, the last one included.
#[inline]
pub fn record_end(out: &mut Vec<u8>) {
    out.push(RECORD_END);
}

/// Writes one record into a buffer: separators between fields, LF at the end.
///
/// Obligation: call [`RecordWriter::finish`]. A writer dropped unfinished (for example when a
/// cell error is returned with `?`) removes everything it appended, so the buffer never holds a
/// partial record and always ends on a record boundary.
///
/// A record needs at least one field: a finished record with none is a bare LF, which reads
/// back as one empty field.
#[derive(Debug)]
pub struct RecordWriter<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    fields: usize,
    finished: bool,
}

impl<'a> RecordWriter<'a> {
    /// Starts a record at the end of `out`.
    #[inline]
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        RecordWriter {
            out,
            start,
            fields: 0,
            finished: false,
        }
    }

    #[inline]
    fn next_field(&mut self) {
        if self.fields > 0 {
            self.out.push(FIELD_SEP);
        }
        self.fields += 1;
    }

    /// Appends a text field through [`push_text`].
    #[inline]
    pub fn text(
        &mut self,
        value: &[u8],
        policy: CellPolicy,
        stats: &mut CellStats,
    ) -> Result<(), CellError> {
        self.next_field();
        push_text(self.out, value, policy, stats)
    }

    /// Appends a field the caller has produced itself (numbers, dates, hex, JSON from
    /// `serde_json`): escaped, but not checked. It must be valid UTF-8 without NUL and must not
    /// equal [`NULL_MARKER`]; use [`RecordWriter::text`] for anything from the source.
    #[inline]
    pub fn escaped(&mut self, value: &[u8]) {
        debug_assert!(value != NULL_MARKER && memchr(0, value).is_none());
        self.next_field();
        escape_into(self.out, value);
    }

    /// Appends a SQL NULL field.
    #[inline]
    pub fn null(&mut self) {
        self.next_field();
        push_null(self.out);
    }

    /// How many fields have been appended so far.
    #[inline]
    pub fn fields(&self) -> usize {
        self.fields
    }

    /// Ends the record with LF and returns the bytes it took, terminator included.
    #[inline]
    pub fn finish(mut self) -> usize {
        self.out.push(RECORD_END);
        self.finished = true;
        self.out.len() - self.start
    }
}

impl Drop for RecordWriter<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.out.truncate(self.start);
        }
    }
}

/// Why a TSV stream cannot be decoded. Record numbers are 1-based and count records, which
/// equal physical lines unless fields hold escaped line feeds.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The reader failed.
    #[error("reading TSV input")]
    Io(#[from] io::Error),
    /// The input ends inside a record: bytes after the last LF, or a lone trailing backslash.
    /// Every record ductwork writes ends with LF, so this is a cut file.
    #[error("TSV input ends inside record {record} (no final line feed)")]
    Truncated {
        /// The record that was cut.
        record: u64,
    },
    /// A NUL byte, which Redshift cannot load.
    #[error("TSV record {record} holds a NUL byte in field {field}")]
    Nul {
        /// The record holding it.
        record: u64,
        /// The 1-based field holding it.
        field: usize,
    },
    /// A record has the wrong number of fields (see [`Decoder::with_columns`]).
    #[error("TSV record {record} has {found} fields, expected {expected}")]
    FieldCount {
        /// The record.
        record: u64,
        /// Fields every record must have.
        expected: usize,
        /// Fields this record has.
        found: usize,
    },
}

/// One field's place in [`Record::data`]: it ends at `end` and starts where the previous one
/// ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    end: usize,
    null: bool,
}

/// One decoded record: its fields, un-escaped, with SQL NULL told apart from text.
///
/// Reused across [`Decoder::next_record`] calls; its buffers keep their capacity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    data: Vec<u8>,
    spans: Vec<Span>,
}

impl Record {
    /// An empty record, to pass to [`Decoder::next_record`].
    pub fn new() -> Self {
        Record::default()
    }

    /// How many fields the record has (at least one after a successful read).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the record holds no field (only before the first read).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Field `i` (0-based): `None` if there is no such field, `Some(None)` for SQL NULL,
    /// `Some(Some(bytes))` for text.
    pub fn get(&self, i: usize) -> Option<Option<&[u8]>> {
        let span = self.spans.get(i)?;
        if span.null {
            return Some(None);
        }
        let start = match i {
            0 => 0,
            _ => self.spans[i - 1].end,
        };
        Some(Some(&self.data[start..span.end]))
    }

    /// The fields in order: `None` for SQL NULL.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Option<&[u8]>> + '_ {
        (0..self.spans.len()).map(move |i| self.get(i).flatten())
    }

    /// The fields as owned values.
    pub fn to_vec(&self) -> Vec<Option<Vec<u8>>> {
        self.iter().map(|f| f.map(<[u8]>::to_vec)).collect()
    }

    fn clear(&mut self) {
        self.data.clear();
        self.spans.clear();
    }

    /// Closes the field that began at `start` in `data`. `escaped` says whether any escape was
    /// used in it: the NULL marker holds no backslash, so a field is NULL exactly when its raw
    /// bytes, which then equal its un-escaped bytes, are the marker.
    fn end_field(&mut self, start: usize, escaped: bool) {
        let null = !escaped && self.data[start..] == *NULL_MARKER;
        if null {
            self.data.truncate(start);
        }
        self.spans.push(Span {
            end: self.data.len(),
            null,
        });
    }
}

/// A streaming reader of ductwork's TSV by Redshift's documented `ESCAPE` rules: a backslash
/// makes the next byte literal, an unescaped TAB ends a field, an unescaped LF ends a record,
/// a field whose raw bytes are exactly [`NULL_MARKER`] is NULL, and a NUL byte is an error.
///
/// Memory is one record (plus the reader's buffer). After an error other than
/// [`DecodeError::FieldCount`], stop reading: the position in the input is unspecified.
#[derive(Debug)]
pub struct Decoder<R: BufRead> {
    reader: R,
    columns: Option<usize>,
    records: u64,
}

impl<R: BufRead> Decoder<R> {
    /// Reads records from `reader`.
    pub fn new(reader: R) -> Self {
        Decoder {
            reader,
            columns: None,
            records: 0,
        }
    }

    /// Requires every record to have exactly `n` fields, else [`DecodeError::FieldCount`].
    pub fn with_columns(mut self, n: usize) -> Self {
        self.columns = Some(n);
        self
    }

    /// Records read so far, including one rejected for its field count.
    pub fn records_read(&self) -> u64 {
        self.records
    }

    /// Gives the reader back.
    pub fn into_inner(self) -> R {
        self.reader
    }

    /// Reads the next record into `out` (cleared and reused, no allocation when its capacity
    /// suffices). Returns `Ok(false)` at a clean end of input, after a final LF or on empty
    /// input.
    pub fn next_record(&mut self, out: &mut Record) -> Result<bool, DecodeError> {
        out.clear();
        let record = self.records + 1;
        let mut started = false;
        // A backslash was the last byte of the previous buffer.
        let mut escape_pending = false;
        let mut field_start = 0;
        let mut field_escaped = false;
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if buf.is_empty() {
                return match started {
                    true => Err(DecodeError::Truncated { record }),
                    false => Ok(false),
                };
            }
            started = true;
            let len = buf.len();
            let nul = |out: &Record| DecodeError::Nul {
                record,
                field: out.spans.len() + 1,
            };
            let mut i = 0;
            if escape_pending {
                if buf[0] == 0 {
                    return Err(nul(out));
                }
                out.data.push(buf[0]);
                field_escaped = true;
                escape_pending = false;
                i = 1;
            }
            while i < len {
                let rest = &buf[i..];
                let hit = memchr3(ESCAPE, FIELD_SEP, RECORD_END, rest);
                let run = &rest[..hit.unwrap_or(rest.len())];
                if memchr(0, run).is_some() {
                    return Err(nul(out));
                }
                out.data.extend_from_slice(run);
                i += run.len();
                if hit.is_none() {
                    break;
                }
                let special = buf[i];
                i += 1;
                match special {
                    ESCAPE => {
                        if i < len {
                            if buf[i] == 0 {
                                return Err(nul(out));
                            }
                            out.data.push(buf[i]);
                            field_escaped = true;
                            i += 1;
                        } else {
                            escape_pending = true;
                        }
                    }
                    FIELD_SEP => {
                        out.end_field(field_start, field_escaped);
                        field_start = out.data.len();
                        field_escaped = false;
                    }
                    _ => {
                        out.end_field(field_start, field_escaped);
                        self.reader.consume(i);
                        self.records = record;
                        return match self.columns {
                            Some(expected) if expected != out.len() => {
                                Err(DecodeError::FieldCount {
                                    record,
                                    expected,
                                    found: out.len(),
                                })
                            }
                            _ => Ok(true),
                        };
                    }
                }
            }
            self.reader.consume(len);
        }
    }
}

/// Decodes a whole in-memory TSV text into rows of cells (`None` for SQL NULL).
pub fn decode_all(data: &[u8]) -> Result<Vec<Vec<Option<Vec<u8>>>>, DecodeError> {
    let mut decoder = Decoder::new(data);
    let mut record = Record::new();
    let mut rows = Vec::new();
    while decoder.next_record(&mut record)? {
        rows.push(record.to_vec());
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn enc(value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_text(
            &mut out,
            value,
            CellPolicy::default(),
            &mut CellStats::default(),
        )
        .unwrap();
        out
    }

    /// Encodes one row of cells and decodes it back.
    fn round_trip(row: &[Option<&[u8]>]) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let mut stats = CellStats::default();
        let mut w = RecordWriter::new(&mut out);
        for cell in row {
            match cell {
                Some(v) => w.text(v, CellPolicy::default(), &mut stats).unwrap(),
                None => w.null(),
            }
        }
        w.finish();
        let mut rows = decode_all(&out).unwrap();
        assert_eq!(rows.len(), 1, "{out:?}");
        rows.pop().unwrap()
    }

    fn owned(row: &[Option<&[u8]>]) -> Vec<Option<Vec<u8>>> {
        row.iter().map(|c| c.map(<[u8]>::to_vec)).collect()
    }

    #[test]
    fn escapes_each_special_byte_with_a_backslash_before_the_raw_byte() {
        assert_eq!(enc(b"\\"), b"\\\\");
        assert_eq!(enc(b"\t"), b"\\\t");
        assert_eq!(enc(b"\n"), b"\\\n");
        assert_eq!(enc(b"\r"), b"\\\r");
        assert_eq!(enc(b"a\x01b"), b"a\\\x01b");
        assert_eq!(enc(b"plain text"), b"plain text");
        for b in 0..=255u8 {
            assert_eq!(needs_escape(b), b"\\\t\n\r\x01".contains(&b), "byte {b}");
            let mut out = Vec::new();
            escape_into(&mut out, &[b'x', b, b'y']);
            let want: &[u8] = match needs_escape(b) {
                true => &[b'x', b'\\', b, b'y'],
                false => &[b'x', b, b'y'],
            };
            assert_eq!(out, want, "byte {b}");
        }
    }

    #[test]
    fn never_writes_letter_escapes() {
        assert_eq!(enc(b"a\nb\tc\rd"), b"a\\\nb\\\tc\\\rd");
        assert_eq!(enc(b"\\n"), b"\\\\n");
    }

    #[test]
    fn escape_into_handles_interleaved_and_adjacent_specials() {
        let mut out = Vec::new();
        escape_into(&mut out, b"\r\n\x01\\\t\r\x01x\\");
        assert_eq!(out, b"\\\r\\\n\\\x01\\\\\\\t\\\r\\\x01x\\\\");
        out.clear();
        escape_into(&mut out, b"");
        assert!(out.is_empty());
    }

    #[test]
    fn null_like_text_round_trips_byte_exactly() {
        for text in [
            &b"\\N"[..],
            b"\\\\N",
            b"NULL",
            b"null",
            b"N",
            b"\\",
            b"abc\\",
            b"\\abc",
        ] {
            assert_eq!(round_trip(&[Some(text)]), owned(&[Some(text)]), "{text:?}");
        }
        assert_eq!(enc(b"\\N"), b"\\\\N");
    }

    #[test]
    fn specials_at_the_ends_of_fields_round_trip() {
        let cases: [&[u8]; 10] = [
            b"\tx", b"x\t", b"\nx", b"x\n", b"\rx", b"x\r", b"\r\nx", b"x\r\n", b"\r\n", b"\t\t",
        ];
        for text in cases {
            let row = [Some(text), Some(text), None, Some(text)];
            assert_eq!(round_trip(&row), owned(&row), "{text:?}");
        }
    }

    #[test]
    fn empty_whitespace_and_null_are_distinct() {
        let row = [Some(&b""[..]), Some(b"  "), None, Some(b" \t "), Some(b"")];
        let mut out = Vec::new();
        let mut w = RecordWriter::new(&mut out);
        let mut stats = CellStats::default();
        for cell in row {
            match cell {
                Some(v) => w.text(v, CellPolicy::default(), &mut stats).unwrap(),
                None => w.null(),
            }
        }
        assert_eq!(w.finish(), 12);
        assert_eq!(out, b"\t  \t\x01\t \\\t \t\n");
        assert_eq!(decode_all(&out).unwrap(), vec![owned(&row)]);
    }

    #[test]
    fn multibyte_text_is_copied_unchanged() {
        let text = "😀 e\u{301} שלום \u{202e}abc".as_bytes();
        assert_eq!(enc(text), text);
        assert_eq!(round_trip(&[Some(text)]), owned(&[Some(text)]));
    }

    #[test]
    fn nul_is_an_error_by_default() {
        let mut out = b"keep".to_vec();
        let mut stats = CellStats::default();
        let err = push_text(&mut out, b"abc\0d", CellPolicy::default(), &mut stats).unwrap_err();
        assert_eq!(err, CellError::Nul { offset: 3 });
        assert_eq!(err.to_string(), "text holds a NUL byte at offset 3");
        assert_eq!(out, b"keep");
        assert!(stats.is_zero());
    }

    #[test]
    fn nul_is_replaced_or_stripped_and_counted_when_asked() {
        let mut stats = CellStats::default();
        let mut out = Vec::new();
        let replace = CellPolicy {
            nul: NulPolicy::Replace,
            ..CellPolicy::default()
        };
        push_text(&mut out, b"\0a\0\0", replace, &mut stats).unwrap();
        assert_eq!(out, "\u{FFFD}a\u{FFFD}\u{FFFD}".as_bytes());
        assert_eq!(stats.nul_replaced, 3);

        out.clear();
        let strip = CellPolicy {
            nul: NulPolicy::Strip,
            ..CellPolicy::default()
        };
        push_text(&mut out, b"a\0\tb\0", strip, &mut stats).unwrap();
        assert_eq!(out, b"a\\\tb");
        assert_eq!(
            stats,
            CellStats {
                nul_replaced: 3,
                nul_stripped: 2,
                utf8_replaced: 0
            }
        );
    }

    #[test]
    fn invalid_utf8_is_an_error_by_default() {
        let mut out = Vec::new();
        let mut stats = CellStats::default();
        let err = push_text(&mut out, b"ab\xffcd", CellPolicy::default(), &mut stats);
        assert_eq!(err, Err(CellError::InvalidUtf8 { offset: 2 }));
        // A truncated 4-byte sequence at the end.
        let err = push_text(
            &mut out,
            b"x\xf0\x9f\x98",
            CellPolicy::default(),
            &mut stats,
        );
        assert_eq!(err, Err(CellError::InvalidUtf8 { offset: 1 }));
        assert!(out.is_empty());
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted_when_asked() {
        let policy = CellPolicy {
            utf8: Utf8Policy::Replace,
            ..CellPolicy::default()
        };
        let mut out = Vec::new();
        let mut stats = CellStats::default();
        let value = b"a\xffb\xf0\x9f\x98\t\xc3(";
        push_text(&mut out, value, policy, &mut stats).unwrap();
        let lossy = String::from_utf8_lossy(value);
        let mut expected = Vec::new();
        escape_into(&mut expected, lossy.as_bytes());
        assert_eq!(out, expected);
        assert_eq!(stats.utf8_replaced, 3);
    }

    #[test]
    fn first_problem_in_byte_order_is_reported() {
        let both = CellPolicy::default();
        let mut stats = CellStats::default();
        let mut out = Vec::new();
        assert_eq!(
            push_text(&mut out, b"a\xff\0", both, &mut stats),
            Err(CellError::InvalidUtf8 { offset: 1 })
        );
        assert_eq!(
            push_text(&mut out, b"a\0\xff", both, &mut stats),
            Err(CellError::Nul { offset: 1 })
        );
        // A NUL after a replaced sequence keeps its offset in the original value.
        let utf8_only = CellPolicy {
            utf8: Utf8Policy::Replace,
            ..CellPolicy::default()
        };
        assert_eq!(
            push_text(&mut out, b"\xff\xfeab\0", utf8_only, &mut stats),
            Err(CellError::Nul { offset: 4 })
        );
        assert!(out.is_empty());
        assert!(stats.is_zero(), "a failed cell counts nothing: {stats:?}");
    }

    #[test]
    fn text_equal_to_the_marker_is_an_error() {
        let mut out = Vec::new();
        let mut stats = CellStats::default();
        let err = push_text(&mut out, NULL_MARKER, CellPolicy::default(), &mut stats);
        assert_eq!(err, Err(CellError::EqualsNullMarker));
        // Also when a repair would produce it.
        let strip = CellPolicy {
            nul: NulPolicy::Strip,
            ..CellPolicy::default()
        };
        let err = push_text(&mut out, b"\x01\0", strip, &mut stats);
        assert_eq!(err, Err(CellError::EqualsNullMarker));
        assert!(out.is_empty());
        assert!(stats.is_zero());
    }

    #[test]
    fn marker_byte_inside_longer_text_round_trips() {
        for text in [&b"\x01\x01"[..], b"a\x01", b"\x01a", b" \x01", b"\\\x01"] {
            assert_eq!(round_trip(&[Some(text), None]), owned(&[Some(text), None]));
        }
    }

    #[test]
    fn null_sql_spelling_matches_the_marker() {
        assert_eq!(NULL_AS_SQL, "\\001");
        assert_eq!(NULL_MARKER, [0o001]);
    }

    #[test]
    fn dropped_record_writer_leaves_no_partial_record() {
        let mut out = b"a\tb\n".to_vec();
        let mut stats = CellStats::default();
        let result = (|| {
            let mut w = RecordWriter::new(&mut out);
            w.escaped(b"42");
            w.null();
            w.text(b"bad\0", CellPolicy::default(), &mut stats)?;
            w.finish();
            Ok::<(), CellError>(())
        })();
        assert_eq!(result, Err(CellError::Nul { offset: 3 }));
        assert_eq!(out, b"a\tb\n");
    }

    #[test]
    fn free_functions_build_the_same_bytes_as_the_writer() {
        let mut a = Vec::new();
        push_text(
            &mut a,
            b"x\ty",
            CellPolicy::default(),
            &mut CellStats::default(),
        )
        .unwrap();
        field_sep(&mut a);
        push_null(&mut a);
        record_end(&mut a);
        let mut b = Vec::new();
        let mut w = RecordWriter::new(&mut b);
        w.escaped(b"x\ty");
        w.null();
        assert_eq!(w.fields(), 2);
        w.finish();
        assert_eq!(a, b);
    }

    #[test]
    fn decodes_lines_fields_and_nulls() {
        let rows = decode_all(b"a\tb\n\n\x01\n\\\x01\t\x01\n").unwrap();
        assert_eq!(
            rows,
            vec![
                owned(&[Some(b"a"), Some(b"b")]),
                owned(&[Some(b"")]),
                owned(&[None]),
                owned(&[Some(b"\x01"), None]),
            ]
        );
        assert!(decode_all(b"").unwrap().is_empty());
    }

    #[test]
    fn decoder_takes_the_byte_after_a_backslash_literally() {
        let rows = decode_all(b"\\n\\t\\\\\\N\\x\n").unwrap();
        assert_eq!(rows, vec![owned(&[Some(b"nt\\Nx")])]);
    }

    #[test]
    fn decoder_reports_truncated_input() {
        assert!(matches!(
            decode_all(b"a\nb"),
            Err(DecodeError::Truncated { record: 2 })
        ));
        assert!(matches!(
            decode_all(b"a\\"),
            Err(DecodeError::Truncated { record: 1 })
        ));
        // An escaped LF does not end the record.
        assert!(matches!(
            decode_all(b"a\\\n"),
            Err(DecodeError::Truncated { record: 1 })
        ));
        let err = decode_all(b"x\n\t").unwrap_err();
        assert_eq!(
            err.to_string(),
            "TSV input ends inside record 2 (no final line feed)"
        );
    }

    #[test]
    fn decoder_rejects_nul_bytes() {
        assert!(matches!(
            decode_all(b"ok\nab\tc\0d\n"),
            Err(DecodeError::Nul {
                record: 2,
                field: 2
            })
        ));
        assert!(matches!(
            decode_all(b"\\\0\n"),
            Err(DecodeError::Nul {
                record: 1,
                field: 1
            })
        ));
    }

    #[test]
    fn decoder_checks_the_field_count() {
        let mut decoder = Decoder::new(&b"a\tb\nc\n"[..]).with_columns(2);
        let mut record = Record::new();
        assert!(decoder.next_record(&mut record).unwrap());
        let err = decoder.next_record(&mut record).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::FieldCount {
                record: 2,
                expected: 2,
                found: 1
            }
        ));
        assert_eq!(err.to_string(), "TSV record 2 has 1 fields, expected 2");
        assert_eq!(decoder.records_read(), 2);
        assert!(!decoder.next_record(&mut record).unwrap());
    }

    #[test]
    fn record_accessors() {
        let mut decoder = Decoder::new(&b"x\t\x01\t\n"[..]);
        let mut record = Record::new();
        assert!(record.is_empty());
        assert!(decoder.next_record(&mut record).unwrap());
        assert_eq!(record.len(), 3);
        assert_eq!(record.get(0), Some(Some(&b"x"[..])));
        assert_eq!(record.get(1), Some(None));
        assert_eq!(record.get(2), Some(Some(&b""[..])));
        assert_eq!(record.get(3), None);
        assert_eq!(
            record.iter().collect::<Vec<_>>(),
            vec![Some(&b"x"[..]), None, Some(&b""[..])]
        );
        assert_eq!(decoder.records_read(), 1);
        assert!(!decoder.next_record(&mut record).unwrap());
    }

    /// Feeds the decoder one byte per `fill_buf`, so every escape and separator straddles a
    /// buffer boundary.
    #[test]
    fn decoder_handles_tiny_reader_buffers() {
        let mut data = Vec::new();
        let rows: [&[Option<&[u8]>]; 3] = [
            &[Some(b"a\\b\tc"), None, Some(b"\r\n")],
            &[Some(b"\x01x"), Some(b""), Some(b"\\")],
            &[Some(b"\x01\x01"), Some(b"x"), None],
        ];
        let mut stats = CellStats::default();
        for row in rows {
            let mut w = RecordWriter::new(&mut data);
            for cell in row {
                match cell {
                    Some(v) => w.text(v, CellPolicy::default(), &mut stats).unwrap(),
                    None => w.null(),
                }
            }
            w.finish();
        }
        let reader = io::BufReader::with_capacity(1, &data[..]);
        let mut decoder = Decoder::new(reader).with_columns(3);
        let mut record = Record::new();
        let mut got = Vec::new();
        while decoder.next_record(&mut record).unwrap() {
            got.push(record.to_vec());
        }
        let expected: Vec<_> = rows.iter().map(|r| owned(r)).collect();
        assert_eq!(got, expected);
    }

    /// Throughput of [`escape_into`] on ~256 MB of short, realistic cells, and on the same
    /// bytes as one long value; once with special bytes rare (one per ~4 KB, typical text) and
    /// once dense (one per ~70 B); `push_text` (UTF-8 and NUL checks too) on the cells as well.
    /// Best of four passes of 64 MB each, since the machine is shared.
    /// Run with
    /// `cargo test --release --lib tsv::tests::escape_into_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement, not a test"]
    fn escape_into_throughput() {
        const WORDS: [&str; 16] = [
            "alice",
            "Bob",
            "smith@example.com",
            "2024-01-31 12:00:00",
            "München",
            "the",
            "quick",
            "brown",
            "fox",
            "12345.67",
            "東京",
            "path\\to",
            "line\nbreak",
            "x",
            "O'Neil",
            "jumps over the lazy dog",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mb_per_s = |bytes: usize, started: std::time::Instant| {
            bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
        };
        for dense in [false, true] {
            // 64 Ki distinct cells, reused round robin to reach the volume.
            let cells: Vec<Vec<u8>> = (0..65_536)
                .map(|_| {
                    let mut cell = Vec::new();
                    for _ in 0..next() % 12 + 1 {
                        let mut k = usize::try_from(next() % 16).unwrap();
                        if !dense && (k == 11 || k == 12) && next() % 64 != 0 {
                            k = 5;
                        }
                        cell.extend_from_slice(WORDS[k].as_bytes());
                        cell.push(b' ');
                    }
                    cell
                })
                .collect();
            let long: Vec<u8> = cells.concat();
            let specials = long.iter().filter(|&&b| needs_escape(b)).count();
            let rounds = (64 << 20) / long.len() + 1;
            let mut out = Vec::with_capacity(long.len() * 2);
            let (mut short, mut whole, mut checked) = (0f64, 0f64, 0f64);
            let mut stats = CellStats::default();
            for _ in 0..4 {
                let started = std::time::Instant::now();
                for _ in 0..rounds {
                    out.clear();
                    for cell in &cells {
                        push_text(&mut out, cell, CellPolicy::default(), &mut stats).unwrap();
                    }
                    std::hint::black_box(&out);
                }
                checked = checked.max(mb_per_s(rounds * long.len(), started));
                let started = std::time::Instant::now();
                for _ in 0..rounds {
                    out.clear();
                    for cell in &cells {
                        escape_into(&mut out, cell);
                    }
                    std::hint::black_box(&out);
                }
                short = short.max(mb_per_s(rounds * long.len(), started));
                let started = std::time::Instant::now();
                for _ in 0..rounds {
                    out.clear();
                    escape_into(&mut out, &long);
                    std::hint::black_box(&out);
                }
                whole = whole.max(mb_per_s(rounds * long.len(), started));
            }
            eprintln!(
                "escape_into ({}: one special byte per {} B): {} MB in cells of {} B avg \
                 at {short:.0} MB/s (push_text {checked:.0} MB/s); as one {} KB value at \
                 {whole:.0} MB/s",
                if dense { "dense" } else { "typical" },
                long.len() / specials.max(1),
                12 * rounds * long.len() / 1_000_000,
                long.len() / cells.len(),
                long.len() / 1000,
            );
        }
    }
}
