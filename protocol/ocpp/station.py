"""The runnable charge point: one websocket connection to a CSMS at a time,
kept up for as long as the process runs.

A connection goes: websocket to URL/ID with the version's subprotocol (HTTP
Basic auth when a password is given, TLS for wss://), BootNotification until
Accepted, then at the same time the library's message loop (the handlers),
the report task (StatusNotification for every connector, then each change)
and Heartbeat at the interval the CSMS returned. When the connection ends,
the next attempt follows after a delay (`Backoff`): 1 s, doubling to 30 s,
back to 1 s once a connection's boot has been accepted.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

import ocpp.v16
import ocpp.v201
from ocpp.exceptions import OCPPError
from ocpp.v16 import call as call16
from ocpp.v16.enums import RegistrationStatus
from ocpp.v201 import call as call201
from ocpp.v201.enums import BootReasonEnumType, RegistrationStatusEnumType
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException

from . import DEFAULT_MODEL, DEFAULT_VENDOR, OCPP_16, OCPP_201, v16, v201
from .bridge import LOG, ReservationBridge

FIRST_RETRY, LAST_RETRY = 1.0, 30.0
BOOT_RETRY = 10.0   # when a CSMS that did not accept the boot gives no interval


class Station201(v201.ReservationHandlers, ocpp.v201.ChargePoint):
    pass


class Station16(v16.ReservationHandlers, ocpp.v16.ChargePoint):
    pass


@dataclass(frozen=True)
class Version:
    subprotocol: str
    charge_point: type
    boot: Callable[["Identity"], Any]
    heartbeat: Callable[[], Any]
    accepted: str   # the boot's registration status that lets the station go on


VERSIONS = {
    OCPP_201: Version(
        "ocpp2.0.1", Station201,
        lambda who: call201.BootNotification(
            charging_station={"vendor_name": who.vendor, "model": who.model,
                              "serial_number": who.serial_number,
                              "firmware_version": who.firmware_version},
            reason=BootReasonEnumType.power_up),
        call201.Heartbeat, RegistrationStatusEnumType.accepted),
    OCPP_16: Version(
        "ocpp1.6", Station16,
        lambda who: call16.BootNotification(
            charge_point_vendor=who.vendor, charge_point_model=who.model,
            charge_point_serial_number=who.serial_number, firmware_version=who.firmware_version),
        call16.Heartbeat, RegistrationStatus.accepted),
}


@dataclass(frozen=True)
class Identity:
    """What BootNotification says the station is; CSMSs filter stations on it."""
    vendor: str = DEFAULT_VENDOR
    model: str = DEFAULT_MODEL
    serial_number: str | None = None
    firmware_version: str | None = None


@dataclass(frozen=True)
class CsmsSettings:
    url: str                      # ws://host:port/path or wss://...; the station id is appended
    station_id: str
    version: str = OCPP_201
    password: str | None = None   # OCPP security profile 1: HTTP Basic, user = station id
    # Profile 2: what the CSMS's certificate is checked against (wss://; None: the system's CAs).
    tls: ssl.SSLContext | None = None
    identity: Identity = Identity()

    def address(self) -> str:
        return f"{self.url.rstrip('/')}/{quote(self.station_id, safe='')}"


class Backoff:
    """The delay before each connection attempt: `first`, doubling after each
    attempt up to `last`, and `first` again after `reset` (an accepted boot:
    the CSMS is healthy, so a later drop is not a run of failures)."""

    def __init__(self, first: float = FIRST_RETRY, last: float = LAST_RETRY) -> None:
        self.first, self.last = first, last
        self._next = first

    def delay(self) -> float:
        delay = self._next
        self._next = min(delay * 2, self.last)
        return delay

    def reset(self) -> None:
        self._next = self.first


class SubprotocolRefused(ConnectionError):
    """The CSMS answered the websocket handshake without our subprotocol."""


def wrong_version_hint(settings: CsmsSettings, exc: Exception) -> str | None:
    """What to tell an operator whose CSMS refused the subprotocol: most often
    a 1.6 CSMS reached without --ocpp 1.6, or the reverse."""
    if isinstance(exc, InvalidStatus) and exc.response.status_code == 400:
        how = "HTTP 400"
    elif isinstance(exc, SubprotocolRefused):
        how = "no subprotocol in its answer"
    else:
        return None
    other = OCPP_16 if settings.version == OCPP_201 else OCPP_201
    return (f"the CSMS did not accept OCPP {settings.version} ({how}): is it a {other} CSMS? "
            f"try --ocpp {other}")


def auth_headers(settings: CsmsSettings) -> dict[str, str]:
    if settings.password is None:
        return {}
    token = base64.b64encode(f"{settings.station_id}:{settings.password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def run_station(settings: CsmsSettings, bridge: ReservationBridge) -> None:
    """Forever: connect, boot, serve, and reconnect after the connection ends."""
    version = VERSIONS[settings.version]
    backoff = Backoff()
    hinted = False   # the wrong-version hint is logged once per streak of such refusals
    while True:
        try:
            async with connect(settings.address(), subprotocols=[version.subprotocol],
                               additional_headers=auth_headers(settings),
                               ssl=settings.tls, open_timeout=10) as websocket:
                if websocket.subprotocol != version.subprotocol:
                    raise SubprotocolRefused(f"the CSMS did not accept subprotocol "
                                             f"{version.subprotocol}")
                hinted = False
                LOG.info("connected to %s (%s)", settings.address(), version.subprotocol)
                station = version.charge_point(settings.station_id, websocket,
                                               reservation_bridge=bridge)
                await serve(station, version, backoff, settings.identity)
        except (OSError, WebSocketException) as exc:   # TimeoutError is an OSError
            hint = wrong_version_hint(settings, exc)
            if hint is not None and not hinted:
                LOG.error("%s", hint)
            hinted = hinted or hint is not None
            LOG.warning("CSMS connection to %s ended: %s", settings.address(),
                        str(exc) or type(exc).__name__)
        except Exception:   # a bug of ours: logged, and the station carries on
            LOG.exception("internal error; reconnecting to the CSMS")
        delay = backoff.delay()
        LOG.info("reconnecting in %g s", delay)
        await asyncio.sleep(delay)


async def serve(station: Any, version: Version, backoff: Backoff, identity: Identity) -> None:
    """Until the connection ends, raising what ended it; an accepted boot
    resets `backoff`."""
    reader = asyncio.create_task(station.start())
    work = asyncio.create_task(_session(station, version, backoff, identity))
    try:
        done, _ = await asyncio.wait({reader, work}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in (reader, work):
            task.cancel()
        await asyncio.gather(reader, work, return_exceptions=True)


async def _session(station: Any, version: Version, backoff: Backoff, identity: Identity) -> None:
    interval = await _boot(station, version, identity)
    backoff.reset()
    await asyncio.gather(station.report_reservations(), _heartbeat(station, version, interval))


async def _boot(station: Any, version: Version, identity: Identity) -> int:
    while True:
        try:
            response = await station.call(version.boot(identity))
        except (TimeoutError, OCPPError) as exc:
            LOG.warning("BootNotification got no valid answer: %s", exc)
            response = None
        if response is not None and response.status == version.accepted:
            LOG.info("boot accepted; heartbeat every %s s", response.interval)
            station.heartbeat_interval = response.interval
            return response.interval
        wait = response.interval if response is not None and response.interval > 0 else BOOT_RETRY
        LOG.warning("boot not accepted (%s); trying again in %s s",
                    getattr(response, "status", "no answer"), wait)
        await asyncio.sleep(wait)


async def _heartbeat(station: Any, version: Version, interval: int) -> None:
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        await station.tell_csms(station.call(version.heartbeat()))
