BEGIN;

CREATE TEMP TABLE "ductwork_upsert_tmp" (LIKE "prod"."users");

INSERT INTO "ductwork_upsert_tmp" ("id", "region", "email", "updated_at")
SELECT "id", "region", "email", "updated_at"
FROM "staging"."users";

MERGE INTO "prod"."users"
USING "ductwork_upsert_tmp"
ON "prod"."users"."id" = "ductwork_upsert_tmp"."id"
WHEN MATCHED THEN UPDATE SET "region" = "ductwork_upsert_tmp"."region", "email" = "ductwork_upsert_tmp"."email", "updated_at" = "ductwork_upsert_tmp"."updated_at"
WHEN NOT MATCHED THEN INSERT ("id", "region", "email", "updated_at") VALUES ("ductwork_upsert_tmp"."id", "ductwork_upsert_tmp"."region", "ductwork_upsert_tmp"."email", "ductwork_upsert_tmp"."updated_at");

DROP TABLE "ductwork_upsert_tmp";

COMMIT;
