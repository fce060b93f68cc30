"""The one place where domain errors become gRPC statuses.

Recoverable errors become FAILED_PRECONDITION with a google.rpc.Status trailer whose first
detail is Nomad's RecoverableError{recoverable: true}; that is what Nomad's client reads to let
the job's restart policy retry (protocol.md §2.5). UNAVAILABLE and CANCELLED are never produced
on purpose: Nomad reads them as "the plugin died".
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2

from nomad_rkt_driver import errors
from nomad_rkt_driver.protocol.gen import recoverable_error_pb2

log = logging.getLogger(__name__)
DETAILS_KEY = "grpc-status-details-bin"

_CODES: dict[type[errors.DriverError], grpc.StatusCode] = {
    errors.InvalidConfig: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotImplementedYet: grpc.StatusCode.UNIMPLEMENTED,
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """Code, message and trailing metadata for an exception raised by the driver."""
    if not isinstance(exc, errors.DriverError):
        # A bug, not an outcome: say so plainly without leaking internals beyond the message.
        return grpc.StatusCode.INTERNAL, f"internal error in the rkt driver: {type(exc).__name__}: {exc}", ()
    if exc.recoverable:
        detail = any_pb2.Any()
        detail.Pack(recoverable_error_pb2.RecoverableError(recoverable=True))
        rich = status_pb2.Status(
            code=grpc.StatusCode.FAILED_PRECONDITION.value[0], message=exc.message, details=[detail]
        )
        return grpc.StatusCode.FAILED_PRECONDITION, exc.message, ((DETAILS_KEY, rich.SerializeToString()),)
    code = next((c for kind, c in _CODES.items() if isinstance(exc, kind)), grpc.StatusCode.UNKNOWN)
    return code, exc.message, ()


async def abort(context: grpc.aio.ServicerContext[object, object], exc: BaseException, rpc: str) -> NoReturn:
    """End the call with the status for ``exc`` (logging bugs with their traceback)."""
    code, message, trailers = status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("unexpected failure", exc_info=exc, extra={"rpc": rpc})
    else:
        log.debug("request refused", extra={"rpc": rpc, "code": code.name, "error": message})
    await context.abort(code, message, trailing_metadata=trailers)
