#!/usr/bin/env bash
# The whole test suite: lint, types, layering, Python tests, Go conformance tests.
# Expects scripts/setup.sh to have run. Every part must pass; nothing is skipped silently.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH:/usr/local/go/bin"

step() { printf '\n== %s\n' "$*"; }

step "ruff"
ruff check nomad_rkt_driver tests bench
ruff format --check nomad_rkt_driver tests bench
step "mypy (strict)"
mypy
step "import layering"
lint-imports
step "pytest"
pytest -p no:cacheprovider tests
if [ -f tests/conformance/go.mod ]; then
  step "go conformance harness"
  (cd tests/conformance && go vet ./... && NOMAD_RKT_DRIVER_PLUGIN="$root/.venv/bin/nomad-rkt-driver" go test -count=1 ./...)
else
  echo "tests/conformance is missing" >&2
  exit 1
fi
step "benchmark smoke runs (report ratios, fail only if something fails or is left behind)"
python bench/handshake/run.py --quick
python bench/pods/run.py --quick
python bench/pull/run.py --quick
python bench/network/run.py --quick
