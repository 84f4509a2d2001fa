"""The Watcher (client-side Clone pattern) against a real actor process: it
follows the update stream to exactly get_state, and a listener that stalls
until the actor's PUB drops updates for it still ends with the exact state.

Nothing here sleeps to let a race settle: every wait is a loop that polls
until the watcher's seq reaches the actor's, bounded by a deadline.
"""

from __future__ import annotations

import json
import queue
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from actor.server import PUB_HIGH_WATER_MARK
from protocol.client import RESYNC, Watcher

from .conftest import start_actor
from .helpers import PROBE_ID, in_future

pytestmark = pytest.mark.timeout(60)


def watcher_for(actor, **kwargs) -> Watcher:
    return Watcher(actor.command_endpoint, actor.update_endpoint, **kwargs)


def catch_up(watcher: Watcher, seq: int, deadline: float = 10.0) -> list:
    """Poll until the watcher has reached `seq`; what it applied on the way."""
    applied = []
    end = time.monotonic() + deadline
    while watcher.state["seq"] < seq:
        assert time.monotonic() < end, f"watcher stuck at seq {watcher.state['seq']}, actor at {seq}"
        applied += watcher.poll(0.1)
    return applied


def sync(watcher: Watcher, client) -> None:
    """Until the subscription reaches the PUB, updates are not delivered (and
    the watcher resynchronises on the first one after a lost one): place and
    cancel a probe until the watcher has applied an update, then catch up."""
    end = time.monotonic() + 10
    while True:
        assert time.monotonic() < end, "the subscription never took effect"
        assert client.reserve_now(reservation_id=PROBE_ID, id_token="probe",
                                  expiry_time=in_future()) == "Accepted"
        assert client.cancel_reservation(PROBE_ID)
        if any(topic != RESYNC for topic, _ in watcher.poll(0.05)):
            break
    catch_up(watcher, client.get_state()["seq"])


# On the default station (EVSEs 1 and 2, each cCCS2 + cType2), with the
# result each step gets: every kind of update, a replacement and removals.
SCRIPT = [
    ("reserve_now", {"request": {"reservation_id": 1, "id_token": "ALICE", "evse_id": 1,
                                 "connector_type": "cCCS2", "expiry_time": in_future(3600)}},
     "Accepted"),
    ("reserve_now", {"request": {"reservation_id": 2, "id_token": "BOB", "parent_id_token": "FLEET",
                                 "expiry_time": in_future(3600)}}, "Accepted"),
    # A replacement moves reservation 1 to EVSE 2 and makes it the newest.
    ("reserve_now", {"request": {"reservation_id": 1, "id_token": "ALICE", "evse_id": 2,
                                 "expiry_time": in_future(3600)}}, "Accepted"),
    ("plug_event", {"evse_id": 1, "plugged_in": True}, None),
    ("use_reservation", {"id_token": "x", "parent_id_token": "fleet"}, 2),
    ("plug_event", {"evse_id": 1, "plugged_in": False}, None),
    ("reserve_now", {"request": {"reservation_id": 3, "id_token": "CAROL", "connector_type": "cType2",
                                 "expiry_time": in_future(3600)}}, "Accepted"),
    ("connector_event", {"evse_id": 2, "connector_id": 1, "event": "Faulted"}, "Faulted"),
    ("connector_event", {"evse_id": 2, "connector_id": 1, "event": "ErrorCleared"}, "Available"),
    ("reserve_now", {"request": {"reservation_id": 4, "id_token": "DAVE", "evse_id": 2,
                                 "expiry_time": in_future(3600)}}, "Accepted"),
    ("connector_event", {"evse_id": 1, "connector_id": 2, "event": "TransactionStarted"}, "Occupied"),
    ("connector_event", {"evse_id": 1, "connector_id": 2, "event": "SessionFinished"}, "Available"),
    ("reserve_now", {"request": {"reservation_id": 5, "id_token": "ERIN", "expiry_time": in_future(3600)}},
     "Accepted"),
    ("cancel_reservation", {"reservation_id": 4}, True),
]


def test_watcher_follows_every_change_to_exactly_get_state(actor):
    with actor.client() as client, watcher_for(actor, check_every=None) as watcher:
        sync(watcher, client)
        assert watcher.state == client.get_state()
        resyncs = watcher.resyncs
        topics, statuses = set(), set()
        for cmd, args, result in SCRIPT:
            assert client.call(cmd, args) == result, f"{cmd} {args}"
            state = client.get_state()
            for topic, body in catch_up(watcher, state["seq"]):
                topics.add(topic)
                statuses.add(body.get("reservation_status"))
            assert watcher.state == state, f"after {cmd} {args}"
        # Expiry is an update no request asked for.
        assert client.reserve_now(reservation_id=6, id_token="EVE", evse_id=1,
                                  expiry_time=in_future(0.2)) == "Accepted"
        end = time.monotonic() + 10
        while "Expired" not in statuses:
            assert time.monotonic() < end, "no Expired update"
            statuses |= {body.get("reservation_status") for _, body in watcher.poll(0.1)}
        state = client.get_state()
        catch_up(watcher, state["seq"])
        assert watcher.state == state
        assert [r["reservation_id"] for r in state["reservations"]] == [5]
        # It followed the stream: every update applied, no snapshot needed.
        assert watcher.resyncs == resyncs
        assert topics == {"reservation_update", "evse_reserved", "evse_state"}
        assert statuses >= {"Placed", "Cancelled", "Removed", "Expired", "Used"}


