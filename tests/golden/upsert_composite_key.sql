BEGIN;

CREATE TEMP TABLE "ductwork_upsert_tmp" (LIKE "prod"."users");

INSERT INTO "ductwork_upsert_tmp" ("id", "region", "email", "updated_at")
SELECT "id", "region", "email", "updated_at"
FROM "staging"."users";

DELETE FROM "prod"."users"
USING "ductwork_upsert_tmp"
WHERE "prod"."users"."id" = "ductwork_upsert_tmp"."id"
  AND "prod"."users"."region" = "ductwork_upsert_tmp"."region";

INSERT INTO "prod"."users" ("id", "region", "email", "updated_at")
SELECT "id", "region", "email", "updated_at"
FROM "ductwork_upsert_tmp";

DROP TABLE "ductwork_upsert_tmp";

COMMIT;
