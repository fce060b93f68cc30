"""The plugin's dangling-pod timer: started by SetConfig, one pass every ``gc.dangling_pods.period``.

Kept apart from the judgement (reconcile.py) so that SetConfig, which Nomad's boot-time
validation launch calls too, loads almost nothing: the first pass is one period away and never
before the plugin has been up ``creation_grace``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nomad_rkt_driver.config.plugin import PluginConfig
    from nomad_rkt_driver.driver.reconcile import Decision
    from nomad_rkt_driver.driver.tasks import TaskManager

log = logging.getLogger(__name__)


class Reconciler:
    """The plugin's periodic pass, started by SetConfig; its loop ends when the config disables it."""

    def __init__(self, manager: Callable[[], TaskManager], config: Callable[[], PluginConfig], up_since: float) -> None:
        self._manager = manager
        self._config = config
        self._up_since = up_since  # time.monotonic() when the plugin started
        self._loop_task: asyncio.Task[None] | None = None

    def configure(self) -> None:
        """After every SetConfig: run the loop when enabled (no-op when it already runs)."""
        if not self._config().gc.dangling_pods.enabled:
            return
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    def uptime(self) -> float:
        return time.monotonic() - self._up_since

    async def _loop(self) -> None:
        while True:
            settings = self._config().gc.dangling_pods
            if not settings.enabled:
                return
            await asyncio.sleep(max(float(settings.period), float(settings.creation_grace) - self.uptime()))
            try:
                await self.run_once()
            except Exception:  # one bad pass must not end the loop
                log.exception("dangling pod reconciliation failed")

    async def run_once(self) -> list[Decision]:
        """One pass: judge every pod and orphan network, then remove (or, dry run, log) the dangling ones."""
        from nomad_rkt_driver.driver.reconcile import judge_for_plugin, plan, remove
        from nomad_rkt_driver.errors import DriverError
        from nomad_rkt_driver.runtime.owners import RUNNER_ENV

        if os.environ.get(RUNNER_ENV):
            return []  # the runner's plugin must not judge the agent's pods; the runner cleans up its own
        plugin = self._config()
        settings = plugin.gc.dangling_pods
        grace = float(settings.creation_grace)
        if not settings.enabled or self.uptime() < grace:
            return []
        manager = self._manager()
        try:
            pods, networks = manager.parts_for(plugin)
        except DriverError as exc:  # runc or conmon missing: the fingerprint says so already
            log.debug("dangling pod reconciliation skipped", extra={"err": str(exc)})
            return []
        claimed = manager.claimed_pods()
        me = manager.owner
        decisions = await asyncio.to_thread(
            plan, pods, networks, lambda f: judge_for_plugin(f, me, claimed, grace), grace, claimed
        )
        for decision in decisions:
            if not decision.remove:
                continue
            fields = {"pod_id": decision.pod_id, "reason": decision.reason}
            if settings.dry_run:
                log.info(f"dry run: would remove dangling {decision.what}", extra=fields)
                continue
            try:
                done = await manager.reap(decision.pod_id, functools.partial(remove, pods, networks, decision))
            except (DriverError, OSError) as exc:
                log.warning(f"could not remove dangling {decision.what}", extra={**fields, "err": str(exc)})
                continue
            if done:
                log.info(f"removed dangling {decision.what}", extra=fields)
        return decisions
