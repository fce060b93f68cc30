"""gRPC servicers: decode the request, call the driver, encode the reply. Nothing else.

Every driver error passes through ``status.abort`` so the mapping to codes lives in one place.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2

from nomad_rkt_driver import PLUGIN_API_VERSIONS, PLUGIN_NAME
from nomad_rkt_driver.driver.driver import RktDriver, plugin_version
from nomad_rkt_driver.errors import InvalidArgument
from nomad_rkt_driver.protocol import status
from nomad_rkt_driver.protocol.gen import (
    base_pb2,
    base_pb2_grpc,
    driver_pb2,
    driver_pb2_grpc,
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2,
    grpc_stdio_pb2_grpc,
)

log = logging.getLogger(__name__)


# Conversions, schemas and configs build many classes at import: they load on the first RPC that
# needs them, not before the handshake (Nomad starts the plugin three times at boot).
def _convert() -> Any:
    from nomad_rkt_driver.protocol import convert

    return convert


def _schema() -> Any:
    from nomad_rkt_driver.protocol import schema

    return schema


def _plugin_config() -> type:
    from nomad_rkt_driver.config.plugin import PluginConfig

    return PluginConfig


def _task_config() -> type:
    from nomad_rkt_driver.config.task import TaskConfig

    return TaskConfig


HANDLE_VERSION = 1  # TaskHandle.version; 0 is reserved by Nomad
Context = grpc.aio.ServicerContext[Any, Any]
R = TypeVar("R")


async def _call(context: Context, rpc: str, work: Callable[[], Awaitable[R]]) -> R:
    try:
        return await work()
    except Exception as exc:  # every failure becomes a status; bugs are logged in status.abort
        await status.abort(context, exc, rpc)


class BasePluginServicer(base_pb2_grpc.BasePluginServicer):
    def __init__(self, driver: RktDriver) -> None:
        self._driver = driver

    async def PluginInfo(self, request: base_pb2.PluginInfoRequest, context: Context) -> base_pb2.PluginInfoResponse:
        return base_pb2.PluginInfoResponse(
            type=base_pb2.DRIVER,
            plugin_api_versions=list(PLUGIN_API_VERSIONS),
            plugin_version=plugin_version(),
            name=PLUGIN_NAME,
        )

    async def ConfigSchema(
        self, request: base_pb2.ConfigSchemaRequest, context: Context
    ) -> base_pb2.ConfigSchemaResponse:
        return base_pb2.ConfigSchemaResponse(spec=_schema().render(_plugin_config()))

    async def SetConfig(self, request: base_pb2.SetConfigRequest, context: Context) -> base_pb2.SetConfigResponse:
        agent = _convert().agent_config_from_proto(request)
        await _call(context, "SetConfig", lambda: self._driver.set_config(request.msgpack_config, agent))
        return base_pb2.SetConfigResponse()


class DriverServicer(driver_pb2_grpc.DriverServicer):
    def __init__(self, driver: RktDriver) -> None:
        self._driver = driver

    async def TaskConfigSchema(
        self, request: driver_pb2.TaskConfigSchemaRequest, context: Context
    ) -> driver_pb2.TaskConfigSchemaResponse:
        return driver_pb2.TaskConfigSchemaResponse(spec=_schema().render(_task_config()))

    async def Capabilities(
        self, request: driver_pb2.CapabilitiesRequest, context: Context
    ) -> driver_pb2.CapabilitiesResponse:
        caps = _convert().capabilities_to_proto(self._driver.capabilities())
        return driver_pb2.CapabilitiesResponse(capabilities=caps)

    async def Fingerprint(
        self, request: driver_pb2.FingerprintRequest, context: Context
    ) -> AsyncIterator[driver_pb2.FingerprintResponse]:
        async for fp in self._driver.fingerprints():
            yield _convert().fingerprint_to_proto(fp)

    async def TaskEvents(
        self, request: driver_pb2.TaskEventsRequest, context: Context
    ) -> AsyncIterator[driver_pb2.DriverTaskEvent]:
        async for event in self._driver.task_events():
            yield _convert().event_to_proto(event)

    async def StartTask(self, request: driver_pb2.StartTaskRequest, context: Context) -> driver_pb2.StartTaskResponse:
        task = _convert().task_from_proto(request.task)
        state = await _call(context, "StartTask", lambda: self._driver.start_task(task))
        # The handle echoes Nomad's TaskConfig: the client reads the task id back from it on recovery.
        handle = driver_pb2.TaskHandle(
            version=HANDLE_VERSION, config=request.task, state=driver_pb2.RUNNING, driver_state=state
        )
        network = _convert().network_override_to_proto(self._driver.task_network(task.id))
        return driver_pb2.StartTaskResponse(handle=handle, network_override=network)

    async def RecoverTask(
        self, request: driver_pb2.RecoverTaskRequest, context: Context
    ) -> driver_pb2.RecoverTaskResponse:
        # Nomad leaves task_id empty; the id lives in the handle's config.
        task_id = request.task_id or request.handle.config.id
        state = request.handle.driver_state
        await _call(context, "RecoverTask", lambda: self._driver.recover_task(task_id, state))
        return driver_pb2.RecoverTaskResponse()

    async def WaitTask(self, request: driver_pb2.WaitTaskRequest, context: Context) -> driver_pb2.WaitTaskResponse:
        result, err = await _call(context, "WaitTask", lambda: self._driver.wait_task(request.task_id))
        return driver_pb2.WaitTaskResponse(result=_convert().exit_result_to_proto(result), err=err)

    async def StopTask(self, request: driver_pb2.StopTaskRequest, context: Context) -> driver_pb2.StopTaskResponse:
        timeout_s = request.timeout.ToTimedelta().total_seconds()
        await _call(context, "StopTask", lambda: self._driver.stop_task(request.task_id, timeout_s, request.signal))
        return driver_pb2.StopTaskResponse()

    async def DestroyTask(
        self, request: driver_pb2.DestroyTaskRequest, context: Context
    ) -> driver_pb2.DestroyTaskResponse:
        await _call(context, "DestroyTask", lambda: self._driver.destroy_task(request.task_id, request.force))
        return driver_pb2.DestroyTaskResponse()

    async def InspectTask(
        self, request: driver_pb2.InspectTaskRequest, context: Context
    ) -> driver_pb2.InspectTaskResponse:
        view = await _call(context, "InspectTask", lambda: self._driver.inspect_task(request.task_id))
        network = _convert().network_override_to_proto(self._driver.task_network(request.task_id))
        return driver_pb2.InspectTaskResponse(
            task=_convert().task_status_to_proto(view), driver=driver_pb2.TaskDriverStatus(), network_override=network
        )

    async def TaskStats(
        self, request: driver_pb2.TaskStatsRequest, context: Context
    ) -> AsyncIterator[driver_pb2.TaskStatsResponse]:
        interval_s = request.collection_interval.ToTimedelta().total_seconds() or 1.0
        try:
            async for sample in self._driver.task_stats(request.task_id, interval_s):
                yield _convert().stats_to_proto(sample)
        except Exception as exc:
            await status.abort(context, exc, "TaskStats")

    async def SignalTask(
        self, request: driver_pb2.SignalTaskRequest, context: Context
    ) -> driver_pb2.SignalTaskResponse:
        await _call(context, "SignalTask", lambda: self._driver.signal_task(request.task_id, request.signal))
        return driver_pb2.SignalTaskResponse()

    async def ExecTask(self, request: driver_pb2.ExecTaskRequest, context: Context) -> driver_pb2.ExecTaskResponse:
        timeout_s = request.timeout.ToTimedelta().total_seconds()
        out, err, result = await _call(
            context, "ExecTask", lambda: self._driver.exec_task(request.task_id, list(request.command), timeout_s)
        )
        return driver_pb2.ExecTaskResponse(stdout=out, stderr=err, result=_convert().exit_result_to_proto(result))

    async def ExecTaskStreaming(
        self, request_iterator: AsyncIterator[driver_pb2.ExecTaskStreamingRequest], context: Context
    ) -> AsyncIterator[driver_pb2.ExecTaskStreamingResponse]:
        first = await anext(request_iterator, None)
        if first is None or not first.HasField("setup"):
            await status.abort(context, InvalidArgument("the first exec message must carry setup"), "ExecTaskStreaming")
            return
        setup = first.setup
        stream = await _call(
            context,
            "ExecTaskStreaming",
            lambda: self._driver.exec_streaming(setup.task_id, list(setup.command), setup.tty),
        )
        feeder = asyncio.create_task(_feed_exec(request_iterator, stream))
        try:
            async for name, data in stream.outputs():
                chunk = driver_pb2.ExecTaskStreamingIOOperation(data=data)
                yield (
                    driver_pb2.ExecTaskStreamingResponse(stdout=chunk)
                    if name == "stdout"
                    else driver_pb2.ExecTaskStreamingResponse(stderr=chunk)
                )
            closed = driver_pb2.ExecTaskStreamingIOOperation(close=True)
            yield driver_pb2.ExecTaskStreamingResponse(stdout=closed)
            yield driver_pb2.ExecTaskStreamingResponse(stderr=closed)
            code = await stream.wait()
            result = driver_pb2.ExitResult(exit_code=code if code >= 0 else 128 - code, signal=max(0, -code))
            yield driver_pb2.ExecTaskStreamingResponse(exited=True, result=result)
        finally:
            feeder.cancel()
            await stream.close()


async def _feed_exec(requests: AsyncIterator[driver_pb2.ExecTaskStreamingRequest], stream: Any) -> None:
    """Client → exec: stdin data, stdin close, terminal resizes; empty messages are heartbeats."""
    async for message in requests:
        if message.HasField("tty_size"):
            stream.resize(message.tty_size.height, message.tty_size.width)
        if message.HasField("stdin"):
            if message.stdin.data:
                await stream.write(message.stdin.data)
            if message.stdin.close:
                stream.close_stdin()


class ControllerServicer(grpc_controller_pb2_grpc.GRPCControllerServicer):
    """go-plugin's Shutdown: answer, then let the server stop and the process exit."""

    def __init__(self, shutdown: asyncio.Event) -> None:
        self._shutdown = shutdown

    async def Shutdown(self, request: grpc_controller_pb2.Empty, context: Context) -> grpc_controller_pb2.Empty:
        log.debug("shutdown requested by the host")
        asyncio.get_running_loop().call_soon(self._shutdown.set)
        return grpc_controller_pb2.Empty()


class StdioServicer(grpc_stdio_pb2_grpc.GRPCStdioServicer):
    """go-plugin's stdio mirror. The plugin never writes to stdout/stderr outside its logs, so the
    stream carries no data and simply stays open until the server stops."""

    def __init__(self, shutdown: asyncio.Event) -> None:
        self._shutdown = shutdown

    async def StreamStdio(self, request: empty_pb2.Empty, context: Context) -> AsyncIterator[grpc_stdio_pb2.StdioData]:
        await self._shutdown.wait()
        return
        yield  # makes this an async generator
