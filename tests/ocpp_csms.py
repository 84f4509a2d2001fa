"""A real CSMS for the bridge's tests, and the bridge as a process.

`Csms` is the central-system side of the same `ocpp` library the bridge uses:
`websockets` serving on 127.0.0.1 (port 0), one `ocpp.v201.ChargePoint` or
`ocpp.v16.ChargePoint` per connection that records every message the station
sends and answers it, and that can `call` the station. It can be hostile:
answer BootNotification with another status, or hold it unanswered
(`boot_status`), and drop the connection instead of answering a
ReservationStatusUpdate (`drops_on_update`). It runs its own event
loop in a thread, so one CSMS can serve all tests of a module while each test
stays plain synchronous code; every wait is for a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import ocpp.v16
import ocpp.v201
import pytest
from ocpp.messages import MessageType, unpack
from ocpp.routing import on
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v16.enums import RegistrationStatus as Registration16
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from ocpp.v201.enums import RegistrationStatusEnumType as Registration201
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from bench.procs import OCPP_CONNECTED, Server, start_process
from protocol.client import Client
from protocol.vocabulary import ConnectorEventType, ConnectorState

from .conftest import start_actor
from .helpers import rfc3339

WAIT = 15.0   # seconds: the longest any single expected message may take


def now() -> str:
    return rfc3339(time.time())


@dataclass
class Message:
    session: int          # which connection (0 = the first) it came on
    action: str
    payload: dict[str, Any]


class _Recording:
    """What both versions' central-system charge points share."""

    def __init__(self, csms: "Csms", session: int, *args: Any) -> None:
        super().__init__(*args)
        self.csms = csms
        self.session = session

    def record(self, action: str, payload: dict[str, Any]) -> None:
        self.csms.messages.append(Message(self.session, action, payload))
        self.csms.arrived.set()

    async def route_message(self, raw_msg):
        # A held BootNotification must not stop this connection's other messages.
        if self.csms.boot_status is None:
            msg = unpack(raw_msg)
            if msg.message_type_id == MessageType.Call and msg.action == "BootNotification":
                self.record(msg.action, msg.payload)
                self.csms.held_boots.append((self, msg))
                return
        await super().route_message(raw_msg)


class Central201(_Recording, ocpp.v201.ChargePoint):
    @on(Action201.boot_notification)
    def on_boot_notification(self, **payload):
        self.record("BootNotification", payload)
        return result201.BootNotification(current_time=now(), interval=self.csms.heartbeat,
                                          status=self.csms.boot_status)

    @on(Action201.status_notification)
    def on_status_notification(self, **payload):
        self.record("StatusNotification", payload)
        return result201.StatusNotification()

    @on(Action201.reservation_status_update)
    async def on_reservation_status_update(self, **payload):
        self.record("ReservationStatusUpdate", payload)
        if self.csms.drops_on_update > 0:
            self.csms.drops_on_update -= 1
            # Closed unanswered: sending the answer below fails, ending this connection.
            await self._connection.close()
        return result201.ReservationStatusUpdate()

    @on(Action201.heartbeat)
    def on_heartbeat(self, **payload):
        self.record("Heartbeat", payload)
        return result201.Heartbeat(current_time=now())


class Central16(_Recording, ocpp.v16.ChargePoint):
    @on(Action16.boot_notification)
    def on_boot_notification(self, **payload):
        self.record("BootNotification", payload)
        return result16.BootNotification(current_time=now(), interval=self.csms.heartbeat,
                                         status=self.csms.boot_status)

    @on(Action16.status_notification)
    def on_status_notification(self, **payload):
        self.record("StatusNotification", payload)
        return result16.StatusNotification()

    @on(Action16.heartbeat)
    def on_heartbeat(self, **payload):
        self.record("Heartbeat", payload)
        return result16.Heartbeat(current_time=now())


CENTRALS = {"2.0.1": ("ocpp2.0.1", Central201, Registration201),
            "1.6": ("ocpp1.6", Central16, Registration16)}


