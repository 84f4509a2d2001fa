"""`reservation-actor`: run the actor on a station from a config file or the default one."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace

import zmq

from protocol.version import add_version_option

from . import logs
from .config import SYNCHRONOUS_MODES, ConfigError, load_config
from .metrics import MetricsError
from .notify import Notifier
from .security import (
    SecurityError, curve_keys, keygen, metrics_exposure, raise_descriptor_limit,
)
from .server import Actor
from .store import StoreError, default_store_path, open_store


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="reservation-actor",
        description="Decide EV charging reservations (EVerest semantics) over ZeroMQ.")
    parser.add_argument("--config", metavar="FILE",
                        help="TOML station config; without it the embedded default station "
                             "(two EVSEs, each cCCS2 + cType2) is served")
    parser.add_argument("--command-endpoint", metavar="ENDPOINT",
                        help="ROUTER endpoint for commands (overrides the config file)")
    parser.add_argument("--update-endpoint", metavar="ENDPOINT",
                        help="PUB endpoint for updates (overrides the config file)")
    parser.add_argument("--metrics-endpoint", metavar="URL",
                        help="serve Prometheus metrics at this http://HOST:PORT/PATH (overrides "
                             "[endpoints] metrics; e.g. http://127.0.0.1:9464/metrics); "
                             "loopback only unless --insecure")
    parser.add_argument("--store", metavar="PATH",
                        help="SQLite store for reservations and connector states (overrides "
                             "[store] path; default: per-user state directory); ':memory:' keeps "
                             "nothing across restarts")
    parser.add_argument("--synchronous", choices=SYNCHRONOUS_MODES,
                        help="store durability: full (default) survives power loss; normal may "
                             "lose the last commits on power loss, for speed")
    parser.add_argument("--reset-store", action="store_true",
                        help="start with an empty store on purpose, discarding what it holds")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback tcp endpoint without CURVE (anyone who can "
                             "reach it can reserve every EVSE), and a non-loopback metrics "
                             "endpoint")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=logs.FORMATS,
                        help="text lines (default) or one JSON object per line; time stamps "
                             "are UTC either way")
    add_version_option(parser)
    return parser.parse_args(argv)


def keygen_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="reservation-actor keygen",
        description="Write a CURVE key pair: NAME.key (public: give it to the other side) and "
                    "NAME.key_secret (keep it; owner-only).")
    parser.add_argument("directory")
    parser.add_argument("--name", default="actor", help="file name stem (default: actor)")
    args = parser.parse_args(argv)
    try:
        public_file, secret_file = keygen(args.directory, args.name)
    except SecurityError as exc:
        print(f"reservation-actor keygen: {exc}", file=sys.stderr)
        return 2
    print(f"public key: {public_file}\nsecret key: {secret_file}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keygen"]:
        return keygen_main(argv[1:])
    args = parse_args(argv)
    logs.configure(args.log_level, log_format=args.log_format)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"reservation-actor: config error: {exc}", file=sys.stderr)
        return 2
    if args.command_endpoint:
        config = replace(config, command_endpoint=args.command_endpoint)
    if args.update_endpoint:
        config = replace(config, update_endpoint=args.update_endpoint)
    if args.metrics_endpoint:
        config = replace(config, metrics_endpoint=args.metrics_endpoint)
    try:
        # Before the store: a refused start-up leaves no trace.
        keys = curve_keys(config, insecure=args.insecure)
        metrics_exposure(config, insecure=args.insecure)
    except MetricsError as exc:
        print(f"reservation-actor: metrics endpoint: {exc}", file=sys.stderr)
        return 2
    except SecurityError as exc:
        print(f"reservation-actor: {exc}", file=sys.stderr)
        return 2
    path = args.store or config.store_path or default_store_path()
    try:
        store = open_store(path, synchronous=args.synchronous or config.store_synchronous,
                           reset=args.reset_store)
    except StoreError as exc:
        print(f"reservation-actor: {exc}", file=sys.stderr)
        return 3
    try:
        actor = Actor(config, store, keys=keys)   # loads the store, checking every row
    except StoreError as exc:
        store.close()
        print(f"reservation-actor: {exc}", file=sys.stderr)
        return 3
    logging.getLogger("reservation_actor").info(
        "store %s (synchronous=%s); file descriptors: %d at most", path,
        args.synchronous or config.store_synchronous, raise_descriptor_limit())
    try:
        actor.bind()
    except zmq.ZMQError as exc:
        endpoints = (config.command_endpoint, config.update_endpoint, config.metrics_endpoint)
        print(f"reservation-actor: cannot bind {' / '.join(filter(None, endpoints))}: {exc}",
              file=sys.stderr)
        actor.close()
        store.close()
        return 2
    supervisor = Notifier.from_environment()
    try:
        actor.serve(ready=lambda: supervisor.ready(
            f"serving commands on {actor.command_endpoint}, updates on {actor.update_endpoint}"))
    except StoreError as exc:   # the store became unreadable while serving
        print(f"reservation-actor: {exc}", file=sys.stderr)
        return 3
    finally:
        supervisor.stopping()
        actor.close()
        store.close()
        # Closing the context waits out the sockets' short linger, so replies
        # of the last turn are flushed before the process exits.
        actor.context.term()
    return 0