def test_a_reservation_numbered_minus_one_is_told_apart_from_a_held_evse(actor):
    """Any int32 is a client's reservation id, -1 too: the stream, get_state and
    the Watcher's copy say "held back for non-EVSE-specific reservations" with a
    field of its own, never with an id."""
    with actor.client() as client, watcher_for(actor, check_every=None) as watcher:
        sync(watcher, client)
        resyncs = watcher.resyncs
        assert client.reserve_now(reservation_id=-1, id_token="ALICE", evse_id=1,
                                  expiry_time=in_future()) == "Accepted"
        # EVSE 2 is the only one left for BOB's non-EVSE-specific reservation: held back.
        assert client.reserve_now(reservation_id=2, id_token="BOB",
                                  expiry_time=in_future()) == "Accepted"
        state = client.get_state()
        applied = catch_up(watcher, state["seq"])
        shown = [(1, True, -1, False), (2, True, None, True)]
        assert [(body["evse_id"], body["reserved"], body["reservation_id"],
                 body["held_for_non_evse_specific"])
                for topic, body in applied if topic == "evse_reserved"] == shown
        assert [(evse["id"], evse["reserved"], evse["reservation_id"],
                 evse["held_for_non_evse_specific"]) for evse in state["evses"]] == shown
        assert watcher.state == state
        assert watcher.resyncs == resyncs   # applied from the stream, not a new snapshot


def random_changes(rng: random.Random) -> list[tuple[str, dict]]:
    """A few commands that change the station (each publishes updates), mostly
    undone again so that later reservations keep being accepted."""
    kind = rng.random()
    if kind < 0.7:
        rid = rng.randrange(1, 9)
        request = {"reservation_id": rid, "id_token": rng.choice(["A", "B", "C"]),
                   "expiry_time": in_future()}
        evse = rng.choice([None, 1, 2])
        if evse is not None:
            request["evse_id"] = evse
        ctype = rng.choice([None, "cCCS2", "cType2"])
        if ctype is not None:
            request["connector_type"] = ctype
        commands = [("reserve_now", {"request": request})]
        if rng.random() < 0.8:
            commands.append(("cancel_reservation", {"reservation_id": rid}))
        return commands
    evse, connector = rng.choice([1, 2]), rng.choice([1, 2])
    if kind < 0.85:
        return [("connector_event", {"evse_id": evse, "connector_id": connector, "event": event})
                for event in ("Faulted", "ErrorCleared")]
    return [("plug_event", {"evse_id": evse, "plugged_in": plugged}) for plugged in (True, False)]


def drive(client, rng: random.Random, updates: int, batch: int = 2000, window: int = 256) -> None:
    """Pipeline random changes until the actor has published `updates` more updates."""
    target = client.get_state()["seq"] + updates
    while client.get_state()["seq"] < target:
        commands = [c for _ in range(batch // 2) for c in random_changes(rng)]
        sent = received = 0
        while received < len(commands):
            while sent < len(commands) and sent - received < window:
                client.send(*commands[sent])
                sent += 1
            assert client.recv()["ok"]
            received += 1


@pytest.mark.parametrize("tail", ["more_traffic", "silence"])
def test_stalled_watcher_resynchronises_to_the_exact_state(short_tmp, tail):
    """A listener with a tiny receive queue stops reading while a client drives
    several PUB high-water marks' worth of updates, so the actor drops updates
    for it. It resumes and must end with the actor's exact state: found by a
    seq gap when traffic goes on, by its idle check when the lost updates were
    the last ones (silence)."""
    # ipc: the kernel buffers little on a Unix socket, so what the listener
    # does not read is dropped at the PUB's high-water mark, not buffered.
    actor = start_actor(command=f"ipc://{short_tmp}/cmd", update=f"ipc://{short_tmp}/upd")
    try:
        with actor.client() as client, watcher_for(
                actor, rcvhwm=10, check_every=0.2 if tail == "silence" else None) as watcher:
            sync(watcher, client)
            start, resyncs = watcher.state["seq"], watcher.resyncs
            drive(client, random.Random(tail), updates=3 * PUB_HIGH_WATER_MARK)  # not reading
            applied = catch_up(watcher, start + 1000)   # resume: the backlog is still contiguous
            if tail == "more_traffic":
                # Changes after the drop reach the watcher and reveal the gap.
                end = time.monotonic() + 10
                while watcher.resyncs == resyncs:
                    assert time.monotonic() < end, "no gap detected"
                    for command in random_changes(random.Random(watcher.state["seq"])):
                        client.call(*command)
                    applied += watcher.poll(0.05)
            state = client.get_state()
            applied += catch_up(watcher, state["seq"])
            assert watcher.state["seq"] == state["seq"]
            assert watcher.state == state
            assert watcher.resyncs > resyncs
            # Proof that updates really were lost, not merely late.
            seen = {body["seq"] for topic, body in applied if topic != RESYNC}
            assert set(range(start + 1, state["seq"] + 1)) - seen
            assert any(topic == RESYNC for topic, _ in applied)
    finally:
        actor.stop()


def test_reservation_ctl_watch_prints_applied_updates_as_json_lines(actor):
    process = subprocess.Popen(
        [sys.executable, "-c", "from protocol.ctl import main; raise SystemExit(main())",
         "--endpoint", actor.command_endpoint,
         "--update-endpoint", actor.update_endpoint, "watch"],
        stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        with actor.client() as client:
            # Until its subscription is in place the watcher sees nothing (or a gap).
            end = time.monotonic() + 10
            while True:
                assert time.monotonic() < end, "reservation-ctl watch printed nothing"
                assert client.reserve_now(reservation_id=1, id_token="T", evse_id=1,
                                          expiry_time=in_future()) == "Accepted"
                assert client.cancel_reservation(1)
                try:
                    line = json.loads(lines.get(timeout=0.2))
                except queue.Empty:
                    continue
                if "topic" in line:
                    break
        assert line["topic"] in ("reservation_update", "evse_reserved")
        assert type(line["seq"]) is int
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
