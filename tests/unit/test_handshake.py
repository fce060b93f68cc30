from pathlib import Path

import pytest

from nomad_rkt_driver.protocol import handshake


def test_cookie_must_match() -> None:
    assert handshake.has_cookie({handshake.COOKIE_KEY: handshake.COOKIE_VALUE})
    assert not handshake.has_cookie({handshake.COOKIE_KEY: "nope"})
    assert not handshake.has_cookie({})


@pytest.mark.parametrize("offered", ["2", "1,2", " 3 , 2 ", ""])
def test_versions_including_2_are_accepted(offered: str) -> None:
    handshake.check_versions({"PLUGIN_PROTOCOL_VERSIONS": offered})


@pytest.mark.parametrize("offered", ["1", "3,4"])
def test_versions_without_2_are_refused(offered: str) -> None:
    with pytest.raises(handshake.HandshakeError, match="Incompatible API version"):
        handshake.check_versions({"PLUGIN_PROTOCOL_VERSIONS": offered})


def test_handshake_lines() -> None:
    assert handshake.Listen("unix", "/tmp/plugin1").line() == "1|2|unix|/tmp/plugin1|grpc|"
    assert handshake.Listen("tcp", "127.0.0.1:10001").grpc_target == "127.0.0.1:10001"


def test_socket_path_in_the_given_dir(tmp_path: Path) -> None:
    path = handshake.unix_socket_path({"PLUGIN_UNIX_SOCKET_DIR": str(tmp_path)})
    assert path is not None and path.startswith(f"{tmp_path}/plugin")


def test_too_long_socket_dir_falls_back(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    assert handshake.unix_socket_path({"PLUGIN_UNIX_SOCKET_DIR": str(deep)}) is None


def test_port_range() -> None:
    assert handshake.tcp_port_range({"PLUGIN_MIN_PORT": "10000", "PLUGIN_MAX_PORT": "10002"}) == range(10000, 10003)
    with pytest.raises(handshake.HandshakeError):
        handshake.tcp_port_range({"PLUGIN_MIN_PORT": "5", "PLUGIN_MAX_PORT": "4"})
