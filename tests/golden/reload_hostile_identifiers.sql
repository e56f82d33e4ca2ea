BEGIN;

DELETE FROM "Mixed"."a""b";

INSERT INTO "Mixed"."a""b" ("a""b", "x; drop table y; --", "Mixed")
SELECT "a""b", "x; drop table y; --", "Mixed"
FROM "x; drop table y; --"."Mixed";

COMMIT;
