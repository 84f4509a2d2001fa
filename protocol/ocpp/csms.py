"""`python -m protocol.ocpp.csms`: a small central system (CSMS) to try
`reservation-ocpp` against, without a real one.

It serves OCPP 2.0.1 and 1.6 on one port (the version is the subprotocol the
station asks for), accepts every BootNotification, answers Heartbeat,
StatusNotification and ReservationStatusUpdate, and prints each message a
station sends as one line on stdout: `STATION -> Action {payload}`. With
`--reserve EVSE` it sends each station a ReserveNow once its boot is
accepted, and with `--cancel-after S` a CancelReservation of it S seconds
later, printing their answers as `STATION <- Action: status`. A demo, not a
CSMS to deploy: no authentication, no TLS, nothing kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import Any

from ..ctl import EXIT_USAGE, UsageParser, seconds
from ..rfc3339 import format_rfc3339
from . import OCPP_16, OCPP_201
from .cli import EXTRA_MODULES, NEEDS_EXTRA

try:
    import ocpp.v16
    import ocpp.v201
    from ocpp.messages import MessageType, unpack
    from ocpp.routing import after, on
    from ocpp.v16 import call as call16
    from ocpp.v16 import call_result as result16
    from ocpp.v16.enums import Action as Action16
    from ocpp.v16.enums import RegistrationStatus
    from ocpp.v201 import call as call201
    from ocpp.v201 import call_result as result201
    from ocpp.v201.enums import Action as Action201
    from ocpp.v201.enums import RegistrationStatusEnumType
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed
except ModuleNotFoundError as missing:   # one line for an operator, as reservation-ocpp
    if __name__ != "__main__" or (missing.name or "").partition(".")[0] not in EXTRA_MODULES:
        raise
    print(NEEDS_EXTRA, file=sys.stderr)
    raise SystemExit(EXIT_USAGE) from None

PROG = "python -m protocol.ocpp.csms"
RESERVATION_ID = 1
DEMO_TOKEN = "DEMO"
ANY_EVSE = 0


def now() -> str:
    return format_rfc3339(time.time())


def say(line: str) -> None:
    print(line, flush=True)


class _Demo:
    """What both versions' central-side charge points share: printing what
    arrives, and the reservation to send once the station booted."""

    version: str

    def __init__(self, station_id: str, websocket: Any, options: argparse.Namespace) -> None:
        super().__init__(station_id, websocket)
        self.options = options

    async def route_message(self, raw_msg: str) -> None:
        message = unpack(raw_msg)
        if message.message_type_id == MessageType.Call:
            say(f"{self.id} -> {message.action} {json.dumps(message.payload)}")
        await super().route_message(raw_msg)

    async def _ask(self, request: Any) -> None:
        try:
            answer = await self.call(request, suppress=False)
        except Exception as exc:   # a CallError or no answer: shown, the demo goes on
            say(f"{self.id} <- {type(request).__name__}: {type(exc).__name__}: {exc}")
            return
        say(f"{self.id} <- {type(request).__name__}: {answer.status}")

    async def _demo_reservation(self) -> None:
        expiry = format_rfc3339(time.time() + self.options.expires_in)
        await self._ask(self.reserve_now(self.options.reserve, expiry))
        if self.options.cancel_after is not None:
            await asyncio.sleep(self.options.cancel_after)
            await self._ask(self.cancel_reservation())

    def booted(self) -> None:
        if self.options.reserve is not None:
            asyncio.get_running_loop().create_task(self._demo_reservation())


class Demo201(_Demo, ocpp.v201.ChargePoint):
    version = OCPP_201

    @on(Action201.boot_notification)
    def on_boot_notification(self, **_: Any):
        return result201.BootNotification(current_time=now(), interval=self.options.heartbeat,
                                          status=RegistrationStatusEnumType.accepted)

    @after(Action201.boot_notification)
    def after_boot_notification(self, **_: Any) -> None:
        self.booted()

    @on(Action201.heartbeat)
    def on_heartbeat(self, **_: Any):
        return result201.Heartbeat(current_time=now())

    @on(Action201.status_notification)
    def on_status_notification(self, **_: Any):
        return result201.StatusNotification()

    @on(Action201.reservation_status_update)
    def on_reservation_status_update(self, **_: Any):
        return result201.ReservationStatusUpdate()

    def reserve_now(self, evse_id: int, expiry: str) -> call201.ReserveNow:
        return call201.ReserveNow(id=RESERVATION_ID, expiry_date_time=expiry,
                                  id_token={"id_token": DEMO_TOKEN, "type": "Central"},
                                  evse_id=None if evse_id == ANY_EVSE else evse_id)

    def cancel_reservation(self) -> call201.CancelReservation:
        return call201.CancelReservation(reservation_id=RESERVATION_ID)


class Demo16(_Demo, ocpp.v16.ChargePoint):
    version = OCPP_16

    @on(Action16.boot_notification)
    def on_boot_notification(self, **_: Any):
        return result16.BootNotification(current_time=now(), interval=self.options.heartbeat,
                                         status=RegistrationStatus.accepted)

    @after(Action16.boot_notification)
    def after_boot_notification(self, **_: Any) -> None:
        self.booted()

    @on(Action16.heartbeat)
    def on_heartbeat(self, **_: Any):
        return result16.Heartbeat(current_time=now())

    @on(Action16.status_notification)
    def on_status_notification(self, **_: Any):
        return result16.StatusNotification()

    def reserve_now(self, evse_id: int, expiry: str) -> call16.ReserveNow:
        # A 1.6 connector is an EVSE of the actor; connector 0 is any.
        return call16.ReserveNow(connector_id=evse_id, expiry_date=expiry, id_tag=DEMO_TOKEN,
                                 reservation_id=RESERVATION_ID)

    def cancel_reservation(self) -> call16.CancelReservation:
        return call16.CancelReservation(reservation_id=RESERVATION_ID)


DEMOS = {"ocpp2.0.1": Demo201, "ocpp1.6": Demo16}


def port(text: str) -> int:
    """An argparse type: a TCP port number, 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = UsageParser(prog=PROG,
                         description="A demo CSMS that accepts OCPP 2.0.1 and 1.6 stations and "
                                     "prints what they send, one line per message.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on "
                                                            "(default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=9000,
                        help="port to listen on (default 9000; 0: any free one)")
    parser.add_argument("--heartbeat", type=int, default=300, metavar="SECONDS",
                        help="the heartbeat interval given in BootNotification's answer "
                             "(default 300)")
    parser.add_argument("--reserve", type=int, metavar="EVSE",
                        help=f"once a station booted, send it ReserveNow {RESERVATION_ID} for "
                             f"token {DEMO_TOKEN} on this EVSE (0: any EVSE)")
    parser.add_argument("--expires-in", type=seconds, default=900.0, metavar="SECONDS",
                        help="the reservation's expiry, seconds from now (default 900)")
    parser.add_argument("--cancel-after", type=seconds, metavar="SECONDS",
                        help="send CancelReservation of it this many seconds after its answer")
    args = parser.parse_args(argv)
    if args.reserve is not None and args.reserve < 0:
        parser.error(f"--reserve: expected an EVSE id, 0 or more, got {args.reserve}")
    if args.cancel_after is not None and args.reserve is None:
        parser.error("--cancel-after needs --reserve")
    return args


async def run(args: argparse.Namespace) -> None:
    async def station(websocket) -> None:
        demo = DEMOS[websocket.subprotocol]
        station_id = websocket.request.path.strip("/").rpartition("/")[2]
        say(f"{station_id} connected (OCPP {demo.version})")
        try:
            await demo(station_id, websocket, args).start()
        except ConnectionClosed:
            say(f"{station_id} disconnected")

    async with serve(station, args.host, args.port, subprotocols=list(DEMOS)) as server:
        port = server.sockets[0].getsockname()[1]
        say(f"listening on ws://{args.host}:{port} (OCPP 2.0.1 and 1.6); try: reservation-ocpp "
            f"--csms ws://{args.host}:{port} --station-id CS1")
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(run(args))
    except OSError as exc:   # the port in use, an address not of this host
        print(f"{PROG}: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
