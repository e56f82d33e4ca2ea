BEGIN;

DELETE FROM "prod"."users";

INSERT INTO "prod"."users" ("id", "region", "email", "updated_at")
SELECT "id", "region", "email", "updated_at"
FROM "staging"."users";

COMMIT;
