"""The store and restarts (issue 4): what a restart keeps, what it ends, and what
a failed commit or an unusable file does.

Most tests are sans-I/O like test_core: time is plain epoch seconds, the core's
changes go through take_changes() into a Store on a temporary file, and a
"restart" is a new Store on the same file and a new core restored from it. A
few run the real thing: the actor in-process with a Store whose commit fails,
and `python -m actor` on a corrupt, future or reset store.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from actor.changes import Changes
from actor.config import Config, EvseConfig
from actor.core import ReservationCore
from actor.server import Actor
from actor.store import (MAX_COUNTER, MEMORY, SCHEMA_VERSION, MemoryStore, Store, StoreError,
                         open_store)
from protocol.client import Client, CommandFailed
from protocol.messages import (
    CancelReservation, ConnectorEvent, PlugEvent, Reservation, UseReservation,
    Rfc3339Time, parse_command,
)

from .conftest import start_actor
from .helpers import rfc3339
from .test_core import live as ids, request, state as view, statuses

NOW = 1000.0
TICK = 0.01
EXPIRY = NOW + 3600

CCS = "cCCS2"
T2 = "cType2"
UNKNOWN = "Unknown"

# Real time, for the actor's own clock: an hour is far enough. (Not years: an
# expiry more than about 24.8 days ahead overflows the actor's poll timeout.)
AN_HOUR_FROM_NOW = time.time() + 3600

UPDATE = "reservation_update"
RESERVED = "evse_reserved"


def station(n: int) -> list[tuple[int, list[tuple[int, str]]]]:
    """n EVSEs, ids 1..n, each with a cCCS2 (connector 1) and a cType2 (connector 2)."""
    return [(evse_id, [(1, CCS), (2, T2)]) for evse_id in range(1, n + 1)]


# -- helpers ------------------------------------------------------------------------


def reservation(rid, token="TOKEN", *, evse=None, ctype=None, parent=None,
                expiry=EXPIRY) -> Reservation:
    text = rfc3339(expiry)
    return Reservation(reservation_id=rid, id_token=token, expiry_time=Rfc3339Time(text),
                       evse_id=evse, parent_id_token=parent, connector_type=ctype)


def reserve_cmd(rid, token="TOKEN", *, expiry=EXPIRY, **fields):
    return parse_command("reserve_now", {"request": request(rid, token, expiry=expiry, **fields)})


def make_core(evses, now=NOW) -> ReservationCore:
    return ReservationCore(evses, tick=TICK, now=now)


def turn(core: ReservationCore, store: Store, *commands, now=NOW) -> list:
    """One loop turn as the actor runs it: decide, then commit what changed."""
    outcomes = [core.apply(command, now) for command in commands]
    changes = core.take_changes()
    if changes is not None:
        store.commit(changes)
    return outcomes


def restart(path, evses, now=NOW) -> tuple[ReservationCore, Store, list]:
    """A new Store on the same file and a new core restored from it; the start-up
    updates are committed before being returned, as the actor does."""
    store = Store(path)
    core = make_core(evses, now)
    updates = core.restore(store.load(), now)
    changes = core.take_changes()
    if changes is not None:
        store.commit(changes)
    return core, store, updates


def load(path):
    store = Store(path)
    try:
        return store.load()
    finally:
        store.close()


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "store.sqlite3"


# -- restart keeps what was acknowledged ---------------------------------------------

def test_restart_keeps_reservations_in_order_connector_states_plug_flags_and_seq(path):
    evses = station(6)
    core, store = make_core(evses), Store(path)
    results = [outcome.result for outcome in (
        *turn(core, store, reserve_cmd(5, "ALICE", evse=1, ctype=CCS, parent="FLEET",
                                       expiry=NOW + 100)),
        *turn(core, store, reserve_cmd(3, "BOB", ctype=T2, expiry=NOW + 200),
              reserve_cmd(9, "CAROL", evse=2, expiry=NOW + 300)),
        *turn(core, store, reserve_cmd(7, "DAN", ctype=CCS, expiry=NOW + 400)),
        *turn(core, store, reserve_cmd(1, "ERIN", expiry=NOW + 500)),
        # A cancelled one leaves a gap; a replaced one becomes the newest.
        *turn(core, store, CancelReservation(7)),
        *turn(core, store, reserve_cmd(3, "BOB2", ctype=T2, parent="FLEET", expiry=NOW + 600)),
        *turn(core, store, ConnectorEvent(5, 2, "Faulted"), ConnectorEvent(6, 1, "TransactionStarted")),
        # ALICE's car arrives at her EVSE; EVSE 3 was plugged and unplugged.
        *turn(core, store, PlugEvent(1, True), PlugEvent(3, True)),
        *turn(core, store, PlugEvent(3, False)),
    )]
    assert results == ["Accepted"] * 5 + [True, "Accepted", "Faulted", "Occupied", None, None, None]
    before = view(core)
    assert [r["reservation_id"] for r in before["reservations"]] == [5, 9, 1, 3]
    store.close()

    core, store, updates = restart(path, evses)
    assert updates == []                     # nothing happened while it was down
    assert view(core) == before              # reservations, order, states, plugs, seq
    # seq continues: the next update is numbered after the stored seq.
    cancelled = core.apply(CancelReservation(9), NOW).updates
    assert cancelled[0] == (UPDATE, {"reservation_id": 9, "reservation_status": "Cancelled",
                                     "evse_id": 2, "seq": before["seq"] + 1})
    # Every loaded reservation is armed again and expires at its own time.
    assert statuses(core.expire(NOW + 250)) == [(5, "Expired")]
    assert statuses(core.expire(NOW + 650)) == [(1, "Expired"), (3, "Expired")]
    store.close()


def test_restart_keeps_a_non_specific_reservation_whose_car_is_plugged_in(path):
    """Plugging in is how the reserved car arrives, and never removes a reservation;
    a restart between the plug and the car's authorization must not either."""
    evses = station(2)
    core, store = make_core(evses), Store(path)
    turn(core, store, reserve_cmd(1, "ALICE", evse=1), reserve_cmd(2, "BOB"))
    turn(core, store, PlugEvent(2, True))      # BOB's car at the EVSE held for him
    before = view(core)
    store.close()

    core, store, updates = restart(path, evses)
    assert updates == []
    assert view(core) == before
    assert core.apply(UseReservation("BOB", 2), NOW).result == 2
    store.close()


