"""Python client for the reservation actor: commands over DEALER, updates over SUB.

    with Client() as client:
        client.reserve_now(reservation_id=1, id_token="TOKEN", expiry_time="2030-01-01T00:00:00Z")
        client.exists_reservation(id_token="TOKEN")

`call` is one request, one reply. `send` / `recv` pipeline: many requests in
flight on one socket, each reply matched by its id. `Watcher` keeps a copy of
the actor's state (get_state's shape) current from the update stream.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Iterator

import msgpack
import zmq
import zmq.auth

from .vocabulary import ReservationUpdateStatus, Topic
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


class Client:
    def __init__(self, endpoint: str = DEFAULT_COMMAND_ENDPOINT, *,
                 timeout: float = 5.0, context: zmq.Context | None = None,
                 server_key: str | None = None, client_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        use_curve(self.socket, server_key, client_key)
        self.socket.connect(endpoint)
        self._ids = itertools.count(1)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.socket.close()

    # -- raw requests ----------------------------------------------------------------

    def send(self, cmd: str, args: dict[str, Any] | None = None) -> int:
        request_id = next(self._ids)
        request: dict[str, Any] = {"id": request_id, "cmd": cmd}
        if args is not None:
            request["args"] = args
        self.socket.send(msgpack.packb(request))
        return request_id

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next reply map, or TimeoutError when none arrives in time."""
        wait = self.timeout if timeout is None else timeout
        if not self.socket.poll(int(wait * 1000), zmq.POLLIN):
            raise TimeoutError(f"no reply from {self.endpoint} within {wait} s")
        return decode_reply(self.socket.recv())

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        """Send one command and return its result; raises CommandFailed on an error reply.
        Replies to earlier requests that timed out are skipped by their id."""
        request_id = self.send(cmd, args)
        while True:
            reply = self.recv()
            if reply.get("id") == request_id:
                return result_of(reply)

    # -- the commands ----------------------------------------------------------------

    def reserve_now(self, **request: Any) -> str:
        return self.call("reserve_now", {"request": request})

    def cancel_reservation(self, reservation_id: int) -> bool:
        return self.call("cancel_reservation", {"reservation_id": reservation_id})

    def exists_reservation(self, **request: Any) -> str:
        return self.call("exists_reservation", {"request": request})

    def connector_event(self, evse_id: int, connector_id: int, event: str) -> str:
        return self.call("connector_event", {"evse_id": evse_id, "connector_id": connector_id,
                                             "event": event})

    def plug_event(self, evse_id: int, plugged_in: bool) -> None:
        return self.call("plug_event", {"evse_id": evse_id, "plugged_in": plugged_in})

    def use_reservation(self, **args: Any) -> int | None:
        return self.call("use_reservation", args)

    def is_charging_possible(self, evse_id: int) -> bool:
        return self.call("is_charging_possible", {"evse_id": evse_id})

    def get_state(self) -> dict[str, Any]:
        return self.call("get_state")

    def ping(self) -> str:
        return self.call("ping")

    def stats(self) -> dict[str, Any]:
        return self.call("stats")


def result_of(reply: dict[str, Any]) -> Any:
    if reply.get("ok"):
        return reply.get("result")
    error = reply.get("error") or {}
    raise CommandFailed(error.get("code", "?"), error.get("message", ""))


class Subscriber:
    """Updates from the actor's PUB socket, as (topic, body) pairs.
    PUB/SUB drops messages sent before the subscription is in place; a
    listener that needs the full state takes get_state and follows seq."""

    def __init__(self, endpoint: str = DEFAULT_UPDATE_ENDPOINT, *, topics: tuple[str, ...] = ("",),
                 context: zmq.Context | None = None,
                 server_key: str | None = None, client_key: str | None = None,
                 rcvhwm: int | None = None) -> None:
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        if rcvhwm is not None:
            # Only takes effect before connect; tests shrink it to make a listener overflow.
            self.socket.setsockopt(zmq.RCVHWM, rcvhwm)
        use_curve(self.socket, server_key, client_key)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.socket.connect(endpoint)

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


class Watcher:
    """The actor's state (get_state's shape, in `state`), kept current from
    the update stream: the ZeroMQ guide's Clone pattern.

        with Watcher() as watcher:
            for topic, body in watcher:      # forever; or call poll(timeout)
                print(topic, body, watcher.state["seq"])

    The actor's PUB drops updates for a listener that falls behind rather than
    wait for it, and says nothing. `seq` (+1 per update over all topics) makes
    the loss visible: an update with seq > state["seq"] + 1 means some were
    missed, and the Watcher replaces its state with a new get_state snapshot
    (counted in `resyncs`, reported by poll as (RESYNC, {"seq": ...})).
    A loss at the tail of a burst shows no gap until the next update, so after
    `check_every` seconds without any update it also asks get_state whether
    the actor is ahead of it.
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
        self.check_every = check_every
        self.resyncs = 0
        try:
            self.state: dict[str, Any] = self.client.get_state()
        except BaseException:
            self.close()
            raise
        self._last_heard = time.monotonic()

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
        Raises TimeoutError when the actor does not answer get_state."""
        applied: list[tuple[str, dict[str, Any]]] = []
        sock = self.subscriber.socket
        if sock.poll(int(timeout * 1000), zmq.POLLIN):
            self._last_heard = time.monotonic()
            # Bounded, so a flood of updates cannot keep one poll from returning.
            for _ in range(1000):
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._receive(*decode_update(frames), applied)
        elif self.check_every is not None and \
                time.monotonic() - self._last_heard >= self.check_every:
            self._last_heard = time.monotonic()
            snapshot = self.client.get_state()
            # Higher: the updates we lack were dropped. Lower: the actor restarted
            # without its history (a ':memory:' store). Either way the snapshot is the truth.
            if snapshot["seq"] != self.state["seq"]:
                self._resync(applied, snapshot)
        return applied

    def _receive(self, topic: str, body: dict[str, Any], applied: list) -> None:
        seq = body["seq"]
        if seq <= self.state["seq"]:
            return   # already in the snapshot
        if seq == self.state["seq"] + 1 and self._apply(topic, body):
            self.state["seq"] = seq
            applied.append((topic, body))
        else:
            # A gap, or a topic this client cannot apply: only a snapshot is exact.
            self._resync(applied)

    def _resync(self, applied: list, snapshot: dict[str, Any] | None = None) -> None:
        self.state = snapshot if snapshot is not None else self.client.get_state()
        self.resyncs += 1
        applied.append((RESYNC, {"seq": self.state["seq"]}))

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
            fields = (("reserved", "reservation_id") if topic == Topic.EVSE_RESERVED
                      else ("plugged_in", "connectors"))
            evse.update((key, body[key]) for key in fields)
            return True
        return False
