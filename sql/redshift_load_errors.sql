-- Why the last COPY of this session failed, from SYS_LOAD_ERROR_DETAIL (all cluster types,
-- serverless included). Run it after ROLLBACK, on the same session.
-- SYS views number queries differently from STL views, and pg_last_copy_id() returns the STL
-- number, so the COPY is found by session: the newest query with load errors in this session.
-- The view has no raw field value; the NULL keeps the row shape of the STL fallback.
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
LIMIT 10
