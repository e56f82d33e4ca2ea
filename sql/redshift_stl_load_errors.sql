-- Fallback for provisioned clusters: STL_LOAD_ERRORS rows of pg_last_copy_id(), which is set
-- when a COPY starts loading and is kept when it fails on bad data. Run it after ROLLBACK.
-- Same columns, in the same order, as redshift_load_errors.sql.
SELECT
    trim(filename) AS file_name,
    line_number,
    trim(colname) AS column_name,
    trim(type) AS column_type,
    "position",
    err_code AS error_code,
    trim(err_reason) AS error_message,
    trim(raw_field_value) AS raw_field_value
FROM stl_load_errors
WHERE query = pg_last_copy_id()
ORDER BY file_name, line_number
LIMIT 10
