import signal

import pytest

from nomad_rkt_driver.driver.signals import parse_signal
from nomad_rkt_driver.errors import InvalidArgument


@pytest.mark.parametrize(
    ("name", "expected"),
    [("SIGHUP", signal.SIGHUP), ("hup", signal.SIGHUP), ("SIGUSR1", signal.SIGUSR1), (" sigterm ", signal.SIGTERM)],
)
def test_signal_names(name: str, expected: signal.Signals) -> None:
    assert parse_signal(name) is expected


@pytest.mark.parametrize("name", ["SIGFOO", "", "9x"])
def test_unknown_signal_names_are_refused_with_examples(name: str) -> None:
    with pytest.raises(InvalidArgument, match="SIGHUP"):
        parse_signal(name)
