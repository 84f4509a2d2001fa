"""Random commands and restarts against ONE real actor process per example: the
acknowledged state survives every SIGTERM and SIGKILL, and what expires while
the actor is down (or up) is gone after the restart, ended once.

The model is what the actor acknowledged, not a second copy of its rules: an
Accepted reservation is held until a cancel says True, its expiry passes, or a
connector event ends it (read back with get_state after the event: an event may
end reservations, never add one). No config changes here, so a restart may end
only what expired: the stored state always fits the guarantee (test_lifecycle.py
covers what a config edit ends).
"""

from __future__ import annotations

import re
import signal
import tempfile
import time
from typing import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from bench.procs import station_config
from protocol.vocabulary import ConnectorEventType, ConnectorType, ReservationUpdateStatus

from .conftest import start_actor
from .helpers import rfc3339

LOCAL = dict(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*")
STATION = {1: [ConnectorType.cCCS2, ConnectorType.cType2], 2: [ConnectorType.cCCS2]}
SHORT, LONG = 0.5, 600.0   # seconds to expiry
# The simplest draw (what Hypothesis tries first and shrinks towards) is a short one.
EXPIRIES = st.sampled_from([SHORT, SHORT, LONG])
SIGNALS = st.sampled_from([signal.SIGTERM, signal.SIGKILL])
# A reservation this close to its expiry when looked at may be there or not: the
# wheel fires within its tick, and the request takes time on its way.
MARGIN = 0.15
ENDED_LINE = re.compile(r"reservation (\d+) (\w+)$")
ENDED = {s for s in ReservationUpdateStatus if s is not ReservationUpdateStatus.PLACED}


class RestartMachine(RuleBasedStateMachine):

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory(prefix="rab-")
        self.store = f"{self.directory.name}/store.sqlite3"
        self.config = station_config(self.directory.name, STATION)
        self.held: dict[int, tuple[int | None, float]] = {}   # id -> (evse_id, expiry)
        self.next_id = 1
        self.ended: list[int] = []     # every reservation end the actor logged, all processes
        self.actor = None
        self.start()

    def start(self) -> None:
        self.actor = start_actor("--config", self.config, **LOCAL, store=self.store)
        self.client = self.actor.client()

    def stop(self, sig: int) -> None:
        self.client.close()
        status = self.actor.stop(sig)
        assert status == (-sig if sig == signal.SIGKILL else 0), "".join(self.actor.log)
        self.ended += [int(m.group(1)) for m in map(ENDED_LINE.search, self.actor.log)
                       if m and m.group(2) in ENDED]
        self.actor.server.close()
        self.actor = None

    def teardown(self) -> None:
        if self.actor is not None:
            self.client.close()
            self.actor.server.close()
        self.directory.cleanup()

    # -- the model ------------------------------------------------------------------

    def check_state(self, *, after_connector_event: bool = False) -> dict:
        """get_state against the model: every held reservation not yet expired is
        there (on its EVSE) unless a connector event just ended it, every expired
        one is gone, nothing else is there. The model then drops what is gone."""
        asked = time.time()
        state = self.client.get_state()
        answered = time.time()
        there = {r["reservation_id"]: r.get("evse_id") for r in state["reservations"]}
        assert set(there) <= set(self.held), f"{set(there) - set(self.held)} never acknowledged"
        for reservation_id, (evse_id, expiry) in list(self.held.items()):
            if expiry > answered + MARGIN and not after_connector_event:
                assert there.get(reservation_id, "gone") == evse_id, (reservation_id, state)
            elif expiry < asked - MARGIN:
                assert reservation_id not in there, f"{reservation_id} outlived its expiry"
            if reservation_id not in there:
                del self.held[reservation_id]
        return state

    # -- rules ----------------------------------------------------------------------

    def reserve(self, evse_id: int | None, expires_in: float) -> None:
        reservation_id, self.next_id = self.next_id, self.next_id + 1
        expiry = time.time() + expires_in
        args = dict(reservation_id=reservation_id, id_token=f"T{reservation_id}",
                    expiry_time=rfc3339(expiry))
        if evse_id is None:
            args["connector_type"] = ConnectorType.cCCS2
        else:
            args["evse_id"] = evse_id
        if self.client.reserve_now(**args) == "Accepted":
            self.held[reservation_id] = (evse_id, expiry)

    @initialize(expiries=st.lists(EXPIRIES, min_size=1, max_size=2))
    def reserve_the_evses(self, expiries):
        for evse_id, expires_in in enumerate(expiries, 1):
            self.reserve(evse_id, expires_in)

    @rule(evse_id=st.sampled_from([1, 2]), expires_in=EXPIRIES)
    def reserve_on_an_evse(self, evse_id, expires_in):
        self.reserve(evse_id, expires_in)

    @rule(expires_in=EXPIRIES)
    def reserve_anywhere(self, expires_in):
        self.reserve(None, expires_in)

    @rule(data=st.data())
    def cancel(self, data):
        if not self.held:
            return
        reservation_id = data.draw(st.sampled_from(sorted(self.held)))
        _, expiry = self.held.pop(reservation_id)
        cancelled = self.client.cancel_reservation(reservation_id)
        # Read after the reply: the actor decided it no later than now.
        if expiry > time.time() + MARGIN:
            assert cancelled, f"{reservation_id} was held and not yet expired"

    @rule(connector=st.sampled_from([(1, 1), (1, 2), (2, 1)]),
          event=st.sampled_from(list(ConnectorEventType)))
    def connector_event(self, connector, event):
        self.client.connector_event(*connector, event)
        self.check_state(after_connector_event=True)

    @rule()
    def let_short_expiries_pass(self):
        self.wait_for_short_expiries()
        self.check_state()

    @rule(sig=SIGNALS)
    def restart(self, sig):
        self.restart_after(sig, lambda: None)

    # The path that crash-looped the actor: what start-up ends is pending at its first turn.
    @precondition(lambda self: self.short_expiries_ahead())
    @rule(sig=SIGNALS)
    def restart_once_short_expiries_passed(self, sig):
        self.restart_after(sig, self.wait_for_short_expiries)

    def restart_after(self, sig: int, while_down: Callable[[], None]) -> None:
        seq = self.client.get_state()["seq"]
        self.stop(sig)
        while_down()
        self.start()
        try:
            assert self.client.ping() == "pong"
        except TimeoutError:
            raise AssertionError("the restarted actor does not answer; its log:\n"
                                 + "".join(self.actor.log)) from None
        published = self.client.stats()["updates_published"]
        state = self.check_state()
        # Start-up's updates continue the seq: SIGKILL may have come after an
        # expiry that was stored and published, never before one that was not stored.
        assert state["seq"] - published >= seq
        assert len(self.ended) == len(set(self.ended)), f"ended twice: {sorted(self.ended)}"

    def short_expiries_ahead(self) -> list[float]:
        now = time.time()
        return [expiry for _, expiry in self.held.values() if now < expiry < now + SHORT]

    def wait_for_short_expiries(self) -> None:
        """Let real time pass until every short expiry held is behind us."""
        due = self.short_expiries_ahead()
        if due:
            time.sleep(max(due) + MARGIN - time.time())


RestartMachine.TestCase.settings = settings(
    max_examples=5, stateful_step_count=12, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_restarts_keep_the_acknowledged_state = RestartMachine.TestCase
