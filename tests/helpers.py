"""Small helpers shared by the tests that talk to a running actor."""

from __future__ import annotations

import time

from protocol.client import Client, Subscriber
from protocol.messages import format_rfc3339

PROBE_ID = 2_000_000_000   # a reservation id no test uses for anything else
HELD = "held for non-EVSE-specific reservations"


def rfc3339(epoch: float) -> str:
    return format_rfc3339(epoch, "auto")


def in_future(seconds: float = 600) -> str:
    return rfc3339(time.time() + seconds)


def wait_until_subscribed(sub: Subscriber, client: Client, within: float = 10.0) -> None:
    """Return once `sub` receives: PUB drops what is sent before a subscription
    reaches it, so place and cancel a probe reservation until its updates
    arrive, then drain up to the current seq. The station is left as it was."""
    deadline = time.monotonic() + within
    while True:
        assert time.monotonic() < deadline, "subscriber never received an update"
        assert client.reserve_now(reservation_id=PROBE_ID, id_token="probe",
                                  expiry_time=in_future()) == "Accepted"
        assert client.cancel_reservation(PROBE_ID)
        try:
            _, body = sub.recv(timeout=0.2)
        except TimeoutError:
            continue
        seq = client.get_state()["seq"]
        while body["seq"] < seq:
            _, body = sub.recv(timeout=5)
        return


def reserved_by(evse: dict) -> int | str | None:
    """What an evse_reserved update or a get_state EVSE shows: its specific
    reservation's id, HELD, or None, checking that each reason has a field of
    its own and `reserved` says either."""
    held, rid = evse["held_for_non_evse_specific"], evse["reservation_id"]
    assert not (held and rid is not None), "held and reserved by a specific reservation"
    assert evse["reserved"] == (held or rid is not None)
    return HELD if held else rid
