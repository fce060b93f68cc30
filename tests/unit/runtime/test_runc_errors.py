"""runc's stderr → the driver's error kinds, in one function."""

from __future__ import annotations

import pytest

from nomad_rkt_driver.errors import FailedPrecondition, NotFound
from nomad_rkt_driver.runtime.runc import ContainerNotFound, ContainerNotRunning, RuncFailed, classify, runc_message

NOT_FOUND = 'time="2026-11-25T17:21:00Z" level=error msg="container does not exist"\n'


def test_runc_message_takes_the_msg_of_the_last_line() -> None:
    assert runc_message(NOT_FOUND) == "container does not exist"
    assert runc_message("plain words\n") == "plain words"
    assert runc_message("") == "(runc printed nothing)"
    assert runc_message('level=error msg="say \\"hi\\""') == 'say "hi"'


@pytest.mark.parametrize(
    ("stderr", "kind", "base"),
    [
        (NOT_FOUND, ContainerNotFound, NotFound),
        ('level=error msg="container not running"', ContainerNotRunning, FailedPrecondition),
        ('level=error msg="cannot start a container that has stopped"', ContainerNotRunning, FailedPrecondition),
        ('level=error msg="unable to apply caps: operation not permitted"', RuncFailed, RuncFailed),
    ],
)
def test_classify(stderr: str, kind: type, base: type) -> None:
    err = classify("kill", "pod-1", stderr)
    assert isinstance(err, kind) and isinstance(err, base)
    assert "pod-1" in str(err)
