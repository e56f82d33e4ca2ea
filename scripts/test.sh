#!/usr/bin/env bash
# The test command (README, .ci/run): checks the local services, then formatting, lints and
# every test. The S3 endpoint is an in-process s3s-fs server started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
# The release/bootstrap tests drive the AWS CLI (the machine image ships it; install if not).
command -v aws >/dev/null || python3 -m pip install --quiet awscli==1.45.11

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -D warnings" >&2
cargo clippy --all-targets --all-features -- -D warnings
echo "== cargo test" >&2
# Test binaries run one after another; tests inside each run in parallel (each isolates itself).
log=$(mktemp -t ductwork-test-XXXXXX.log)
cargo test --all-targets --all-features -- --nocapture 2>&1 | tee "$log"
echo "== suite figures" >&2
grep -E '^(tsv-property|fidelity|upsert-boundaries|upsert-merge-boundaries|reload-boundaries|hostile-identifiers|memory):' "$log" || true
# One line for the fault suite (RELIABILITY §6), summed over every `fault-case:` line; a kind
# is an F-number (F02 and its variant F02b count once). Fails below 150 injections or 30 kinds,
# or on any loss.
awk '
/^fault-case: / {
    delete v
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    k = v["kind"]; sub(/[a-z]+$/, "", k); kinds[k] = 1
    inj += v["injected"]; lost += v["lost"]; dup += v["dup"]; part += v["partial_objects"]
    half += v["partial_txns"]; mpu += v["open_mpus"]; leak += v["canary_hits"]; cases++
}
END {
    n = 0; for (k in kinds) n++
    printf "faults: %d injected, %d kinds, %d lost, %d duplicated, %d partial, %d half-applied, %d open uploads, %d secret leaks (%d cases)\n", inj, n, lost, dup, part, half, mpu, leak, cases
    if (inj < 150 || n < 30 || lost + dup + part + half + mpu + leak > 0) {
        print "faults: below the bar (>= 150 injections, >= 30 kinds, all zero)" > "/dev/stderr"
        exit 1
    }
}' "$log"
