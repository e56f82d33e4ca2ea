-- The run ledger (SPEC §7): one row per applied (run_id, step, target), written in the same
-- transaction as the change. Redshift does not enforce PRIMARY KEY; the step looks the row up
-- inside the transaction before writing it, and the run's lease keeps attempts apart.
CREATE TABLE IF NOT EXISTS {ledger} (
    "run_id" VARCHAR(256) NOT NULL,
    "step" VARCHAR(128) NOT NULL,
    "target" VARCHAR(512) NOT NULL,
    "rows" BIGINT,
    "started" TIMESTAMPTZ NOT NULL,
    "finished" TIMESTAMPTZ NOT NULL,
    PRIMARY KEY ("run_id", "step", "target")
)
