#!/usr/bin/env bash
# Installs a ductwork release on a worker, then optionally runs a command with it:
#
#   scripts/bootstrap.sh s3://bucket/prefix/releases/<version|latest>/ [DEST] [-- ductwork ARGS...]
#
# Downloads `ductwork.sha256` and (unless the installed copy already matches it) `ductwork` from
# the release folder, verifies the sha256, and installs atomically (temp file in DEST's folder +
# rename). A checksum mismatch fails (exit 2) and leaves the installed copy untouched.
# DEST defaults to $DUCTWORK_BIN, else ~/.local/bin/ductwork. After `--`, the command runs with
# DEST's folder first on PATH (so `-- ductwork check …` runs the installed release).
# Needs the AWS CLI for s3:// (honours $DUCTWORK_S3_ENDPOINT / $AWS_ENDPOINT_URL), or curl for an
# https:// release folder (e.g. presigned URLs: then pass the folder URL whose two files resolve).
set -euo pipefail

die() { echo "bootstrap: error: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: bootstrap.sh s3://…/releases/<version|latest>/ [DEST] [-- command…]"
RELEASE=$1; shift
DEST=${DUCTWORK_BIN:-$HOME/.local/bin/ductwork}
if [ $# -ge 1 ] && [ "$1" != "--" ]; then DEST=$1; shift; fi
if [ $# -ge 1 ] && [ "$1" = "--" ]; then shift; fi
case "$RELEASE" in */) ;; *) RELEASE="$RELEASE/" ;; esac

ENDPOINT=${DUCTWORK_S3_ENDPOINT:-${AWS_ENDPOINT_URL:-}}
fetch() { # fetch URL FILE
  case "$1" in
    s3://*)
      command -v aws >/dev/null || die "the AWS CLI is needed to read $1"
      if [ -n "$ENDPOINT" ]; then aws --endpoint-url "$ENDPOINT" s3 cp --quiet "$1" "$2"
      else aws s3 cp --quiet "$1" "$2"; fi ;;
    https://*|http://*) curl -fsSL --retry 3 -o "$2" "$1" ;;
    file://*) cp "${1#file://}" "$2" ;;
    *) die "release $RELEASE: use s3://, https:// or file://" ;;
  esac
}

mkdir -p "$(dirname "$DEST")"
TMP=$(mktemp "$(dirname "$DEST")/.ductwork.XXXXXX")
trap 'rm -f "$TMP" "$TMP.sha256"' EXIT
fetch "${RELEASE}ductwork.sha256" "$TMP.sha256" || die "cannot download ${RELEASE}ductwork.sha256"
WANT=$(awk '{print $1; exit}' "$TMP.sha256")
[[ "$WANT" =~ ^[0-9a-f]{64}$ ]] || die "${RELEASE}ductwork.sha256 does not hold a sha256"

if [ -x "$DEST" ] && [ "$(sha256sum "$DEST" | awk '{print $1}')" = "$WANT" ]; then
  echo "bootstrap: $DEST already matches ${RELEASE} (sha256 $WANT)" >&2
else
  fetch "${RELEASE}ductwork" "$TMP" || die "cannot download ${RELEASE}ductwork"
  GOT=$(sha256sum "$TMP" | awk '{print $1}')
  [ "$GOT" = "$WANT" ] || die "checksum mismatch for ${RELEASE}ductwork: expected $WANT, got $GOT; nothing installed"
  chmod 0755 "$TMP"
  mv -f "$TMP" "$DEST"
  echo "bootstrap: installed ${RELEASE}ductwork as $DEST (sha256 $WANT)" >&2
fi

if [ $# -ge 1 ]; then
  rm -f "$TMP" "$TMP.sha256"
  trap - EXIT
  PATH="$(cd "$(dirname "$DEST")" && pwd):$PATH"
  export PATH
  if [ "$1" = "ductwork" ]; then shift; exec "$DEST" "$@"; fi
  exec "$@"
fi