class Csms:
    def __init__(self, version: str, heartbeat: int = 300,
                 tls: ssl.SSLContext | None = None) -> None:
        self.version = version
        self.tls = tls
        self.subprotocol, self.central, self.registration = CENTRALS[version]
        # BootNotification's interval: the heartbeat's once Accepted, else the wait before the next.
        self.heartbeat = heartbeat
        # What BootNotification is answered with; None: held unanswered (`answer_boots`).
        self.boot_status: str | None = self.registration.accepted
        self.held_boots: list = []   # (central, Call) of each BootNotification held
        self.drops_on_update = 0     # ReservationStatusUpdates still to answer by dropping
        self.messages: list[Message] = []
        self.sessions: list[Any] = []     # the central-side charge point of each connection
        self.headers: list = []           # each connection's HTTP request headers
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.arrived = self.run(self._event())
        self._server = self.run(self._serve())
        scheme = "wss" if tls else "ws"
        self.url = f"{scheme}://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _event(self) -> asyncio.Event:
        return asyncio.Event()

    async def _serve(self):
        return await serve(self._connection, "127.0.0.1", 0, subprotocols=[self.subprotocol],
                           ssl=self.tls)

    async def _connection(self, websocket) -> None:
        session = len(self.sessions)
        central = self.central(self, session, websocket.request.path.strip("/"), websocket)
        self.sessions.append(central)
        self.headers.append(websocket.request.headers)
        self.arrived.set()
        try:
            await central.start()
        except ConnectionClosed:
            pass

    def run(self, coroutine, timeout: float = WAIT):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self._server.close()
        self.run(self._server.wait_closed())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    # -- asking the station -----------------------------------------------------------------

    def call(self, payload, **kwargs):
        """Call the station on the latest connection: its response, or the
        library's exception for a CallError."""
        return self.run(self.sessions[-1].call(payload, suppress=False, **kwargs))

    def assert_unanswered(self, payload, within: float) -> None:
        """Call the station on the latest connection and fail if any answer
        (a CallError too) arrives within `within` seconds."""
        try:
            answer = self.run(asyncio.wait_for(self.sessions[-1].call(payload, suppress=False),
                                               within), timeout=within + 5)
        except TimeoutError:
            return
        except Exception as error:
            answer = error
        raise AssertionError(f"the station answered {payload}: {answer!r}")

    def answer_boots(self, status: str) -> None:
        """Answer every held BootNotification with `status` (later ones are
        held as before)."""
        async def answer() -> None:
            for central, msg in self.held_boots:
                await central._send(msg.create_call_result(
                    {"currentTime": now(), "interval": self.heartbeat, "status": status}).to_json())
            self.held_boots.clear()
        self.run(answer())

    def drop(self) -> None:
        """Close the latest connection from the CSMS side."""
        self.run(self.sessions[-1]._connection.close())

    # -- waiting for what the station sends -------------------------------------------------

    def mark(self) -> int:
        return len(self.messages)

    def wait(self, predicate: Callable[[Message], bool], since: int = 0,
             within: float = WAIT, what: str = "message") -> Message:
        """The first message from index `since` on that satisfies `predicate`."""
        async def find() -> Message:
            checked = since
            while True:
                self.arrived.clear()
                while checked < len(self.messages):
                    message = self.messages[checked]
                    checked += 1
                    if predicate(message):
                        return message
                await self.arrived.wait()
        try:
            return self.run(asyncio.wait_for(find(), within), timeout=within + 5)
        except TimeoutError:
            raise AssertionError(f"no {what} within {within} s; got {self.messages[since:]}") \
                from None

    def wait_session(self, count: int, within: float = WAIT) -> None:
        async def connected() -> None:
            while len(self.sessions) < count:
                self.arrived.clear()
                await self.arrived.wait()
        self.run(asyncio.wait_for(connected(), within), timeout=within + 5)

    def statuses(self, session: int | None = None) -> dict:
        """The last status the station reported for each connector, on `session`
        (the latest by default): (evse, connector) -> status for 2.0.1,
        connector -> (status, error code) for 1.6."""
        session = len(self.sessions) - 1 if session is None else session
        latest = {}
        for message in self.messages:
            if message.session == session and message.action == "StatusNotification":
                key, value = status_of(self.version, message.payload)
                latest[key] = value
        return latest

    def wait_statuses(self, wanted: dict, within: float = WAIT) -> None:
        """Until the latest reported status of each key in `wanted` is its value."""
        end = time.monotonic() + within
        while True:
            latest = self.statuses()
            if all(latest.get(key) == value for key, value in wanted.items()):
                return
            remaining = end - time.monotonic()
            assert remaining > 0, f"statuses {latest}, wanted {wanted}"
            try:
                self.wait(lambda m: m.action == "StatusNotification", since=self.mark(),
                          within=min(remaining, 1.0))
            except AssertionError:
                pass   # checked again above, until the deadline


def status_of(version: str, payload: dict) -> tuple[Any, Any]:
    if version == "2.0.1":
        return (payload["evse_id"], payload["connector_id"]), payload["connector_status"]
    return payload["connector_id"], (payload["status"], payload["error_code"])


