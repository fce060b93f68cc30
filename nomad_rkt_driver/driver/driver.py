"""RktDriver: Nomad's driver methods expressed in domain types.

Modules needed only by some RPCs (decoding, the task config, the host probe) are imported where
they are used: Nomad starts the plugin three times at boot and the first launch needs none of them.

Task verbs go to the TaskManager (driver/tasks.py), which composes the image store and the pods
runtime; lookups of unknown tasks answer NotFound, stop and destroy are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from nomad_rkt_driver import __version__
from nomad_rkt_driver.driver.events import EventBus
from nomad_rkt_driver.driver.signals import parse_signal
from nomad_rkt_driver.errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:  # the config and domain types are built on first use, not at plugin start
    from nomad_rkt_driver.config.plugin import PluginConfig
    from nomad_rkt_driver.driver.execstream import ExecStream
    from nomad_rkt_driver.driver.reconciler import Reconciler
    from nomad_rkt_driver.driver.tasks import TaskManager
    from nomad_rkt_driver.network.ports import DriverNetwork
    from nomad_rkt_driver.types import (
        AgentConfig,
        Capabilities,
        ExitResult,
        Fingerprint,
        TaskEvent,
        TaskRequest,
        TaskStats,
        TaskStatusView,
    )

log = logging.getLogger(__name__)
HEALTH_REUSE_S = 10.0  # StartTask trusts a healthy host check this recent (config changes reset it)


def plugin_version() -> str:
    """The plugin's version (what PluginInfo reports)."""
    return __version__


def task_where(name: str) -> str:
    return f'task "{name}" rkt config'


class RktDriver:
    """One per plugin process; all methods run on the asyncio loop."""

    def __init__(self) -> None:
        self._config: PluginConfig | None = None
        self._agent: AgentConfig | None = None
        self.events = EventBus()
        self._generation = 0
        self._changed = asyncio.Condition()
        self._tasks: TaskManager | None = None
        self._healthy_at: tuple[float, int, Fingerprint] | None = None
        self._started = time.monotonic()  # the dangling-pod grace counts from here
        self._reconciler: Reconciler | None = None

    # -- configuration -------------------------------------------------------------------

    @property
    def config(self) -> PluginConfig:
        """The plugin config from the last SetConfig (every default before the first)."""
        if self._config is None:
            from nomad_rkt_driver.config.plugin import PluginConfig

            self._config = PluginConfig()
        return self._config

    @property
    def agent(self) -> AgentConfig:
        if self._agent is None:
            from nomad_rkt_driver.types import AgentConfig

            self._agent = AgentConfig()
        return self._agent

    async def set_config(self, data: bytes, agent: AgentConfig | None) -> None:
        """Decode and validate the agent's plugin config; a later call replaces an earlier one."""
        from nomad_rkt_driver.config.decode import decode_msgpack
        from nomad_rkt_driver.config.plugin import WHERE as PLUGIN_WHERE
        from nomad_rkt_driver.config.plugin import PluginConfig

        config = decode_msgpack(PluginConfig, data, PLUGIN_WHERE)
        self._config = config
        if agent is not None:
            self._agent = agent
        async with self._changed:
            self._generation += 1
            self._changed.notify_all()
        self._reconcile().configure()  # a timer only: the first pass is one period away
        log.debug("plugin configured", extra={"runtime": config.runtime, "data_dir": config.data_dir})

    def _reconcile(self) -> Reconciler:
        if self._reconciler is None:
            from nomad_rkt_driver.driver.reconciler import Reconciler

            self._reconciler = Reconciler(self._manager, lambda: self.config, self._started)
        return self._reconciler

    def capabilities(self) -> Capabilities:
        from nomad_rkt_driver.driver.capabilities import CAPABILITIES

        return CAPABILITIES

    # -- health --------------------------------------------------------------------------

    async def fingerprint(self) -> Fingerprint:
        """Probe the host once with the current config (in a thread: it may run --version)."""
        from nomad_rkt_driver.driver.fingerprint import probe

        return await asyncio.to_thread(probe, self.config, plugin_version())

    async def _recent_fingerprint(self) -> Fingerprint:
        """The host check StartTask needs: reuse a healthy answer younger than HEALTH_REUSE_S."""
        from nomad_rkt_driver.types import Health

        now = time.monotonic()
        recent = self._healthy_at
        if recent is not None and now - recent[0] < HEALTH_REUSE_S and recent[1] == self._generation:
            return recent[2]
        fingerprint = await self.fingerprint()
        healthy = fingerprint.health is Health.HEALTHY
        self._healthy_at = (now, self._generation, fingerprint) if healthy else None
        return fingerprint

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

    def _manager(self) -> TaskManager:
        if self._tasks is None:
            from nomad_rkt_driver.driver.tasks import TaskManager

            self._tasks = TaskManager(self.events)
        return self._tasks

    async def start_task(self, task: TaskRequest) -> bytes:
        """Validate the task config and the host, fetch the image, start the pod; the driver_state."""
        from nomad_rkt_driver.config.decode import decode_msgpack
        from nomad_rkt_driver.config.task import TaskConfig
        from nomad_rkt_driver.types import Health

        if not task.id:
            raise InvalidArgument("StartTask needs a task id")
        where = task_where(task.name)
        cfg = decode_msgpack(TaskConfig, task.driver_config, where)
        health = await self._recent_fingerprint()
        if health.health is not Health.HEALTHY:
            raise FailedPrecondition(
                f"the rkt driver cannot run tasks on this host yet: {health.description}", recoverable=True
            )
        return await self._manager().start(task, cfg, self.config, where)

    def task_network(self, task_id: str) -> DriverNetwork | None:
        """The task's network_override (pod address, label → container port); None without one."""
        return self._manager().network_of(task_id)

    async def recover_task(self, task_id: str, driver_state: bytes) -> None:
        if not task_id:
            raise InvalidArgument("RecoverTask needs a handle whose config carries the task id")
        await self._manager().recover(task_id, driver_state, self.config)

    async def wait_task(self, task_id: str) -> tuple[ExitResult, str]:
        return await self._manager().wait(task_id)

    async def stop_task(self, task_id: str, timeout_s: float, signal_name: str) -> None:
        """Idempotent: stopping a task this driver does not run is a success (Nomad retries errors)."""
        if signal_name:
            parse_signal(signal_name)
        await self._manager().stop(task_id, timeout_s, signal_name)

    async def destroy_task(self, task_id: str, force: bool) -> None:
        """Idempotent: nothing to clean for a task this driver does not know."""
        await self._manager().destroy(task_id, force)

    async def inspect_task(self, task_id: str) -> TaskStatusView:
        return await self._manager().inspect(task_id)

    def task_stats(self, task_id: str, interval_s: float) -> AsyncIterator[TaskStats]:
        return self._manager().stats(task_id, interval_s, self.agent.topology)

    async def signal_task(self, task_id: str, signal_name: str) -> None:
        await self._manager().signal(task_id, signal_name)

    async def exec_task(self, task_id: str, command: list[str], timeout_s: float) -> tuple[bytes, bytes, ExitResult]:
        return await self._manager().exec(task_id, command, timeout_s)

    async def exec_streaming(self, task_id: str, command: list[str], tty: bool) -> ExecStream:
        return await self._manager().exec_stream(task_id, command, tty)