def test_restart_of_the_real_actor_keeps_its_state_and_seq(tmp_path):
    store = str(tmp_path / "store.sqlite3")
    endpoints = dict(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*", store=store)
    running = start_actor(**endpoints)          # the default station: EVSEs 1 and 2
    try:
        with running.client() as client:
            assert client.reserve_now(reservation_id=1, id_token="ALICE", evse_id=1,
                                      connector_type=CCS, expiry_time=rfc3339(AN_HOUR_FROM_NOW)) == "Accepted"
            assert client.reserve_now(reservation_id=2, id_token="BOB", parent_id_token="FLEET",
                                      connector_type=T2, expiry_time=rfc3339(AN_HOUR_FROM_NOW)) == "Accepted"
            assert client.connector_event(2, 1, "Faulted") == "Faulted"   # BOB's car needs Type 2
            assert client.plug_event(1, True) is None                      # ALICE arrived
            before = client.get_state()
    finally:
        assert running.stop() == 0
    assert [r["reservation_id"] for r in before["reservations"]] == [1, 2]

    running = start_actor(**endpoints)
    try:
        with running.client() as client:
            assert client.get_state() == before
            assert client.stats()["updates_published"] == 0      # nothing to announce
            assert client.cancel_reservation(1) is True
            after = client.get_state()
    finally:
        assert running.stop() == 0
    # seq went on from the stored value: Cancelled, then EVSE 1 no longer reserved.
    assert after["seq"] == before["seq"] + 2
    assert [r["reservation_id"] for r in after["reservations"]] == [2]


# Random sessions: whatever the acknowledged history, a restart under the same
# config before anything expires is invisible.
_command = st.one_of(
    st.builds(lambda rid, evse, ctype, token: reserve_cmd(rid, token, evse=evse, ctype=ctype),
              st.integers(1, 8), st.one_of(st.none(), st.integers(1, 3)),
              st.sampled_from([None, CCS, T2, UNKNOWN]), st.sampled_from(["A", "B", "C"])),
    st.builds(CancelReservation, st.integers(1, 8)),
    st.builds(UseReservation, st.sampled_from(["A", "B", "C"]), st.one_of(st.none(), st.integers(1, 3))),
    st.builds(ConnectorEvent, st.integers(1, 3), st.integers(1, 2),
              st.sampled_from(["TransactionStarted", "SessionFinished", "Faulted",
                               "ErrorCleared", "Disable", "Enable"])),
    st.builds(PlugEvent, st.integers(1, 3), st.booleans()),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(turns=st.lists(st.lists(_command, min_size=1, max_size=3), min_size=1, max_size=12),
       restart_after=st.integers(0, 12))
def test_restart_is_invisible_after_any_history(turns, restart_after):
    evses = station(3)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "store.sqlite3")
        core, store = make_core(evses), Store(path, synchronous="normal")
        for n, commands in enumerate(turns):
            if n == restart_after:
                before = view(core)
                store.close()
                core, store, updates = restart(path, evses)
                assert updates == []
                assert view(core) == before
            turn(core, store, *commands)
        before = view(core)
        store.close()
        core, store, updates = restart(path, evses)
        store.close()
        assert updates == []
        assert view(core) == before


# -- what ended stays ended ------------------------------------------------------------

@pytest.mark.parametrize("end", [
    pytest.param(lambda: [CancelReservation(1), CancelReservation(2)], id="cancel"),
    pytest.param(lambda: [UseReservation("ALICE", 1), UseReservation("BOB", 2)], id="use"),
    pytest.param(lambda: [CancelReservation(2), UseReservation("ALICE", 1)], id="cancel-then-use"),
])
def test_ending_the_last_reservation_survives_a_restart(path, end):
    evses = station(2)
    core, store = make_core(evses), Store(path)
    turn(core, store, reserve_cmd(1, "ALICE", evse=1), reserve_cmd(2, "BOB"))
    for command in end():
        turn(core, store, command)
    before = view(core)
    assert before["reservations"] == []
    store.close()

    core, store, updates = restart(path, evses)
    assert updates == []
    assert view(core) == before
    assert store.load().reservations == []
    store.close()


# -- start-up rules ---------------------------------------------------------------------

def test_reservation_that_expired_while_down_ends_expired_with_the_next_seq(path):
    evses = station(3)
    core, store = make_core(evses), Store(path)
    turn(core, store, reserve_cmd(1, "ALICE", evse=1, expiry=NOW + 10),
         reserve_cmd(2, "BOB", expiry=NOW + 1000))
    seq = core.seq
    store.close()

    later = NOW + 20
    core, store, updates = restart(path, evses, now=later)
    # Listeners last heard EVSE 1 reserved for 1: they hear it end, and the EVSE freed.
    assert updates == [
        (UPDATE, {"reservation_id": 1, "reservation_status": "Expired", "evse_id": 1,
                  "seq": seq + 1}),
        (RESERVED, {"evse_id": 1, "reserved": False, "reservation_id": None,
                    "held_for_non_evse_specific": False, "seq": seq + 2}),
    ]
    assert ids(core, later) == [2]
    store.close()

    # The ending was stored: a second restart neither resurrects nor re-announces it.
    core, store, updates = restart(path, evses, now=later)
    assert updates == []
    assert ids(core, later) == [2]
    assert core.seq == seq + 2
    store.close()


@pytest.mark.parametrize("new_evses, gone", [
    pytest.param(station(2), 3, id="evse-removed"),
    pytest.param([(1, [(1, CCS), (2, T2)]), (2, [(1, CCS), (2, T2)]), (3, [(1, T2)])], 3,
                 id="connector-type-removed"),
])
def test_reservation_whose_evse_left_the_config_ends_removed(path, new_evses, gone):
    core, store = make_core(station(3)), Store(path)
    turn(core, store, reserve_cmd(1, "ALICE", evse=1), reserve_cmd(3, "CAROL", evse=3, ctype=CCS),
         reserve_cmd(4, "DAN"))
    seq = core.seq
    store.close()

    core, store, updates = restart(path, new_evses)
    assert updates[0] == (UPDATE, {"reservation_id": gone, "reservation_status": "Removed",
                                   "evse_id": gone, "seq": seq + 1})
    assert statuses(updates) == [(gone, "Removed")]
    assert ids(core) == [1, 4]
    store.close()
    assert [r.reservation_id for r in load(path).reservations] == [1, 4]


def test_non_specific_reservations_that_no_longer_fit_end_removed_oldest_kept_first(path):
    # The stored image: EVSE 2 cannot charge at all, EVSE 3 only a Type 2 car, and
    # three non-specific cars, oldest first: 30 (Type 2), 20 (CCS), 10 (Type 2).
    store = Store(path)
    store.commit(Changes(seq=40, reservations=[
        (30, reservation(30, "A", ctype=T2)),
        (20, reservation(20, "B", ctype=CCS)),
        (10, reservation(10, "C", ctype=T2)),
    ], evses=[
        (1, False, [(1, "Available"), (2, "Available")]),
        (2, False, [(1, "Faulted"), (2, "Unavailable")]),
        (3, False, [(1, "Faulted"), (2, "Available")]),
    ]))
    store.close()

    core, store, updates = restart(path, station(3))
    # 30 is kept; 20 cannot be guaranteed beside it (30 may take EVSE 1, the only
    # one with CCS) and goes; 10 still fits beside 30 on EVSEs 1 and 3.
    assert updates[0] == (UPDATE, {"reservation_id": 20, "reservation_status": "Removed",
                                   "evse_id": None, "seq": 41})
    assert statuses(updates) == [(20, "Removed")]
    assert ids(core) == [30, 10]
    store.close()
    assert [r.reservation_id for r in load(path).reservations] == [30, 10]


# -- a failed commit ------------------------------------------------------------------------

STATION = Config(evses=tuple(EvseConfig(evse_id, ((1, CCS), (2, T2))) for evse_id in (1, 2, 3, 4)),
               command_endpoint="tcp://127.0.0.1:*", update_endpoint="tcp://127.0.0.1:*")


class InProcessActor:
    """The actor on a thread of this process, with real sockets. The Store is
    opened on that thread: sqlite3 connections belong to the thread that made them."""

    def __init__(self, config: Config, path: Path) -> None:
        self.context = zmq.Context()
        handoff: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(config, path, handoff), daemon=True)
        self.thread.start()
        self.actor = handoff.get(timeout=10)
        if isinstance(self.actor, BaseException):
            raise self.actor

    def _run(self, config, path, handoff) -> None:
        try:
            store = Store(path)
            actor = Actor(config, store, context=self.context)
            actor.bind()
        except BaseException as exc:
            handoff.put(exc)
            return
        handoff.put(actor)
        try:
            actor.serve(handle_signals=False)
        finally:
            actor.close()
            store.close()

    def client(self) -> Client:
        return Client(self.actor.command_endpoint, context=self.context)

    def shutdown(self) -> None:
        self.actor.stop()
        # Wake the loop if it is polling; it may also have seen the flag already
        # and left without reading this, so do not wait for the reply.
        with self.client() as client:
            client.send("ping")
            self.thread.join(10)
        assert not self.thread.is_alive()
        self.context.destroy(linger=0)


