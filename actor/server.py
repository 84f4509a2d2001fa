"""The actor: one thread, one poller, the reservation core in the middle.

Theory of operation
-------------------
A loop turn is five steps, one method each:

1. wait: poll until a request, a ZAP request or a signal arrives, the next
   expiry is due, or a held-back commit is to be retried; read the clock once.
2. decide: end what expired, then take requests (up to MAX_REQUESTS_PER_TURN,
   as flow.FlowControl lets them through, and no more once the turn's replies
   pass `turn_reply_bytes` or it has decided for `turn_decide_ms`) and decide
   each with the core, noting which replies are successes; `stats` is answered
   here, from the loop's own counters.
3. commit: store what the turn changed in one transaction (group commit: one
   fsync per turn, not per request). Nothing leaves before its commit.
4. reply, with the routing frames each request came with.
5. publish the updates, in seq order.

A failed commit fails only that turn's writes: the requests that changed
something (and any decided after them, whose answers saw those changes) are
answered store_failed, and the core is rebuilt from the store, so memory
equals the disk and nothing a client sent is pending. What the actor changes
on its own (an expiry; what start-up or that rebuild ended) cannot be
refused, so it is held, unpublished, and its commit retried on the schedule
of retry.CommitRetry instead of on every turn; reads are answered meanwhile.

Fairness. A turn is bounded by the bytes of its replies and by the time spent
deciding as well as by their number, so one client's expensive requests (a
get_state on a large station, or many cheap replies that are slow to decide)
leave room between them for expiries and other clients. A peer whose replies
are not being read stops being served: flow.FlowControl parks its requests
until it catches up, and says which request is next.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import math
import os
import signal
import socket
import sys
import time
from collections import Counter
from typing import Any, Callable, Iterator

import zmq

from protocol.messages import decode_args
from protocol.vocabulary import Command, ErrorCode, Topic
from protocol.wire import READABLE_NESTING, Encoder, ProtocolError, decode_request

from . import logs
from .clock import UtcClock
from .config import Config
from .core import ReservationCore
from .flow import PARKED_RECHECK_MS, FlowControl
from .metrics import DecideTimes, MetricsServer, render
from .retry import RETRY_CAP, CommitRetry, Note
from .security import AcceptGuard, CurveKeys, ZapHandler
from .store import StateStore, StoreError

log = logging.getLogger("reservation_actor")

# Requests taken per loop turn (decided, parked or dropped) before replying; bounds reply latency.
MAX_REQUESTS_PER_TURN = 256
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
_TOPIC_FRAMES = {topic: topic.value.encode() for topic in Topic}
_INTERNAL_MESSAGE = "the actor failed on this request; it was logged and the actor keeps serving"
_STORE_FAILED_MESSAGE = ("the store could not record this turn's changes (disk full or I/O "
                         "error), so nothing was changed; the actor keeps serving, retry later")


def _refuse_live_ipc(endpoint: str) -> None:
    """libzmq binds an ipc path by replacing whatever file is there, so a second
    actor would silently take the first one's endpoint; refuse when something
    answers on it. A stale file (nobody listening) is replaced as usual."""
    transport, _, path = endpoint.partition("://")
    if transport != "ipc" or path.startswith("@") or not os.path.exists(path):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return
    raise zmq.ZMQError(errno.EADDRINUSE, f"{endpoint} is in use by another process")


def poll_ms(deadline: float, now: float) -> int:
    """How long to poll to wake by `deadline`, for any two floats: 0 when it
    is due or past (or not a number), at most MAX_SLEEP_MS however far. zmq_poll
    takes a C int of milliseconds (24.8 days), and waking at least once a second
    lets stepped() see a wall-clock step before a far deadline."""
    remaining = deadline - now
    if not remaining > 0:
        return 0
    if remaining >= MAX_SLEEP_MS / 1000:
        return MAX_SLEEP_MS
    return math.ceil(remaining * 1000)


class Actor:
    def __init__(self, config: Config, store: StateStore, *, keys: CurveKeys | None = None,
                 context: zmq.Context | None = None, clock: UtcClock | None = None) -> None:
        """`keys`: CURVE on both sockets (see security.curve_keys, which also
        decides whether serving without them is allowed)."""
        self.config = config
        self.store = store
        self.keys = keys
        self.clock = clock or UtcClock()
        self.context = context or zmq.Context.instance()
        # Start-up's own changes (what expired or no longer fits while down) are
        # committed by the first turn and published once the sockets are bound.
        self.core, self._unstored = self._load_core()
        self._retry = CommitRetry()
        self._turn_reply_bytes = config.turn_reply_bytes or math.inf
        self._flow = FlowControl(config.peer_unread_bytes or math.inf)
        self._turn_decide_s = config.turn_decide_ms / 1000 or math.inf
        self._answered_here = {Command.STATS: self._stats}
        self._encode = Encoder()
        self.started = time.monotonic()
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.updates_published = 0
        self.replies_dropped = 0
        self.store_failures = 0
        self._stopping = False
        self._router_readable = False
        self.router: zmq.Socket | None = None
        self.pub: zmq.Socket | None = None
        self.zap: ZapHandler | None = None
        self.guard: AcceptGuard | None = None
        self.metrics: MetricsServer | None = None
        # Decide times are measured only while someone can scrape them.
        self.decide_times = DecideTimes() if config.metrics_endpoint else None
        self._command: str | None = None   # of the request being decided, for decide_times

    def _load_core(self) -> tuple[ReservationCore, list]:
        """A core holding exactly what the store holds, plus the updates that
        restoring it produced (already numbered, not yet committed)."""
        now = self.clock()
        config = self.config
        core = ReservationCore(
            ((e.id, e.connectors) for e in config.evses),
            reservations_enabled=config.reservations_enabled,
            non_evse_specific=config.non_evse_specific, tick=config.tick, now=now,
            record_changes=self.store.durable)
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
        self.guard = AcceptGuard((self.router, self.pub))   # before binding: it learns the listeners
        for endpoint in (config.command_endpoint, config.update_endpoint):
            _refuse_live_ipc(endpoint)
        # ipc socket files are created owner-only: the file system is the access control.
        umask = os.umask(0o077)
        try:
            self.router.bind(config.command_endpoint)
            self.pub.bind(config.update_endpoint)
        finally:
            os.umask(umask)
        if config.metrics_endpoint:
            self.metrics = MetricsServer(self.context, config.metrics_endpoint,
                                         lambda: render(self._stats(), self.decide_times))
            log.info("serving metrics on %s", self.metrics.url)
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
        if self.guard is not None:
            self.guard.close()
        bound = []
        for sock in (self.router, self.pub):
            if sock is not None:
                bound.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
                sock.close()
        if self.zap is not None:
            self.zap.close()
        if self.metrics is not None:
            self.metrics.close()
        for endpoint in bound:
            # libzmq leaves ipc socket files behind; a stale one misleads operators.
            transport, _, path = endpoint.partition("://")
            if transport == "ipc" and path and not path.startswith("@"):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def serve(self, *, handle_signals: bool = True,
              ready: Callable[[], None] | None = None) -> None:
        """Run until stop() or SIGINT/SIGTERM. Signals wake the poller through
        a self-pipe, so stopping never waits for the next expiry. `ready` is
        called once start-up's own updates are committed and published (by a
        first turn, which does not wait for a request when there are some)."""
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        if self.zap is not None:
            poller.register(self.zap.socket, zmq.POLLIN)
        for waker in self.guard.wakers:
            poller.register(waker, zmq.POLLIN)
        if self.metrics is not None:
            poller.register(self.metrics.socket, zmq.POLLIN)
        wake_r = wake_w = None
        if handle_signals:
            wake_r, wake_w = socket.socketpair()
            wake_r.setblocking(False)
            wake_w.setblocking(False)
            previous_fd = signal.set_wakeup_fd(wake_w.fileno())
            previous = {sig: signal.signal(sig, lambda *_: self.stop())
                        for sig in (signal.SIGINT, signal.SIGTERM)}
            poller.register(wake_r, zmq.POLLIN)
        # What start-up made lives as long as the actor: keep it out of every
        # collection, so none costs what the station's size would make it cost.
        gc.freeze()
        sys.setrecursionlimit(max(sys.getrecursionlimit(), READABLE_NESTING))
        try:
            if self._unstored:
                self.turn(poller)
            if ready is not None:
                ready()
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
        """Wait, decide, commit, reply, publish (see the module's docstring)."""
        now = self._wait(poller)
        replies, updates, wrote, provisional = self._decide(now)
        if not self._commit(now, wrote=wrote, updates=updates):
            self._refuse_writes(provisional)
            updates = []
        self._reply(replies)
        self._publish(updates)

    def _wait(self, poller: zmq.Poller) -> float:
        """Sleep until there is something to do; the time to do it at."""
        events = poller.poll(self._poll_timeout_ms())
        self._router_readable = False
        for sock, _ in events:
            if sock is self.router:
                self._router_readable = True
            elif self.zap is not None and sock is self.zap.socket:
                self.zap.handle()
            elif sock in self.guard.wakers:
                self.guard.handle(sock)
            elif self.metrics is not None and sock is self.metrics.socket:
                self.metrics.handle()
        jump = self.clock.stepped()
        now = self.clock()
        if jump:
            log.warning("wall clock stepped by %+.3f s; re-arming %d expiries against UTC",
                        jump, self.core.active_reservations)
            self.core.rebase(now)
            self._retry.rebase(now)
        return now

    def _poll_timeout_ms(self) -> int | None:
        deadline = self.core.next_expiry()
        if deadline is None and not self._unstored:
            timeout = None
        else:
            now = self.clock()
            if self._unstored:
                retry_at = self._retry.next_attempt(now)
                deadline = retry_at if deadline is None else min(deadline, retry_at)
            timeout = poll_ms(deadline, now)
        if self._flow.waiting:
            # Nothing wakes the poller when a parked peer's replies leave.
            timeout = PARKED_RECHECK_MS if timeout is None else min(timeout, PARKED_RECHECK_MS)
        return timeout

    def _decide(self, now: float) -> tuple[list[list[bytes]], list, bool,
                                           list[tuple[list[bytes], Any]]]:
        """This turn's replies (each with its route) and updates, whether a
        request changed something, and the provisional replies: each success
        from the first such request on (it saw those changes), with its request
        id, which stands only if the turn's commit does."""
        updates, self._unstored = self._unstored, []
        updates += self.core.expire(now)
        replies = []
        wrote = False
        provisional = []
        budget = self._turn_reply_bytes
        # Time as well as bytes: cheap replies can take long to decide. Measured
        # here, in the loop; the core never reads a clock.
        stop_at = time.perf_counter() + self._turn_decide_s
        decide_times = self.decide_times
        for frames in self._requests():
            # The decision's time only, not the read's: the end is read for stop_at anyway.
            started = time.perf_counter() if decide_times is not None else 0.0
            frames[-1], request_id, ok = self._decide_request(frames, now)
            decided_at = time.perf_counter()
            if decide_times is not None:
                decide_times.observe(self._command, decided_at - started)
            decided = self.core.updates_to_publish()
            if decided:
                wrote = True
                updates += decided
            if ok and wrote:
                provisional.append((frames, request_id))
            replies.append(frames)
            budget -= len(frames[-1])
            if budget <= 0 or decided_at >= stop_at:
                break
        return replies, updates, wrote, provisional

    def _requests(self) -> Iterator[list[bytes]]:
        """The requests to decide this turn, each as its frames: read from the
        ROUTER and, by turns, parked ones whose peer caught up, so neither
        starves the other. Those flow control holds back count towards
        MAX_REQUESTS_PER_TURN too, so a turn reads a bounded number."""
        flow = self._flow
        for _ in range(MAX_REQUESTS_PER_TURN):
            frames = flow.parked_turn() if flow.waiting else None
            if frames is None:
                received = self._receive()
                if received is None:
                    frames = flow.next_parked() if flow.waiting else None
                    if frames is None:
                        return
                else:
                    frames, last = received
                    if flow.watching and not flow.admit(frames, last):
                        continue
            yield frames

    def _receive(self) -> tuple[list[bytes], zmq.Frame] | None:
        """The frames of the next request on the ROUTER and its last frame (which
        tells the connection it came on), or None when none is there."""
        router = self.router
        if self._router_readable:
            self._router_readable = False   # the poll just said so: no need to ask
        # Asking EVENTS costs a tenth of the zmq.Again that an empty recv raises.
        elif not router.get(_EVENTS) & _POLLIN:
            return None
        # Frame by frame with Frame.more: recv_multipart asks RCVMORE through
        # getsockopt for each frame, which costs half as much again.
        frame = router.recv(_NOBLOCK, copy=False)
        frames = [frame.bytes]
        while frame.more:
            frame = router.recv(_NOBLOCK, copy=False)
            frames.append(frame.bytes)
        return frames, frame

    def _decide_request(self, frames: list[bytes], now: float) -> tuple[bytes, Any, bool]:
        """The encoded reply to one request, the request's id, and whether the
        reply is a success. Everything before its last frame is the route back
        (REQ's empty delimiter included)."""
        self.requests += 1
        request_id = self._command = None
        try:
            if len(frames) > MAX_FRAMES:
                raise ProtocolError(ErrorCode.BAD_REQUEST,
                                    f"more than {MAX_FRAMES} frames; a request is one frame "
                                    "after its routing frames")
            request_id, cmd, args, deadline = decode_request(frames[-1])
            self._command = cmd
            if deadline is not None and now * 1000 > deadline:
                # Its sender reports it as timed out (or soon will): it must not take effect.
                raise ProtocolError(ErrorCode.DEADLINE_EXCEEDED,
                                    f"the request's deadline passed {now * 1000 - deadline:.0f} ms "
                                    "before the actor read it, so it was not carried out; "
                                    "send it again with a new deadline")
            command = decode_args(cmd, args)
            answer_here = self._answered_here.get(cmd)
            if answer_here is not None:
                return self._encode.result(request_id, answer_here()), request_id, True
            return (self._encode.result(request_id, self.core.decide(command, now)),
                    request_id, True)
        except ProtocolError as error:
            if request_id is None:
                request_id = error.request_id
            code, message = error.code, error.message
        except Exception:
            log.exception("internal error while handling a request")
            code, message = ErrorCode.INTERNAL, _INTERNAL_MESSAGE
        self.errors[code] += 1
        return self._encode.error(request_id, code, message), request_id, False

    def _commit(self, now: float, *, wrote: bool, updates: list) -> bool:
        """Store what the turn changed; True when its updates may go out.
        Clients' writes are committed at once; the actor's own changes alone
        wait for their retry time after a failure, held back unpublished."""
        if not wrote and updates and not self._retry.due(now):
            self._unstored = updates
            return False
        changes = self.core.take_changes()
        if changes is None:
            return True
        try:
            self.store.commit(changes)
        except StoreError as exc:
            self._store_failed(exc, now)
            return False
        failures = self._retry.recovered()
        if failures:
            log.warning("store %s recovered after %d failed commits", self.store.path, failures)
        return True

    def _store_failed(self, exc: StoreError, now: float) -> None:
        self.store_failures += 1
        note = self._retry.failed(now)
        if note is Note.FAILING:
            log.error("%s; changes answer %s until it recovers, the actor's own are retried "
                      "(every %g s at most)", exc, ErrorCode.STORE_FAILED, RETRY_CAP)
        elif note is Note.STILL_FAILING:
            log.error("%s; still failing, %d attempts", exc, self._retry.failures)
        self.core, self._unstored = self._load_core()

    def _refuse_writes(self, provisional: list[tuple[list[bytes], Any]]) -> None:
        """After a failed commit: store_failed instead of each provisional reply
        (see _decide); refusals of bad input stand."""
        for frames, request_id in provisional:
            self.errors[ErrorCode.STORE_FAILED] += 1
            frames[-1] = self._encode.error(request_id, ErrorCode.STORE_FAILED,
                                            _STORE_FAILED_MESSAGE)

    def _reply(self, replies: list[list[bytes]]) -> None:
        send = self.router.send   # looked up once, not per frame: this is the hot path
        flow = self._flow
        track_from = flow.track_from
        for frames in replies:
            body = frames[-1]
            try:
                for frame in frames[:-1]:
                    send(frame, _NOBLOCK | _MORE)
                if len(body) < track_from:
                    send(body, _NOBLOCK)
                else:
                    flow.sent(frames[0], send(body, _NOBLOCK, copy=False, track=True), len(body))
            except zmq.ZMQError:
                # The peer is past its high-water mark or gone: never wait for it.
                self.replies_dropped += 1
        if flow.watching:   # a call per turn only while there is something to forget
            flow.forget_caught_up()

    def _publish(self, updates: list[tuple[str, dict[str, Any]]]) -> None:
        if not updates:
            return
        send = self.pub.send   # looked up once, as in _reply
        pack = self._encode.pack
        for topic, body in updates:
            send(_TOPIC_FRAMES[topic], _MORE)
            send(pack(body))
        self.updates_published += len(updates)
        # Logged after everything is sent: listeners should not wait on the log.
        if log.isEnabledFor(logging.INFO):
            logs.log_batched(log, "reservation %s %s", [
                (body["reservation_id"], body["reservation_status"])
                for topic, body in updates if topic is Topic.RESERVATION_UPDATE])
            logs.flush()

    def _stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "active_reservations": self.core.active_reservations,
            "updates_published": self.updates_published,
            "replies_dropped": self.replies_dropped,
            "requests_shed": self._flow.requests_shed,
            "requests_abandoned": self._flow.requests_abandoned,
            "clients_refused": self.zap.refused if self.zap is not None else 0,
            "connections_shed": self.guard.shed if self.guard is not None else 0,
            "store_failures": self.store_failures,
            "seq": self.core.seq,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "pid": os.getpid(),
        }
