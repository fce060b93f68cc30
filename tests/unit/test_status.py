"""One mapping from domain errors to gRPC statuses, with Nomad's RecoverableError detail."""

import grpc
from google.rpc import status_pb2

from nomad_rkt_driver import errors
from nomad_rkt_driver.protocol.gen import recoverable_error_pb2
from nomad_rkt_driver.protocol.status import DETAILS_KEY, status_of


def test_recoverable_errors_carry_nomads_detail() -> None:
    code, message, trailers = status_of(errors.FailedPrecondition("runc missing", recoverable=True))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and message == "runc missing"
    ((key, blob),) = trailers
    assert key == DETAILS_KEY
    rich = status_pb2.Status.FromString(blob)
    assert rich.code == 9 and rich.message == "runc missing"
    detail = rich.details[0]
    assert detail.type_url == "type.googleapis.com/hashicorp.nomad.plugins.shared.structs.RecoverableError"
    unpacked = recoverable_error_pb2.RecoverableError()
    assert detail.Unpack(unpacked) and unpacked.recoverable


def test_any_kind_can_be_recoverable() -> None:
    code, _, trailers = status_of(errors.NotFound("registry down", recoverable=True))
    assert code is grpc.StatusCode.FAILED_PRECONDITION and trailers


def test_kinds_map_to_codes_without_details() -> None:
    cases = {
        errors.InvalidConfig("task", "image", "is required"): grpc.StatusCode.INVALID_ARGUMENT,
        errors.InvalidArgument("bad signal"): grpc.StatusCode.INVALID_ARGUMENT,
        errors.NotFound("no task"): grpc.StatusCode.NOT_FOUND,
        errors.FailedPrecondition("not now"): grpc.StatusCode.FAILED_PRECONDITION,
        errors.NotImplementedYet("later"): grpc.StatusCode.UNIMPLEMENTED,
        errors.DriverError("plain"): grpc.StatusCode.UNKNOWN,
    }
    for exc, expected in cases.items():
        code, message, trailers = status_of(exc)
        assert code is expected and message == str(exc) and trailers == ()


def test_bugs_are_internal_never_unavailable() -> None:
    code, message, _ = status_of(KeyError("x"))
    assert code is grpc.StatusCode.INTERNAL and "KeyError" in message


def test_invalid_config_message_names_where_and_attribute() -> None:
    assert str(errors.InvalidConfig('plugin "rkt" config', "runtime", "is bad")) == (
        'invalid plugin "rkt" config: runtime: is bad'
    )
