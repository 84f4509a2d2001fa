"""Python client for the reservation actor: commands over DEALER, updates over SUB.

    with Client() as client:
        client.reserve_now(reservation_id=1, id_token="TOKEN", expiry_time="2030-01-01T00:00:00Z")
        client.exists_reservation(id_token="TOKEN")

`call` is one request, one reply. `send` / `recv` pipeline: many requests in
flight on one socket, each reply matched by its id.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator

import msgpack
import zmq
import zmq.auth

from .wire import (
    DEFAULT_COMMAND_ENDPOINT, DEFAULT_UPDATE_ENDPOINT, decode_reply, decode_update,
)


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
                 server_key: str | None = None, client_key: str | None = None) -> None:
        self.context = context or zmq.Context.instance()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
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
