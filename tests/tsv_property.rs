//! Property test of the TSV writer contract (SPEC.md §5, RELIABILITY.md §4 and §6): any rows
//! of text and NULL cells, encoded with `ductwork::tsv` and read back by its decoder of
//! Redshift's documented `ESCAPE` rules, give the same cells byte for byte.
//!
//! The round-trip test pushes at least 1,000,000 generated values through encode and decode
//! per run and prints one summary line:
//! `tsv-property: values=N mismatches=0 marker_errors=M`.
//! Text exactly equal to the NULL marker must fail with `EqualsNullMarker`; such cells are
//! written as NULL instead, checked as NULL, and counted as `marker_errors`, not as `values`.
//! NUL bytes and invalid UTF-8 have their own tests below.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufReader, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use ductwork::tsv::{
    push_text, CellError, CellPolicy, CellStats, DecodeError, Decoder, NulPolicy, Record,
    RecordWriter, Utf8Policy, NULL_MARKER,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Values checked through the round trip (NULLs included, marker cells excluded).
static VALUES: AtomicU64 = AtomicU64::new(0);
/// Cells that decoded differently from what was encoded.
static MISMATCHES: AtomicU64 = AtomicU64::new(0);
/// Text cells equal to the NULL marker, each refused with `EqualsNullMarker`.
static MARKER_ERRORS: AtomicU64 = AtomicU64::new(0);

/// The least number of values one run must check (RELIABILITY.md §6).
const MIN_VALUES: u64 = 1_000_000;

/// Pieces of text that stress the format, with weights: the escaped bytes, the marker byte,
/// strings that mean NULL in other formats, multibyte, combining and bidirectional text.
#[rustfmt::skip]
const PIECES: &[(usize, &str)] = &[
    (4, "\\"), (3, "\t"), (3, "\n"), (3, "\r"), (2, "\r\n"), (3, "\u{1}"),
    (2, "N"), (2, " "), (2, "\\N"), (1, "\\\\N"), (1, "NULL"), (1, "null"), (2, "a"),
    (1, "."), (1, "\\."), (1, "😀"), (1, "🏳️‍🌈"), (1, "e\u{301}"), (1, "東京"),
    (1, "\u{5e9}\u{5dc}\u{5d5}\u{5dd}"), (1, "\u{627}\u{644}\u{639}"), (1, "\u{202e}"),
    (1, "\u{200f}"), (1, "\u{feff}"), (1, "\u{fffd}"), (1, "\u{2028}"), (1, "\u{10ffff}"),
];

/// Whitespace of several kinds, for whitespace-only strings.
const SPACES: &[&str] = &[
    " ", " ", "\t", "\n", "\r", "\u{b}", "\u{c}", "\u{a0}", "\u{2003}", "\u{3000}",
];

/// A control character other than NUL: C0 except NUL, DEL, and a few C1.
fn control_char() -> impl Strategy<Value = String> {
    (0u32..36).prop_map(|i| {
        let code = match i {
            0..=30 => i + 1,
            _ => [0x7f, 0x80, 0x85, 0x9b, 0x9f][usize::try_from(i - 31).unwrap()],
        };
        char::from_u32(code).unwrap().to_string()
    })
}

/// Each piece repeated by its weight, for `select`.
fn weighted(pieces: &[(usize, &'static str)]) -> Vec<&'static str> {
    pieces
        .iter()
        .flat_map(|&(weight, piece)| std::iter::repeat_n(piece, weight))
        .collect()
}

/// One piece of dangerous text.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => select(weighted(PIECES)).prop_map(str::to_owned),
        1 => control_char(),
    ]
}

/// Text built from dangerous pieces (sometimes empty, sometimes exactly the marker).
fn dangerous() -> impl Strategy<Value = String> {
    vec(piece(), 0..10).prop_map(|p| p.concat())
}

/// Arbitrary Unicode text with dangerous pieces mixed in.
fn mixed() -> impl Strategy<Value = String> {
    vec(prop_oneof![any::<String>(), piece()], 1..4).prop_map(|p| p.concat())
}

/// Whitespace-only text.
fn whitespace() -> impl Strategy<Value = String> {
    vec(select(SPACES), 1..6).prop_map(|p| p.concat())
}

/// One cell: text or SQL NULL. Never holds NUL.
fn cell() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => any::<String>().prop_map(Some),
        5 => dangerous().prop_map(Some),
        2 => mixed().prop_map(Some),
        1 => Just(Some(String::new())),
        1 => whitespace().prop_map(Some),
        2 => Just(None),
    ]
}

