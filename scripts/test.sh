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
grep -E '^(tsv-property|fidelity|upsert-boundaries|upsert-merge-boundaries|reload-boundaries|hostile-identifiers):' "$log" || true
