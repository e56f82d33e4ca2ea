-- Redshift COPY of one manifest of gzipped TSV parts (SPEC §5, §6). Filled by src/warehouse/sql.rs.
-- MANIFEST: load exactly the keys listed, never a prefix (RELIABILITY invariant 3).
-- ESCAPE: a backslash makes the next byte literal; the writer escapes backslash, TAB, LF, CR.
-- NULL AS: the writer's marker, passed in; never \N, which ESCAPE makes ambiguous.
-- COMPUPDATE/STATUPDATE OFF: no compression analysis or ANALYZE inside the load transaction.
-- Lossy options (MAXERROR, ACCEPTINVCHARS, ...) appear in {options} only when configured.
COPY {table} ({columns})
FROM {manifest_url}
{authorization}
MANIFEST
GZIP
DELIMITER '\t'
ESCAPE
NULL AS {null_as}
TIMEFORMAT {timeformat}
DATEFORMAT {dateformat}{options}
COMPUPDATE OFF
STATUPDATE OFF
