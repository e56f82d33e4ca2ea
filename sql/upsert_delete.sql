-- Rows about to be replaced. Plain equality on purpose: NULL keys are refused before this runs
-- (null_keys_sql). The target is named in full: Redshift's DELETE takes no alias.
DELETE FROM {destination}
USING {tmp}
WHERE {key_match}