/// Rows with a fixed column count (about 300 cells per case on average), and the capacity of
/// the reader buffer the decoder gets, so that escapes straddle buffer boundaries.
fn table() -> impl Strategy<Value = (usize, Vec<Vec<Option<String>>>, usize)> {
    (1usize..=24)
        .prop_flat_map(|cols| (Just(cols), vec(vec(cell(), cols), 1..=48)))
        .prop_flat_map(|(cols, rows)| {
            let capacity = prop_oneof![1usize..=16, 17usize..=8192];
            (Just(cols), Just(rows), capacity)
        })
}

/// A cell for a failure message.
fn show(cell: Option<&[u8]>) -> Option<std::borrow::Cow<'_, str>> {
    cell.map(String::from_utf8_lossy)
}

/// RELIABILITY.md §4's encoding rule written out byte by byte: the oracle for the encoder's
/// output. `None` is SQL NULL.
fn encode_by_the_rule(row: &[Option<&[u8]>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, cell) in row.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match cell {
            None => out.extend_from_slice(NULL_MARKER),
            Some(text) => {
                for &b in *text {
                    if matches!(b, b'\\' | b'\t' | b'\n' | b'\r' | 0x01) {
                        out.push(b'\\');
                    }
                    out.push(b);
                }
            }
        }
    }
    out.push(b'\n');
    out
}

/// Encodes `rows`, checks the bytes against the rule, decodes them and compares every cell.
/// A row's encoding that breaks the rule and a cell that decodes differently each count as a
/// mismatch.
fn check_round_trip(
    (cols, rows, capacity): (usize, Vec<Vec<Option<String>>>, usize),
) -> Result<(), TestCaseError> {
    let mut out = Vec::new();
    let mut stats = CellStats::default();
    let mut expected: Vec<Vec<Option<&[u8]>>> = Vec::with_capacity(rows.len());
    let mut values = 0u64;
    let mut marker_errors = 0u64;
    let mut first: Option<String> = None;
    let mut mismatches = 0u64;
    for (r, row) in rows.iter().enumerate() {
        let row_start = out.len();
        let mut w = RecordWriter::new(&mut out);
        let mut want = Vec::with_capacity(cols);
        for cell in row {
            match cell {
                Some(text) if text.as_bytes() == NULL_MARKER => {
                    // Refused, and nothing written; the row gets a NULL in its place so that
                    // the column count stays right.
                    let mut scratch = Vec::new();
                    let r = push_text(
                        &mut scratch,
                        text.as_bytes(),
                        CellPolicy::default(),
                        &mut stats,
                    );
                    prop_assert_eq!(r, Err(CellError::EqualsNullMarker));
                    prop_assert!(scratch.is_empty());
                    w.null();
                    want.push(None);
                    marker_errors += 1;
                    continue;
                }
                Some(text) => {
                    let r = w.text(text.as_bytes(), CellPolicy::default(), &mut stats);
                    prop_assert_eq!(r, Ok(()));
                    want.push(Some(text.as_bytes()));
                }
                None => {
                    w.null();
                    want.push(None);
                }
            }
            values += 1;
        }
        w.finish();
        // The bytes themselves must follow the rule, not only decode right: an unescaped CR or
        // marker byte would round-trip through this decoder but not through Redshift.
        let rule = encode_by_the_rule(&want);
        if out[row_start..] != rule[..] {
            mismatches += 1;
            first.get_or_insert_with(|| {
                format!(
                    "row {r}: wrote {:?}, the rule gives {:?}",
                    String::from_utf8_lossy(&out[row_start..]),
                    String::from_utf8_lossy(&rule)
                )
            });
        }
        expected.push(want);
    }
    prop_assert!(
        stats.is_zero(),
        "repairs without NUL or bad UTF-8: {:?}",
        stats
    );

    let reader = BufReader::with_capacity(capacity, &out[..]);
    let mut decoder = Decoder::new(reader).with_columns(cols);
    let mut record = Record::new();
    for (r, want) in expected.iter().enumerate() {
        match decoder.next_record(&mut record) {
            Ok(true) => {}
            other => return Err(TestCaseError::fail(format!("row {r}: {other:?}"))),
        }
        for (c, (got, want)) in record.iter().zip(want).enumerate() {
            if got != *want {
                mismatches += 1;
                first.get_or_insert_with(|| {
                    format!(
                        "row {r} column {c}: decoded {:?}, encoded {:?}",
                        show(got),
                        show(*want)
                    )
                });
            }
        }
    }
    prop_assert!(!decoder.next_record(&mut record).unwrap(), "extra records");
    prop_assert_eq!(decoder.records_read(), u64::try_from(rows.len()).unwrap());

    VALUES.fetch_add(values, Ordering::Relaxed);
    MARKER_ERRORS.fetch_add(marker_errors, Ordering::Relaxed);
    MISMATCHES.fetch_add(mismatches, Ordering::Relaxed);
    match first {
        None => Ok(()),
        Some(first) => Err(TestCaseError::fail(format!(
            "{first} ({mismatches} mismatches in this case)"
        ))),
    }
}

