-- --merge form of the upsert. Redshift's MERGE takes no alias for the target table, and its
-- source must be a table (not a view or subquery), so the deduplicated temp table is the source.
-- Both WHEN clauses are required by Redshift; with no non-key column the UPDATE sets the keys
-- to themselves.
MERGE INTO {destination}
USING {tmp}
ON {key_match}
WHEN MATCHED THEN UPDATE SET {assignments}
WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})
