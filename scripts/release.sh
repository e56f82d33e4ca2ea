#!/usr/bin/env bash
# Builds a portable ductwork release and uploads it:
#
#   scripts/release.sh s3://bucket/prefix/releases/ [VERSION] [--binary FILE]
#
# Builds with cargo-zigbuild for x86_64-unknown-linux-gnu.2.17 (runs on Amazon Linux 2/2023 and
# EMR; SPEC §13: `pip install ziglang==0.17.1`, `cargo install cargo-zigbuild --version 0.24.1
# --locked`), unless --binary gives a built file. Checks the highest GLIBC_ symbol version the
# binary needs (at most $DUCTWORK_RELEASE_MAX_GLIBC, default 2.17), then uploads `ductwork`,
# `ductwork.sha256` and `bootstrap.sh` to <releases>/<VERSION>/ and the same three to
# <releases>/latest/ (plus `version`). VERSION defaults to Cargo.toml's version.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "release: error: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: release.sh s3://…/releases/ [VERSION] [--binary FILE]"
DEST=$1; shift
case "$DEST" in s3://*/) ;; s3://*) DEST="$DEST/" ;; *) die "the releases folder must be s3://…/" ;; esac
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
BINARY=
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BINARY=$2; shift 2 ;;
    -*) die "unknown flag $1" ;;
    *) VERSION=$1; shift ;;
  esac
done
MAX_GLIBC=${DUCTWORK_RELEASE_MAX_GLIBC:-2.17}

if [ -z "$BINARY" ]; then
  command -v cargo-zigbuild >/dev/null || die "cargo-zigbuild is not installed (cargo install cargo-zigbuild --version 0.24.1 --locked; pip install ziglang==0.17.1)"
  echo "release: building $VERSION with cargo zigbuild (glibc 2.17)" >&2
  cargo zigbuild --release --target x86_64-unknown-linux-gnu.2.17 --bin ductwork
  BINARY=target/x86_64-unknown-linux-gnu/release/ductwork
fi
[ -f "$BINARY" ] || die "$BINARY does not exist"

NEEDED=$( (readelf -V --wide "$BINARY" 2>/dev/null || true) | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
NEEDED=${NEEDED:-none}
if [ "$NEEDED" != none ] && [ "$(printf '%s\n%s\n' "$NEEDED" "$MAX_GLIBC" | sort -V | tail -1)" != "$MAX_GLIBC" ]; then
  die "$BINARY needs GLIBC_$NEEDED, newer than $MAX_GLIBC: it would not run on Amazon Linux 2"
fi
echo "release: $BINARY needs GLIBC ${NEEDED} (limit $MAX_GLIBC)" >&2

WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
cp "$BINARY" "$WORK/ductwork"
(cd "$WORK" && sha256sum ductwork > ductwork.sha256)
echo "$VERSION" > "$WORK/version"
cp scripts/bootstrap.sh "$WORK/bootstrap.sh"
ENDPOINT=${DUCTWORK_S3_ENDPOINT:-${AWS_ENDPOINT_URL:-}}
s3cp() { if [ -n "$ENDPOINT" ]; then aws --endpoint-url "$ENDPOINT" s3 cp --quiet "$@"; else aws s3 cp --quiet "$@"; fi; }
for dir in "$VERSION" latest; do
  # The checksum goes last: a reader that sees the new sha256 also finds the new binary.
  for f in ductwork bootstrap.sh version ductwork.sha256; do s3cp "$WORK/$f" "${DEST}${dir}/$f"; done
done
echo "release: uploaded ${DEST}${VERSION}/ and ${DEST}latest/ (sha256 $(awk '{print $1}' "$WORK/ductwork.sha256"))" >&2
echo "{\"version\":\"$VERSION\",\"release\":\"${DEST}${VERSION}/\",\"sha256\":\"$(awk '{print $1}' "$WORK/ductwork.sha256")\",\"glibc\":\"$NEEDED\"}"
