SELECT
    trim(file_name) AS file_name,
    line_number,
    trim(column_name) AS column_name,
    trim(column_type) AS column_type,
    "position",
    error_code,
    trim(error_message) AS error_message,
    CAST(NULL AS VARCHAR(1024)) AS raw_field_value
FROM sys_load_error_detail
WHERE session_id = pg_backend_pid()
  AND query_id = (
      SELECT max(query_id)
      FROM sys_load_error_detail
      WHERE session_id = pg_backend_pid()
  )
ORDER BY file_name, line_number
LIMIT 10;

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
LIMIT 10;

SELECT pg_last_copy_count();
