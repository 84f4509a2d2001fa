"""ocpp: a CSMS's ReserveNow round trip through the bridge and the actor, against
the same round trip answered by a charge point that decides nothing.

A CSMS in this process (the `ocpp` library's central-system side on
`websockets`, OCPP 2.0.1, loopback) has two stations connected at once, each
its own process: `python -m protocol.ocpp` in front of `python -m actor`
(`--store :memory:`, at INFO as in production), and the baseline,
`python -m bench.suites.ocpp --null-station URL`: an `ocpp.v201.ChargePoint`
whose ReserveNow and CancelReservation handlers answer Accepted at once. So the
baseline is what the library and websockets cost by themselves (schema
validation on both sides, JSON, the socket), and the ratio is what deciding
through the actor adds, including the StatusNotifications the bridge sends
for each change.

A repetition is N lock-step pairs per station: ReserveNow id n on EVSE 1,
CancelReservation id n (so every ReserveNow is Accepted), timed from the
CSMS's call to its result. The two stations take turns going first. A
figure's samples are each repetition's percentile of the ReserveNow times.
"""

from __future__ import annotations

import asyncio
import sys
import time

from bench.common import Context, Figure, percentile
from bench.procs import OCPP_CONNECTED, servers, start_actor, start_process
from protocol.rfc3339 import format_rfc3339

BRIDGE, NULL = "bridge", "null"
PERCENTILES = ((50, "p50"), (99, "p99"))


def unavailable() -> str | None:
    try:
        import ocpp  # noqa: F401
        import websockets  # noqa: F401
    except ImportError:
        return "needs the ocpp extra: pip install -e '.[ocpp]'"
    return None


def _now() -> str:
    return format_rfc3339(time.time(), "auto")


def _expiry() -> str:
    return format_rfc3339(time.time() + 86400, "auto")


def _central_class():
    """The CSMS side: accepts the boot and every notification, nothing else."""
    import ocpp.v201
    from ocpp.routing import on
    from ocpp.v201 import call_result
    from ocpp.v201.enums import Action, RegistrationStatusEnumType

    class Central(ocpp.v201.ChargePoint):
        booted: asyncio.Event

        @on(Action.boot_notification)
        def on_boot_notification(self, **_):
            self.booted.set()
            return call_result.BootNotification(current_time=_now(), interval=300,
                                                status=RegistrationStatusEnumType.accepted)

        @on(Action.status_notification)
        def on_status_notification(self, **_):
            return call_result.StatusNotification()

        @on(Action.reservation_status_update)
        def on_reservation_status_update(self, **_):
            return call_result.ReservationStatusUpdate()

    return Central


async def _pairs(central, first_id: int, n: int) -> list[float]:
    """n ReserveNow/CancelReservation pairs; the ReserveNow round trips (us)."""
    from ocpp.v201 import call
    from ocpp.v201.enums import CancelReservationStatusEnumType, ReserveNowStatusEnumType
    times = []
    expiry = _expiry()
    clock = time.perf_counter_ns
    for rid in range(first_id, first_id + n):
        start = clock()
        reserved = await central.call(call.ReserveNow(
            id=rid, expiry_date_time=expiry, evse_id=1,
            id_token={"id_token": "BENCH", "type": "Central"}))
        times.append((clock() - start) / 1000)
        cancelled = await central.call(call.CancelReservation(reservation_id=rid))
        if (reserved.status != ReserveNowStatusEnumType.accepted
                or cancelled.status != CancelReservationStatusEnumType.accepted):
            raise RuntimeError(f"reservation {rid}: {reserved.status}, {cancelled.status}")
    return times


