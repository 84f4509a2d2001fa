"""Crash test (issue 4): kill -9 the actor at a random moment while a client
pipelines reserve and cancel requests, restart it on the same store, and check
that it lost nothing it acknowledged and resurrected nothing it ended.

The kill delay is drawn from a seeded generator: it is the test's input, not a
way to make a race go away. Whatever moment it hits, the rules below hold,
because a reply leaves the actor only after its change is committed:

* every reservation whose Accepted reply arrived, and which no cancel
  acknowledged with true, is there;
* every reservation a cancel acknowledged with true is not there;
* nothing else is there, except reservations whose requests were in flight
  (sent, no reply): those may or may not be.

The store accumulates across rounds; after each check the restarted actor's
state is the truth the next round starts from.
"""

from __future__ import annotations

import random
import time

import pytest

from bench.procs import station_config

from .conftest import start_actor
from .helpers import rfc3339

EVSES = 20
ROUNDS = 5
WINDOW = 32                   # requests in flight at once
KILL_AFTER = (0.05, 0.6)      # seconds after the client starts, drawn per round
SEED = 20261124

pytestmark = pytest.mark.timeout(60)



class Model:
    """What the client was told, carried across rounds."""

    def __init__(self) -> None:
        self.held: dict[int, int] = {}        # Accepted, not cancelled: reservation id -> EVSE
        self.cancelled: set[int] = set()      # a cancel answered true
        self.in_flight: dict[int, int] = {}   # a reserve or cancel sent, no reply: id -> EVSE
        self.next_id = 1

    def check(self, reservations: list[dict]) -> None:
        present = {r["reservation_id"]: r.get("evse_id") for r in reservations}
        lost = {rid: evse for rid, evse in self.held.items() if present.get(rid) != evse}
        assert not lost, f"acknowledged reservations lost: {lost}"
        resurrected = self.cancelled & present.keys()
        assert not resurrected, f"cancelled reservations came back: {sorted(resurrected)}"
        unknown = {rid: evse for rid, evse in present.items()
                   if rid not in self.held and self.in_flight.get(rid) != evse}
        assert not unknown, f"reservations nobody was told about: {unknown}"
        # The restarted actor settles what was in flight.
        self.held = present
        self.in_flight = {}


def crash_round(actor, model: Model, rng: random.Random) -> dict[str, int]:
    """Pipeline requests until the actor is killed; record every reply that arrived."""
    sent: dict[int, tuple[str, int, int]] = {}      # request id -> (cmd, reservation id, EVSE)
    counts = {"sent": 0, "replies": 0}
    expiry = rfc3339(time.time() + 2 * 3600)
    process = actor.process
    killer_delay = rng.uniform(*KILL_AFTER)
    cancelable = list(model.held)
    with actor.client() as client:
        started = time.monotonic()
        killed = False
        while True:
            if not killed and time.monotonic() - started >= killer_delay:
                process.kill()
                process.wait(10)
                killed = True
            while not killed and len(sent) < WINDOW:
                if cancelable and rng.random() < 0.4:
                    rid = cancelable.pop(rng.randrange(len(cancelable)))
                    evse = model.held[rid]
                    request_id = client.send("cancel_reservation", {"reservation_id": rid})
                    sent[request_id] = ("cancel", rid, evse)
                else:
                    rid, evse = model.next_id, rng.randint(1, EVSES)
                    model.next_id += 1
                    request_id = client.send("reserve_now", {"request": {
                        "reservation_id": rid, "id_token": f"T{rid}", "evse_id": evse,
                        "expiry_time": expiry}})
                    sent[request_id] = ("reserve", rid, evse)
                model.in_flight[rid] = evse
                counts["sent"] += 1
            try:
                # Once the actor is dead, take what it had already sent, then stop.
                reply = client.recv(timeout=0.3 if killed else 0.01)
            except TimeoutError:
                if killed:
                    break
                continue
            counts["replies"] += 1
            cmd, rid, evse = sent.pop(reply["id"])
            del model.in_flight[rid]
            assert reply["ok"], reply
            if cmd == "reserve":
                if reply["result"] == "Accepted":
                    model.held[rid] = evse
                    cancelable.append(rid)
                else:
                    assert reply["result"] == "Occupied", reply
            else:
                assert reply["result"] is True, f"cancel of held reservation {rid} found nothing"
                del model.held[rid]
                model.cancelled.add(rid)
    counts["in_flight"] = len(sent)
    # In flight: a reserve may or may not have been placed, a cancel may or may
    # not have happened. Either way the id is settled by the next restart.
    for cmd, rid, evse in sent.values():
        model.held.pop(rid, None)
    return counts


def test_sigkill_at_random_moments_loses_nothing_acknowledged(tmp_path):
    config = station_config(tmp_path, EVSES)
    store = str(tmp_path / "store.sqlite3")

    def start():
        return start_actor("--config", config, command="tcp://127.0.0.1:*",
                           update="tcp://127.0.0.1:*", store=store)

    rng = random.Random(SEED)
    model = Model()
    totals = {"sent": 0, "replies": 0, "in_flight": 0, "cancelled": 0}
    actor = start()
    try:
        for _ in range(ROUNDS):
            counts = crash_round(actor, model, rng)
            for key in ("sent", "replies", "in_flight"):
                totals[key] += counts[key]
            actor = start()
            with actor.client() as client:
                model.check(client.get_state()["reservations"])
        totals["cancelled"] = len(model.cancelled)
    finally:
        if actor.process.poll() is None:
            assert actor.stop() == 0
    # The rounds exercised what they claim to: acknowledged reservations and
    # cancels, and kills that cut requests off in flight.
    assert model.next_id > 100 and totals["cancelled"] > 10, totals
    assert totals["in_flight"] > 0, totals
