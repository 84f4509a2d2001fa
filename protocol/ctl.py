"""`reservation-ctl`: talk to a running reservation actor from a shell.

Each subcommand sends one command and prints its result as JSON; `watch`
follows the actor's state (client.Watcher) and prints each update it applies
as a JSON line, and {"resync": seq} when it had to take a new snapshot
because updates were lost, until interrupted. The exit statuses are
EXIT_STATUSES below; when no reply comes, a second connection watched by a
socket monitor (`diagnose`) tells a CURVE refusal from an actor that is not
there, as the Client alone cannot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

import zmq

from zmq.utils.monitor import recv_monitor_message

from .client import RESYNC, Client, CommandFailed, Watcher
from .rfc3339 import format_rfc3339
from .sockets import use_curve
from .version import add_version_option
from .vocabulary import ConnectorEventType, ConnectorType, ReservationCheckStatus, ReservationResult
from .wire import DEFAULT_COMMAND_ENDPOINT, DEFAULT_UPDATE_ENDPOINT


# The longest a failed call waits for `diagnose`: a refusal or a refused
# connection shows within milliseconds on a working network.
DIAGNOSIS_WAIT = 2.0


def _expiry(args: argparse.Namespace) -> str:
    if args.expiry:
        return args.expiry
    return format_rfc3339(time.time() + args.expires_in)


def _optional(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _reserve(client: Client, a: argparse.Namespace) -> Any:
    return client.reserve_now(reservation_id=a.id, id_token=a.token, expiry_time=_expiry(a),
                              **_optional(evse_id=a.evse, parent_id_token=a.parent,
                                          connector_type=a.type))


COMMANDS = {
    "reserve": _reserve,
    "cancel": lambda c, a: c.cancel_reservation(a.reservation_id),
    "exists": lambda c, a: c.exists_reservation(
        id_token=a.token, **_optional(evse_id=a.evse, group_id_token=a.group)),
    "use": lambda c, a: c.use_reservation(
        id_token=a.token, **_optional(evse_id=a.evse, parent_id_token=a.parent)),
    "event": lambda c, a: c.connector_event(a.evse_id, a.connector_id, a.event),
    "plug": lambda c, a: c.plug_event(a.evse_id, a.plugged == "in"),
    "possible": lambda c, a: c.is_charging_possible(a.evse_id),
    "state": lambda c, a: c.get_state(),
    "stats": lambda c, a: c.stats(),
    "ping": lambda c, a: c.ping(),
}


EXIT_OK, EXIT_ERROR_REPLY, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED = 0, 1, 2, 3, 4
EXIT_STATUSES = f"""exit status:
  {EXIT_OK}  the actor answered (watch: interrupted)
  {EXIT_ERROR_REPLY}  the actor answered with an error (its code and message on stderr)
  {EXIT_USAGE}  the command line cannot be used (a bad option, endpoint or key file)
  {EXIT_UNREACHABLE}  no reply within --timeout: nothing listens at --endpoint, or the actor
     is hung or too busy
  {EXIT_REFUSED}  the actor refused this client's CURVE handshake: a key it does not
     authorize, or no key (or a key) where it expects the other"""

RESULTS = f"""results:
  reserve   {ReservationResult.ACCEPTED}: reserved. {ReservationResult.OCCUPIED}: the EVSE (or, without --evse,
            every EVSE) is in use or promised to others. {ReservationResult.FAULTED}: it is faulted.
            {ReservationResult.UNAVAILABLE}: it is disabled. {ReservationResult.REJECTED}: reservations are
            off, the EVSE or connector type is unknown, or reservations without
            --evse are not allowed. Reusing a reservation id replaces it.
  exists    {ReservationCheckStatus.NOT_RESERVED}, {ReservationCheckStatus.RESERVED_FOR_TOKEN}, {ReservationCheckStatus.RESERVED_FOR_OTHER_TOKEN},
            {ReservationCheckStatus.RESERVED_FOR_OTHER_TOKEN_AND_HAS_PARENT_TOKEN} (use may still succeed
            with --parent)
  use       the reservation id consumed, or null when the token holds none
  cancel    true when an active reservation was cancelled, else false
  event     the connector's state after the event (e.g. Faulted)
  plug      null
  possible  true when a car may start charging on the EVSE now
