"""Fixtures every integration test may use: a checked data dir, the tests' cgroup parent, a busybox
image, and a running plugin process configured with both (helpers live in driver/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imagebuild import busybox_image
from tests.integration.driver.conftest import CGROUP_PARENT, _clean, leftovers, set_config
from tests.protocol.plugin import Plugin, launch, nomad_env


@pytest.fixture(scope="session", autouse=True)
def cgroup_parent() -> Iterator[str]:
    """The tests' own cgroup parent, removed from every hierarchy at the end of the session."""
    yield CGROUP_PARENT
    for directory in Path("/sys/fs/cgroup").glob(f"*{CGROUP_PARENT}"):
        if directory.is_dir():
            directory.rmdir()  # an error here means a pod's cgroup was left behind


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    built = busybox_image(tmp_path_factory.mktemp("image") / "layout", tag="v1")
    return f"oci:{built.layout}:v1"


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    left = leftovers(path)
    _clean(path)
    assert left == [], "the test left pods behind"


@pytest.fixture
def plugin(data_dir: Path) -> Iterator[Plugin]:
    running = launch(nomad_env())
    try:
        set_config(running, data_dir)
        yield running
    finally:
        if running.proc.poll() is None:
            running.shutdown()
        running.kill()
