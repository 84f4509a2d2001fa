"""What the OCPP 2.0.1 and 1.6 handlers share: the actor, its mirrored state,
which reservation ends the CSMS must hear about, and what the CSMS may ask
before it accepted the boot.

A `ReservationBridge` lives as long as the process, across CSMS connections:
it owns an AsyncClient for the handlers' commands, an AsyncWatcher that the
charge point's report task polls (`follow`), and the reservation ends not yet
confirmed by a CSMS (`unconfirmed_ends`). Each version's mixin subclasses
`ReportingMixin`: it holds the bridge the handlers answer from, serves a CSMS
request only as that version's boot rules allow (`serves`), and turns what
`follow` finds into that version's messages, sending a connector status only
when it changed.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Awaitable, TypeVar

from ocpp.exceptions import InternalError, OCPPError
from ocpp.messages import MessageType, unpack

from ..aio import AsyncClient, AsyncWatcher
from ..client import CommandFailed
from ..rfc3339 import format_rfc3339, parse_rfc3339
from ..vocabulary import ReservationResult, ReservationUpdateStatus, Topic
from ..wire import DEFAULT_COMMAND_ENDPOINT, DEFAULT_UPDATE_ENDPOINT
from . import DEFAULT_ACTOR_TIMEOUT

LOG = logging.getLogger("reservation-ocpp")
T = TypeVar("T")

_REPORTED_ENDS = frozenset({ReservationUpdateStatus.EXPIRED, ReservationUpdateStatus.REMOVED})


class ServiceUnavailable(InternalError):
    """The CallError a CSMS gets while the actor does not answer. The actor
    refuses the request from its deadline on (AsyncClient waits that long), so
    the CSMS may take this as "not done" and retry."""

    def __init__(self, timeout: float) -> None:
        super().__init__(description=f"reservation service unavailable: the reservation actor "
                                     f"did not answer within {timeout:g} s and refuses the "
                                     "request from now on; retry it")


def without_unavailable_tracebacks(record: logging.LogRecord) -> bool:
    """A filter for the `ocpp` library's logger, which logs a traceback for
    every exception a handler raises: the bridge already logged one line for
    ServiceUnavailable, and its traceback would tell nothing more."""
    return not (record.exc_info and isinstance(record.exc_info[1], ServiceUnavailable))


class ReservationBridge:
    def __init__(self, command_endpoint: str = DEFAULT_COMMAND_ENDPOINT,
                 update_endpoint: str = DEFAULT_UPDATE_ENDPOINT, *,
                 timeout: float = DEFAULT_ACTOR_TIMEOUT,
                 server_key: str | None = None, client_key: str | None = None) -> None:
        keys = dict(server_key=server_key, client_key=client_key)
        self.timeout = timeout
        self.client = AsyncClient(command_endpoint, timeout=timeout, **keys)
        self.watcher = AsyncWatcher(command_endpoint, update_endpoint, timeout=timeout, **keys)
        self._known: dict[int, str] = {}   # reservation id -> expiry_time, at the last follow
        self._cancelled: set[int] = set()  # cancelled for the CSMS, not yet seen gone
        # The ends `follow` found, oldest first, each kept until a CSMS answered
        # its report: a connection lost before that does not lose it.
        self.unconfirmed_ends: list[tuple[int, ReservationUpdateStatus]] = []
        self._failed_calls = 0   # actor calls that got no answer since the last that did

    async def _ask(self, what: str, call: Awaitable[T]) -> T:
        """`call`'s result; ServiceUnavailable, after one WARNING line, when
        the actor does not answer. The first answer after failures is logged
        with their count, so the log shows an outage's start and end."""
        try:
            result = await call
        except TimeoutError:
            self._failed_calls += 1
            LOG.warning("reservation actor did not answer %s within %g s; the CSMS is told the "
                        "service is unavailable", what, self.timeout)
            raise ServiceUnavailable(self.timeout) from None
        except CommandFailed:   # an error reply is an answer too
            self._answered()
            raise
        self._answered()
        return result

    def _answered(self) -> None:
        if self._failed_calls:
            LOG.info("reservation actor reachable again after %d failed calls", self._failed_calls)
            self._failed_calls = 0

    def close(self) -> None:
        self.client.close()
        self.watcher.close()

    @property
    def state(self) -> dict[str, Any] | None:
        return self.watcher.state

    # -- what the handlers ask -----------------------------------------------------------

    async def reserve_now(self, **request: Any) -> tuple[ReservationResult, CommandFailed | None]:
        """The actor's result; Rejected with the actor's error reply when it
        refused the request itself (an invalid argument, a store failure)."""
        try:
            result = ReservationResult(await self._ask(
                f"reserve_now {request.get('reservation_id')}", self.client.reserve_now(**request)))
        except CommandFailed as failed:
            LOG.warning("reserve_now %s refused: %s", request.get("reservation_id"), failed)
            return ReservationResult.REJECTED, failed
        if result == ReservationResult.ACCEPTED:
            self._cancelled.discard(request["reservation_id"])
        return result, None

    async def cancel_reservation(self, reservation_id: int) -> bool:
        cancelled = await self._ask(f"cancel_reservation {reservation_id}",
                                    self.client.cancel_reservation(reservation_id))
        if cancelled:
            self._cancelled.add(reservation_id)
        return cancelled

    async def snapshot(self) -> dict[str, Any]:
        """A fresh get_state, for the configuration questions."""
        return await self._ask("get_state", self.client.get_state())

    async def station(self) -> dict[str, Any]:
        """The mirrored state (fresh when there is none yet)."""
        return self.watcher.state if self.watcher.state is not None else await self.snapshot()

    # -- what the report task follows ----------------------------------------------------

    async def follow(self, timeout: float) -> None:
        """Wait up to `timeout` for the actor's updates, adding the reservation
        ends to report to `unconfirmed_ends`, in order. Raises TimeoutError
        while the actor is unreachable.

        An Expired or Removed update is reported as such. A reservation that
        is gone without an update seen for it (lost in a gap, or the actor
        restarted) is reported Expired when its expiry time has passed, else
        Removed, unless the CSMS cancelled it through us."""
        entries = await self.watcher.poll(timeout)
        ended: list[tuple[int, ReservationUpdateStatus]] = []
        streamed: set[int] = set()
        for topic, body in entries:
            if topic == Topic.RESERVATION_UPDATE:
                streamed.add(body["reservation_id"])
                if body["reservation_status"] in _REPORTED_ENDS:
                    ended.append((body["reservation_id"],
                                  ReservationUpdateStatus(body["reservation_status"])))
        current = {r["reservation_id"]: r["expiry_time"] for r in self.watcher.state["reservations"]}
        now = time.time()
        for rid, expiry in self._known.items():
            if rid not in current and rid not in streamed and rid not in self._cancelled:
                ended.append((rid, ReservationUpdateStatus.EXPIRED if parse_rfc3339(expiry) <= now
                              else ReservationUpdateStatus.REMOVED))
        self._cancelled &= current.keys()
        self._known = current
        self.unconfirmed_ends += ended


