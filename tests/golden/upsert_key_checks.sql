SELECT "id", "region", count(*) AS "ductwork_rows"
FROM "staging"."users"
GROUP BY "id", "region"
HAVING count(*) > 1
ORDER BY "id", "region"
LIMIT 10;

SELECT "id", "region"
FROM "staging"."users"
WHERE "id" IS NULL OR "region" IS NULL
LIMIT 10;
