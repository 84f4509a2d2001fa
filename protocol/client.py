"""Python client for the reservation actor: commands over DEALER, updates over SUB.

    with Client() as client:
        client.reserve_now(reservation_id=1, id_token="TOKEN", expiry_time="2030-01-01T00:00:00Z")
        client.exists_reservation(id_token="TOKEN")

`call` is one request, one reply. `send` / `recv` pipeline: many requests in
flight on one socket, each reply matched by its id. `Watcher` keeps a copy of
the actor's state (get_state's shape) current from the update stream.
`protocol.aio` has the same two on asyncio; both share the protocol logic here
(`encode_request`, `result_of`, `Commands`, `Mirror`).
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any, Generator, Iterator

import msgpack
import zmq
import zmq.auth

from .vocabulary import Command, ReservationUpdateStatus, Topic
from .wire import DEFAULT_COMMAND_ENDPOINT, DEFAULT_UPDATE_ENDPOINT, decode_reply, decode_update


class CommandFailed(Exception):
    """The actor answered with an error; `code` is one of the protocol's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def use_curve(sock: zmq.Socket, server_key: str | None, client_key: str | None) -> None:
    """Make `sock` a CURVE client: server_key is the actor's public certificate
    file (actor.key), client_key this client's secret certificate file."""
    if server_key is None and client_key is None:
        return
    if server_key is None or client_key is None:
        raise ValueError("CURVE needs both server_key and client_key")
    sock.curve_serverkey = zmq.auth.load_certificate(server_key)[0]
    public, secret = zmq.auth.load_certificate(client_key)
    if secret is None:
        raise ValueError(f"{client_key} holds no secret key; pass the .key_secret file")
    sock.curve_publickey = public
    sock.curve_secretkey = secret


# Seconds a call waits for its reply past the request's deadline: a reply the
# actor decided just before the deadline still has the rest of that loop turn,
# its commit (one fsync) and the trip back ahead of it. Fixed, not a share of
# the timeout, because none of that grows with the caller's timeout.
DEADLINE_GRACE = 0.25


def deadline_after(timeout: float) -> int:
    """The `deadline` of a request sent now that may wait `timeout` seconds:
    UTC epoch milliseconds, as the wire protocol has it."""
    return math.ceil((time.time() + timeout) * 1000)


def encode_request(request_id: int, cmd: str, args: dict[str, Any] | None,
                   deadline: int | None = None) -> bytes:
    request: dict[str, Any] = {"id": request_id, "cmd": cmd}
    if args is not None:
        request["args"] = args
    if deadline is not None:
        request["deadline"] = deadline
    return msgpack.packb(request)


def result_of(reply: dict[str, Any]) -> Any:
    if reply.get("ok"):
        return reply.get("result")
    error = reply.get("error") or {}
    raise CommandFailed(error.get("code", "?"), error.get("message", ""))


def timed_out(endpoint: str, wait: float) -> TimeoutError:
    return TimeoutError(f"no reply from {endpoint} within {wait} s (+{DEADLINE_GRACE} s grace); "
                        "the request's deadline has passed, so it can no longer take effect "
                        "(see PROTOCOL.md, Deadlines, for the limits of that)")


class Commands:
    """The protocol's commands as methods over `call`. Client and AsyncClient
    share them: AsyncClient.call is a coroutine function, so there each method
    returns an awaitable of the same result."""

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        raise NotImplementedError

    def reserve_now(self, **request: Any) -> str:
        return self.call(Command.RESERVE_NOW, {"request": request})

    def cancel_reservation(self, reservation_id: int) -> bool:
        return self.call(Command.CANCEL_RESERVATION, {"reservation_id": reservation_id})

    def exists_reservation(self, **request: Any) -> str:
        return self.call(Command.EXISTS_RESERVATION, {"request": request})

    def connector_event(self, evse_id: int, connector_id: int, event: str) -> str:
        return self.call(Command.CONNECTOR_EVENT, {"evse_id": evse_id, "connector_id": connector_id,
                                                   "event": event})

    def plug_event(self, evse_id: int, plugged_in: bool) -> None:
        return self.call(Command.PLUG_EVENT, {"evse_id": evse_id, "plugged_in": plugged_in})

    def use_reservation(self, **args: Any) -> int | None:
        return self.call(Command.USE_RESERVATION, args)

    def is_charging_possible(self, evse_id: int) -> bool:
        return self.call(Command.IS_CHARGING_POSSIBLE, {"evse_id": evse_id})

    def get_state(self) -> dict[str, Any]:
        return self.call(Command.GET_STATE)

    def ping(self) -> str:
        return self.call(Command.PING)

    def stats(self) -> dict[str, Any]:
        return self.call(Command.STATS)