An unknown EVSE or connector, or a bad value, is an error reply (exit {EXIT_ERROR_REPLY})."""


class UsageParser(argparse.ArgumentParser):
    """An operator mistake is one line and exit status 2; --help shows the usage."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, more than 0 and finite."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:   # also refuses nan
        raise argparse.ArgumentTypeError(f"expected seconds, more than 0 and finite, got {text!r}")
    return value


def _connection_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The options every subcommand shares. Added to the main parser with their
    defaults and to each subcommand with none (SUPPRESS), so an option given
    after the subcommand wins and one not given there leaves the other alone."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--endpoint", default=default(DEFAULT_COMMAND_ENDPOINT),
                        help=f"the actor's command endpoint (default {DEFAULT_COMMAND_ENDPOINT})")
    parser.add_argument("--update-endpoint", default=default(DEFAULT_UPDATE_ENDPOINT),
                        help=f"the actor's update endpoint, for watch "
                             f"(default {DEFAULT_UPDATE_ENDPOINT})")
    parser.add_argument("--timeout", type=seconds, default=default(5.0), metavar="SECONDS",
                        help="how long to wait for a reply (default 5); the actor refuses the "
                             "request after it (its deadline)")
    parser.add_argument("--server-key", metavar="FILE", default=default(None),
                        help="the actor's public CURVE certificate (actor.key)")
    parser.add_argument("--client-key", metavar="FILE", default=default(None),
                        help="this client's secret CURVE certificate (NAME.key_secret)")


