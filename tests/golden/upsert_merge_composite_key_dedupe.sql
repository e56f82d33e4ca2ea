BEGIN;

CREATE TEMP TABLE "ductwork_upsert_tmp" (LIKE "prod"."users");

INSERT INTO "ductwork_upsert_tmp" ("id", "region", "email", "updated_at")
SELECT "id", "region", "email", "updated_at"
FROM (
    SELECT "id", "region", "email", "updated_at",
           ROW_NUMBER() OVER (PARTITION BY "id", "region" ORDER BY updated_at DESC) AS "ductwork_rn"
    FROM "staging"."users"
) AS "ranked"
WHERE "ductwork_rn" = 1;

MERGE INTO "prod"."users"
USING "ductwork_upsert_tmp"
ON "prod"."users"."id" = "ductwork_upsert_tmp"."id"
  AND "prod"."users"."region" = "ductwork_upsert_tmp"."region"
WHEN MATCHED THEN UPDATE SET "email" = "ductwork_upsert_tmp"."email", "updated_at" = "ductwork_upsert_tmp"."updated_at"
WHEN NOT MATCHED THEN INSERT ("id", "region", "email", "updated_at") VALUES ("ductwork_upsert_tmp"."id", "ductwork_upsert_tmp"."region", "ductwork_upsert_tmp"."email", "ductwork_upsert_tmp"."updated_at");

DROP TABLE "ductwork_upsert_tmp";

COMMIT;
