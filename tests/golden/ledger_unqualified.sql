CREATE TABLE IF NOT EXISTS "ledger" (
    "run_id" VARCHAR(256) NOT NULL,
    "step" VARCHAR(128) NOT NULL,
    "target" VARCHAR(512) NOT NULL,
    "rows" BIGINT,
    "started" TIMESTAMPTZ NOT NULL,
    "finished" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("run_id", "step", "target")
);
