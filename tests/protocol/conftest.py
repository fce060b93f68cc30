from collections.abc import Iterator
from pathlib import Path

import pytest

from .plugin import Plugin, launch, nomad_env


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def plugin() -> Iterator[Plugin]:
    running = launch(nomad_env())
    try:
        yield running
        assert running.shutdown() < 2.0, "the plugin must exit within 2 s of Shutdown"
    finally:
        running.kill()