def build_parser() -> argparse.ArgumentParser:
    parser = UsageParser(prog="reservation-ctl",
                         description="Send one command to a reservation actor and print its "
                                     "result as JSON.",
                         epilog=f"{RESULTS}\n\n{EXIT_STATUSES}",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_option(parser)
    _connection_options(parser, defaults=True)
    shared = argparse.ArgumentParser(add_help=False)
    _connection_options(shared, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of these; COMMAND --help tells more",
                                parser_class=UsageParser)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=f"{summary}.", parents=[shared],
                              epilog=EXIT_STATUSES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("reserve", "reserve an EVSE, or any EVSE, for a token until an expiry time "
                           "(reserve_now)")
    p.add_argument("--id", type=int, required=True, help="the reservation id; reusing one "
                                                         "replaces that reservation")
    p.add_argument("--token", required=True, help="the id token the reservation is for")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--expiry", help="the expiry time, RFC 3339 (e.g. 2026-11-24T18:00:00Z)")
    when.add_argument("--expires-in", type=seconds, default=900.0, metavar="SECONDS",
                      help="the expiry time as seconds from now (default 900)")
    p.add_argument("--evse", type=int, help="the EVSE id; absent: any EVSE (non-EVSE-specific)")
    p.add_argument("--parent", help="a parent id token that may also use the reservation")
    p.add_argument("--type", choices=sorted(map(str, ConnectorType)), metavar="CONNECTOR_TYPE",
                   help="the connector type the car needs (EVerest's ConnectorTypeEnum, "
                        "e.g. cCCS2, cType2)")

    p = command("cancel", "cancel a reservation (cancel_reservation)")
    p.add_argument("reservation_id", type=int, help="the reservation id")

    p = command("exists", "whether a token holds a reservation (exists_reservation)")
    p.add_argument("--token", required=True, help="the id token to look for")
    p.add_argument("--evse", type=int, help="the EVSE id; absent: any EVSE")
    p.add_argument("--group", help="the group id token (a reservation's parent token)")

    p = command("use", "consume the token's reservation as charging starts (use_reservation)")
    p.add_argument("--token", required=True, help="the id token starting to charge")
    p.add_argument("--evse", type=int, help="the EVSE id it charges on; absent: any EVSE")
    p.add_argument("--parent", help="its parent id token, which may use a reservation made "
                                    "for that parent")

    p = command("event", "report a connector event from the EVSE manager (connector_event)")
    p.add_argument("evse_id", type=int, help="the EVSE id")
    p.add_argument("connector_id", type=int, help="the connector id within the EVSE")
    p.add_argument("event", choices=sorted(map(str, ConnectorEventType)),
                   help="what happened: %(choices)s")

    p = command("plug", "report a car plugged in or out (plug_event)")
    p.add_argument("evse_id", type=int, help="the EVSE id")
    p.add_argument("plugged", choices=["in", "out"], help="in or out")

    p = command("possible", "whether charging may start on an EVSE now (is_charging_possible)")
    p.add_argument("evse_id", type=int, help="the EVSE id")

    command("state", "print the actor's whole state with its seq (get_state)")
    command("stats", "print the actor's counters (stats)")
    command("ping", "check that the actor answers: prints \"pong\" (ping)")
    command("watch", "print updates as JSON lines until interrupted, resynchronising after "
                     "lost updates")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def watch(args: argparse.Namespace) -> None:
    try:
        with Watcher(args.endpoint, args.update_endpoint, timeout=args.timeout,
                     server_key=args.server_key, client_key=args.client_key) as watcher:
            for topic, body in watcher:
                line = {"resync": body["seq"]} if topic == RESYNC else {"topic": topic, **body}
                print(json.dumps(line), flush=True)
    except KeyboardInterrupt:
        pass


_REFUSED = {zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}
_DECISIVE = _REFUSED | {zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_CONNECT_RETRIED}


def diagnose(endpoint: str, server_key: str | None, client_key: str | None,
             wait: float) -> tuple[int, str]:
    """Why no reply came: connect once more with the same keys, watching the
    socket's events for up to `wait` seconds, and return the exit status and
    what to tell the user."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket()
    seen: set[int] = set()
    try:
        use_curve(sock, server_key, client_key)
        sock.connect(endpoint)
        give_up = time.monotonic() + wait
        while not seen & _DECISIVE and monitor.poll(
                max(0, int((give_up - time.monotonic()) * 1000))):
            seen.add(recv_monitor_message(monitor)["event"])
    finally:
        sock.disable_monitor()
        monitor.close()
        sock.close()
    if zmq.EVENT_HANDSHAKE_FAILED_AUTH in seen:   # its ZAP handler said no
        return EXIT_REFUSED, (f"the actor at {endpoint} refused this client's CURVE key: add "
                              "its public key (NAME.key) to the actor's authorized keys")
    if seen & _REFUSED and client_key is None:
        return EXIT_REFUSED, (f"the actor at {endpoint} refused the handshake: it requires "
                              "CURVE, so give --server-key and --client-key")
    if seen & _REFUSED:
        return EXIT_REFUSED, (f"the actor at {endpoint} refused the CURVE handshake: is "
                              "--server-key its public key (actor.key), and does it use CURVE?")
    if zmq.EVENT_HANDSHAKE_SUCCEEDED in seen:
        return EXIT_UNREACHABLE, "the actor accepted the connection but did not answer: busy or hung?"
    if zmq.EVENT_CONNECTED in seen:
        return EXIT_UNREACHABLE, (f"something listens at {endpoint} but does not complete a "
                                  "handshake: a hung actor, or not an actor?")
    return EXIT_UNREACHABLE, f"nothing listens at {endpoint}: is the actor running?"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.server_key is None) != (args.client_key is None):
        print("reservation-ctl: CURVE needs both --server-key and --client-key", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "watch":
            watch(args)
            return EXIT_OK
        with Client(args.endpoint, timeout=args.timeout, server_key=args.server_key,
                    client_key=args.client_key) as client:
            result = COMMANDS[args.command](client, args)
    except CommandFailed as exc:
        print(f"reservation-ctl: {exc}", file=sys.stderr)
        return EXIT_ERROR_REPLY
    except TimeoutError as exc:
        status, why = diagnose(args.endpoint, args.server_key, args.client_key,
                               min(args.timeout, DIAGNOSIS_WAIT))
        print(f"reservation-ctl: {exc}; {why}", file=sys.stderr)
        return status
    except (OSError, ValueError, zmq.ZMQError) as exc:
        # A bad --endpoint, a key file that is missing or holds no key.
        print(f"reservation-ctl: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(result, indent=2 if isinstance(result, (dict, list)) else None))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
