"""RktDriver: Nomad's driver methods expressed in domain types.

Modules needed only by some RPCs (decoding, the task config, the host probe) are imported where
they are used: Nomad starts the plugin three times at boot and the first launch needs none of them.

Tasks cannot be started yet (the pods issue brings runc/conmon supervision); every method is
already truthful about that: lookups of a task answer NotFound, stop/destroy are idempotent,
and StartTask validates the task config and the host before saying it is not implemented.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from nomad_rkt_driver import __version__
from nomad_rkt_driver.config.plugin import WHERE as PLUGIN_WHERE
from nomad_rkt_driver.config.plugin import PluginConfig
from nomad_rkt_driver.driver.events import EventBus
from nomad_rkt_driver.driver.signals import parse_signal
from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument, NotFound, NotImplementedYet
from nomad_rkt_driver.types import (
    AgentConfig,
    Capabilities,
    Fingerprint,
    FSIsolation,
    Health,
    NetworkMode,
    TaskEvent,
    TaskRequest,
)

log = logging.getLogger(__name__)

# Truthful for this version: no signals, exec or mounts until pods exist; the driver gives
# every task its own image root; host networking is the only mode that needs no work from us.
CAPABILITIES = Capabilities(
    send_signals=False,
    exec=False,
    fs_isolation=FSIsolation.IMAGE,
    network_modes=(NetworkMode.HOST,),
    must_create_network=False,
    mounts=False,
    disable_log_collection=False,
    dynamic_workload_users=False,
)


def plugin_version() -> str:
    """The plugin's version (what PluginInfo reports)."""
    return __version__


def task_where(name: str) -> str:
    return f'task "{name}" rkt config'


class RktDriver:
    """One per plugin process; all methods run on the asyncio loop."""

    def __init__(self) -> None:
        self.config = PluginConfig()
        self.agent = AgentConfig()
        self.events = EventBus()
        self._generation = 0
        self._changed = asyncio.Condition()

    # -- configuration -------------------------------------------------------------------

    async def set_config(self, data: bytes, agent: AgentConfig | None) -> None:
        """Decode and validate the agent's plugin config; a later call replaces an earlier one."""
        from nomad_rkt_driver.config.decode import decode_msgpack

        config = decode_msgpack(PluginConfig, data, PLUGIN_WHERE)
        self.config = config
        if agent is not None:
            self.agent = agent
        async with self._changed:
            self._generation += 1
            self._changed.notify_all()
        log.debug("plugin configured", extra={"runtime": config.runtime, "data_dir": config.data_dir})

    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    # -- health --------------------------------------------------------------------------

    async def fingerprint(self) -> Fingerprint:
        """Probe the host once with the current config (in a thread: it may run --version)."""
        from nomad_rkt_driver.driver.fingerprint import probe

        return await asyncio.to_thread(probe, self.config, plugin_version())

    async def fingerprints(self) -> AsyncIterator[Fingerprint]:
        """First answer at once, then again every fingerprint_period or when the config changes."""
        while True:
            generation = self._generation
            yield await self.fingerprint()
            try:
                async with self._changed:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda g=generation: self._generation != g),  # type: ignore[misc]
                        timeout=float(self.config.fingerprint_period),
                    )
            except TimeoutError:
                pass

    def task_events(self) -> AsyncIterator[TaskEvent]:
        return self.events.subscribe()

    # -- tasks ---------------------------------------------------------------------------

    async def start_task(self, task: TaskRequest) -> None:
        """Validate the task config and the host; starting pods comes with the pods issue."""
        from nomad_rkt_driver.config.decode import decode_msgpack
        from nomad_rkt_driver.config.task import TaskConfig

        if not task.id:
            raise InvalidArgument("StartTask needs a task id")
        decode_msgpack(TaskConfig, task.driver_config, task_where(task.name))
        health = await self.fingerprint()
        if health.health is not Health.HEALTHY:
            raise FailedPrecondition(
                f"the rkt driver cannot run tasks on this host yet: {health.description}", recoverable=True
            )
        raise NotImplementedYet(
            "this version of the rkt driver validates task configs but cannot start "
            "pods yet (runc/conmon supervision arrives with the pods work)"
        )

    async def recover_task(self, task_id: str) -> None:
        if not task_id:
            raise InvalidArgument("RecoverTask needs a handle whose config carries the task id")
        raise NotFound(f"task {task_id} cannot be recovered: the rkt driver has no pod for it")

    async def wait_task(self, task_id: str) -> None:
        raise NotFound(self._unknown(task_id))

    async def stop_task(self, task_id: str, timeout_s: float, signal_name: str) -> None:
        """Idempotent: stopping a task this driver does not run is a success (Nomad retries errors)."""
        if signal_name:
            parse_signal(signal_name)
        log.debug("stop of unknown task ignored", extra={"task_id": task_id, "timeout_s": timeout_s})

    async def destroy_task(self, task_id: str, force: bool) -> None:
        """Idempotent: nothing to clean for a task this driver does not know."""
        log.debug("destroy of unknown task ignored", extra={"task_id": task_id, "force": force})

    async def inspect_task(self, task_id: str) -> None:
        raise NotFound(self._unknown(task_id))

    async def task_stats(self, task_id: str) -> None:
        raise NotFound(self._unknown(task_id))

    async def signal_task(self, task_id: str, signal_name: str) -> None:
        parse_signal(signal_name)
        raise NotFound(self._unknown(task_id))

    async def exec_task(self, task_id: str) -> None:
        raise NotFound(self._unknown(task_id))

    @staticmethod
    def _unknown(task_id: str) -> str:
        return f"task {task_id!r} is not known to the rkt driver"