LOOPBACK = dict(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*")


def shown(version: str, evses: dict[int, str]) -> dict:
    """What the CSMS should see for these EVSEs (of two connectors each): 'Available'
    or 'Reserved' in that version's keys and values."""
    if version == "2.0.1":
        return {(e, c): status for e, status in evses.items() for c in (1, 2)}
    return {e: (status, "NoError") for e, status in evses.items()}


def all_available(version: str) -> dict:
    return shown(version, {1: "Available", 2: "Available"})


def start_bridge(csms: Csms, actor_command: str, actor_update: str, *args: str,
                 station_id: str = "CS1") -> Server:
    """`python -m protocol.ocpp` (what the `reservation-ocpp` script runs) as a
    process, once it has connected to `csms`; it gives up on the actor after 1 s."""
    return start_process("reservation-ocpp", [
        "-m", "protocol.ocpp", "--csms", csms.url, "--station-id", station_id,
        "--ocpp", csms.version, "--endpoint", actor_command, "--update-endpoint", actor_update,
        "--actor-timeout", "1", "--log-level", "INFO", *args], OCPP_CONNECTED)


# The connector events that bring a connector back to Available from each state.
BACK_TO_AVAILABLE = {
    ConnectorState.AVAILABLE: (),
    ConnectorState.FAULTED: (ConnectorEventType.ERROR_CLEARED,),
    ConnectorState.UNAVAILABLE: (ConnectorEventType.ENABLE,),
    ConnectorState.UNAVAILABLE_FAULTED: (ConnectorEventType.ERROR_CLEARED, ConnectorEventType.ENABLE),
    ConnectorState.OCCUPIED: (ConnectorEventType.SESSION_FINISHED,),
    ConnectorState.FAULTED_OCCUPIED: (ConnectorEventType.ERROR_CLEARED,
                                      ConnectorEventType.SESSION_FINISHED),
}


def restore(client: Client) -> None:
    """Leave the actor's station as it started: no reservation, nothing
    plugged in, every connector Available."""
    state = client.get_state()
    for reservation in state["reservations"]:
        client.cancel_reservation(reservation["reservation_id"])
    for evse in state["evses"]:
        if evse["plugged_in"]:
            client.plug_event(evse["id"], False)
        for connector in evse["connectors"]:
            for event in BACK_TO_AVAILABLE[connector["state"]]:
                client.connector_event(evse["id"], connector["id"], event)


@dataclass
class Setup:
    """An actor, a CSMS and the bridge between them."""
    actor: Any
    csms: Csms
    bridge: Server

    def client(self) -> Client:
        return self.actor.client()

    def stop(self) -> None:
        try:
            assert self.bridge.signal() == 0, self.bridge.log()
        finally:
            self.bridge.close()
            self.csms.close()
            self.actor.stop()


def start_setup(version: str, *actor_args: str, heartbeat: int = 300,
                endpoints: dict | None = None, tls: ssl.SSLContext | None = None,
                bridge_args: tuple[str, ...] = (), station_id: str = "CS1",
                hold_boot: bool = False) -> Setup:
    """The actor (with `actor_args`), a CSMS and the bridge, once the bridge has
    booted and reported every connector Available; with `hold_boot`, once it
    sent BootNotification, which the CSMS holds unanswered."""
    actor = start_actor(*actor_args, **(endpoints or LOOPBACK))
    csms = Csms(version, heartbeat=heartbeat, tls=tls)
    if hold_boot:
        csms.boot_status = None
    try:
        bridge = start_bridge(csms, actor.command_endpoint, actor.update_endpoint, *bridge_args,
                              station_id=station_id)
    except BaseException:
        csms.close()
        actor.stop()
        raise
    running = Setup(actor, csms, bridge)
    try:
        csms.wait(lambda m: m.action == "BootNotification", what="BootNotification")
        if not hold_boot:
            csms.wait_statuses(all_available(version))
    except BaseException:
        running.stop()
        raise
    return running


def module_fixtures(version: str, *bridge_args: str, password: str | None = None,
                    station_id: str = "CS1"):
    """A test module's `setup` (one actor, CSMS and bridge for all its tests;
    with `password`, the bridge authenticates with it) and autouse `clean`
    (each test leaves no reservation, nothing plugged in, every connector
    Available as the CSMS sees): `setup, clean = module_fixtures(...)`."""
    @pytest.fixture(scope="module")
    def setup(tmp_path_factory):
        args = list(bridge_args)
        if password is not None:
            password_file = tmp_path_factory.mktemp("ocpp") / "password"
            password_file.write_text(password + "\n")
            args += ["--password-file", str(password_file)]
        running = start_setup(version, bridge_args=tuple(args), station_id=station_id)
        try:
            yield running
        finally:
            running.stop()

    @pytest.fixture(autouse=True)
    def clean(setup):
        yield
        with setup.client() as client:
            restore(client)
        setup.csms.wait_statuses(all_available(version))

    return setup, clean
