"""Which Nomad ports a pod publishes, and on which container port and protocol (pure functions).

Labels to forward come from the task's ``port_map { <label> = "<image port name>" }`` (rkt style)
and ``ports = ["<label>", ...]`` (docker style). Each label is resolved, in this order:

1. a ``port_map`` entry → the image's port of that *name* (rkt's rule: Docker ``ExposedPorts``
   ``8080/tcp`` is named ``8080-tcp``; OCI labels ``io.nomad.rkt.port.<name>=<port>/<proto>`` give
   real names);
2. Nomad's ``to`` for the label (``network { port "http" { to = 8080 } }``);
3. an image port whose name equals the label;
4. otherwise an error listing the image's port names (with a suggestion for ``6379`` vs
   ``6379-tcp``).

Only the protocol(s) the image declares for that port are published (tcp when the image says
nothing about a ``to`` port). The host side is Nomad's allocated value on Nomad's ``host_ip``.
On ``host`` networking (and in Nomad's group namespace, where Nomad maps ports itself) nothing is
forwarded and a warning text says so; that is not an error (hashicorp/nomad#3207).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nomad_rkt_driver.errors import InvalidConfig
from nomad_rkt_driver.types import PortMapping


@dataclass(frozen=True)
class ImagePort:
    """A port the image declares (the driver passes ``ImageDefaults.ports``)."""

    name: str
    port: int
    protocol: str = "tcp"


@dataclass(frozen=True)
class PortForward:
    """One host port forwarded into the pod."""

    label: str
    host_ip: str
    host_port: int
    container_port: int
    protocol: str

    def as_cni(self) -> dict[str, object]:
        """The entry of CNI's ``runtimeConfig.portMappings`` (the portmap plugin's capability)."""
        entry: dict[str, object] = {
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol,
        }
        if self.host_ip:
            entry["hostIP"] = self.host_ip
        return entry


def labels_to_forward(port_map: dict[str, str], ports: Sequence[str]) -> tuple[str, ...]:
    """port_map labels first, then ``ports`` labels not already mapped; no duplicates."""
    seen: dict[str, None] = dict.fromkeys(port_map)
    seen.update(dict.fromkeys(ports))
    return tuple(seen)


def _describe(image_ports: Sequence[ImagePort]) -> str:
    if not image_ports:
        return "the image declares no ports"
    return "the image's ports: " + ", ".join(f"{p.name} ({p.port}/{p.protocol})" for p in image_ports)


def suggest(name: str, image_ports: Sequence[ImagePort]) -> list[str]:
    """Image port names a user probably meant by ``name`` (``6379`` → ``6379-tcp``)."""
    hits = [p.name for p in image_ports if p.name.startswith(name + "-")]
    if name.isdigit():
        hits += [p.name for p in image_ports if p.port == int(name) and p.name not in hits]
    lowered = name.lower()
    hits += [p.name for p in image_ports if p.name.lower() == lowered and p.name not in hits]
    return hits


def _by_name(name: str, image_ports: Sequence[ImagePort]) -> ImagePort | None:
    return next((p for p in image_ports if p.name == name), None)


def _unknown_name(where: str, attribute: str, name: str, image_ports: Sequence[ImagePort]) -> InvalidConfig:
    hint = suggest(name, image_ports)
    problem = f'the image has no port named "{name}"; {_describe(image_ports)}'
    if hint:
        problem += "; did you mean " + " or ".join(f'"{h}"' for h in hint) + "?"
    return InvalidConfig(where, attribute, problem)


def resolve_label(
    label: str,
    port_map: dict[str, str],
    alloc: PortMapping,
    image_ports: Sequence[ImagePort],
    where: str,
) -> list[PortForward]:
    """The forwards for one label (several when the image declares a ``to`` port on tcp and udp)."""
    host_ip = alloc.host_ip

    def forward(port: int, protocol: str) -> PortForward:
        return PortForward(label, host_ip, alloc.value, port, protocol)

    if label in port_map:
        name = port_map[label]
        found = _by_name(name, image_ports)
        if found is None:
            raise _unknown_name(where, f"port_map.{label}", name, image_ports)
        return [forward(found.port, found.protocol)]
    if alloc.to > 0:
        protocols = sorted({p.protocol for p in image_ports if p.port == alloc.to}) or ["tcp"]
        return [forward(alloc.to, protocol) for protocol in protocols]
    found = _by_name(label, image_ports)
    if found is not None:
        return [forward(found.port, found.protocol)]
    problem = (
        f'port "{label}" has no container port: {_describe(image_ports)}; map it with '
        f'port_map {{ {label} = "<image port name>" }} or give it a "to" in the group\'s network block'
    )
    hint = suggest(label, image_ports)
    if hint:
        problem += "; did you mean " + " or ".join(f'"{h}"' for h in hint) + "?"
    raise InvalidConfig(where, "ports", problem)


def resolve(
    port_map: dict[str, str],
    ports: Sequence[str],
    alloc_ports: Sequence[PortMapping],
    image_ports: Sequence[ImagePort],
    where: str,
) -> tuple[PortForward, ...]:
    """Every forward a pod with its own network namespace needs; InvalidConfig names the bad label."""
    by_label = {p.label: p for p in alloc_ports}
    forwards: list[PortForward] = []
    for label in labels_to_forward(port_map, ports):
        alloc = by_label.get(label)
        if alloc is None:
            known = ", ".join(sorted(by_label)) or "none"
            attribute = f"port_map.{label}" if label in port_map else "ports"
            raise InvalidConfig(
                where,
                attribute,
                f'"{label}" is not one of the task group\'s ports (it has: {known}); '
                f'add network {{ port "{label}" {{}} }} to the group',
            )
        forwards.extend(resolve_label(label, port_map, alloc, image_ports, where))
    _check_conflicts(forwards, where)
    return tuple(forwards)


def _check_conflicts(forwards: Sequence[PortForward], where: str) -> None:
    seen: dict[tuple[str, int], PortForward] = {}
    for fwd in forwards:
        key = (fwd.protocol, fwd.host_port)
        other = seen.get(key)
        if other is not None and other.label != fwd.label:
            raise InvalidConfig(
                where,
                "ports",
                f'"{fwd.label}" and "{other.label}" both use host port {fwd.host_port}/{fwd.protocol}',
            )
        seen[key] = fwd


def ignored_warning(port_map: dict[str, str], ports: Sequence[str], why: str) -> str:
    """The task event text when a port mapping cannot apply (host or group networking); "" if none."""
    labels = labels_to_forward(port_map, ports)
    if not labels:
        return ""
    return (
        f"port_map/ports ignored for {', '.join(labels)}: {why}; the task binds its NOMAD_PORT_<label> values directly"
    )


def driver_port_map(forwards: Sequence[PortForward]) -> dict[str, int]:
    """label → container port, for Nomad's network_override (address_mode = "driver")."""
    result: dict[str, int] = {}
    for fwd in forwards:
        result.setdefault(fwd.label, fwd.container_port)
    return result


@dataclass(frozen=True)
class DriverNetwork:
    """Nomad's network_override: the pod's address and label → container port (address_mode "driver")."""

    addr: str
    port_map: dict[str, int]
    auto_advertise: bool = True
