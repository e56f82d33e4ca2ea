BEGIN;

CREATE TEMP TABLE "ductwork_upsert_tmp" (LIKE "prod"."users");

INSERT INTO "ductwork_upsert_tmp" ("id", "region")
SELECT "id", "region"
FROM "staging"."users";

MERGE INTO "prod"."users"
USING "ductwork_upsert_tmp"
ON "prod"."users"."id" = "ductwork_upsert_tmp"."id"
  AND "prod"."users"."region" = "ductwork_upsert_tmp"."region"
WHEN MATCHED THEN UPDATE SET "id" = "ductwork_upsert_tmp"."id", "region" = "ductwork_upsert_tmp"."region"
WHEN NOT MATCHED THEN INSERT ("id", "region") VALUES ("ductwork_upsert_tmp"."id", "ductwork_upsert_tmp"."region");

DROP TABLE "ductwork_upsert_tmp";

COMMIT;
