BEGIN;

CREATE TEMP TABLE "ductwork_upsert_tmp" (LIKE "prod"."users");

INSERT INTO "ductwork_upsert_tmp" ("id", "region", "email", "updated_at")
SELECT "id", "region", "email", "updated_at"
FROM (
    SELECT "id", "region", "email", "updated_at",
           ROW_NUMBER() OVER (PARTITION BY "id", "region" ORDER BY updated_at DESC NULLS LAST, email) AS "ductwork_rn"
    FROM "staging"."users"
) AS "ranked"
WHERE "ductwork_rn" = 1;

DELETE FROM "prod"."users"
USING "ductwork_upsert_tmp"
WHERE "prod"."users"."id" = "ductwork_upsert_tmp"."id"
  AND "prod"."users"."region" = "ductwork_upsert_tmp"."region";

INSERT INTO "prod"."users" ("id", "region", "email", "updated_at")
SELECT "id", "region", "email", "updated_at"
FROM "ductwork_upsert_tmp";

DROP TABLE "ductwork_upsert_tmp";

COMMIT;
