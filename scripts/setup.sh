#!/usr/bin/env bash
# Set up this machine for nomad-rkt-driver: system packages, the Python venv, Go modules.
# Idempotent; needs root (or sudo) for apt. Fails loudly when something cannot be installed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: run as root (apt-get needs it) or install sudo" >&2; exit 1; }
  sudo="sudo"
fi

# Runtime parts the driver drives, and what the tests build images and networks with.
apt_packages=(runc conmon containernetworking-plugins iptables iproute2 busybox-static python3-venv ca-certificates
  docker-registry skopeo umoci gnupg apache2-utils openssl zstd)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'

# The Go conformance harness (its own module) needs the machine's Go toolchain (>= 1.26, see its go.mod).
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "setup: Go is not installed; the conformance tests need Go >= 1.26" >&2; exit 1; }
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[ "$go_minor" -ge 26 ] 2>/dev/null || { echo "setup: $(go env GOVERSION) is too old; the conformance tests need Go >= 1.26" >&2; exit 1; }
if [ -f tests/conformance/go.mod ]; then
  (cd tests/conformance && go mod download)
fi
# cosign: the independent producer of the sigstore signatures the trust tests verify.
scripts/build-cosign.sh
echo "setup: done ($(.venv/bin/nomad-rkt-driver version), $(go version | cut -d' ' -f3))"
