import msgpack
import pytest

from nomad_rkt_driver.driver.state import STATE_VERSION, TaskStore, decode_state, encode_state
from nomad_rkt_driver.errors import InvalidArgument


def test_state_round_trips() -> None:
    state = {"pod_id": "p1", "pid": 42, "paths": ["/a", "/b"], "blob": b"\x00\x01"}
    assert decode_state(encode_state(state), "t") == state


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "no driver state"),
        (b"\xc1garbage", "corrupt"),
        (msgpack.packb([1]), "not the rkt driver's"),
        (msgpack.packb({"v": STATE_VERSION + 1, "state": {}}), "version 2 is not supported"),
    ],
)
def test_bad_state_is_refused_clearly(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        decode_state(data, "a/web/1")


def test_task_store() -> None:
    store: TaskStore[str] = TaskStore()
    store.set("a", "x")
    assert store.get("a") == "x" and store.ids() == ["a"]
    assert store.delete("a") == "x" and store.delete("a") is None and store.get("a") is None
