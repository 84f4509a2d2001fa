"""AsyncClient and AsyncWatcher (protocol/aio.py) against a real actor process,
and what both clients promise on a timeout (a request's deadline).

Each test body is a coroutine run with asyncio.run; every wait is bounded by a
deadline (asyncio.wait_for or a polling loop), never a sleep.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from actor.server import PUB_HIGH_WATER_MARK
from protocol.aio import AsyncClient, AsyncWatcher
from protocol.client import RESYNC, Client, CommandFailed

from .conftest import start_actor
from .helpers import PROBE_ID, in_future
from .test_security import pki, security_toml, write_config  # noqa: F401  (pki is a fixture)
from .test_watcher import SCRIPT, drive, random_changes

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def shared_actor():
    running = start_actor(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*")
    yield running
    running.stop()


@pytest.fixture
def ipc_actor(short_tmp):
    """An actor on fixed ipc endpoints, so a test can stop it and start it again there."""
    endpoints = dict(command=f"ipc://{short_tmp}/cmd", update=f"ipc://{short_tmp}/upd")
    running = [start_actor(**endpoints)]
    yield running, endpoints
    running[-1].stop()


def watcher_for(actor, **kwargs) -> AsyncWatcher:
    return AsyncWatcher(actor.command_endpoint, actor.update_endpoint, **kwargs)


async def catch_up(watcher: AsyncWatcher, seq: int, within: float = 10.0) -> list:
    applied = []
    end = time.monotonic() + within
    while watcher.state is None or watcher.state["seq"] < seq:
        assert time.monotonic() < end, f"watcher stuck at {watcher.state and watcher.state['seq']}"
        applied += await watcher.poll(0.1)
    return applied


async def subscribed(watcher: AsyncWatcher, client: AsyncClient) -> None:
    """Place and cancel a probe until the watcher applies an update (its
    subscription has reached the PUB), then catch up with the actor."""
    end = time.monotonic() + 10
    while True:
        assert time.monotonic() < end, "the subscription never took effect"
        assert await client.reserve_now(reservation_id=PROBE_ID, id_token="probe",
                                        expiry_time=in_future()) == "Accepted"
        assert await client.cancel_reservation(PROBE_ID)
        if any(topic != RESYNC for topic, _ in await watcher.poll(0.05)):
            break
    await catch_up(watcher, (await client.get_state())["seq"])


def test_every_command_gives_what_the_sync_client_gives(shared_actor):
    """The same script through both clients, the state reset in between:
    identical results and identical errors."""
    script = [(cmd, args) for cmd, args, _ in SCRIPT] + [
        ("exists_reservation", {"request": {"id_token": "CAROL"}}),
        ("use_reservation", {"id_token": "nobody"}),
        ("is_charging_possible", {"evse_id": 1}),
        ("ping", None),
        ("connector_event", {"evse_id": 9, "connector_id": 1, "event": "Faulted"}),
        ("reserve_now", {"request": {"reservation_id": 1}}),
    ]

    def outcome(call, cmd, args):
        try:
            return "ok", call(cmd, args)
        except CommandFailed as failed:
            return failed.code, failed.message

    def reset(client: Client) -> None:
        for reservation in client.get_state()["reservations"]:
            client.cancel_reservation(reservation["reservation_id"])

    async def through_async() -> list:
        async with AsyncClient(shared_actor.command_endpoint) as client:
            results = []
            for cmd, args in script:
                try:
                    results.append(("ok", await client.call(cmd, args)))
                except CommandFailed as failed:
                    results.append((failed.code, failed.message))
            # The named methods are the shared ones, returning awaitables here.
            assert await client.ping() == "pong"
            assert await client.is_charging_possible(2) is True
            assert (await client.stats())["pid"] == shared_actor.process.pid
            assert await client.cancel_reservation(123456) is False
            return results

    with shared_actor.client() as sync:
        reset(sync)
        expected = [outcome(sync.call, cmd, args) for cmd, args in script]
        reset(sync)
        assert asyncio.run(through_async()) == expected
        reset(sync)
    assert ("ok", "Accepted") in expected and "invalid_argument" in {code for code, _ in expected}


def test_pipelined_calls_each_get_their_own_reply(shared_actor):
    async def body():
        async with AsyncClient(shared_actor.command_endpoint) as client:
            assert await client.reserve_now(reservation_id=77, id_token="ALICE", evse_id=1,
                                            expiry_time=in_future()) == "Accepted"
            calls, wanted = [], []
            for n in range(300):
                kind = n % 3
                if kind == 0:
                    calls.append(client.exists_reservation(id_token="alice", evse_id=1))
                    wanted.append("ReservedForToken")
                elif kind == 1:
                    calls.append(client.exists_reservation(id_token=f"T{n}", evse_id=1))
                    wanted.append("ReservedForOtherToken")
                else:
                    calls.append(client.cancel_reservation(100_000 + n))
                    wanted.append(False)
            assert await asyncio.gather(*calls) == wanted
            assert await client.cancel_reservation(77) is True

    asyncio.run(body())


def test_async_timeout_drops_the_request_for_good(ipc_actor):
    """Deadlines: a reserve_now sent while the actor is down times out, and
    when the actor is back on the same endpoint it never arrives there; the
    same client then works again. A call in flight beside it fails too."""
    running, endpoints = ipc_actor

    async def body():
        async with AsyncClient(endpoints["command"], timeout=0.5) as client:
            assert await client.ping() == "pong"
            running[-1].stop()
            late = client.reserve_now(reservation_id=5, id_token="LATE", evse_id=1,
                                      expiry_time=in_future())
            beside = client.reserve_now(reservation_id=6, id_token="LATE", evse_id=2,
                                        expiry_time=in_future())
            outcomes = await asyncio.gather(late, beside, return_exceptions=True)
            assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
            assert "can no longer take effect" in str(outcomes[0])
            running.append(start_actor(**endpoints))
            end = time.monotonic() + 10
            while True:
                try:
                    assert await client.ping() == "pong"
                    break
                except TimeoutError:
                    assert time.monotonic() < end, "the client never reached the new actor"
            assert (await client.get_state())["reservations"] == []

    asyncio.run(body())


def test_sync_call_timeout_drops_the_request_for_good(ipc_actor):
    running, endpoints = ipc_actor
    with Client(endpoints["command"], timeout=0.5) as client:
        assert client.ping() == "pong"
        running[-1].stop()
        with pytest.raises(TimeoutError, match="can no longer take effect"):
            client.reserve_now(reservation_id=5, id_token="LATE", evse_id=1, expiry_time=in_future())
        running.append(start_actor(**endpoints))
        end = time.monotonic() + 10
        while True:
            try:
                assert client.ping() == "pong"
                break
            except TimeoutError:
                assert time.monotonic() < end, "the client never reached the new actor"
        assert client.get_state()["reservations"] == []


def test_watcher_follows_every_change_to_exactly_get_state(shared_actor):
    async def body():
        async with AsyncClient(shared_actor.command_endpoint) as client, \
                watcher_for(shared_actor, check_every=None) as watcher:
            await subscribed(watcher, client)
            resyncs = watcher.resyncs
            for cmd, args, result in SCRIPT:
                assert await client.call(cmd, args) == result, f"{cmd} {args}"
                state = await client.get_state()
                await catch_up(watcher, state["seq"])
                assert watcher.state == state, f"after {cmd} {args}"
            assert watcher.resyncs == resyncs
            for reservation in watcher.state["reservations"]:
                await client.cancel_reservation(reservation["reservation_id"])
            # The async iterator yields the same entries as poll.
            seen = []
            async for topic, body in watcher:
                seen.append(topic)
                if watcher.state == await client.get_state():
                    break
            assert "reservation_update" in seen

    asyncio.run(body())


def test_watcher_resynchronises_after_a_gap(short_tmp):
    """The watcher stops reading while the actor publishes three high-water
    marks of updates, so the PUB drops some for it; once traffic resumes it
    sees the gap, takes a snapshot and ends exactly at get_state."""
    actor = start_actor(command=f"ipc://{short_tmp}/cmd", update=f"ipc://{short_tmp}/upd")

    async def body():
        async with AsyncClient(actor.command_endpoint) as client, \
                watcher_for(actor, rcvhwm=10, check_every=None) as watcher:
            await subscribed(watcher, client)
            start, resyncs = watcher.state["seq"], watcher.resyncs
            with actor.client() as sync:
                drive(sync, random.Random(3), updates=3 * PUB_HIGH_WATER_MARK)
            applied = await catch_up(watcher, start + 1000)
            end = time.monotonic() + 10
            while watcher.resyncs == resyncs:
                assert time.monotonic() < end, "no gap detected"
                for cmd, args in random_changes(random.Random(watcher.state["seq"])):
                    await client.call(cmd, args)
                applied += await watcher.poll(0.05)
            state = await client.get_state()
            applied += await catch_up(watcher, state["seq"])
            assert watcher.state == state
            seen = {body["seq"] for topic, body in applied if topic != RESYNC}
            assert set(range(start + 1, state["seq"] + 1)) - seen, "nothing was lost"

    try:
        asyncio.run(body())
    finally:
        actor.stop()


def test_watcher_resynchronises_after_an_actor_restart(ipc_actor):
    """The actor (':memory:' store) restarts empty, counting seq from 0: while
    it is down poll raises TimeoutError; once it is back, its updates look
    like ones already in the snapshot, and the idle check still finds the
    new seq while they keep coming, before the new seq reaches the old."""
    running, endpoints = ipc_actor

    async def probe(client: AsyncClient) -> None:
        assert await client.reserve_now(reservation_id=PROBE_ID, id_token="probe",
                                        expiry_time=in_future()) == "Accepted"
        assert await client.cancel_reservation(PROBE_ID)

    async def body():
        async with AsyncClient(endpoints["command"], timeout=0.3) as client, \
                AsyncWatcher(endpoints["command"], endpoints["update"], timeout=0.3,
                             check_every=0.2) as watcher:
            await subscribed(watcher, client)
            for _ in range(100):   # 400 updates: the new actor will take a while to pass them
                await probe(client)
            assert await client.reserve_now(reservation_id=1, id_token="A", evse_id=1,
                                            expiry_time=in_future()) == "Accepted"
            await catch_up(watcher, (await client.get_state())["seq"])
            assert [r["reservation_id"] for r in watcher.state["reservations"]] == [1]
            old_seq = watcher.state["seq"]
            running[-1].stop()
            with pytest.raises(TimeoutError):
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    await watcher.poll(0.1)
            running.append(start_actor(**endpoints))
            resyncs, snapshots = watcher.resyncs, []
            end = time.monotonic() + 10
            while watcher.resyncs == resyncs:
                assert time.monotonic() < end, "the watcher never resynchronised"
                try:
                    await probe(client)
                    snapshots += [b["seq"] for t, b in await watcher.poll(0.02) if t == RESYNC]
                except TimeoutError:
                    pass   # the new actor is not reachable yet
            assert snapshots and snapshots[0] < old_seq
            await catch_up(watcher, (await client.get_state())["seq"])
            assert watcher.state == await client.get_state()
            assert watcher.state["reservations"] == []

    asyncio.run(body())


def test_curve_client_and_watcher(pki, short_tmp):  # noqa: F811  (pki is the fixture)
    actor = start_actor("--config", write_config(short_tmp, security_toml(pki)),
                        command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*")
    keys = dict(server_key=pki["server_key"], client_key=pki["client_key"])

    async def body():
        async with AsyncClient(actor.command_endpoint, **keys) as client, \
                watcher_for(actor, **keys) as watcher:
            assert await client.ping() == "pong"
            await subscribed(watcher, client)
            assert watcher.state == await client.get_state()
        async with AsyncClient(actor.command_endpoint, timeout=0.3) as plain:
            with pytest.raises(TimeoutError):
                await plain.ping()

    try:
        asyncio.run(body())
    finally:
        actor.stop()