def stored_view(path, config: Config = None) -> dict:
    """The store's content shaped like memory_view; an EVSE never written is as
    configured: unplugged, every connector Available. Read from a backup copy,
    as an operator would take one: the running actor owns the store itself."""
    copy = Path(f"{path}.copy")
    live = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with contextlib.closing(sqlite3.connect(copy)) as backup:
        live.backup(backup)
    live.close()
    stored = load(copy)
    for file in Path(path).parent.glob(f"{copy.name}*"):
        file.unlink()
    evses = {e.id: (False, {cid: "Available" for cid, _ in e.connectors})
             for e in (config or STATION).evses}
    evses.update(stored.evses)
    return {"seq": stored.seq, "reservations": [msgspec.to_builtins(r, enc_hook=str) for r in stored.reservations],
            "evses": evses}


def memory_view(state: dict) -> dict:
    return {"seq": state["seq"], "reservations": state["reservations"],
            "evses": {e["id"]: (e["plugged_in"], {c["id"]: c["state"] for c in e["connectors"]})
                      for e in state["evses"]}}


@pytest.mark.parametrize("cmd, args", [
    ("reserve_now", {"request": {"reservation_id": 3, "id_token": "CAROL", "evse_id": 3,
                                 "expiry_time": rfc3339(AN_HOUR_FROM_NOW)}}),
    ("cancel_reservation", {"reservation_id": 1}),
    ("use_reservation", {"id_token": "BOB"}),
    ("connector_event", {"evse_id": 1, "connector_id": 1, "event": "Faulted"}),
    ("plug_event", {"evse_id": 3, "plugged_in": True}),
])
def test_failed_commit_answers_store_failed_and_memory_equals_the_store(path, cmd, args):
    running = InProcessActor(STATION, path)
    try:
        with running.client() as client:
            assert client.reserve_now(reservation_id=1, id_token="ALICE", evse_id=1,
                                      expiry_time=rfc3339(AN_HOUR_FROM_NOW)) == "Accepted"
            assert client.reserve_now(reservation_id=2, id_token="BOB",
                                      expiry_time=rfc3339(AN_HOUR_FROM_NOW)) == "Accepted"
            before = client.get_state()
            published = client.stats()["updates_published"]
            assert stored_view(path) == memory_view(before)

            store = running.actor.store
            real_commit = store.commit

            def fail_once(changes):
                store.commit = real_commit
                raise StoreError(f"store {store.path}: commit failed: disk I/O error (simulated)")

            store.commit = fail_once
            with pytest.raises(CommandFailed) as failed:
                client.call(cmd, args)
            assert failed.value.code == "store_failed"
            assert client.get_state() == before
            assert stored_view(path) == memory_view(before)
            stats = client.stats()
            assert stats["errors"] == {"store_failed": 1}
            assert stats["updates_published"] == published     # nothing went out for it

            # It keeps serving: the same request now succeeds and is stored.
            client.call(cmd, args)
            after = client.get_state()
            assert after != before
            assert after["seq"] > before["seq"]
            assert stored_view(path) == memory_view(after)
            assert client.reserve_now(reservation_id=4, id_token="DAN", evse_id=4,
                                      expiry_time=rfc3339(AN_HOUR_FROM_NOW)) == "Accepted"
            assert stored_view(path) == memory_view(client.get_state())
    finally:
        running.shutdown()


