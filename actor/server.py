"""The actor: one thread, one poller, the reservation core in the middle.

Each loop turn: poll (sleeping until the next expiry at most), read the clock
once, end what expired, then drain the ROUTER of what has arrived (up to
BATCH requests), deciding each with the core; commit what the turn changed to
the store in one transaction (group commit: one fsync per turn, not per
request); then reply to every request of the turn and publish the updates they
caused, in seq order. Nothing leaves before its commit. If the commit fails,
every request of the turn is answered store_failed, nothing is published, and
the core is rebuilt from the store, so memory equals what is on disk.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import time
from collections import Counter
from typing import Any, Callable

import msgpack
import zmq

from protocol.messages import (
    BAD_REQUEST, INTERNAL, STORE_FAILED, ProtocolError, Stats, parse_command,
)
from protocol.wire import decode_request, encode_error, encode_result, TOPIC_RESERVATION_UPDATE

from .config import Config
from .core import ReservationCore
from .security import CurveKeys, ZapHandler
from .store import Store, StoreError

log = logging.getLogger("reservation_actor")

BATCH = 256   # requests decided per loop turn before replying; bounds reply latency
# Proxies add routing frames; more than this is not a route but an attack on memory.
MAX_FRAMES = 8
PUB_HIGH_WATER_MARK = 10_000   # updates queued per listener before PUB drops for it
MAX_SLEEP_MS = 1000   # longest poll while a reservation is armed

# Frames are sent with Socket.send and int flags: send_multipart's checks and
# flag arithmetic cost more than the send itself (a third of publishing).
_MORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_TOPIC_FRAMES: dict[str, bytes] = {}


def _log_reservation(body: dict[str, Any]) -> None:
    """log.info("reservation %s %s", ...) without its walk up the stack for the
    caller's file and line (findCaller), a fifth of its cost on the hot path;
    the line written is the same."""
    log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, "reservation %s %s",
                              (body["reservation_id"], body["reservation_status"]), None,
                              "_publish"))


class UtcClock:
    """UTC epoch seconds that advance with the monotonic clock, so the time
    between two readings is never distorted by the wall clock moving.

    The wall clock still defines UTC: when it steps (NTP) by more than STEP
    seconds away from where the monotonic clock says it should be, stepped()
    reports the jump and re-anchors, and the actor re-arms the expiry wheel,
    because deadlines are absolute UTC instants."""

    STEP = 1.0

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._anchor()

    def _anchor(self) -> None:
        self._wall0 = self._wall()
        self._mono0 = self._monotonic()

    def __call__(self) -> float:
        return self._wall0 + (self._monotonic() - self._mono0)

    def stepped(self) -> float:
        """How far the wall clock jumped since the last reading (0.0 if it did not)."""
        jump = self._wall() - self()
        if abs(jump) <= self.STEP:
            return 0.0
        self._anchor()
        return jump


class Actor:
    def __init__(self, config: Config, store: Store, *, keys: CurveKeys | None = None,
                 context: zmq.Context | None = None, clock: UtcClock | None = None) -> None:
        """`keys`: CURVE on both sockets (see security.curve_keys, which also
        decides whether serving without them is allowed)."""
        self.config = config
        self.store = store
        self.keys = keys
        self.clock = clock or UtcClock()
        self.context = context or zmq.Context.instance()
        # Start-up updates (expired or removed while down) go out once bound.
        self.core, self._pending = self._load_core()
        self.started = time.monotonic()
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.updates_published = 0
        self.replies_dropped = 0
        self._stopping = False
        self.router: zmq.Socket | None = None
        self.pub: zmq.Socket | None = None
        self.zap: ZapHandler | None = None

    def _load_core(self) -> tuple[ReservationCore, list]:
        """A core holding exactly what the store holds, plus the updates that
        restoring it produced (already numbered, not yet committed)."""
        now = self.clock()
        config = self.config
        core = ReservationCore(
            ((e.id, e.connectors) for e in config.evses),
            reservations_enabled=config.reservations_enabled,
            non_evse_specific=config.non_evse_specific, tick=config.tick, now=now)
        return core, core.restore(self.store.load(), now)

    # -- life cycle -----------------------------------------------------------------

    def bind(self) -> None:
        config = self.config
        keys = self.keys
        if keys is not None:
            self.zap = ZapHandler(self.context, keys)
        self.router = self.context.socket(zmq.ROUTER)
        self.pub = self.context.socket(zmq.PUB)
        for sock in (self.router, self.pub):
            sock.setsockopt(zmq.LINGER, 200)
            if keys is not None:
                keys.serve_on(sock)
        self.router.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)
        # Report a reply that cannot be queued instead of dropping it silently.
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.pub.setsockopt(zmq.SNDHWM, PUB_HIGH_WATER_MARK)
        # ipc socket files are created owner-only: the file system is the access control.
        umask = os.umask(0o077)
        try:
            self.router.bind(config.command_endpoint)
            self.pub.bind(config.update_endpoint)
        finally:
            os.umask(umask)
        log.info("serving commands on %s, updates on %s (%d EVSEs, %s)",
                 self.command_endpoint, self.update_endpoint, len(config.evses),
                 "CURVE" if keys else "no authentication")

    @property
    def command_endpoint(self) -> str:
        return self.router.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def update_endpoint(self) -> str:
        return self.pub.getsockopt_string(zmq.LAST_ENDPOINT)

    def stop(self) -> None:
        self._stopping = True

    def close(self) -> None:
        bound = []
        for sock in (self.router, self.pub):
            if sock is not None:
                bound.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
                sock.close()
        if self.zap is not None:
            self.zap.close()
        for endpoint in bound:
            # libzmq leaves ipc socket files behind; a stale one misleads operators.
            transport, _, path = endpoint.partition("://")
            if transport == "ipc" and path and not path.startswith("@"):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def serve(self, *, handle_signals: bool = True) -> None:
        """Run until stop() or SIGINT/SIGTERM. Signals wake the poller through
        a self-pipe, so stopping never waits for the next expiry."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.zap is not None:
            poller.register(self.zap.socket, zmq.POLLIN)
        wake_r = wake_w = None
        if handle_signals:
            wake_r, wake_w = socket.socketpair()
            wake_r.setblocking(False)
            wake_w.setblocking(False)
            previous_fd = signal.set_wakeup_fd(wake_w.fileno())
            previous = {sig: signal.signal(sig, lambda *_: self.stop())
                        for sig in (signal.SIGINT, signal.SIGTERM)}
            poller.register(wake_r, zmq.POLLIN)
        try:
            while not self._stopping:
                self.turn(poller)
        finally:
            if handle_signals:
                signal.set_wakeup_fd(previous_fd)
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                wake_r.close()
                wake_w.close()
            log.info("stopped after %d requests", self.requests)

    # -- one loop turn ----------------------------------------------------------------

    def turn(self, poller: zmq.Poller) -> None:
        events = poller.poll(0 if self._pending else self._poll_timeout_ms())
        if self.zap is not None and events:
            self.zap.handle()
        jump = self.clock.stepped()
        now = self.clock()
        if jump:
            log.warning("wall clock stepped by %+.3f s; re-arming %d expiries against UTC",
                        jump, len(self.core.reservations))
            self.core.rebase(now)
        updates, self._pending = self._pending, []
        updates += self.core.expire(now)
        replies = []
        request_ids = []
        router = self.router
        for _ in range(BATCH):
            # Asking EVENTS costs a tenth of the zmq.Again that an empty recv raises,
            # once per turn: per request in lock-step traffic.
            if not router.get(_EVENTS) & _POLLIN:
                break
            frames = router.recv_multipart(_NOBLOCK)
            # Everything before the last frame is the route back (REQ's empty
            # delimiter included); the last frame is the request.
            if len(frames) > MAX_FRAMES:
                self.requests += 1
                self.errors[BAD_REQUEST] += 1
                frames = [frames[0], encode_error(None, BAD_REQUEST,
                                                  f"more than {MAX_FRAMES} frames; a request is one frame")]
                request_ids.append(None)
                replies.append(frames)
                continue
            request_id, frames[-1] = self._handle(frames[-1], now, updates)
            request_ids.append(request_id)
            replies.append(frames)
        if not self._commit():
            updates = []
            for frames, request_id in zip(replies, request_ids):
                frames[-1] = encode_error(request_id, STORE_FAILED,
                                          "the change could not be stored, so it was not made; "
                                          "the actor keeps serving, retry later")
        send = router.send
        for frames in replies:
            try:
                for frame in frames[:-1]:
                    send(frame, _NOBLOCK | _MORE)
                send(frames[-1], _NOBLOCK)
            except zmq.ZMQError:
                # The peer is past its high-water mark or gone: never wait for it.
                self.replies_dropped += 1
        self._publish(updates)

    def _commit(self) -> bool:
        changes = self.core.take_changes()
        if changes is None:
            return True
        try:
            self.store.commit(changes)
            return True
        except StoreError as exc:
            log.error("%s; answering this turn's requests with %s", exc, STORE_FAILED)
            self.errors[STORE_FAILED] += 1
            self.core, self._pending = self._load_core()
            return False

    def _poll_timeout_ms(self) -> int | None:
        deadline = self.core.next_expiry()
        if deadline is None:
            return None
        # zmq_poll takes a C int of milliseconds (24.8 days): an expiry further
        # out overflowed it and killed the actor. Waking at least once a second
        # also lets stepped() see a wall-clock step before a far deadline.
        return min(MAX_SLEEP_MS, max(0, math.ceil((deadline - self.clock()) * 1000)))

    def _handle(self, body: bytes, now: float, updates: list) -> tuple[Any, bytes]:
        """(the request's id, the encoded reply)."""
        self.requests += 1
        request_id = None
        try:
            request_id, cmd, args = decode_request(body)
            command = parse_command(cmd, args)
            outcome = self.core.apply(command, now)
            updates.extend(outcome.updates)
            result = self._stats(outcome.result) if type(command) is Stats else outcome.result
            return request_id, encode_result(request_id, result)
        except ProtocolError as error:
            self.errors[error.code] += 1
            if request_id is None:
                request_id = error.request_id
            return request_id, encode_error(request_id, error.code, error.message)
        except Exception:
            log.exception("internal error while handling a request")
            self.errors[INTERNAL] += 1
            return request_id, encode_error(
                request_id, INTERNAL,
                "the actor failed on this request; it was logged and the actor keeps serving")

    def _publish(self, updates: list[tuple[str, dict[str, Any]]]) -> None:
        if not updates:
            return
        send = self.pub.send
        packb = msgpack.packb
        for topic, body in updates:
            frame = _TOPIC_FRAMES.get(topic)
            if frame is None:
                frame = _TOPIC_FRAMES[topic] = topic.encode()
            send(frame, _MORE)
            send(packb(body))
        self.updates_published += len(updates)
        # Logged after everything is sent: listeners should not wait on the log.
        if log.isEnabledFor(logging.INFO):
            for topic, body in updates:
                if topic == TOPIC_RESERVATION_UPDATE:
                    _log_reservation(body)

    def _stats(self, core_stats: dict[str, Any]) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "active_reservations": core_stats["active_reservations"],
            "updates_published": self.updates_published,
            "replies_dropped": self.replies_dropped,
            "clients_refused": self.zap.refused if self.zap is not None else 0,
            "seq": core_stats["seq"],
            "uptime_s": round(time.monotonic() - self.started, 3),
            "pid": os.getpid(),
        }
