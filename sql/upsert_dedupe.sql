-- Staging rows into the upsert's temp table, one row per primary key: the first row in the
-- user's --dedupe-order survives. Ties in that order are broken arbitrarily, so the order
-- should end with a unique column.
INSERT INTO {tmp} ({columns})
SELECT {columns}
FROM (
    SELECT {columns},
           ROW_NUMBER() OVER (PARTITION BY {pk} ORDER BY {order}) AS {rn}
    FROM {source}
) AS {ranked}
WHERE {rn} = 1
