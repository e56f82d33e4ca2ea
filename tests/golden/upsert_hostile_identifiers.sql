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

DELETE FROM "Mixed"."a""b"
USING "ductwork_upsert_tmp"
WHERE "Mixed"."a""b"."id" = "ductwork_upsert_tmp"."id"
  AND "Mixed"."a""b"."a""b" = "ductwork_upsert_tmp"."a""b";

INSERT INTO "Mixed"."a""b" ("id", "a""b", "x; drop table y; --", "Mixed")
SELECT "id", "a""b", "x; drop table y; --", "Mixed"
FROM "ductwork_upsert_tmp";

DROP TABLE "ductwork_upsert_tmp";

COMMIT;
