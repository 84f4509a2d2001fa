"""Restarts as an operator sees them: the real actor (`python -m actor`) on a real
store, stopped with SIGTERM or SIGKILL, real time passing while it is down, the
station's config edited, and started again on the same store.

For each way the state can change while the actor is down, the restarted actor
must serve, end what the start-up rules end (each exactly once, numbered from
the stored seq on), keep everything else as it was acknowledged, and a second
restart must find nothing more to do.

How the start-up updates are observed: the actor publishes them in its first
loop turn, right after it binds, before any subscriber can have joined (PUB
drops what it sends before a subscription arrives), so a subscriber cannot see
them reliably. What can be seen reliably is what the actor says it did: its
log line for each reservation update it published (written after sending it),
stats.updates_published and seq. A ping is answered in a turn no earlier than
the first, and a request sent after its reply is decided in a later turn, after
the first turn's updates were published and logged; so the `stats` after a
`ping` counts them all and the log holds their lines.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

from bench.procs import station_config
from protocol.vocabulary import ConnectorType, ReservationUpdateStatus

from .conftest import start_actor
from .helpers import in_future, rfc3339

LOCAL = dict(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*")
CCS, TYPE2 = ConnectorType.cCCS2, ConnectorType.cType2
SHORT = 1.0   # seconds to a reservation's expiry when it is to expire while the actor is down
STOPS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGKILL, id="SIGKILL")]
RESERVATION_LINE = re.compile(r"reservation (\d+) (\w+)$")


def ended_in_log(log: list[str]) -> list[tuple[int, str]]:
    """(reservation_id, status) for each reservation update the actor published."""
    return [(int(m.group(1)), m.group(2)) for m in map(RESERVATION_LINE.search, log) if m]


# Each case: the station before and after the actor is down, what clients did
# before it stopped (returns the time the restart must wait for, if any), and
# which reservations the start-up rules must end.

def nothing_changed(client) -> float | None:
    assert client.reserve_now(reservation_id=1, id_token="A", evse_id=1,
                              expiry_time=in_future()) == "Accepted"
    assert client.reserve_now(reservation_id=2, id_token="B", connector_type=CCS,
                              expiry_time=in_future()) == "Accepted"
    return None


def expired_while_down(client) -> float | None:
    expiry = time.time() + SHORT
    assert client.reserve_now(reservation_id=1, id_token="A", evse_id=1,
                              expiry_time=rfc3339(expiry)) == "Accepted"
    assert client.reserve_now(reservation_id=2, id_token="B", evse_id=2,
                              expiry_time=in_future()) == "Accepted"
    return expiry


def on_evse_2_and_1(client) -> float | None:
    assert client.reserve_now(reservation_id=1, id_token="A", evse_id=2,
                              expiry_time=in_future()) == "Accepted"
    assert client.reserve_now(reservation_id=2, id_token="B", evse_id=1,
                              expiry_time=in_future()) == "Accepted"
    return None


def type2_on_both(client) -> float | None:
    for reservation_id in (1, 2):
        assert client.reserve_now(reservation_id=reservation_id, id_token="A",
                                  evse_id=reservation_id, connector_type=TYPE2,
                                  expiry_time=in_future()) == "Accepted"
    return None


def two_non_specific_beside_a_fault(client) -> float | None:
    assert client.connector_event(3, 1, "Faulted") == "Faulted"
    for reservation_id in (1, 2):
        assert client.reserve_now(reservation_id=reservation_id, id_token="A",
                                  connector_type=CCS, expiry_time=in_future()) == "Accepted"
    return None


TWO = {1: [CCS, TYPE2], 2: [CCS, TYPE2]}
THREE_CCS = {1: [CCS], 2: [CCS], 3: [CCS]}
EXPIRED, REMOVED = ReservationUpdateStatus.EXPIRED, ReservationUpdateStatus.REMOVED
CASES = {
    "nothing changed": (TWO, TWO, nothing_changed, {}),
    "expired while down": (TWO, TWO, expired_while_down, {1: EXPIRED}),
    "EVSE removed from the config": (TWO, {1: [CCS, TYPE2]}, on_evse_2_and_1, {1: REMOVED}),
    "connector type removed from the config": (TWO, {1: [CCS], 2: [CCS, TYPE2]}, type2_on_both,
                                               {1: REMOVED}),
    # EVSE 3's connector was Faulted when the actor stopped and EVSE 2 is gone: one
    # free EVSE left for two non-EVSE-specific reservations; the older one is kept.
    "guarantee no longer holds under the stored connector states": (
        THREE_CCS, {1: [CCS], 3: [CCS]}, two_non_specific_beside_a_fault, {2: REMOVED}),
}


@pytest.mark.parametrize("stop", STOPS)
@pytest.mark.parametrize("case", CASES)
def test_a_restart_ends_what_changed_while_down_once_and_keeps_the_rest(case, stop, short_tmp):
    before_station, after_station, act, ended = CASES[case]
    store = f"{short_tmp}/store.sqlite3"
    before_config = station_config(short_tmp, before_station, name="before")
    after_config = station_config(short_tmp, after_station, name="after")

    first = start_actor("--config", before_config, **LOCAL, store=store)
    try:
        with first.client() as client:
            restart_after = act(client)
            before = client.get_state()
    finally:
        first.stop(stop)
    while restart_after is not None and time.time() <= restart_after:
        time.sleep(0.05)    # real time passes while the actor is down

    restarted = start_actor("--config", after_config, **LOCAL, store=store)
    try:
        with restarted.client() as client:
            assert client.ping() == "pong"
            stats = client.stats()
            after = client.get_state()
    finally:
        assert restarted.stop() == 0, "".join(restarted.log)
    assert "Traceback" not in "".join(restarted.log)
    # Each ended reservation published once, and nothing else about reservations.
    assert sorted(ended_in_log(restarted.log)) == sorted(ended.items())
    # Every update numbered from the stored seq on, none skipped, none twice.
    assert after["seq"] - before["seq"] == stats["updates_published"] >= len(ended)
    assert after["reservations"] == [r for r in before["reservations"]
                                     if r["reservation_id"] not in ended]
    stored_connectors = {e["id"]: e["connectors"] for e in before["evses"]}
    for evse in after["evses"]:
        for connector in evse["connectors"]:
            kept = [c for c in stored_connectors.get(evse["id"], [])
                    if c["id"] == connector["id"]]
            expected = kept[0]["state"] if kept else "Available"
            assert connector["state"] == expected, (evse, stored_connectors)

    # A second start finds what the first one ended stored: nothing is ended again.
    again = start_actor("--config", after_config, **LOCAL, store=store)
    try:
        with again.client() as client:
            assert client.ping() == "pong"
            assert client.stats()["updates_published"] == 0
            assert client.get_state() == after
    finally:
        again.stop(stop)
    assert ended_in_log(again.log) == []
