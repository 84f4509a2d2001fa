"""`reservation-ctl`: talk to a running reservation actor from a shell.

Each subcommand sends one command and prints its result as JSON; `watch`
follows the actor's state (client.Watcher) and prints each update it applies
as a JSON line, and {"resync": seq} when it had to take a new snapshot
because updates were lost, until interrupted. Exit status: 0 on a reply,
1 when the actor answered with an error, 2 when no reply came in time or the
command line cannot be used (a bad endpoint, an unreadable key file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import zmq

from .client import RESYNC, Client, CommandFailed, Watcher
from .messages import format_rfc3339
from .version import add_version_option
from .vocabulary import ConnectorEventType, ConnectorType
from .wire import DEFAULT_COMMAND_ENDPOINT, DEFAULT_UPDATE_ENDPOINT


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="reservation-ctl",
                                     description="Send commands to a reservation actor.")
    add_version_option(parser)
    parser.add_argument("--endpoint", default=DEFAULT_COMMAND_ENDPOINT,
                        help=f"command endpoint (default {DEFAULT_COMMAND_ENDPOINT})")
    parser.add_argument("--update-endpoint", default=DEFAULT_UPDATE_ENDPOINT,
                        help=f"update endpoint for watch (default {DEFAULT_UPDATE_ENDPOINT})")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds to wait for a reply; the actor refuses the request "
                             "after them (its deadline)")
    parser.add_argument("--server-key", metavar="FILE",
                        help="the actor's public CURVE certificate (actor.key)")
    parser.add_argument("--client-key", metavar="FILE",
                        help="this client's secret CURVE certificate (NAME.key_secret)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reserve", help="reserve_now")
    p.add_argument("--id", type=int, required=True, help="reservation_id")
    p.add_argument("--token", required=True, help="id_token")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--expiry", help="expiry_time, RFC 3339 (e.g. 2026-11-24T18:00:00Z)")
    when.add_argument("--expires-in", type=float, default=900.0,
                      help="seconds from now (default 900)")
    p.add_argument("--evse", type=int, help="evse_id; absent: any EVSE (non-EVSE-specific)")
    p.add_argument("--parent", help="parent_id_token")
    p.add_argument("--type", choices=sorted(ConnectorType), metavar="CONNECTOR_TYPE",
                   help="connector_type (a ConnectorTypeEnum name)")

    p = sub.add_parser("cancel", help="cancel_reservation")
    p.add_argument("reservation_id", type=int)

    p = sub.add_parser("exists", help="exists_reservation")
    p.add_argument("--token", required=True)
    p.add_argument("--evse", type=int)
    p.add_argument("--group", help="group_id_token")

    p = sub.add_parser("use", help="use_reservation")
    p.add_argument("--token", required=True)
    p.add_argument("--evse", type=int)
    p.add_argument("--parent", help="parent_id_token")

    p = sub.add_parser("event", help="connector_event")
    p.add_argument("evse_id", type=int)
    p.add_argument("connector_id", type=int)
    p.add_argument("event", choices=sorted(ConnectorEventType))

    p = sub.add_parser("plug", help="plug_event")
    p.add_argument("evse_id", type=int)
    p.add_argument("plugged", choices=["in", "out"])

    p = sub.add_parser("possible", help="is_charging_possible")
    p.add_argument("evse_id", type=int)

    for name, text in (("state", "get_state"), ("stats", "stats"), ("ping", "ping")):
        sub.add_parser(name, help=text)
    sub.add_parser("watch", help="print updates as JSON lines until interrupted "
                                  "(resynchronising after lost updates)")
    return parser.parse_args(argv)


def watch(args: argparse.Namespace) -> None:
    try:
        with Watcher(args.endpoint, args.update_endpoint, timeout=args.timeout,
                     server_key=args.server_key, client_key=args.client_key) as watcher:
            for topic, body in watcher:
                line = {"resync": body["seq"]} if topic == RESYNC else {"topic": topic, **body}
                print(json.dumps(line), flush=True)
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.server_key is None) != (args.client_key is None):
        print("reservation-ctl: CURVE needs both --server-key and --client-key", file=sys.stderr)
        return 2
    try:
        if args.command == "watch":
            watch(args)
            return 0
        with Client(args.endpoint, timeout=args.timeout, server_key=args.server_key,
                    client_key=args.client_key) as client:
            result = COMMANDS[args.command](client, args)
    except CommandFailed as exc:
        print(f"reservation-ctl: {exc}", file=sys.stderr)
        return 1
    except TimeoutError as exc:
        print(f"reservation-ctl: {exc}; is the actor running?", file=sys.stderr)
        return 2
    except (OSError, ValueError, zmq.ZMQError) as exc:
        # A bad --endpoint, a key file that is missing or holds no key.
        print(f"reservation-ctl: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2 if isinstance(result, (dict, list)) else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
