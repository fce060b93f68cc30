"""The one error root of the driver, and its kinds.

Everything the domain raises on purpose is a :class:`DriverError`. The protocol layer maps
each kind to a gRPC status in exactly one function (``protocol/status.py``); nothing else
looks at error types or strings to decide what Nomad sees.
"""

from __future__ import annotations


class DriverError(Exception):
    """Catch this to catch every error the driver raises on purpose.

    ``recoverable`` tells Nomad's restart policy that trying again may succeed
    (a missing runtime binary may be installed, a registry may come back).
    """

    recoverable: bool = False

    def __init__(self, message: str, *, recoverable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if recoverable is not None:
            self.recoverable = recoverable

    def __str__(self) -> str:
        return self.message


class InvalidConfig(DriverError):
    """A plugin or task configuration value is wrong; the message names the attribute and the fix."""

    def __init__(self, where: str, attribute: str, problem: str) -> None:
        self.where = where
        self.attribute = attribute
        self.problem = problem
        super().__init__(f"invalid {where}: {attribute}: {problem}" if attribute else f"invalid {where}: {problem}")


class InvalidArgument(DriverError):
    """A request argument (a signal name, a task id) is malformed."""


class NotFound(DriverError):
    """The task (or other object) named in a request is not known to this driver."""


class FailedPrecondition(DriverError):
    """The host or driver is not in a state that allows the request (e.g. runtime missing)."""


class NotImplementedYet(DriverError):
    """A protocol feature this version of the driver does not provide."""
