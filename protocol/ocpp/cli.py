"""`reservation-ocpp`: the reservation actor behind a CSMS, as an OCPP charge point.

Exit status: 0 when stopped by SIGTERM or SIGINT, 2 for a mistake in the
command line or a file it names, or without the `ocpp` extra installed (one
line on stderr). Losing the CSMS or the actor is not an exit: it reconnects,
and answers the CSMS that the reservation service is unavailable while the
actor does not answer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys

import zmq

from ..ctl import EXIT_USAGE, UsageParser, seconds
from ..version import add_version_option, installed_version
from ..wire import DEFAULT_COMMAND_ENDPOINT, DEFAULT_UPDATE_ENDPOINT
from . import DEFAULT_ACTOR_TIMEOUT, DEFAULT_MODEL, DEFAULT_VENDOR, OCPP_16, OCPP_201

NEEDS_EXTRA = "reservation-ocpp needs the ocpp extra: pip install 'reservation-actor[ocpp]'"
EXTRA_MODULES = frozenset({"ocpp", "websockets"})


# What BootNotification says the station is (station.Identity), and OCPP's
# longest value for each (the smaller of 2.0.1's and 1.6's). Checked here, as
# a CSMS would refuse every boot with a longer one.
IDENTITY_OPTIONS = {"vendor": 20, "model": 20, "serial_number": 25, "firmware_version": 50}


def _at_most(limit: int):
    def text(value: str) -> str:
        if not 0 < len(value) <= limit:
            raise argparse.ArgumentTypeError(f"expected 1 to {limit} characters (OCPP's limit), "
                                             f"got {len(value)}")
        return value
    return text


def _firmware_version() -> str:
    installed = installed_version()
    return installed if len(installed) <= IDENTITY_OPTIONS["firmware_version"] else "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = UsageParser(
        prog="reservation-ocpp",
        description="Connect to a CSMS as an OCPP charge point whose reservations "
                    "(ReserveNow, CancelReservation) the reservation actor decides.")
    add_version_option(parser)
    parser.add_argument("--csms", required=True, metavar="URL",
                        help="the CSMS's websocket URL (ws:// or wss://); the station id is appended")
    parser.add_argument("--station-id", required=True, metavar="ID")
    parser.add_argument("--ocpp", choices=[OCPP_201, OCPP_16], default=OCPP_201,
                        help="OCPP version (default 2.0.1)")
    parser.add_argument("--endpoint", default=DEFAULT_COMMAND_ENDPOINT, metavar="CMD",
                        help=f"the actor's command endpoint (default {DEFAULT_COMMAND_ENDPOINT})")
    parser.add_argument("--update-endpoint", default=DEFAULT_UPDATE_ENDPOINT, metavar="UPD",
                        help=f"the actor's update endpoint (default {DEFAULT_UPDATE_ENDPOINT})")
    parser.add_argument("--server-key", metavar="F", help="the actor's public CURVE certificate")
    parser.add_argument("--client-key", metavar="F", help="this client's secret CURVE certificate")
    parser.add_argument("--password-file", metavar="F",
                        help="HTTP Basic auth password for the CSMS (security profile 1)")
    parser.add_argument("--ca-file", metavar="F",
                        help="CA certificates that sign the CSMS's TLS certificate (wss://)")
    parser.add_argument("--vendor", type=_at_most(IDENTITY_OPTIONS["vendor"]),
                        default=DEFAULT_VENDOR,
                        help=f"BootNotification's vendor name (default {DEFAULT_VENDOR})")
    parser.add_argument("--model", type=_at_most(IDENTITY_OPTIONS["model"]),
                        default=DEFAULT_MODEL,
                        help=f"BootNotification's model (default {DEFAULT_MODEL})")
    parser.add_argument("--serial-number", type=_at_most(IDENTITY_OPTIONS["serial_number"]),
                        help="BootNotification's serial number (default none)")
    parser.add_argument("--firmware-version", type=_at_most(IDENTITY_OPTIONS["firmware_version"]),
                        default=_firmware_version(),
                        help="BootNotification's firmware version (default this package's "
                             "version)")
    parser.add_argument("--actor-timeout", type=seconds, default=DEFAULT_ACTOR_TIMEOUT,
                        metavar="S",
                        help=f"seconds to wait for the actor (default {DEFAULT_ACTOR_TIMEOUT:g})")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if not args.csms.startswith(("ws://", "wss://")):
        parser.error(f"--csms must be a ws:// or wss:// URL, got {args.csms!r}")
    if args.ca_file and not args.csms.startswith("wss://"):
        parser.error("--ca-file needs a wss:// CSMS URL")
    if (args.server_key is None) != (args.client_key is None):
        parser.error("CURVE needs both --server-key and --client-key")
    return args


def read_password(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        password = f.read().rstrip("\r\n")
    if not password:
        raise ValueError(f"{path} is empty")
    return password


def ca_context(path: str) -> ssl.SSLContext:
    """What the CSMS's certificate is checked against: the CA certificates in `path`."""
    open(path, "rb").close()   # a missing file is an OSError that names it
    try:
        return ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        raise ValueError(f"--ca-file {path}: no PEM CA certificate in it ({exc.reason})") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:   # the ocpp library: only once the arguments are good
        from websockets.exceptions import InvalidURI
        from websockets.uri import parse_uri

        from .bridge import ReservationBridge, without_unavailable_tracebacks
        from .station import CsmsSettings, Identity
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in EXTRA_MODULES:
            raise
        print(NEEDS_EXTRA, file=sys.stderr)
        return EXIT_USAGE

    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The library logs every OCPP message at INFO; keep that for DEBUG.
    logging.getLogger("ocpp").setLevel(logging.DEBUG if args.log_level == "DEBUG"
                                       else logging.WARNING)
    logging.getLogger("ocpp").addFilter(without_unavailable_tracebacks)
    try:
        password = read_password(args.password_file) if args.password_file else None
        tls = ca_context(args.ca_file) if args.ca_file else None
        identity = Identity(args.vendor, args.model, args.serial_number, args.firmware_version)
        settings = CsmsSettings(args.csms, args.station_id, args.ocpp, password, tls, identity)
        parse_uri(settings.address())
        bridge = ReservationBridge(args.endpoint, args.update_endpoint, timeout=args.actor_timeout,
                                   server_key=args.server_key, client_key=args.client_key)
    except (OSError, ValueError, zmq.ZMQError, InvalidURI) as exc:
        print(f"reservation-ocpp: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        asyncio.run(_run_until_signalled(settings, bridge))
    finally:
        bridge.close()
    return 0


async def _run_until_signalled(settings, bridge) -> None:
    from .bridge import LOG
    from .station import run_station

    task = asyncio.create_task(run_station(settings, bridge))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        LOG.info("stopped")
