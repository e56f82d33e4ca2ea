BEGIN;

CREATE TEMP TABLE "ductwork_upsert_tmp" (LIKE "Mixed"."a""b");

INSERT INTO "ductwork_upsert_tmp" ("id", "a""b", "x; drop table y; --", "Mixed")
SELECT "id", "a""b", "x; drop table y; --", "Mixed"
FROM (
    SELECT "id", "a""b", "x; drop table y; --", "Mixed",
           ROW_NUMBER() OVER (PARTITION BY "id", "a""b" ORDER BY "x; drop table y; --" DESC NULLS LAST, "Mixed") AS "ductwork_rn"
    FROM "x; drop table y; --"."Mixed"
) AS "ranked"
WHERE "ductwork_rn" = 1;

MERGE INTO "Mixed"."a""b"
USING "ductwork_upsert_tmp"
ON "Mixed"."a""b"."id" = "ductwork_upsert_tmp"."id"
  AND "Mixed"."a""b"."a""b" = "ductwork_upsert_tmp"."a""b"
WHEN MATCHED THEN UPDATE SET "x; drop table y; --" = "ductwork_upsert_tmp"."x; drop table y; --", "Mixed" = "ductwork_upsert_tmp"."Mixed"
WHEN NOT MATCHED THEN INSERT ("id", "a""b", "x; drop table y; --", "Mixed") VALUES ("ductwork_upsert_tmp"."id", "ductwork_upsert_tmp"."a""b", "ductwork_upsert_tmp"."x; drop table y; --", "ductwork_upsert_tmp"."Mixed");

DROP TABLE "ductwork_upsert_tmp";

COMMIT;
