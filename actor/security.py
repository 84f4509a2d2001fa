"""CURVE on both sockets, with the ZAP handler inside the actor's own loop.

Theory of operation: libzmq asks "may this peer in?" by sending a ZAP request
to whatever is bound at inproc://zeromq.zap.01 in the socket's context, and
holds the handshake until it hears back. pyzmq's zmq.auth answers from a
thread; we bind a REP socket there instead and register it in the actor's
poller, so authentication is one more event in the single-threaded loop and
shares no state across threads. A client key is let in only if its public key
is one of the certificates in `authorized_keys`; anything else (another
mechanism, an unknown key) is refused with status 400 and counted. The policy
is answer_zap, a pure function from a request's frames to the reply's; the
ZapHandler around it receives, sends, counts and logs.

Refusals are logged sparingly: a refused client reconnects every 100 ms by
default, and a hostile one can make new keys at will, so one line per
refusal would bury the log. Within each REFUSAL_LOG_WINDOW the first refusal
of each key is logged, up to LOGGED_REFUSALS lines; the rest are counted, and
the next refusal after the window logs how many there were.

AcceptGuard, below, keeps connections that exhaust the file descriptors from
spinning libzmq's listeners.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import os
import resource
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import zmq
import zmq.auth
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from .metrics import http_endpoint

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("reservation_actor")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"         # RFC 27, the only version there is
CURVE_KEY_BYTES = 32
LOGGED_REFUSALS = 5          # refusal lines per window, one per key at most
REFUSAL_LOG_WINDOW = 60.0    # seconds
SHED_LOG_EVERY = 60.0        # seconds between "still out of descriptors" lines
RESERVE_DESCRIPTORS = 4      # libzmq's spinning accept may win the race for some of them
SHED_AGAIN_AFTER = 256       # events read: a listener spinning again reports faster than they are read


class SecurityError(Exception):
    pass


@dataclass(frozen=True)
class CurveKeys:
    public: bytes                  # z85
    secret: bytes                  # z85
    authorized: frozenset[bytes]   # z85 public keys of the clients let in

    @classmethod
    def load(cls, secret_key_file: str, authorized_keys: str) -> "CurveKeys":
        try:
            public, secret = zmq.auth.load_certificate(secret_key_file)
            mode = stat.S_IMODE(os.stat(secret_key_file).st_mode)
        except (OSError, ValueError) as exc:
            raise SecurityError(f"secret_key_file {secret_key_file}: {exc}") from None
        readers = [who for who, bit in (("group", stat.S_IRGRP), ("others", stat.S_IROTH))
                   if mode & bit]
        if readers:
            # A warning, not a refusal: the key may sit on a file system without
            # modes, and an actor that refuses to start strands every driver.
            log.warning("secret_key_file %s is readable by %s (mode %04o): whoever reads it can "
                        "pose as this actor; chmod 600 it", secret_key_file,
                        " and ".join(readers), mode)
        if not secret:
            raise SecurityError(f"secret_key_file {secret_key_file} holds no secret key "
                                "(is it the public .key file? use the .key_secret one)")
        if not (_is_z85_key(public) and _is_z85_key(secret)):
            # libzmq would refuse them only at bind, as a bare "Invalid argument".
            raise SecurityError(f"secret_key_file {secret_key_file}: its keys are not CURVE keys "
                                "(40 Z85 characters each); write a pair with `reservation-actor "
                                "keygen`")
        try:
            authorized = frozenset(zmq.auth.load_certificates(authorized_keys))
        except (OSError, ValueError) as exc:   # ValueError: a *.key holding no public key
            raise SecurityError(f"authorized_keys {authorized_keys}: {exc}") from None
        if not authorized:
            log.warning("authorized_keys %s holds no *.key certificate: every client will be "
                        "refused", authorized_keys)
        return cls(public, secret, authorized)

    def serve_on(self, sock: zmq.Socket) -> None:
        sock.curve_server = True
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def _is_z85_key(key: bytes) -> bool:
    try:
        return len(z85.decode(key)) == CURVE_KEY_BYTES
    except (KeyError, ValueError):    # a character outside Z85, or a length not a multiple of 5
        return False


def curve_keys(config: "Config", *, insecure: bool) -> CurveKeys | None:
    """The actor's CURVE keys from [security], or None to serve without them,
    which is refused (SecurityError) for an endpoint other hosts can reach
    unless `insecure`: anyone reaching it could reserve every EVSE."""
    if config.secret_key_file:
        return CurveKeys.load(config.secret_key_file, config.authorized_keys)
    exposed = [e for e in (config.command_endpoint, config.update_endpoint) if not is_loopback(e)]
    if exposed and not insecure:
        raise SecurityError(
            f"refusing to serve {', '.join(exposed)} without CURVE: anyone who can reach "
            "it could reserve every EVSE. Configure [security] (see `reservation-actor "
            "keygen`), bind to 127.0.0.1 or ipc://, or pass --insecure")
    if exposed:
        log.warning("INSECURE: serving %s without authentication or encryption (--insecure)",
                    ", ".join(exposed))
    return None


@dataclass(frozen=True)
class Refusal:
    """A client refused: what the log says about it."""
    mechanism: bytes
    address: bytes
    key: bytes | None   # z85; None when it offered no CURVE key


def answer_zap(request: list[bytes], authorized: frozenset[bytes]) -> tuple[list[bytes],
                                                                            Refusal | None]:
    """The reply frames to one ZAP request (RFC 27), and the refusal it made,
    if any. Let in: a CURVE client whose public key (z85) is in `authorized`.
    A request libzmq would not send (another version, fewer than six frames)
    gets status 400 and is no client refused: nobody asked to connect."""
    if len(request) < 6:
        # Answer what can be answered: REP must reply, and the asker may wait.
        head = request[:2] if len(request) >= 2 else [ZAP_VERSION, b""]
        return [*head, b"400", b"malformed ZAP request", b"", b""], None
    # version, request id, domain, address, identity, mechanism, credentials...
    version, request_id, _domain, address, _identity, mechanism = request[:6]
    if version != ZAP_VERSION:
        return [ZAP_VERSION, request_id, b"400",
                b"unsupported ZAP version (only " + ZAP_VERSION + b")", b"", b""], None
    credentials = request[6:]
    # A CURVE credential is the client's 32-byte public key; anything else is no key.
    curve = mechanism == b"CURVE" and credentials and len(credentials[0]) == CURVE_KEY_BYTES
    key = z85.encode(credentials[0]) if curve else None
    if key is not None and key in authorized:
        return [version, request_id, b"200", b"OK", key, b""], None
    return ([version, request_id, b"400", b"not authorized", b"", b""],
            Refusal(mechanism, address, key))


def metrics_exposure(config: "Config", *, insecure: bool) -> None:
    """Refuse (SecurityError) a metrics endpoint other hosts can reach unless
    `insecure`: HTTP has no CURVE, so anyone reaching it reads the counters.
    MetricsError for a URL that is not one."""
    if config.metrics_endpoint is None:
        return
    endpoint, _ = http_endpoint(config.metrics_endpoint)
    if is_loopback(endpoint):
        return
    if not insecure:
        raise SecurityError(
            f"refusing to serve metrics on {config.metrics_endpoint}: HTTP has no "
            "authentication, so anyone who can reach it reads them. Bind it to 127.0.0.1 "
            "(and scrape through a proxy or tunnel), or pass --insecure")
    log.warning("INSECURE: serving metrics on %s without authentication (--insecure)",
                config.metrics_endpoint)


class ZapHandler:
    """Answers libzmq's ZAP requests for both sockets from the actor's loop."""

    def __init__(self, context: zmq.Context, keys: CurveKeys, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self.socket = context.socket(zmq.REP)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(ZAP_ENDPOINT)
        self.refused = 0
        self._clock = clock
        self._window_start = -math.inf
        self._logged_keys: set[bytes | None] = set()   # this window's; LOGGED_REFUSALS at most
        self._unlogged = 0

    def handle(self) -> None:
        while True:
            try:
                request = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            reply, refusal = answer_zap(request, self.keys.authorized)
            if refusal is not None:
                self._refuse(refusal)
            self.socket.send_multipart(reply)

    def _refuse(self, refusal: Refusal) -> None:
        """Count it; log it unless the window's lines are spent (see the module's docstring)."""
        self.refused += 1
        key = refusal.key
        now = self._clock()
        if now - self._window_start >= REFUSAL_LOG_WINDOW:
            if self._unlogged:
                log.warning("refused %d more clients in the last %.0f s without logging each; "
                            "stats.clients_refused counts them all", self._unlogged,
                            now - self._window_start)
            self._window_start = now
            self._logged_keys.clear()
            self._unlogged = 0
        if key in self._logged_keys or len(self._logged_keys) >= LOGGED_REFUSALS:
            self._unlogged += 1
            return
        self._logged_keys.add(key)
        log.warning("refused a %s client from %s: key %s not in authorized_keys (further "
                    "refusals are summarised at most every %g s)",
                    refusal.mechanism.decode(errors="replace"),
                    refusal.address.decode(errors="replace"),
                    key.decode() if key is not None else "(none)", REFUSAL_LOG_WINDOW)

    def close(self) -> None:
        self.socket.close()


class AcceptGuard:
    """Keeps libzmq's listeners from spinning while the process is out of file
    descriptors.

    libzmq (4.3) meets a failed accept(2) by going back to epoll, where the
    listening socket, its queue still full, is readable again at once: its I/O
    thread spins at a full core for as long as the limit stays reached, which
    connections that never speak can arrange (a TODO in its tcp_listener.cpp;
    zeromq/pyzmq#1642). It reports each failure on the socket monitor, so the
    guard watches the monitors from the actor's loop:
    on EMFILE or ENFILE it frees the descriptors it keeps in reserve, accepts
    every queued connection itself and closes it at once (a ZeroMQ client
    reconnects, as after any refused connect), then takes the reserve back.
    The listening descriptor is the one the monitor's LISTENING event names.

    The loop polls each monitor's ZMQ_FD, a plain descriptor, not the monitor
    socket: zmq_poll asks every ZeroMQ socket for its state on each call,
    which would add microseconds to every turn for an event that is rare. That
    descriptor signals an event only to a reader that has found the monitor
    empty, so each call reads until it is. Read promptly too: libzmq's I/O
    thread waits while a monitor holds a thousand unread events."""

    def __init__(self, sockets: tuple[zmq.Socket, ...], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sockets = sockets
        self._monitors = [sock.get_monitor_socket(zmq.EVENT_LISTENING | zmq.EVENT_ACCEPT_FAILED)
                          for sock in sockets]
        # The descriptors for the loop to poll, each with its monitor.
        self.wakers: dict[int, zmq.Socket] = {m.get(zmq.FD): m for m in self._monitors}
        self._listening: dict[zmq.Socket, int] = {}
        for waker in self.wakers:
            self.handle(waker)   # a monitor found empty once signals its next event
        self._reserve = _reserve_descriptors()
        self._clock = clock
        self._logged_at = -math.inf
        self._unlogged = 0
        self.shed = 0

    def handle(self, waker: int) -> None:
        monitor = self.wakers[waker]
        since_shed = SHED_AGAIN_AFTER
        while True:
            try:
                event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return
            since_shed += 1
            if event["event"] == zmq.EVENT_LISTENING:
                self._listening[monitor] = int(event["value"])
            elif (event["value"] in (errno.EMFILE, errno.ENFILE) and monitor in self._listening
                  and since_shed >= SHED_AGAIN_AFTER):
                # At once: events keep coming for as long as the listener spins.
                since_shed = 0
                self._shed(self._listening[monitor], event["endpoint"].decode(errors="replace"))

    def _shed(self, fd: int, endpoint: str) -> None:
        listener = socket.socket(fileno=fd)   # libzmq's: borrowed, never closed here
        count = 0
        try:
            # libzmq leaves it blocking, as it accepts only when epoll says so; but
            # its I/O thread may take the last queued connection first, and the
            # loop must never wait in accept. libzmq takes EAGAIN as "nothing queued".
            listener.setblocking(False)
            for spare in self._reserve:
                os.close(spare)
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    # EAGAIN: the queue is empty. EMFILE: libzmq took the freed descriptor first.
                    break
                connection.close()
                count += 1
        finally:
            listener.detach()
            self._reserve = _reserve_descriptors()
        self.shed += count
        self._unlogged += count
        now = self._clock()
        if self._unlogged and now - self._logged_at >= SHED_LOG_EVERY:
            log.warning("out of file descriptors (limit %d): closed %d connections queued on %s "
                        "unserved since the last such line; stats.connections_shed counts them. "
                        "Raise the limit (LimitNOFILE=) or find who holds so many connections",
                        _descriptor_limit(), self._unlogged, endpoint)
            self._logged_at = now
            self._unlogged = 0

    def close(self) -> None:
        for sock in self._sockets:
            sock.disable_monitor()
        for monitor in self._monitors:
            monitor.close()
        for spare in self._reserve:
            os.close(spare)
        self._reserve = []


def _reserve_descriptors() -> list[int]:
    reserve = []
    try:
        for _ in range(RESERVE_DESCRIPTORS):
            reserve.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    except OSError:
        pass   # out of descriptors already: the next shed runs with fewer
    return reserve


def _descriptor_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one, as the Go runtime does for
    every program: each client costs the actor a descriptor, and the soft
    default (often 1024) is an accident of select(2), which nothing here
    uses. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):   # an unlimited hard limit is above what the kernel allows
            pass
    return _descriptor_limit()


def keygen(directory: str, name: str = "actor") -> tuple[str, str]:
    """Write NAME.key (public, to hand out) and NAME.key_secret (owner-only).
    Refuses to overwrite: replacing a key pair locks every client out."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    for suffix in (".key", ".key_secret"):
        if (Path(directory) / f"{name}{suffix}").exists():
            raise SecurityError(f"{Path(directory) / (name + suffix)} exists; choose another "
                                "--name or directory")
    # The secret must never exist, even briefly, with group or other access.
    umask = os.umask(0o077)
    try:
        public_file, secret_file = zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(umask)
    os.chmod(public_file, 0o644)
    return public_file, secret_file


def is_loopback(endpoint: str) -> bool:
    """True for endpoints only this machine can reach: ipc, inproc, and tcp
    bound to a loopback address (not a wildcard, not an interface name)."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