#[test]
fn any_rows_round_trip_through_encoder_and_decoder() {
    let config = Config {
        cases: 4000,
        source_file: Some(file!()),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&table(), check_round_trip);
    let values = VALUES.load(Ordering::Relaxed);
    let mismatches = MISMATCHES.load(Ordering::Relaxed);
    let marker_errors = MARKER_ERRORS.load(Ordering::Relaxed);
    // Straight to the process's stdout, past the test harness's capture, so that the summary
    // shows in a plain `cargo test` run as well as with `--nocapture`.
    let line = format!(
        "tsv-property: values={values} mismatches={mismatches} marker_errors={marker_errors}\n"
    );
    std::io::stdout().lock().write_all(line.as_bytes()).unwrap();
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(mismatches, 0);
    assert!(
        marker_errors > 0,
        "the marker strategy never produced the marker"
    );
    assert!(
        values >= MIN_VALUES,
        "only {values} values checked, at least {MIN_VALUES} required"
    );
}

/// Text with NUL bytes sprinkled in.
fn text_with_nul() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![3 => cell_text(), 1 => Just("\0".to_owned())],
        1..6,
    )
    .prop_map(|p| p.concat())
}

fn cell_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), dangerous()]
}

fn decode_one(bytes: &[u8]) -> Vec<u8> {
    let mut decoder = Decoder::new(bytes).with_columns(1);
    let mut record = Record::new();
    assert!(decoder.next_record(&mut record).unwrap());
    let got = record.get(0).unwrap().expect("text, not NULL").to_vec();
    assert!(!decoder.next_record(&mut record).unwrap());
    got
}

