#!/usr/bin/env bash
# Build cosign (the independent producer of the sigstore test signatures) into .tools/bin/cosign.
# Idempotent: does nothing when the pinned version is already there. Uses the machine's Go
# (/usr/local/go/bin, or go on the PATH) and the Go module proxy; takes ~6 minutes on 2 cores.
set -euo pipefail
COSIGN_VERSION=v2.4.1
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/bin"
target="$bin/cosign"

if [ -x "$target" ] && "$target" version 2>/dev/null | grep -q "GitVersion: *$COSIGN_VERSION\$"; then
  echo "cosign $COSIGN_VERSION already at $target"
  exit 0
fi

export PATH="/usr/local/go/bin:$PATH"
if ! command -v go >/dev/null; then
  echo "go is not installed (expected /usr/local/go/bin/go); install Go >= 1.22 to build cosign" >&2
  exit 1
fi

mkdir -p "$bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "building cosign $COSIGN_VERSION into $target (takes a few minutes)"
# Build into a private GOBIN, then move into place, so an interrupted build leaves no half binary.
GOBIN="$work/bin" GOFLAGS=-mod=mod \
  go install \
  "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
install -m 0755 "$work/bin/cosign" "$target.tmp"
mv -f "$target.tmp" "$target"
"$target" version | grep GitVersion