# -- unusable stores ------------------------------------------------------------------------

def run_actor(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "actor", "--command-endpoint", "tcp://127.0.0.1:*",
         "--update-endpoint", "tcp://127.0.0.1:*", *args],
        capture_output=True, text=True, timeout=timeout,
        cwd=Path(__file__).resolve().parent.parent)


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a database, whatever it once was\n" * 200)


def _damaged_store(path: Path) -> None:
    store = Store(path)
    store.commit(Changes(seq=2, reservations=[(rid, reservation(rid, f"T{rid}"))
                                              for rid in range(1, 200)], evses=[]))
    store.close()
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xff" * 4000 + data[4100:])   # page 1 past the header


def _future_schema(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(f"CREATE TABLE reservation_v9 (x); INSERT INTO reservation_v9 VALUES (1); "
                     f"PRAGMA user_version = {SCHEMA_VERSION + 1};")
    db.close()


def _foreign(path: Path) -> None:
    # Another program's database given as --store by mistake: adding our tables
    # to it would change someone else's file.
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE notes (text); INSERT INTO notes VALUES ('not ours');")
    db.close()


def _damaged_data_pages(path: Path) -> None:
    # Opening reads the schema and counts reservations; only load() reaches the
    # connector table, so its damaged pages surface there.
    store = Store(path)
    store.commit(Changes(seq=2, reservations=[], evses=[
        (evse_id, False, [(cid, "Available") for cid in range(1, 40)]) for evse_id in range(1, 100)]))
    store.close()
    db = sqlite3.connect(path)
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'connector'").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)


def _edited(sql: str):
    """A good store (two reservations, EVSE 1 plugged in), then `sql` run on it
    the way a person with the sqlite3 shell or a broken backup tool might."""
    def make(path: Path) -> None:
        store = Store(path)
        store.commit(Changes(seq=3, reservations=[(1, reservation(1, "ALICE", evse=1)),
                                                  (2, reservation(2, "BOB", ctype=CCS))],
                             evses=[(1, True, [(1, "Available"), (2, "Faulted")])]))
        store.close()
        db = sqlite3.connect(path)
        db.executescript(sql)
        db.close()
    return make


@pytest.mark.parametrize("make, reason", [
    pytest.param(_garbage, "not a database", id="garbage"),
    pytest.param(_damaged_store, "malformed", id="damaged"),
    pytest.param(_damaged_data_pages, "malformed", id="damaged-data-pages"),
    pytest.param(_future_schema, "newer version", id="future-schema"),
    pytest.param(_foreign, "not a reservation-actor store", id="foreign-database"),
    pytest.param(_edited("UPDATE reservation SET expiry_time = 'tomorrow' WHERE reservation_id = 2"),
                 "reservation 2: expiry_time", id="expiry-time"),
    pytest.param(_edited("UPDATE reservation SET expiry_time = 1e9 WHERE reservation_id = 2"),
                 "reservation 2: expiry_time", id="expiry-time-number"),
    pytest.param(_edited("UPDATE reservation SET id_token = X'414C494345' WHERE reservation_id = 1"),
                 "reservation 1: id_token", id="id-token-type"),
    pytest.param(_edited("UPDATE reservation SET evse_id = -1 WHERE reservation_id = 1"),
                 "reservation 1: evse_id", id="evse-id"),
    pytest.param(_edited("UPDATE reservation SET connector_type = 'CCS2' WHERE reservation_id = 2"),
                 "reservation 2: connector_type", id="connector-type"),
    pytest.param(_edited("UPDATE connector SET state = 'Broken' WHERE connector_id = 2"),
                 "'Broken'", id="connector-state"),
    pytest.param(_edited("UPDATE evse SET plugged_in = 'yes'"), "plugged_in", id="plugged-in"),
    pytest.param(_edited("DELETE FROM meta WHERE key = 'seq'"), "meta 'seq'", id="no-seq"),
    pytest.param(_edited("DELETE FROM meta WHERE key = 'position'"), "meta 'position'",
                 id="no-position"),
    pytest.param(_edited("UPDATE meta SET value = 'many' WHERE key = 'seq'"), "meta 'seq'",
                 id="seq-type"),
    # Damage or tampering: the next update's seq could not even be stored (issue 14).
    pytest.param(_edited(f"UPDATE meta SET value = {2 ** 63 - 1} WHERE key = 'seq'"),
                 "meta 'seq'", id="seq-int64-max"),
    pytest.param(_edited(f"UPDATE meta SET value = {2 ** 63 - 2} WHERE key = 'seq'"),
                 "meta 'seq'", id="seq-int64-max-minus-1"),
    pytest.param(_edited(f"UPDATE meta SET value = {2 ** 53} WHERE key = 'seq'"),
                 "meta 'seq'", id="seq-past-2**53"),
    pytest.param(_edited(f"UPDATE meta SET value = {2 ** 63 - 1} WHERE key = 'position'"),
                 "meta 'position'", id="position-int64-max"),
    pytest.param(_edited("DROP TABLE connector"), "no such table", id="table-missing"),
])
def test_unusable_store_stops_start_up_with_one_line_and_is_left_untouched(tmp_path, make, reason):
    path = tmp_path / "store.sqlite3"
    make(path)
    original = path.read_bytes()

    result = run_actor("--store", str(path))

    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and reason in lines[0], lines[0]
    assert path.read_bytes() == original
    # Direct use of the Store refuses the same way.
    with pytest.raises(StoreError, match=reason):
        load(path)
    assert path.read_bytes() == original


def test_a_seq_at_the_limit_is_served_and_a_value_sqlite_cannot_hold_fails_the_commit(path):
    store = Store(path)
    store.commit(Changes(seq=MAX_COUNTER, reservations=[], evses=[]))
    store.close()
    assert load(path).seq == MAX_COUNTER
    # Past int64 the store refuses the commit (the actor answers store_failed), writing nothing.
    store = Store(path)
    with pytest.raises(StoreError, match="commit failed"):
        store.commit(Changes(seq=2 ** 63, reservations=[(1, reservation(1, "ALICE"))], evses=[]))
    store.commit(Changes(seq=MAX_COUNTER, reservations=[(2, reservation(2, "BOB"))], evses=[]))
    store.close()
    assert [r.reservation_id for r in load(path).reservations] == [2]


def test_a_store_under_a_file_or_on_a_directory_is_refused_with_one_line(tmp_path):
    (tmp_path / "state").write_text("a file, not a directory")
    (tmp_path / "var").mkdir()
    for path in (tmp_path / "state" / "store.sqlite3", tmp_path / "var"):
        result = run_actor("--store", str(path))
        assert result.returncode == 3
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state", "var"]   # nothing left beside


# -- what a 0-byte file means ---------------------------------------------------------------

def test_an_empty_file_is_taken_as_a_new_store_and_the_log_says_so(tmp_path):
    path = tmp_path / "store.sqlite3"
    path.write_bytes(b"")
    running = start_actor(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*", store=str(path))
    try:
        with running.client() as client:
            assert client.reserve_now(reservation_id=1, id_token="ALICE",
                                      expiry_time=rfc3339(AN_HOUR_FROM_NOW)) == "Accepted"
    finally:
        assert running.stop() == 0
    said = [line for line in running.log if str(path) in line and "0 bytes" in line]
    assert len(said) == 1 and " INFO " in said[0], running.log
    assert [r.reservation_id for r in load(path).reservations] == [1]


def test_an_empty_file_beside_a_wal_holding_commits_is_refused_and_left_untouched(tmp_path):
    # SQLite deletes the WAL of a 0-byte database when it opens it: every commit
    # in it (all of them, for a store never checkpointed) would be lost silently.
    path = tmp_path / "store.sqlite3"
    wal = Path(f"{path}-wal")
    store = Store(path)
    store.commit(Changes(seq=1, reservations=[(1, reservation(1, "ALICE"))], evses=[]))
    commits = wal.read_bytes()
    store.close()
    assert commits
    path.write_bytes(b"")
    wal.write_bytes(commits)

    result = run_actor("--store", str(path))

    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(wal) in lines[0], result.stderr
    assert path.read_bytes() == b"" and wal.read_bytes() == commits


# -- one owner ------------------------------------------------------------------------------

def test_a_store_has_one_owner_until_it_is_closed(path):
    owner = Store(path)
    with pytest.raises(StoreError, match=f"held by another actor.*pid {os.getpid()}"):
        Store(path)
    owner.close()
    Store(path).close()
    # Nothing to share in memory: any number of in-memory stores, and only one kind.
    memory = open_store(MEMORY)
    assert isinstance(memory, MemoryStore) and isinstance(open_store(MEMORY), MemoryStore)
    memory.close()
    with pytest.raises(ValueError, match="MemoryStore"):
        Store(MEMORY)


def test_a_second_actor_on_a_held_store_exits_3_before_binding_and_the_first_keeps_serving(
        tmp_path):
    path = tmp_path / "store.sqlite3"
    endpoints = dict(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*", store=str(path))
    first = start_actor(**endpoints)
    try:
        with first.client() as client:
            assert client.reserve_now(reservation_id=1, id_token="ALICE", evse_id=1,
                                      expiry_time=rfc3339(AN_HOUR_FROM_NOW)) == "Accepted"

        second = run_actor("--store", str(path), "--log-level", "INFO")

        assert second.returncode == 3, second.stderr
        lines = second.stderr.strip().splitlines()
        # One line and nothing else: not even the INFO line logged once bound.
        assert len(lines) == 1 and "serving" not in second.stderr, second.stderr
        assert str(path) in lines[0] and f"pid {first.process.pid}" in lines[0]
        with first.client() as client:
            assert client.ping() == "pong"
            assert client.reserve_now(reservation_id=2, id_token="BOB", evse_id=2,
                                      expiry_time=rfc3339(AN_HOUR_FROM_NOW)) == "Accepted"
    finally:
        first.process.kill()
        first.process.wait()

    # The kernel released the killed owner's lock: the next actor takes over.
    third = start_actor(**endpoints)
    try:
        with third.client() as client:
            assert [r["reservation_id"] for r in client.get_state()["reservations"]] == [1, 2]
    finally:
        assert third.stop() == 0


def test_reset_store_starts_empty_on_purpose(tmp_path):
    path = tmp_path / "store.sqlite3"
    core, store = make_core(station(2), now=NOW), Store(path)
    turn(core, store, reserve_cmd(1, "ALICE", evse=1, expiry=time.time() + 3600),
         reserve_cmd(2, "BOB", expiry=time.time() + 3600), PlugEvent(2, True))
    store.close()
    assert len(load(path).reservations) == 2

    running = start_actor("--reset-store", command="tcp://127.0.0.1:*",
                          update="tcp://127.0.0.1:*", store=str(path))
    try:
        with running.client() as client:
            state = client.get_state()
    finally:
        assert running.stop() == 0
    assert state["reservations"] == []
    assert state["seq"] == 0
    assert not any(e["plugged_in"] or e["reserved"] for e in state["evses"])
    stored = load(path)
    assert (stored.seq, stored.reservations, stored.evses) == (0, [], {})
