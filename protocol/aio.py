"""asyncio twins of `Client` and `Watcher`, on zmq.asyncio.

    async with AsyncClient("tcp://127.0.0.1:5555", timeout=3) as client:
        results = await asyncio.gather(
            client.reserve_now(reservation_id=1, id_token="A", expiry_time="2030-01-01T00:00:00Z"),
            client.reserve_now(reservation_id=2, id_token="B", expiry_time="2030-01-01T00:00:00Z"))

Same commands, arguments, results and errors as the sync `Client` (the
command methods, request encoding and reply decoding are `protocol.client`'s).
Any number of calls may be in flight on the one DEALER socket: a single reader
task hands each reply to the call whose id it carries. Each request carries a
`deadline` `timeout` seconds away, and a call that gets no reply raises
TimeoutError DEADLINE_GRACE after it, when the actor refuses the request, so
it can no longer take effect. The socket stays open: a request still queued
for an actor that is down is refused when it arrives late, and calls in flight
beside a timed-out one keep waiting for their own replies until their own
deadlines.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, AsyncIterator

import zmq
import zmq.asyncio

from .client import (
    DEADLINE_GRACE, SNAPSHOT, WAIT, Commands, Mirror, dealer, deadline_after, encode_request,
    result_of, subscription, timed_out,
)
from .wire import DEFAULT_COMMAND_ENDPOINT, DEFAULT_UPDATE_ENDPOINT, decode_reply


class AsyncClient(Commands):
    def __init__(self, endpoint: str = DEFAULT_COMMAND_ENDPOINT, *, timeout: float = 5.0,
                 context: zmq.asyncio.Context | None = None,
                 server_key: str | None = None, client_key: str | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.context = context or zmq.asyncio.Context.instance()
        self.socket = dealer(self.context, endpoint, server_key, client_key)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._drop(ConnectionError("client closed"))
        self.socket.close()

    async def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        """One command's result; CommandFailed on an error reply, TimeoutError
        when no reply comes within `timeout` (and the grace)."""
        request_id = next(self._ids)
        reply = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(self.socket))
        request = encode_request(request_id, cmd, args, deadline_after(self.timeout))
        try:
            # NOBLOCK: with the actor down, requests queue up to the high-water
            # mark; past it this fails at once instead of waiting unbounded.
            await self.socket.send(request, zmq.NOBLOCK)
        except zmq.Again:
            self._pending.pop(request_id, None)
            raise TimeoutError(f"request not sent: the requests already queued for "
                               f"{self.endpoint} fill the socket; the actor is not reading "
                               "them") from None
        try:
            decoded = await asyncio.wait_for(asyncio.shield(reply), self.timeout + DEADLINE_GRACE)
        except TimeoutError:
            raise timed_out(self.endpoint, self.timeout) from None
        finally:
            self._pending.pop(request_id, None)
        return result_of(decoded)

    async def _read(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            decoded = decode_reply(await sock.recv())
            waiting = self._pending.pop(decoded.get("id"), None)
            if waiting is not None and not waiting.done():
                waiting.set_result(decoded)

    def _drop(self, error: BaseException) -> None:
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        for waiting in self._pending.values():
            if not waiting.done():
                waiting.set_exception(error)
        self._pending.clear()


class AsyncWatcher:
    """The sync `Watcher` on asyncio: the actor's state (get_state's shape,
    readable in `state` at any time) kept current from the update stream, with
    the same Clone-pattern decisions (`protocol.client.Mirror`).

        async with AsyncWatcher(command, update) as watcher:
            async for topic, body in watcher:
                print(topic, body, watcher.state["seq"])

    Iterating yields each applied update as (topic, body) and (RESYNC, {"seq"})
    where a new snapshot replaced the state. `poll(timeout)` returns what one
    wait brought, and raises TimeoutError while the actor does not answer
    get_state; the next poll tries again, so a caller that must outlive the
    actor keeps polling. Entering the context takes the first snapshot; a
    watcher that is only polled takes it on the first poll instead.
    """

    def __init__(self, command_endpoint: str = DEFAULT_COMMAND_ENDPOINT,
                 update_endpoint: str = DEFAULT_UPDATE_ENDPOINT, *,
                 server_key: str | None = None, client_key: str | None = None,
                 context: zmq.asyncio.Context | None = None, timeout: float = 5.0,
                 check_every: float | None = 1.0, rcvhwm: int | None = None) -> None:
        context = context or zmq.asyncio.Context.instance()
        # Subscribed before any snapshot, as in the sync Watcher.
        self.socket = subscription(context, update_endpoint, ("",), server_key, client_key, rcvhwm)
        self.client = AsyncClient(command_endpoint, timeout=timeout, context=context,
                                  server_key=server_key, client_key=client_key)
        self.mirror = Mirror(check_every)

    @property
    def state(self) -> dict[str, Any] | None:
        return self.mirror.state

    @property
    def resyncs(self) -> int:
        return self.mirror.resyncs

    async def __aenter__(self) -> "AsyncWatcher":
        try:
            self.mirror.replace(await self.client.get_state())
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.socket.close()
        self.client.close()

    async def __aiter__(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        while True:
            for entry in await self.poll(1.0):
                yield entry

    async def poll(self, timeout: float = 0.0) -> list[tuple[str, dict[str, Any]]]:
        steps, answer = self.mirror.poll(timeout), None
        sock = self.socket
        try:
            while True:
                ask = steps.send(answer)
                if ask[0] is SNAPSHOT:
                    answer = await self.client.get_state()
                elif ask[0] is WAIT:
                    answer = await sock.poll(ask[1], zmq.POLLIN)
                else:
                    try:
                        answer = await sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        answer = None
        except StopIteration as done:
            return done.value