fn encode_one(
    value: &[u8],
    policy: CellPolicy,
    stats: &mut CellStats,
) -> Result<Vec<u8>, CellError> {
    let mut out = Vec::new();
    push_text(&mut out, value, policy, stats)?;
    out.push(b'\n');
    Ok(out)
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    /// NUL is an error naming its offset by default, or replaced or stripped and counted.
    #[test]
    fn nul_bytes_follow_the_policy(text in text_with_nul()) {
        let bytes = text.as_bytes();
        let nuls = u64::try_from(bytes.iter().filter(|&&b| b == 0).count()).unwrap();
        let first = bytes.iter().position(|&b| b == 0);

        let mut stats = CellStats::default();
        let r = encode_one(bytes, CellPolicy::default(), &mut stats);
        match first {
            Some(offset) => prop_assert_eq!(r, Err(CellError::Nul { offset })),
            None if bytes == NULL_MARKER => prop_assert_eq!(r, Err(CellError::EqualsNullMarker)),
            None => prop_assert_eq!(decode_one(&r.unwrap()), bytes),
        }
        prop_assert!(stats.is_zero());

        let replace = CellPolicy { nul: NulPolicy::Replace, ..CellPolicy::default() };
        let out = encode_one(bytes, replace, &mut stats);
        let want = text.replace('\0', "\u{FFFD}");
        if want.as_bytes() == NULL_MARKER {
            prop_assert_eq!(out, Err(CellError::EqualsNullMarker));
        } else {
            prop_assert_eq!(decode_one(&out.unwrap()), want.as_bytes());
            prop_assert_eq!(stats.nul_replaced, nuls);
        }

        let mut stats = CellStats::default();
        let strip = CellPolicy { nul: NulPolicy::Strip, ..CellPolicy::default() };
        let out = encode_one(bytes, strip, &mut stats);
        let want = text.replace('\0', "");
        if want.as_bytes() == NULL_MARKER {
            prop_assert_eq!(out, Err(CellError::EqualsNullMarker));
            prop_assert!(stats.is_zero());
        } else {
            prop_assert_eq!(decode_one(&out.unwrap()), want.as_bytes());
            prop_assert_eq!(stats.nul_stripped, nuls);
        }
    }

    /// Arbitrary bytes: an error at the first invalid sequence by default, or the same text as
    /// `String::from_utf8_lossy` when replacing.
    #[test]
    fn invalid_utf8_follows_the_policy(bytes in vec(any::<u8>(), 0..64)) {
        let bytes: Vec<u8> = bytes.into_iter().map(|b| if b == 0 { b'0' } else { b }).collect();
        let mut stats = CellStats::default();
        let r = encode_one(&bytes, CellPolicy::default(), &mut stats);
        match std::str::from_utf8(&bytes) {
            Err(e) => prop_assert_eq!(r, Err(CellError::InvalidUtf8 { offset: e.valid_up_to() })),
            Ok(_) if bytes == NULL_MARKER => prop_assert_eq!(r, Err(CellError::EqualsNullMarker)),
            Ok(_) => prop_assert_eq!(decode_one(&r.unwrap()), &bytes[..]),
        }

        let replace = CellPolicy { utf8: Utf8Policy::Replace, ..CellPolicy::default() };
        let lossy = String::from_utf8_lossy(&bytes);
        let out = encode_one(&bytes, replace, &mut stats);
        if lossy.as_bytes() == NULL_MARKER {
            prop_assert_eq!(out, Err(CellError::EqualsNullMarker));
        } else {
            prop_assert_eq!(decode_one(&out.unwrap()), lossy.as_bytes());
            let invalid = bytes.utf8_chunks().filter(|c| !c.invalid().is_empty()).count();
            prop_assert_eq!(stats.utf8_replaced, u64::try_from(invalid).unwrap());
            prop_assert_eq!(stats.utf8_replaced > 0, std::str::from_utf8(&bytes).is_err());
        }
    }
}

proptest! {
    // Each case encodes a whole table; fewer cases keep the suite fast.
    #![proptest_config(Config { cases: 500, ..Config::default() })]

    /// Any prefix of an encoded table that does not end on a record boundary is `Truncated`.
    #[test]
    fn cut_input_is_reported_as_truncated(
        (cols, rows, _) in table(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut out = Vec::new();
        // Where each record ends: the only places a cut is not a truncation.
        let mut ends = vec![0];
        for row in &rows {
            let mut w = RecordWriter::new(&mut out);
            for cell in row {
                match cell {
                    Some(t) if t.as_bytes() != NULL_MARKER => {
                        w.text(t.as_bytes(), CellPolicy::default(), &mut CellStats::default())
                            .unwrap();
                    }
                    _ => w.null(),
                }
            }
            w.finish();
            ends.push(out.len());
        }
        let at = cut.index(out.len());
        let whole = ends.iter().filter(|&&e| e > 0 && e <= at).count();
        let prefix = &out[..at];
        let mut decoder = Decoder::new(prefix).with_columns(cols);
        let mut record = Record::new();
        let end = loop {
            match decoder.next_record(&mut record) {
                Ok(true) => continue,
                other => break other,
            }
        };
        match end {
            Ok(false) => prop_assert!(ends.contains(&at), "cut at {} read as complete", at),
            Err(DecodeError::Truncated { record }) => {
                prop_assert!(!ends.contains(&at), "record boundary {} read as cut", at);
                prop_assert_eq!(record, decoder.records_read() + 1);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
        prop_assert_eq!(decoder.records_read(), u64::try_from(whole).unwrap());
    }
}
