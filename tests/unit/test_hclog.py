"""Log lines go-plugin can parse: string @level/@message/@timestamp, six fractional digits."""

import io
import json
import logging
import re

import pytest

from nomad_rkt_driver import hclog

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    hclog.setup("trace", stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_levels_are_hclog_names(captured: io.StringIO) -> None:
    log = logging.getLogger("nomad_rkt_driver.test")
    log.log(hclog.TRACE, "t")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert [e["@level"] for e in lines(captured)] == ["trace", "debug", "info", "warn", "error", "error"]


def test_entries_have_string_fields_and_go_timestamps(captured: io.StringIO) -> None:
    logging.getLogger("x").info("hello %s", 42, extra={"task_id": "a/b/c", "count": 3, "obj": object()})
    (entry,) = lines(captured)
    assert entry["@message"] == "hello 42"
    assert isinstance(entry["@timestamp"], str) and TIMESTAMP.match(entry["@timestamp"])
    assert entry["task_id"] == "a/b/c" and entry["count"] == 3 and isinstance(entry["obj"], str)


def test_multiline_messages_stay_on_one_line(captured: io.StringIO) -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logging.getLogger("x").exception("failed\nbadly")
    raw = captured.getvalue().splitlines()
    assert len(raw) == 1
    assert "boom" in json.loads(raw[0])["error"]


def test_timestamp_format() -> None:
    assert hclog.format_timestamp(0.5) == "1970-01-01T00:00:00.500000Z"


def test_a_closed_stderr_does_not_raise() -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    hclog.setup("info", Broken())
    logging.getLogger("x").info("into the void")  # must not raise (agent gone; plugin lives on)


def test_unknown_level_name_means_info() -> None:
    hclog.setup("verbose", io.StringIO())
    assert logging.getLogger().level == logging.INFO
