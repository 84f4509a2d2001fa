"""Python client for the reservation actor: commands over DEALER, updates over SUB.

    with Client() as client:
        client.reserve_now(reservation_id=1, id_token="TOKEN", expiry_time="2030-01-01T00:00:00Z")
        client.exists_reservation(id_token="TOKEN")

`call` is one request, one reply. `send` / `recv` pipeline: many requests in
flight on one socket, each reply matched by its id. `Watcher` keeps a copy of
the actor's state (get_state's shape) current from the update stream.
`protocol.aio` has the same two on asyncio; both share the protocol logic
through `protocol.wire` (requests, replies, `Commands`), `protocol.mirror`
(the Clone pattern) and `protocol.sockets` (DEALER and SUB set-up).
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Iterator

import zmq

# RESYNC and CommandFailed are imported for the clients' users, with what yields or raises them.
from .mirror import RESYNC, SNAPSHOT, WAIT, Mirror
from .sockets import dealer, subscription
from .wire import (
    DEADLINE_GRACE, DEFAULT_COMMAND_ENDPOINT, DEFAULT_UPDATE_ENDPOINT, CommandFailed, Commands,
    deadline_after, decode_reply, decode_update, encode_request, result_of, timed_out,
)


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
