from nomad_rkt_driver.driver.driver import CAPABILITIES
from nomad_rkt_driver.protocol import convert
from nomad_rkt_driver.protocol.gen import base_pb2, driver_pb2
from nomad_rkt_driver.types import Fingerprint, Health, TaskEvent


def test_set_config_without_nomad_config_has_no_agent_facts() -> None:
    assert convert.agent_config_from_proto(base_pb2.SetConfigRequest(msgpack_config=b"")) is None


def test_topology_gives_compute() -> None:
    cores = [
        base_pb2.ClientTopologyCore(core_id=0, base_speed=2000),
        base_pb2.ClientTopologyCore(core_id=1, max_speed=3000),
        base_pb2.ClientTopologyCore(core_id=2, guess_speed=1000, disable=True),
    ]
    request = base_pb2.SetConfigRequest(
        nomad_config=base_pb2.NomadConfig(
            driver=base_pb2.NomadDriverConfig(
                ClientMinPort=14000, ClientMaxPort=14512, Topology=base_pb2.ClientTopology(cores=cores)
            )
        )
    )
    agent = convert.agent_config_from_proto(request)
    assert agent is not None and agent.client_min_port == 14000
    # Nomad sums every core (disabled ones too) and divides by the core count.
    assert agent.topology.total_compute_mhz == 6000
    assert agent.topology.mhz_per_core == 2000.0


def test_override_total_compute_wins() -> None:
    topo = base_pb2.ClientTopology(cores=[base_pb2.ClientTopologyCore(base_speed=1000)], override_total_compute=9000)
    request = base_pb2.SetConfigRequest(
        nomad_config=base_pb2.NomadConfig(driver=base_pb2.NomadDriverConfig(Topology=topo))
    )
    agent = convert.agent_config_from_proto(request)
    assert agent is not None and agent.topology.total_compute_mhz == 9000


def test_fingerprint_attributes_keep_their_types() -> None:
    msg = convert.fingerprint_to_proto(Fingerprint(Health.HEALTHY, "ok", {"a": "s", "b": 2, "c": 1.5, "d": True}))
    assert msg.health == driver_pb2.FingerprintResponse.HEALTHY
    assert msg.attributes["a"].string_val == "s" and msg.attributes["b"].int_val == 2
    assert msg.attributes["c"].float_val == 1.5 and msg.attributes["d"].bool_val is True


def test_capabilities_are_what_the_driver_can_do_today() -> None:
    caps = convert.capabilities_to_proto(CAPABILITIES)
    assert caps.fs_isolation == driver_pb2.DriverCapabilities.IMAGE
    assert list(caps.network_isolation_modes) == [driver_pb2.NetworkIsolationSpec.HOST]
    assert caps.mount_configs == driver_pb2.DriverCapabilities.NO_MOUNTS
    assert not caps.send_signals and not caps.exec and not caps.must_create_network


def test_events_always_carry_a_timestamp() -> None:
    msg = convert.event_to_proto(TaskEvent("a/t/x", "a", "t", 1700000000.25, "pulling", {"layer": "1/3"}))
    assert msg.timestamp.seconds == 1700000000 and msg.timestamp.nanos == 250_000_000
    assert msg.annotations["layer"] == "1/3"


def test_version_constant_is_the_package_version() -> None:
    from importlib import metadata

    from nomad_rkt_driver import __version__
    from nomad_rkt_driver.driver.driver import plugin_version

    assert plugin_version() == __version__ == metadata.version("nomad-rkt-driver")
