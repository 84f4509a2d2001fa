"""The bridge for OCPP 1.6, end to end (real CSMS, actor and bridge processes,
shared by this module's tests; each test leaves every connector Available).
A 1.6 connector is an actor EVSE: connector n is EVSE n, 0 means any EVSE.
"""

from __future__ import annotations

import time

import pytest
from ocpp.v16 import call

from protocol.vocabulary import ConnectorEventType

from .helpers import in_future, rfc3339
from .ocpp_csms import module_fixtures, restore

pytestmark = pytest.mark.timeout(60)

AVAILABLE = ("Available", "NoError")
RESERVED = ("Reserved", "NoError")
ALL_AVAILABLE = {1: AVAILABLE, 2: AVAILABLE}


setup, clean = module_fixtures("1.6", station_id="CP 16")


def reserve(setup, rid: int, connector_id: int, expiry: str | None = None,
            who: str = "ALICE", parent: str | None = None) -> str:
    return setup.csms.call(call.ReserveNow(connector_id=connector_id,
                                           expiry_date=expiry or in_future(), id_tag=who,
                                           reservation_id=rid, parent_id_tag=parent)).status


def test_boot_reports_every_connector(setup):
    boot = next(m for m in setup.csms.messages if m.action == "BootNotification")
    assert boot.payload["charge_point_model"] == "reservation-ocpp"
    assert setup.csms.sessions[0].id == "CP%2016"   # the station id, URL-quoted in the path
    assert setup.csms.statuses() == ALL_AVAILABLE


def test_reservation_on_a_connector_shows_reserved_and_back(setup):
    assert reserve(setup, 1, 2, parent="FLEET") == "Accepted"
    setup.csms.wait_statuses({2: RESERVED, 1: AVAILABLE})
    with setup.client() as client:
        [placed] = client.get_state()["reservations"]
    assert (placed["evse_id"], placed["id_token"], placed["parent_id_token"]) == (2, "ALICE", "FLEET")
    assert setup.csms.call(call.CancelReservation(reservation_id=1)).status == "Accepted"
    setup.csms.wait_statuses({2: AVAILABLE})


def test_connector_results(setup):
    assert reserve(setup, 1, 1) == "Accepted"
    assert reserve(setup, 2, 1, who="BOB") == "Occupied"
    assert reserve(setup, 3, 2, expiry=rfc3339(time.time() - 60)) == "Rejected"
    assert reserve(setup, 4, 9) == "Rejected"    # no such connector
    with setup.client() as client:
        client.connector_event(2, 1, ConnectorEventType.FAULTED)
        client.connector_event(2, 2, ConnectorEventType.FAULTED)
    setup.csms.wait_statuses({2: ("Faulted", "OtherError")})
    assert reserve(setup, 5, 2) == "Faulted"
    with setup.client() as client:
        restore(client)
        client.connector_event(2, 1, ConnectorEventType.DISABLE)
        client.connector_event(2, 2, ConnectorEventType.DISABLE)
    setup.csms.wait_statuses({2: ("Unavailable", "NoError")})
    assert reserve(setup, 6, 2) == "Unavailable"


def test_connector_zero_results(setup):
    assert reserve(setup, 1, 0) == "Accepted"
    assert reserve(setup, 2, 0, who="BOB") == "Accepted"
    setup.csms.wait_statuses({1: RESERVED, 2: RESERVED})
    assert reserve(setup, 3, 0, who="CAROL") == "Occupied"
    with setup.client() as client:
        restore(client)
        for evse_id in (1, 2):
            client.connector_event(evse_id, 1, ConnectorEventType.FAULTED)
            client.connector_event(evse_id, 2, ConnectorEventType.FAULTED)
    assert reserve(setup, 4, 0) == "Faulted"
    with setup.client() as client:
        restore(client)
        for evse_id in (1, 2):
            client.connector_event(evse_id, 1, ConnectorEventType.DISABLE)
            client.connector_event(evse_id, 2, ConnectorEventType.DISABLE)
    assert reserve(setup, 5, 0) == "Unavailable"


def test_replacement_by_the_same_id_moves_the_reservation(setup):
    assert reserve(setup, 1, 1) == "Accepted"
    setup.csms.wait_statuses({1: RESERVED})
    assert reserve(setup, 1, 2) == "Accepted"
    setup.csms.wait_statuses({1: AVAILABLE, 2: RESERVED})


def test_a_reservation_numbered_minus_one_and_a_held_connector_both_show_reserved(setup):
    assert reserve(setup, -1, 1) == "Accepted"
    setup.csms.wait_statuses({1: RESERVED, 2: AVAILABLE})
    # Connector 2 is the only one left for a connector-0 reservation: held back.
    assert reserve(setup, 2, 0, who="BOB") == "Accepted"
    setup.csms.wait_statuses({1: RESERVED, 2: RESERVED})
    assert setup.csms.call(call.CancelReservation(reservation_id=-1)).status == "Accepted"
    # Two free connectors for one reservation: neither is held back any more.
    setup.csms.wait_statuses(ALL_AVAILABLE)


def test_cancel_of_an_unknown_id_is_rejected(setup):
    assert setup.csms.call(call.CancelReservation(reservation_id=424242)).status == "Rejected"


def test_expired_reservation_leaves_reserved(setup):
    assert reserve(setup, 11, 2, expiry=in_future(1)) == "Accepted"
    setup.csms.wait_statuses({2: RESERVED})
    setup.csms.wait_statuses({2: AVAILABLE})
    with setup.client() as client:
        assert client.get_state()["reservations"] == []


def test_fault_removes_the_reservation(setup):
    assert reserve(setup, 21, 1) == "Accepted"
    setup.csms.wait_statuses({1: RESERVED})
    with setup.client() as client:
        client.connector_event(1, 1, ConnectorEventType.FAULTED)
        assert client.get_state()["reservations"] == []
    # Its other connector is still Available, so the connector is.
    setup.csms.wait_statuses({1: AVAILABLE})


def test_car_states(setup):
    with setup.client() as client:
        client.plug_event(1, True)
        setup.csms.wait_statuses({1: ("Preparing", "NoError")})
        client.connector_event(1, 1, ConnectorEventType.TRANSACTION_STARTED)
        setup.csms.wait_statuses({1: ("Charging", "NoError")})


def test_get_configuration(setup):
    response = setup.csms.call(call.GetConfiguration(
        key=["ReserveConnectorZeroSupported", "SupportedFeatureProfiles", "Colour"]))
    assert {(k["key"], k["value"], k["readonly"]) for k in response.configuration_key} == {
        ("ReserveConnectorZeroSupported", "true", True),
        ("SupportedFeatureProfiles", "Core,Reservation", True)}
    assert response.unknown_key == ["Colour"]
    everything = setup.csms.call(call.GetConfiguration())
    assert {k["key"] for k in everything.configuration_key} == {
        "HeartbeatInterval", "ReserveConnectorZeroSupported", "SupportedFeatureProfiles"}