async def _measure(ctx: Context, n: int, reps: int) -> dict[str, dict[int, list[float]]]:
    from websockets.asyncio.server import serve

    Central = _central_class()
    centrals: dict[str, object] = {}
    connected = {name: asyncio.Event() for name in (BRIDGE, NULL)}

    async def connection(websocket) -> None:
        name = websocket.request.path.strip("/")
        central = Central(name, websocket)
        central.booted = connected[name]
        centrals[name] = central
        try:
            await central.start()
        except Exception:   # the station went away at the end of the run
            pass

    samples = {name: {p: [] for p, _ in PERCENTILES} for name in (BRIDGE, NULL)}
    async with serve(connection, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"]) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        with servers() as started:
            actor = start_actor("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", store=":memory:")
            started.append(actor)
            # In a thread: start_process waits for the log line, and this loop
            # must meanwhile serve the websocket handshakes.
            started.append(await asyncio.to_thread(start_process, BRIDGE, [
                "-m", "protocol.ocpp", "--csms", url, "--station-id", BRIDGE,
                "--endpoint", actor.endpoints[0], "--update-endpoint", actor.endpoints[1],
                "--log-level", "INFO"], OCPP_CONNECTED))
            started.append(await asyncio.to_thread(
                start_process, NULL, ["-m", "bench.suites.ocpp", "--null-station", url],
                OCPP_CONNECTED))
            for event in connected.values():
                await asyncio.wait_for(event.wait(), 30)
            for name in (BRIDGE, NULL):    # warm-up
                await _pairs(centrals[name], 1_000_000, min(n, 50))
            next_id = 1
            for rep in range(reps):
                ctx.progress(f"ocpp: repetition {rep + 1}/{reps} ({n} ReserveNow round trips each)")
                for name in ((BRIDGE, NULL) if rep % 2 == 0 else (NULL, BRIDGE)):
                    times = await _pairs(centrals[name], next_id, n)
                    for p, _ in PERCENTILES:
                        samples[name][p].append(percentile(times, p))
                next_id += n
    return samples


def run(ctx: Context) -> list[Figure]:
    n = 50 if ctx.quick else 500
    samples = asyncio.run(_measure(ctx, n, ctx.reps()))
    return [Figure(
        suite="ocpp", name=f"ReserveNow round trip {label} (OCPP 2.0.1)", unit="us",
        samples=samples[BRIDGE][p], baseline="charge point deciding nothing",
        baseline_samples=samples[NULL][p], higher_is_better=False,
        note=(f"CSMS -> station -> CSMS over loopback websockets, {n} lock-step "
              "ReserveNow/CancelReservation pairs per repetition; bridge + actor "
              "(--store :memory:) against an ocpp ChargePoint answering Accepted"
              if p == 50 else ""),
        params={"percentile": p}) for p, label in PERCENTILES]


# -- the baseline station ---------------------------------------------------------------

async def _null_station(url: str) -> None:
    import ocpp.v201
    from ocpp.routing import on
    from ocpp.v201 import call, call_result
    from ocpp.v201.enums import (
        Action, BootReasonEnumType, CancelReservationStatusEnumType, ReserveNowStatusEnumType,
    )
    from websockets.asyncio.client import connect

    class NullStation(ocpp.v201.ChargePoint):
        @on(Action.reserve_now)
        def on_reserve_now(self, **_):
            return call_result.ReserveNow(status=ReserveNowStatusEnumType.accepted)

        @on(Action.cancel_reservation)
        def on_cancel_reservation(self, **_):
            return call_result.CancelReservation(
                status=CancelReservationStatusEnumType.accepted)

    async with connect(f"{url}/{NULL}", subprotocols=["ocpp2.0.1"]) as websocket:
        station = NullStation(NULL, websocket)
        print(f"connected to {url}/{NULL}", file=sys.stderr, flush=True)
        reader = asyncio.create_task(station.start())
        await station.call(call.BootNotification(
            charging_station={"vendor_name": "bench", "model": "null"},
            reason=BootReasonEnumType.power_up))
        await reader


if __name__ == "__main__":
    if sys.argv[1:2] != ["--null-station"] or len(sys.argv) != 3:
        sys.exit("usage: python -m bench.suites.ocpp --null-station URL")
    try:
        asyncio.run(_null_station(sys.argv[2]))
    except Exception:   # the CSMS closed the connection: the run is over
        pass
