"""The committed Python stubs are exactly what our .proto files generate."""

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GEN = "nomad_rkt_driver/protocol/gen"


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    shutil.copytree(ROOT / GEN, tmp_path / GEN, ignore=shutil.ignore_patterns("*.py", "*.pyi", "__pycache__"))
    protos = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / GEN).glob("*.proto"))
    assert len(protos) == 8
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I",
            ".",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            *protos,
        ],
        cwd=tmp_path,
        check=True,
    )
    fresh = sorted(p.name for p in (tmp_path / GEN).iterdir() if p.suffix in (".py", ".pyi"))
    committed = sorted(
        p.name for p in (ROOT / GEN).iterdir() if p.suffix in (".py", ".pyi") and p.name != "__init__.py"
    )
    assert fresh == committed, "run scripts/genproto.sh and commit the result"
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / GEN, ROOT / GEN, fresh, shallow=False)
    assert not mismatch and not errors, f"stale generated files {mismatch}: run scripts/genproto.sh"