def now_rfc3339() -> str:
    return format_rfc3339(time.time())


class ReportingMixin:
    """What both versions' mixins share: the bridge (a keyword argument of the
    charge point), the boot gate and the report task. Each supplies
    `boot_request` (its BootNotification class), `serves(action)`,
    `refuse(call)`, `connector_statuses(state)` (key -> status, as compared
    for change) and the two senders."""

    boot_request: type
    # The status of this connection's last BootNotification answer; None before one.
    registration: str | None = None
    _boot_id: str | None = None   # the unique id of the BootNotification awaiting its answer
    # The heartbeat interval the CSMS gave when it accepted this connection's boot.
    heartbeat_interval: int | None = None

    def __init__(self, *args: Any, reservation_bridge: ReservationBridge, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reservation_bridge = reservation_bridge

    # -- the boot gate ---------------------------------------------------------------------

    def serves(self, action: str) -> bool:
        """Whether a CSMS request for `action` is handled as `registration` stands."""
        raise NotImplementedError

    async def refuse(self, call: Any) -> None:
        """What a CSMS request that is not served gets."""
        raise NotImplementedError

    async def call(self, payload: Any, suppress: bool = True, unique_id: str | None = None,
                   skip_schema_validation: bool = False) -> Any:
        if isinstance(payload, self.boot_request):
            unique_id = self._boot_id = unique_id or str(uuid.uuid4())
        return await super().call(payload, suppress, unique_id, skip_schema_validation)

    async def route_message(self, raw_msg: str) -> None:
        # The answer to BootNotification is taken in as it arrives: a request
        # the CSMS sends right after it must already see it, and the waiting
        # `call` resumes only later.
        if self._boot_id is not None:
            try:
                message = unpack(raw_msg)
            except OCPPError:
                message = None   # the library's own routing logs it
            if message is not None and message.unique_id == self._boot_id \
                    and message.message_type_id == MessageType.CallResult:
                self.registration = message.payload.get("status")
                self._boot_id = None
        await super().route_message(raw_msg)

    async def _handle_call(self, call: Any) -> Any:
        # Where the library hands a CSMS request to its handler.
        if not self.serves(call.action):
            LOG.warning("%s from the CSMS not served: the boot is %s", call.action,
                        self.registration or "not answered yet")
            return await self.refuse(call)
        return await super()._handle_call(call)

    # -- the report task -------------------------------------------------------------------

    def connector_statuses(self, state: dict[str, Any]) -> dict[Any, Any]:
        raise NotImplementedError

    async def send_connector_status(self, key: Any, status: Any) -> None:
        raise NotImplementedError

    async def send_reservation_ended(self, reservation_id: int,
                                     status: ReservationUpdateStatus) -> None:
        raise NotImplementedError

    async def report_reservations(self, poll_interval: float = 1.0) -> None:
        """Forever (cancel it when the connection ends): every connector's
        status first, then each change and each reservation end, as the
        actor's update stream shows them. An end is reported until the CSMS
        answers it, on this connection or a later one."""
        bridge = self.reservation_bridge
        sent: dict[Any, Any] = {}
        actor_lost = False
        while True:
            # Report first: on a new connection the mirrored state is already there.
            ends = bridge.unconfirmed_ends
            while ends and await self.tell_csms(self.send_reservation_ended(*ends[0])):
                ends.pop(0)
            if bridge.state is not None:
                for key, status in self.connector_statuses(bridge.state).items():
                    if sent.get(key) != status:
                        await self.tell_csms(self.send_connector_status(key, status))
                        sent[key] = status
            try:
                await bridge.follow(poll_interval)
            except TimeoutError:
                if not actor_lost:
                    LOG.warning("reservation actor unreachable; reporting resumes when it answers")
                actor_lost = True
                continue
            if actor_lost:
                LOG.info("reservation actor reachable again")
                actor_lost = False

    async def tell_csms(self, message) -> bool:
        """Whether the CSMS answered (a CallError or an invalid answer is one:
        asking again would get the same). One that does not answer, or answers
        with something invalid, is logged: the next change is sent as usual."""
        try:
            await message
        except TimeoutError as exc:
            LOG.warning("the CSMS did not answer: %s", exc)
            return False
        except OCPPError as exc:
            LOG.warning("the CSMS answered with an invalid message: %s", exc)
        return True
