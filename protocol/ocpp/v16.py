"""OCPP 1.6: ReserveNow, CancelReservation and GetConfiguration answered from the
actor, StatusNotification from its update stream.

A 1.6 connector is an actor EVSE (connector id n is EVSE n, as EVerest maps
it); connector 0 in ReserveNow is a reservation on any EVSE. 1.6 has no
ReservationStatusUpdate: an expired or removed reservation shows only as its
connector leaving Reserved.

Before the boot is answered and while it is Rejected, the station does not
respond to the Central System at all (1.6 section 4.2: "While Rejected, the
Charge Point SHALL NOT respond to any Central System initiated message"), as
EVerest's libocpp; while Pending it serves every request (4.2 forbids only
RemoteStart/StopTransaction then, which this station does not implement).

    class Station(ReservationHandlers, ocpp.v16.ChargePoint): ...
    station = Station(station_id, websocket, reservation_bridge=bridge)
    reader = asyncio.create_task(station.start())
    await station.call(call.BootNotification(...))   # until Accepted
    await asyncio.gather(reader, station.report_reservations())
"""

from __future__ import annotations

from typing import Any

from ocpp.messages import Call
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.datatypes import KeyValue
from ocpp.v16.enums import Action, ConfigurationKey, RegistrationStatus, ReservationStatus

from ..vocabulary import ReservationUpdateStatus
from .bridge import LOG, ReportingMixin, now_rfc3339
from .mapping import (
    CANCEL_STATUS_16, CONFIGURATION_16, RESERVE_NOW_STATUS_16, connector_statuses_16,
)

WHOLE_STATION = 0


class ReservationHandlers(ReportingMixin):
    """Mix into an `ocpp.v16.ChargePoint` subclass (before it in the bases)."""

    boot_request = call.BootNotification

    def serves(self, action: str) -> bool:
        return self.registration in (RegistrationStatus.accepted, RegistrationStatus.pending)

    async def refuse(self, request: Call) -> None:
        """Not a word back."""

    @on(Action.reserve_now)
    async def on_reserve_now(self, connector_id: int, expiry_date: str, id_tag: str,
                             reservation_id: int, parent_id_tag: str | None = None,
                             **_: Any) -> call_result.ReserveNow:
        request: dict[str, Any] = {"reservation_id": reservation_id, "id_token": id_tag,
                                   "expiry_time": expiry_date}
        if connector_id != WHOLE_STATION:
            station = await self.reservation_bridge.station()
            if connector_id not in {evse["id"] for evse in station["evses"]}:
                LOG.warning("ReserveNow %s for connector %s, which this station lacks",
                            reservation_id, connector_id)
                return call_result.ReserveNow(status=ReservationStatus.rejected)
            request["evse_id"] = connector_id
        if parent_id_tag is not None:
            request["parent_id_token"] = parent_id_tag
        result, _refusal = await self.reservation_bridge.reserve_now(**request)
        return call_result.ReserveNow(status=RESERVE_NOW_STATUS_16[result])

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, reservation_id: int,
                                    **_: Any) -> call_result.CancelReservation:
        cancelled = await self.reservation_bridge.cancel_reservation(reservation_id)
        return call_result.CancelReservation(status=CANCEL_STATUS_16[cancelled])

    @on(Action.get_configuration)
    async def on_get_configuration(self, key: list[str] | None = None,
                                   **_: Any) -> call_result.GetConfiguration:
        # The heartbeat interval is the station's own; no value before an accepted boot.
        answers = {ConfigurationKey.heartbeat_interval: lambda state: (
            None if self.heartbeat_interval is None else str(self.heartbeat_interval)),
            **CONFIGURATION_16}
        wanted = list(answers) if not key else key
        known = [name for name in wanted if name in answers]
        asks_actor = any(name in CONFIGURATION_16 for name in known)
        state = await self.reservation_bridge.snapshot() if asks_actor else None
        return call_result.GetConfiguration(
            configuration_key=[KeyValue(key=name, readonly=True, value=answers[name](state))
                               for name in known] or None,
            unknown_key=[name for name in wanted if name not in answers] or None)

    # -- what the report task sends -------------------------------------------------------

    def connector_statuses(self, state: dict[str, Any]) -> dict[int, tuple[str, str]]:
        return connector_statuses_16(state)

    async def send_connector_status(self, connector_id: int, status: tuple[str, str]) -> None:
        connector_status, error_code = status
        await self.call(call.StatusNotification(connector_id=connector_id, error_code=error_code,
                                                status=connector_status, timestamp=now_rfc3339()))

    async def send_reservation_ended(self, reservation_id: int,
                                     status: ReservationUpdateStatus) -> None:
        """1.6 has no message for it; the connector's status says it."""