class Client(Commands):
    """Commands over one DEALER socket. `call` sends each request with a
    `deadline` `timeout` seconds away, which the actor refuses once passed, and
    raises TimeoutError only DEADLINE_GRACE after it: a call reported as timed
    out can no longer take effect (closing the socket alone could not promise
    that, as a request may already wait in the actor's queue). It then opens
    a new socket (the ZeroMQ guide's Lazy Pirate), so no late reply is left
    for `recv` to return. `recv`'s timeout only says that nothing arrived yet;
    a pipelining caller that gives up on what is in flight passes `send` a
    deadline (`deadline_after`), waits DEADLINE_GRACE past it, and calls
    `reset()`."""

    def __init__(self, endpoint: str = DEFAULT_COMMAND_ENDPOINT, *,
                 timeout: float = 5.0, context: zmq.Context | None = None,
                 server_key: str | None = None, client_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.context = context or zmq.Context.instance()
        self._keys = (server_key, client_key)
        self.socket = dealer(self.context, endpoint, *self._keys)
        self._ids = itertools.count(1)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.socket.close()

    def reset(self) -> None:
        """Continue on a new socket. Requests not yet delivered and replies not
        yet read go with the old one; a request already in the actor's queue is
        still carried out unless it carries a deadline that has passed."""
        self.socket.close()
        self.socket = dealer(self.context, self.endpoint, *self._keys)

    # -- raw requests ----------------------------------------------------------------

    def send(self, cmd: str, args: dict[str, Any] | None = None, *,
             deadline: int | None = None) -> int:
        request_id = next(self._ids)
        self.socket.send(encode_request(request_id, cmd, args, deadline))
        return request_id

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next reply map, or TimeoutError when none arrives in time."""
        wait = self.timeout if timeout is None else timeout
        if not self.socket.poll(int(wait * 1000), zmq.POLLIN):
            raise TimeoutError(f"no reply from {self.endpoint} within {wait} s")
        return decode_reply(self.socket.recv())

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        """Send one command and return its result; raises CommandFailed on an
        error reply, TimeoutError (after a reset) when no reply comes in time.
        Replies to requests sent earlier with `send` are skipped by their id."""
        deadline = deadline_after(self.timeout)
        give_up = time.monotonic() + self.timeout + DEADLINE_GRACE
        request_id = self.send(cmd, args, deadline=deadline)
        while True:
            try:
                reply = self.recv(max(0.0, give_up - time.monotonic()))
            except TimeoutError:
                self.reset()
                raise timed_out(self.endpoint, self.timeout) from None
            if reply.get("id") == request_id:
                return result_of(reply)


def dealer(context: zmq.Context, endpoint: str, server_key: str | None,
           client_key: str | None) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    use_curve(sock, server_key, client_key)
    sock.connect(endpoint)
    return sock


def subscription(context: zmq.Context, endpoint: str, topics: tuple[str, ...],
                 server_key: str | None, client_key: str | None,
                 rcvhwm: int | None = None) -> zmq.Socket:
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if rcvhwm is not None:
        # Only takes effect before connect; tests shrink it to make a listener overflow.
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    use_curve(sock, server_key, client_key)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(endpoint)
    return sock


class Subscriber:
    """Updates from the actor's PUB socket, as (topic, body) pairs.
    PUB/SUB drops messages sent before the subscription is in place; a
    listener that needs the full state takes get_state and follows seq."""

    def __init__(self, endpoint: str = DEFAULT_UPDATE_ENDPOINT, *, topics: tuple[str, ...] = ("",),
                 context: zmq.Context | None = None,
                 server_key: str | None = None, client_key: str | None = None,
                 rcvhwm: int | None = None) -> None:
        self.context = context or zmq.Context.instance()
        self.socket = subscription(self.context, endpoint, topics, server_key, client_key, rcvhwm)

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.socket.close()

    def recv(self, timeout: float | None = None) -> tuple[str, dict[str, Any]]:
        if timeout is not None and not self.socket.poll(int(timeout * 1000), zmq.POLLIN):
            raise TimeoutError(f"no update within {timeout} s")
        return decode_update(self.socket.recv_multipart())

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        while True:
            yield self.recv()


RESYNC = "resync"   # Watcher.poll's entry for "the state was replaced by a new snapshot"
SNAPSHOT, WAIT, RECEIVE = "snapshot", "wait", "receive"   # what Mirror.poll asks its driver for
BATCH = 1000        # updates applied per poll at most, so a flood cannot keep one poll from returning


class Mirror:
    """The Clone pattern's decisions, without sockets: Watcher and AsyncWatcher
    feed it what they receive and do the I/O it asks for.

    `state` is a copy of get_state's result (None until the first snapshot).
    `receive` applies an update that follows `seq` and ignores one already in
    the snapshot; anything else (a gap, a topic it cannot apply) makes it
    `stale`: the owner then takes get_state and hands it to `replace`. After
    `check_every` seconds without an update applied, `check_due` says to
    compare the actor's seq with ours, because a loss at the tail of a burst
    shows no gap until the next update, and an actor restarted without its
    history (a ':memory:' store) counts seq from 0 again: its updates look
    like ones already in the snapshot, so they must not count as heard."""

    def __init__(self, check_every: float | None) -> None:
        self.state: dict[str, Any] | None = None
        self.stale = True
        self.resyncs = 0
        self.check_every = check_every
        self._last_heard = time.monotonic()

    def check_due(self) -> bool:
        if self.check_every is None or time.monotonic() - self._last_heard < self.check_every:
            return False
        self._last_heard = time.monotonic()
        return True

    def receive(self, topic: str, body: dict[str, Any]) -> bool:
        """True when `body` was applied to state; False when it was not (already
        in the snapshot, or `stale` is now set)."""
        seq = body["seq"]
        if seq <= self.state["seq"]:
            return False
        if seq == self.state["seq"] + 1 and self._apply(topic, body):
            self.state["seq"] = seq
            self._last_heard = time.monotonic()
            return True
        self.stale = True
        return False

    def replace(self, snapshot: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Take `snapshot` as the state; the entry a poll reports for it."""
        if self.state is not None:
            self.resyncs += 1
        self.state = snapshot
        self.stale = False
        self._last_heard = time.monotonic()
        return RESYNC, {"seq": snapshot["seq"]}

    def differs(self, snapshot: dict[str, Any]) -> bool:
        # Higher: the updates we lack were dropped. Lower: the actor restarted
        # without its history. Either way the snapshot is the truth.
        return snapshot["seq"] != self.state["seq"]

    def poll(self, timeout: float) -> Generator[tuple, Any, list[tuple[str, dict[str, Any]]]]:
        """One Watcher.poll as a generator of the I/O it needs, so the sync and
        the asyncio watcher share every decision and differ only in how they
        wait. It yields (SNAPSHOT,) for a get_state result, (WAIT, ms) for
        whether an update arrived within ms, (RECEIVE,) for the next update's
        frames or None; it returns what the poll applied, in order."""
        applied: list[tuple[str, dict[str, Any]]] = []
        if self.stale:
            applied.append(self.replace((yield (SNAPSHOT,))))
        if (yield (WAIT, int(timeout * 1000))):
            for _ in range(BATCH):
                frames = yield (RECEIVE,)
                if frames is None:
                    break
                topic, body = decode_update(frames)
                if self.receive(topic, body):
                    applied.append((topic, body))
                elif self.stale:
                    applied.append(self.replace((yield (SNAPSHOT,))))
        if self.check_due():
            snapshot = yield (SNAPSHOT,)
            if self.differs(snapshot):
                applied.append(self.replace(snapshot))
        return applied

    def _apply(self, topic: str, body: dict[str, Any]) -> bool:
        """Change `state` as the actor did when it published `body`; False when
        this client cannot (a topic it does not know)."""
        if topic == Topic.RESERVATION_UPDATE:
            rid = body["reservation_id"]
            kept = [r for r in self.state["reservations"] if r["reservation_id"] != rid]
            if body["reservation_status"] == ReservationUpdateStatus.PLACED:
                # The actor lists reservations oldest first; a replacement is the newest.
                kept.append(body["reservation"])
            self.state["reservations"] = kept
            return True
        if topic in (Topic.EVSE_RESERVED, Topic.EVSE_STATE):
            evse = next((e for e in self.state["evses"] if e["id"] == body["evse_id"]), None)
            if evse is None:
                return False   # not in our snapshot's station: take a new one
            fields = (("reserved", "reservation_id", "held_for_non_evse_specific")
                      if topic == Topic.EVSE_RESERVED
                      else ("plugged_in", "connectors"))
            evse.update((key, body[key]) for key in fields)
            return True
        return False


class Watcher:
    """The actor's state (get_state's shape, in `state`), kept current from
    the update stream: the ZeroMQ guide's Clone pattern (decided by `Mirror`).

        with Watcher() as watcher:
            for topic, body in watcher:      # forever; or call poll(timeout)
                print(topic, body, watcher.state["seq"])

    The actor's PUB drops updates for a listener that falls behind rather than
    wait for it, and says nothing. `seq` (+1 per update over all topics) makes
    the loss visible: an update with seq > state["seq"] + 1 means some were
    missed, and the Watcher replaces its state with a new get_state snapshot
    (counted in `resyncs`, reported by poll as (RESYNC, {"seq": ...})).
    After `check_every` seconds without an update applied it also asks
    get_state whether the actor is ahead of it (or restarted).
    """

    def __init__(self, command_endpoint: str = DEFAULT_COMMAND_ENDPOINT,
                 update_endpoint: str = DEFAULT_UPDATE_ENDPOINT, *,
                 server_key: str | None = None, client_key: str | None = None,
                 context: zmq.Context | None = None, timeout: float = 5.0,
                 check_every: float | None = 1.0, rcvhwm: int | None = None) -> None:
        # Subscribe before the snapshot, so nothing published after the snapshot
        # can slip between the two unseen. The subscription reaches the PUB
        # asynchronously; an update lost to that shows up as a gap like any other.
        self.subscriber = Subscriber(update_endpoint, context=context, server_key=server_key,
                                     client_key=client_key, rcvhwm=rcvhwm)
        self.client = Client(command_endpoint, timeout=timeout, context=context,
                             server_key=server_key, client_key=client_key)
        self.mirror = Mirror(check_every)
        try:
            self.mirror.replace(self.client.get_state())
        except BaseException:
            self.close()
            raise

    @property
    def state(self) -> dict[str, Any]:
        return self.mirror.state

    @property
    def resyncs(self) -> int:
        return self.mirror.resyncs

    def __enter__(self) -> "Watcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.subscriber.close()
        self.client.close()

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        while True:
            yield from self.poll(1.0)

    def poll(self, timeout: float = 0.0) -> list[tuple[str, dict[str, Any]]]:
        """Wait up to `timeout` seconds for updates, apply what has arrived and
        return it in order: the (topic, body) pairs applied to `state`, and
        (RESYNC, {"seq": seq}) where the state was replaced by a snapshot.
        Raises TimeoutError when the actor does not answer get_state (the next
        poll tries again)."""
        steps, answer = self.mirror.poll(timeout), None
        sock = self.subscriber.socket
        try:
            while True:
                ask = steps.send(answer)
                if ask[0] is SNAPSHOT:
                    answer = self.client.get_state()
                elif ask[0] is WAIT:
                    answer = sock.poll(ask[1], zmq.POLLIN)
                else:
                    try:
                        answer = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        answer = None
        except StopIteration as done:
            return done.value
