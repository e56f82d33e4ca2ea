//! The extract's output as the loader reads it: Redshift's `manifest.json` and ductwork's
//! `ductwork.json` beside it. Pure parsing; fetching is the caller's.

use anyhow::{bail, Context as _};
use serde::Deserialize;

/// One manifest entry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The part's URL.
    pub url: String,
    /// Whether COPY must fail when the part is missing.
    #[serde(default)]
    pub mandatory: bool,
    /// Size metadata.
    #[serde(default)]
    pub meta: Option<EntryMeta>,
}

/// `meta` of an entry.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct EntryMeta {
    /// The part's size in bytes.
    pub content_length: Option<u64>,
}

#[derive(Deserialize)]
struct ManifestFile {
    entries: Vec<Entry>,
}

/// Parses a Redshift manifest; every entry must be an s3:// or file:// URL.
pub fn parse_manifest(bytes: &[u8], origin: &str) -> anyhow::Result<Vec<Entry>> {
    let m: ManifestFile = serde_json::from_slice(bytes)
        .with_context(|| format!("{origin} is not a Redshift manifest ({{\"entries\": [...]}})"))?;
    for e in &m.entries {
        if !(e.url.starts_with("s3://") || e.url.starts_with("file:///")) {
            bail!(
                "{origin}: entry {:?} is not an s3:// or file:/// URL",
                e.url
            );
        }
    }
    Ok(m.entries)
}

/// What the loader uses from `ductwork.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct Metadata {
    /// Total rows.
    pub rows: u64,
    /// Columns in field order.
    pub columns: Vec<MetaColumn>,
    /// The NULL marker the writer used.
    pub null_marker: String,
    /// The run that wrote it.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Per-part rows, to name the part of a failing line.
    #[serde(default)]
    pub parts: Vec<MetaPart>,
}

/// A column of `ductwork.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct MetaColumn {
    /// Name.
    pub name: String,
    /// Source type.
    #[serde(default)]
    pub source_type: String,
}

/// A part of `ductwork.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct MetaPart {
    /// URL.
    pub url: String,
    /// Rows.
    pub rows: u64,
}

/// Parses `ductwork.json`.
pub fn parse_metadata(bytes: &[u8], origin: &str) -> anyhow::Result<Metadata> {
    serde_json::from_slice(bytes).with_context(|| format!("parsing {origin}"))
}

/// The URL of `ductwork.json` beside a manifest URL.
pub fn metadata_url(manifest_url: &str) -> String {
    match manifest_url.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/ductwork.json"),
        None => "ductwork.json".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redshift_manifests() {
        let m = br#"{"entries":[{"url":"s3://b/p/part-00000.tsv.gz","mandatory":true,"meta":{"content_length":12}}]}"#;
        let e = parse_manifest(m, "m").unwrap();
        assert_eq!(e[0].meta.as_ref().unwrap().content_length, Some(12));
        assert!(parse_manifest(br#"{"entries":[{"url":"http://x/y"}]}"#, "m").is_err());
        assert!(parse_manifest(b"[]", "m").is_err());
        assert_eq!(
            metadata_url("s3://b/p/manifest.json"),
            "s3://b/p/ductwork.json"
        );
    }
}
