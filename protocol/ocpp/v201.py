"""OCPP 2.0.1: ReserveNow, CancelReservation and GetVariables answered from the
actor, StatusNotification and ReservationStatusUpdate from its update stream.

Before the CSMS accepted the boot, as EVerest's libocpp does: while Pending
only the requests that read or set the configuration are served (B02.FR.01);
any other request, and every request before an answer or while Rejected,
gets a CallError SecurityError (B02.FR.09, B03.FR.08) and changes nothing.

    class Station(ReservationHandlers, ocpp.v201.ChargePoint): ...
    station = Station(station_id, websocket, reservation_bridge=bridge)
    reader = asyncio.create_task(station.start())
    await station.call(call.BootNotification(...))   # until Accepted
    await asyncio.gather(reader, station.report_reservations())
"""

from __future__ import annotations

from typing import Any

from ocpp.exceptions import SecurityError
from ocpp.messages import Call
from ocpp.routing import on
from ocpp.v201 import call, call_result
from ocpp.v201.datatypes import GetVariableResultType, StatusInfoType
from ocpp.v201.enums import (
    Action, AttributeEnumType, GetVariableStatusEnumType, RegistrationStatusEnumType,
    ReserveNowStatusEnumType, StatusInfoReasonType,
)

from ..vocabulary import ReservationUpdateStatus
from .bridge import ReportingMixin, now_rfc3339
from .mapping import (
    CANCEL_STATUS_201, CONNECTOR_TYPE_201, ERROR_REASON_201, RESERVATION_CTRLR,
    RESERVATION_END_201, RESERVATION_VARIABLES_201, RESERVE_NOW_STATUS_201,
    connector_statuses_201,
)


# What a CSMS may ask while the boot is Pending (B02.FR.01: use cases B05 to B08,
# and TriggerMessage); the station answers those it implements.
SERVED_WHILE_PENDING = frozenset({
    Action.get_variables, Action.set_variables, Action.get_base_report, Action.get_report,
    Action.trigger_message,
})


def rejected(reason_code: StatusInfoReasonType, why: str) -> call_result.ReserveNow:
    return call_result.ReserveNow(status=ReserveNowStatusEnumType.rejected,
                                  status_info=StatusInfoType(reason_code=reason_code,
                                                             additional_info=why[:512]))


class ReservationHandlers(ReportingMixin):
    """Mix into an `ocpp.v201.ChargePoint` subclass (before it in the bases)."""

    boot_request = call.BootNotification

    def serves(self, action: str) -> bool:
        return self.registration == RegistrationStatusEnumType.accepted or (
            self.registration == RegistrationStatusEnumType.pending
            and action in SERVED_WHILE_PENDING)

    async def refuse(self, request: Call) -> None:
        error = SecurityError(description=f"{request.action} before the CSMS accepted this "
                                          f"station's BootNotification")
        await self._send(request.create_call_error(error).to_json())

    @on(Action.reserve_now)
    async def on_reserve_now(self, id: int, expiry_date_time: str, id_token: dict,
                             evse_id: int | None = None, connector_type: str | None = None,
                             group_id_token: dict | None = None, **_: Any) -> call_result.ReserveNow:
        request: dict[str, Any] = {"reservation_id": id, "id_token": id_token["id_token"],
                                   "expiry_time": expiry_date_time}
        if evse_id == 0:
            return rejected(StatusInfoReasonType.value_zero_not_allowed,
                            "evseId 0 is the whole station; omit evseId for a reservation "
                            "on any EVSE")
        if evse_id is not None:
            station = await self.reservation_bridge.station()
            evse_ids = sorted(evse["id"] for evse in station["evses"])
            if evse_id not in evse_ids:
                return rejected(StatusInfoReasonType.unknown_evse,
                                f"this station has no EVSE {evse_id} (it has {evse_ids})")
            request["evse_id"] = evse_id
        if connector_type is not None:
            if connector_type not in CONNECTOR_TYPE_201:
                return rejected(StatusInfoReasonType.unknown_connector_type,
                                f"connector type {connector_type} is not one this station knows")
            request["connector_type"] = CONNECTOR_TYPE_201[connector_type]
        if group_id_token is not None:
            request["parent_id_token"] = group_id_token["id_token"]
        result, refusal = await self.reservation_bridge.reserve_now(**request)
        if refusal is not None:
            # An error code newer than this bridge is still an error of the station's.
            return rejected(ERROR_REASON_201.get(refusal.code, StatusInfoReasonType.internal_error),
                            f"{refusal.code}: {refusal.message}")
        return call_result.ReserveNow(status=RESERVE_NOW_STATUS_201[result])

    @on(Action.cancel_reservation)
    async def on_cancel_reservation(self, reservation_id: int,
                                    **_: Any) -> call_result.CancelReservation:
        cancelled = await self.reservation_bridge.cancel_reservation(reservation_id)
        return call_result.CancelReservation(status=CANCEL_STATUS_201[cancelled])

    @on(Action.get_variables)
    async def on_get_variables(self, get_variable_data: list[dict],
                               **_: Any) -> call_result.GetVariables:
        asks_us = any(d["component"]["name"] == RESERVATION_CTRLR for d in get_variable_data)
        state = await self.reservation_bridge.snapshot() if asks_us else None
        return call_result.GetVariables(
            get_variable_result=[self._variable(d, state) for d in get_variable_data])

    @staticmethod
    def _variable(data: dict, state: dict | None) -> GetVariableResultType:
        component, variable = data["component"], data["variable"]
        attribute = data.get("attribute_type")

        def result(status: GetVariableStatusEnumType, value: str | None = None):
            return GetVariableResultType(attribute_status=status, component=component,
                                         variable=variable, attribute_type=attribute,
                                         attribute_value=value)

        if component["name"] != RESERVATION_CTRLR:
            return result(GetVariableStatusEnumType.unknown_component)
        value_of = RESERVATION_VARIABLES_201.get(variable["name"])
        if value_of is None:
            return result(GetVariableStatusEnumType.unknown_variable)
        if attribute not in (None, AttributeEnumType.actual):
            return result(GetVariableStatusEnumType.not_supported_attribute_type)
        return result(GetVariableStatusEnumType.accepted, value_of(state))

    # -- what the report task sends -------------------------------------------------------

    def connector_statuses(self, state: dict[str, Any]) -> dict[tuple[int, int], str]:
        return connector_statuses_201(state)

    async def send_connector_status(self, key: tuple[int, int], status: str) -> None:
        evse_id, connector_id = key
        await self.call(call.StatusNotification(timestamp=now_rfc3339(), connector_status=status,
                                                evse_id=evse_id, connector_id=connector_id))

    async def send_reservation_ended(self, reservation_id: int,
                                     status: ReservationUpdateStatus) -> None:
        await self.call(call.ReservationStatusUpdate(
            reservation_id=reservation_id, reservation_update_status=RESERVATION_END_201[status]))
