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

from protocol.messages import INTERNAL, STORE_FAILED, ProtocolError, parse_command, Stats
from protocol.wire import decode_request, encode_error, encode_result, TOPIC_RESERVATION_UPDATE

from .config import Config
from .core import ReservationCore
from .store import Store, StoreError

log = logging.getLogger("reservation_actor")

BATCH = 256   # requests decided per loop turn before replying; bounds reply latency


class UtcClock:
    """UTC epoch seconds that advance with the monotonic clock, so a wall-clock
    step cannot make a reservation expire early or late."""

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def __call__(self) -> float:
        return self._wall0 + (time.monotonic() - self._mono0)


class Actor:
    def __init__(self, config: Config, store: Store, *, context: zmq.Context | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock or UtcClock()
        self.context = context or zmq.Context.instance()
        # Start-up updates (expired or removed while down) go out once bound.
        self.core, self._pending = self._load_core()
        self.started = time.monotonic()
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.updates_published = 0
        self._stopping = False
        self.router: zmq.Socket | None = None
        self.pub: zmq.Socket | None = None

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
        self.router = self.context.socket(zmq.ROUTER)
        self.pub = self.context.socket(zmq.PUB)
        for sock in (self.router, self.pub):
            sock.setsockopt(zmq.LINGER, 200)
        self.router.bind(self.config.command_endpoint)
        self.pub.bind(self.config.update_endpoint)
        log.info("serving commands on %s, updates on %s (%d EVSEs)",
                 self.command_endpoint, self.update_endpoint, len(self.config.evses))

    @property
    def command_endpoint(self) -> str:
        return self.router.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def update_endpoint(self) -> str:
        return self.pub.getsockopt_string(zmq.LAST_ENDPOINT)

    def stop(self) -> None:
        self._stopping = True

    def close(self) -> None:
        for sock in (self.router, self.pub):
            if sock is not None:
                sock.close()

    def serve(self, *, handle_signals: bool = True) -> None:
        """Run until stop() or SIGINT/SIGTERM. Signals wake the poller through
        a self-pipe, so stopping never waits for the next expiry."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
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
        poller.poll(0 if self._pending else self._poll_timeout_ms())
        now = self.clock()
        updates, self._pending = self._pending, []
        updates += self.core.expire(now)
        replies = []
        request_ids = []
        router = self.router
        for _ in range(BATCH):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            # Everything before the last frame is the route back (REQ's empty
            # delimiter included); the last frame is the request.
            request_id, frames[-1] = self._handle(frames[-1], now, updates)
            request_ids.append(request_id)
            replies.append(frames)
        if not self._commit():
            updates = []
            for frames, request_id in zip(replies, request_ids):
                frames[-1] = encode_error(request_id, STORE_FAILED,
                                          "the change could not be stored, so it was not made; "
                                          "the actor keeps serving, retry later")
        for frames in replies:
            try:
                router.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                self.errors["reply_dropped"] += 1
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
        return max(0, math.ceil((deadline - self.clock()) * 1000))

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
        pub = self.pub
        for topic, body in updates:
            if topic == TOPIC_RESERVATION_UPDATE:
                log.info("reservation %s %s", body["reservation_id"], body["reservation_status"])
            pub.send_multipart([topic.encode(), msgpack.packb(body)])
        self.updates_published += len(updates)

    def _stats(self, core_stats: dict[str, Any]) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "active_reservations": core_stats["active_reservations"],
            "updates_published": self.updates_published,
            "seq": core_stats["seq"],
            "uptime_s": round(time.monotonic() - self.started, 3),
            "pid": os.getpid(),
        }
