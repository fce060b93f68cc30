"""Logging in the shape go-plugin expects on a plugin's stderr: one hclog JSON object per line.

go-plugin parses each stderr line; ``@level``, ``@message`` and ``@timestamp`` must be JSON strings
(anything else panics the agent) and the timestamp must carry exactly six fractional digits.
stdout is never touched: it belongs to the handshake line.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
from typing import IO, Any, Final

TRACE: Final = 5
logging.addLevelName(TRACE, "TRACE")

# Attributes every LogRecord has; anything else came from ``extra=`` and becomes a key/value pair.
_STANDARD_ATTRS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime", "taskName"}
)
LEVELS: Final = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


def hclog_level(levelno: int) -> str:
    """Map a Python level number onto the five names hclog accepts."""
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    if levelno >= logging.DEBUG:
        return "debug"
    return "trace"


def format_timestamp(epoch: float) -> str:
    """Render a time as Go's ``2006-01-02T15:04:05.000000Z07:00`` in UTC."""
    moment = _dt.datetime.fromtimestamp(epoch, tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class HclogFormatter(logging.Formatter):
    """Formats records as single-line hclog JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "@level": hclog_level(record.levelno),
            "@message": str(record.getMessage()),
            "@timestamp": format_timestamp(record.created),
            "@module": record.name,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = _plain(value)
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


class SafeStreamHandler(logging.StreamHandler[IO[str]]):
    """A stderr handler that survives a reader that went away (EPIPE after the agent died)."""

    def handleError(self, record: logging.LogRecord) -> None:
        # The agent re-launches or re-attaches; a lost log line must not end the plugin.
        return


def setup(level_name: str | None = None, stream: IO[str] | None = None) -> None:
    """Send all ``nomad_rkt_driver`` logging to stderr as hclog JSON.

    The level comes from ``level_name``, else ``NOMAD_RKT_LOG_LEVEL``, else ``info``.
    """
    name = (level_name or os.environ.get("NOMAD_RKT_LOG_LEVEL") or "info").lower()
    handler = SafeStreamHandler(stream or sys.stderr)
    handler.setFormatter(HclogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(name, logging.INFO))
