import asyncio

from nomad_rkt_driver.driver.events import EventBus
from nomad_rkt_driver.types import TaskEvent


def event(n: int) -> TaskEvent:
    return TaskEvent(f"a/t/{n}", "a", "t", float(n), f"event {n}")


def test_every_subscriber_gets_events_in_order() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        bus = EventBus()
        first, second = bus.subscribe(), bus.subscribe()
        pending = [asyncio.ensure_future(anext(first)), asyncio.ensure_future(anext(second))]
        await asyncio.sleep(0)
        bus.publish(event(1))
        bus.publish(event(2))
        got1 = [(await pending[0]).message, (await anext(first)).message]
        got2 = [(await pending[1]).message, (await anext(second)).message]
        await first.aclose()
        await second.aclose()
        return got1, got2

    assert asyncio.run(scenario()) == (["event 1", "event 2"], ["event 1", "event 2"])
