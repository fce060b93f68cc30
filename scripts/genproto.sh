#!/usr/bin/env bash
# Regenerate the Python stubs from our .proto files (run from anywhere).
# The stubs are committed; tests/unit/test_generated_fresh.py fails if they drift.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
cd "$root"
python -m grpc_tools.protoc -I . \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  nomad_rkt_driver/protocol/gen/*.proto
