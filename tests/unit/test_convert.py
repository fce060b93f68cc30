from nomad_rkt_driver.driver.capabilities import CAPABILITIES
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
    assert list(caps.network_isolation_modes) == [
        driver_pb2.NetworkIsolationSpec.HOST,
        driver_pb2.NetworkIsolationSpec.GROUP,
    ]
    assert caps.mount_configs == driver_pb2.DriverCapabilities.ANY_MOUNTS
    assert caps.send_signals and caps.exec and not caps.must_create_network


def test_events_always_carry_a_timestamp() -> None:
    msg = convert.event_to_proto(TaskEvent("a/t/x", "a", "t", 1700000000.25, "pulling", {"layer": "1/3"}))
    assert msg.timestamp.seconds == 1700000000 and msg.timestamp.nanos == 250_000_000
    assert msg.annotations["layer"] == "1/3"


def test_version_constant_is_the_package_version() -> None:
    from importlib import metadata

    from nomad_rkt_driver import __version__
    from nomad_rkt_driver.driver.driver import plugin_version

    assert plugin_version() == __version__ == metadata.version("nomad-rkt-driver")


def test_task_config_from_proto_keeps_what_the_driver_needs() -> None:
    msg = driver_pb2.TaskConfig(
        id="a1/web/xyz",
        name="web",
        alloc_id="a1",
        msgpack_driver_config=b"\x80",
        env={"NOMAD_PORT_http": "8080"},
        alloc_dir="/var/nomad/alloc/a1",
        stdout_path="/x/.web.stdout.fifo",
        stderr_path="/x/.web.stderr.fifo",
        user="nobody",
        task_group_name="g",
        job_name="j",
        job_id="j",
        namespace="default",
        resources=driver_pb2.Resources(
            allocated_resources=driver_pb2.AllocatedTaskResources(
                cpu=driver_pb2.AllocatedCpuResources(cpu_shares=500),
                memory=driver_pb2.AllocatedMemoryResources(memory_mb=256, memory_max_mb=512),
            ),
            linux_resources=driver_pb2.LinuxResources(
                cpu_shares=500, memory_limit_bytes=512 << 20, cpuset_cgroup="/nomad.slice/share.slice"
            ),
            ports=[driver_pb2.PortMapping(label="http", value=23456, to=8080, host_ip="127.0.0.1")],
        ),
        mounts=[driver_pb2.Mount(task_path="/data", host_path="/srv/data", readonly=True)],
        network_isolation_spec=driver_pb2.NetworkIsolationSpec(
            mode=driver_pb2.NetworkIsolationSpec.GROUP, path="/var/run/netns/a1"
        ),
        dns=driver_pb2.DNSConfig(servers=["1.1.1.1"]),
    )
    task = convert.task_from_proto(msg)
    assert task.resources.memory_max_mb == 512 and task.resources.memory_limit_bytes == 512 << 20
    assert task.resources.ports[0].to == 8080 and task.resources.ports[0].host_ip == "127.0.0.1"
    assert task.mounts[0].readonly and task.network.path == "/var/run/netns/a1"
    assert task.network.mode.name == "GROUP" and task.dns is not None and task.dns.servers == ("1.1.1.1",)
    assert task.user == "nobody" and task.task_group == "g"


def test_exit_results() -> None:
    from nomad_rkt_driver.types import ExitResult

    msg = convert.exit_result_to_proto(ExitResult(exit_code=137, signal=9))
    assert (msg.exit_code, msg.signal, msg.oom_killed) == (137, 9, False)
    assert ExitResult().successful and not ExitResult(exit_code=0, signal=0, oom_killed=True).successful
