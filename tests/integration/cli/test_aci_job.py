"""jobs/aci.nomad.hcl end to end through `nomad-rkt-driver run`: the ACI, its gpg signature and the trusted
key that scripts/build-demo-images.sh made run without insecure_options; without the demo trust dir the
same job is refused naming rkt's error and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

from .conftest import ROOT, plugin_settings, run, with_test_settings

JOBS = ROOT / "jobs"


def test_aci_example_runs_a_signed_aci(workdir: Path) -> None:
    jobfile = Path(shutil.copy(JOBS / "aci.nomad.hcl", workdir / "aci.nomad.hcl"))  # images/ is next to it
    plugin = with_test_settings(JOBS / "aci.plugin.hcl", workdir / "aci.plugin.hcl", workdir / "data")
    done = run(workdir, jobfile, plugin=plugin)
    assert done.returncode == 0, done.stderr
    assert "aci | hello from an ACI signed by its publisher" in done.stdout

    untrusted = workdir / "untrusted.plugin.hcl"
    untrusted.write_text(
        f'plugin "rkt" {{\n  config {{\n{plugin_settings(workdir / "data")}'
        f'    trust_dir = "{workdir / "empty-trust"}"\n  }}\n}}\n'
    )
    refused = run(workdir, jobfile, plugin=untrusted)
    assert refused.returncode == 1
    assert "signature made by unknown entity" in refused.stderr, refused.stderr
    assert "nomad-rkt-driver trust add" in refused.stderr
    assert "aci | " not in refused.stdout
