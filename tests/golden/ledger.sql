CREATE SCHEMA IF NOT EXISTS "ductwork";

CREATE TABLE IF NOT EXISTS "ductwork"."ledger" (
    "run_id" VARCHAR(256) NOT NULL,
    "step" VARCHAR(128) NOT NULL,
    "target" VARCHAR(512) NOT NULL,
    "rows" BIGINT,
    "started" TIMESTAMPTZ NOT NULL,
    "finished" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("run_id", "step", "target")
);

SELECT "rows", CAST("finished" AS VARCHAR(64)) AS "finished"
FROM "ductwork"."ledger"
WHERE "run_id" = $1 AND "step" = $2 AND "target" = $3;

INSERT INTO "ductwork"."ledger" ("run_id", "step", "target", "rows", "started", "finished")
VALUES ($1, $2, $3, $4, CAST(CAST($5 AS VARCHAR(64)) AS TIMESTAMPTZ), CAST(CAST($6 AS VARCHAR(64)) AS TIMESTAMPTZ));
