-- Sample primary keys that occur more than once, smallest first. Run it with the simple query
-- protocol: every column comes back as text, whatever its type.
SELECT {pk}, count(*) AS {count}
FROM {table}
GROUP BY {pk}
HAVING count(*) > 1
ORDER BY {pk}
LIMIT {limit}
