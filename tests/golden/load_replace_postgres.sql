BEGIN;

DELETE FROM "staging"."users";

COPY "staging"."users" ("id", "email", "created_at") FROM STDIN;

COMMIT;
