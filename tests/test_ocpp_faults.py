"""The bridge when things go wrong, for both OCPP versions: the actor stopped
and restarted under it, the CSMS dropping the connection, reservations
disabled in the actor, and operator mistakes on the command line. Each test
runs its own actor, CSMS and bridge processes."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ocpp.exceptions import InternalError, SecurityError
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from bench.procs import ROOT
from protocol.ocpp.station import Backoff

from .conftest import start_actor
from .helpers import in_future
from .ocpp_csms import Csms, Setup, all_available, shown, start_setup
from .test_security import write_config

pytestmark = pytest.mark.timeout(60)

VERSIONS = ("2.0.1", "1.6")


def reserve_now(version: str, rid: int, evse_id: int | None, expiry: str):
    if version == "2.0.1":
        return call201.ReserveNow(id=rid, expiry_date_time=expiry, evse_id=evse_id,
                                  id_token={"id_token": f"T{rid}", "type": "Central"})
    return call16.ReserveNow(connector_id=evse_id or 0, expiry_date=expiry, id_tag=f"T{rid}",
                             reservation_id=rid)


@pytest.mark.parametrize("version", VERSIONS)
def test_actor_stopped_and_restarted_under_the_bridge(version, short_tmp):
    """While the actor is down the CSMS gets InternalError saying so, and the
    request it sent never takes effect; when the actor is back (empty: a
    ':memory:' store) the bridge resynchronises by itself and tells the CSMS
    what vanished: Expired if its time had passed, else Removed. The expiries
    are spelt as the actor accepts them and datetime does not (a lowercase z,
    a leap second): the bridge reads them as the actor does, and carries on
    on the same connection."""
    endpoints = dict(command=f"ipc://{short_tmp}/cmd", update=f"ipc://{short_tmp}/upd")
    setup = start_setup(version, endpoints=endpoints)
    csms = setup.csms
    try:
        soon = time.time() + 2
        leap_second = "2030-12-31T23:59:60z"
        assert csms.call(reserve_now(version, 1, 1, leap_second)).status == "Accepted"
        assert csms.call(reserve_now(version, 2, 2, in_future(2).lower())).status == "Accepted"
        csms.wait_statuses(shown(version, {1: "Reserved", 2: "Reserved"}))
        mark = csms.mark()
        setup.actor.stop()
        with pytest.raises(InternalError) as unavailable:
            csms.call(reserve_now(version, 3, 2, in_future()))
        assert "reservation service unavailable" in unavailable.value.description
        end = time.monotonic() + 10
        while time.time() <= soon:   # reservation 2's expiry passes while the actor is down
            assert time.monotonic() < end
            time.sleep(0.05)
        setup.actor = start_actor(**endpoints)
        csms.wait_statuses(shown(version, {1: "Available", 2: "Available"}))
        if version == "2.0.1":
            for rid in (1, 2):
                csms.wait(lambda m: m.action == "ReservationStatusUpdate"
                          and m.payload["reservation_id"] == rid, since=mark, what=f"update {rid}")
            assert sorted((m.payload["reservation_id"], m.payload["reservation_update_status"])
                          for m in csms.messages[mark:] if m.action == "ReservationStatusUpdate") \
                == [(1, "Removed"), (2, "Expired")]
        with setup.client() as client:
            assert client.get_state()["reservations"] == []   # reservation 3 never arrived
        assert csms.call(reserve_now(version, 4, 1, in_future())).status == "Accepted"
        csms.wait_statuses(shown(version, {1: "Reserved"}))
        assert setup.bridge.process.poll() is None
        assert len(csms.sessions) == 1, setup.bridge.log()
    finally:
        setup.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_csms_dropping_the_connection(version):
    """The bridge reconnects, boots again and reports every connector again,
    as it is now; it sends Heartbeat at the interval the CSMS returned."""
    setup = start_setup(version, heartbeat=1)
    csms = setup.csms
    try:
        csms.wait(lambda m: m.action == "Heartbeat", what="Heartbeat")
        assert csms.call(reserve_now(version, 1, 2, in_future())).status == "Accepted"
        csms.wait_statuses(shown(version, {2: "Reserved"}))
        csms.drop()
        csms.wait_session(2)
        csms.wait(lambda m: m.session == 1 and m.action == "BootNotification", since=0,
                  what="a second BootNotification")
        csms.wait_statuses(shown(version, {1: "Available", 2: "Reserved"}))
        assert set(csms.statuses(1)) == set(shown(version, {1: "Available", 2: "Available"}))
        assert csms.call(reserve_now(version, 2, 1, in_future())).status == "Accepted"
    finally:
        setup.stop()


@pytest.mark.parametrize("version", VERSIONS)
def test_reservations_disabled_in_the_actor(version, short_tmp):
    config = write_config(short_tmp, "[reservations]\nenabled = false\nnon_evse_specific = false\n")
    setup = start_setup(version, "--config", config)
    csms = setup.csms
    try:
        assert csms.call(reserve_now(version, 1, 1, in_future())).status == "Rejected"
        assert csms.call(reserve_now(version, 2, None, in_future())).status == "Rejected"
        if version == "2.0.1":
            response = csms.call(call201.GetVariables(get_variable_data=[
                {"component": {"name": "ReservationCtrlr"}, "variable": {"name": name}}
                for name in ("Enabled", "NonEvseSpecific")]))
            assert [r["attribute_value"] for r in response.get_variable_result] == ["false"] * 2
        else:
            response = csms.call(call16.GetConfiguration(key=["ReserveConnectorZeroSupported"]))
            assert response.configuration_key == [
                {"key": "ReserveConnectorZeroSupported", "readonly": True, "value": "false"}]
    finally:
        setup.stop()


def refused_before_acceptance(setup: Setup, rid: int, *, silently: bool) -> None:
    """The CSMS's ReserveNow for `rid` gets a SecurityError CallError (2.0.1),
    or no answer at all (`silently`: 1.6), and no reservation is made."""
    request = reserve_now(setup.csms.version, rid, 1, in_future())
    if silently:
        setup.csms.assert_unanswered(request, within=1)
    else:
        with pytest.raises(SecurityError):
            setup.csms.call(request)
    with setup.client() as client:
        assert client.get_state()["reservations"] == []


def next_boot(csms: Csms, status: str) -> None:
    """Answer the held BootNotification with `status`, and wait for the next
    (due after the 1 s interval): by then the station has taken `status` in."""
    mark = csms.mark()
    csms.answer_boots(status)
    csms.wait(lambda m: m.action == "BootNotification", since=mark, what="the next boot")


@pytest.mark.parametrize("version", VERSIONS)
def test_nothing_is_reserved_before_the_boot_is_accepted(version):
    """OCPP 2.0.1 (as EVerest's libocpp): before any answer to BootNotification
    and while Rejected, every CSMS request gets CallError SecurityError
    (B03.FR.08); while Pending only the configuration requests are served
    (B02.FR.01), a ReserveNow gets SecurityError (B02.FR.09). OCPP 1.6 §4.2:
    while Rejected (and before any answer) the station does not respond at
    all; while Pending the CSMS may send its requests. Accepted, the station
    serves everything."""
    setup = start_setup(version, heartbeat=1, hold_boot=True)
    csms = setup.csms
    silently = version == "1.6"
    try:
        refused_before_acceptance(setup, 1, silently=silently)
        next_boot(csms, csms.registration.rejected)
        refused_before_acceptance(setup, 2, silently=silently)
        next_boot(csms, csms.registration.pending)
        if version == "2.0.1":
            refused_before_acceptance(setup, 3, silently=False)
            response = csms.call(call201.GetVariables(get_variable_data=[
                {"component": {"name": "ReservationCtrlr"}, "variable": {"name": "Enabled"}}]))
            assert response.get_variable_result[0]["attribute_value"] == "true"
        else:
            assert csms.call(reserve_now(version, 3, 1, in_future())).status == "Accepted"
            assert csms.call(call16.CancelReservation(reservation_id=3)).status == "Accepted"
        assert not any(m.action == "StatusNotification" for m in csms.messages)
        csms.answer_boots(csms.registration.accepted)
        csms.wait_statuses(all_available(version))
        assert csms.call(reserve_now(version, 4, 1, in_future())).status == "Accepted"
        with setup.client() as client:
            assert [r["reservation_id"] for r in client.get_state()["reservations"]] == [4]
        assert len(csms.sessions) == 1, setup.bridge.log()
    finally:
        setup.stop()


def test_reservation_ends_are_delivered_again_after_a_drop():
    """Two reservations end; the CSMS drops the connection on the first
    ReservationStatusUpdate, unanswered. After the reconnect both arrive:
    the first again (the CSMS never confirmed it), then the second."""
    setup = start_setup("2.0.1")
    csms = setup.csms
    try:
        csms.drops_on_update = 1
        expiry = in_future(1)
        for rid, evse_id in ((1, 1), (2, 2)):
            assert csms.call(reserve_now("2.0.1", rid, evse_id, expiry)).status == "Accepted"
        csms.wait_session(2)
        for rid in (1, 2):
            csms.wait(lambda m: m.session == 1 and m.action == "ReservationStatusUpdate"
                      and m.payload["reservation_id"] == rid, what=f"update {rid} after reconnect")
        [dropped] = [m for m in csms.messages if m.action == "ReservationStatusUpdate"
                     and m.session == 0]
        assert dropped.payload["reservation_update_status"] == "Expired"
        assert sorted((m.payload["reservation_id"], m.payload["reservation_update_status"])
                      for m in csms.messages
                      if m.session == 1 and m.action == "ReservationStatusUpdate") \
            == [(1, "Expired"), (2, "Expired")]
    finally:
        setup.stop()


def test_backoff_doubles_to_its_limit_and_resets():
    backoff = Backoff(first=1, last=30)
    assert [backoff.delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert [backoff.delay() for _ in range(2)] == [1, 2]


def test_reconnect_delay_is_back_to_1_s_after_an_accepted_boot():
    """The CSMS accepts, then drops the connection, three times: each
    reconnection waits 1 s, as after the first drop (the bridge logs the delay
    it chose)."""
    setup = start_setup("2.0.1")
    csms = setup.csms
    try:
        for dropped in range(3):
            csms.drop()
            csms.wait_session(dropped + 2)
            # Statuses follow only an accepted boot.
            csms.wait(lambda m: m.session == dropped + 1 and m.action == "StatusNotification",
                      what="the reconnected station's statuses")
        assert re.findall(r"reconnecting in (\S+) s", setup.bridge.log()) == ["1"] * 3
    finally:
        setup.stop()


def test_wss_with_a_ca_file(short_tmp):
    """Security profile 2: TLS to the CSMS, its certificate checked against --ca-file."""
    cert, key = os.path.join(short_tmp, "csms.pem"), os.path.join(short_tmp, "csms.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    setup = start_setup("2.0.1", tls=tls, bridge_args=("--ca-file", cert))
    try:
        assert setup.csms.url.startswith("wss://")
        assert setup.csms.call(reserve_now("2.0.1", 1, 1, in_future())).status == "Accepted"
    finally:
        setup.stop()


SCRIPT = Path(sys.executable).with_name("reservation-ocpp")


def refused(args: list[str], env: dict | None = None) -> str:
    """Run the console script on an operator mistake: exit status 2 and one
    line on stderr (returned), no traceback."""
    done = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=30, env=env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr


@pytest.mark.parametrize("args, message", [
    (["--csms", "http://127.0.0.1:1", "--station-id", "X"], "ws:// or wss://"),
    (["--csms", "ws://127.0.0.1:1", "--station-id", "X", "--password-file", "/nonexistent/pw"],
     "/nonexistent/pw"),
    (["--csms", "ws://127.0.0.1:1", "--station-id", "X", "--ca-file", "ca.pem"], "wss://"),
    (["--csms", "ws://127.0.0.1:1", "--station-id", "X", "--server-key", "k"], "--client-key"),
    (["--csms", "wss://127.0.0.1:1", "--station-id", "X", "--ca-file", "pyproject.toml"],
     "pyproject.toml"),
] + [(["--csms", "ws://127.0.0.1:1", "--station-id", "X", "--actor-timeout", seconds],
      "--actor-timeout") for seconds in ("nan", "inf", "0", "-1")])
def test_operator_mistakes_are_one_line_and_exit_2(args, message):
    assert message in refused(args)


def test_without_the_ocpp_extra_says_how_to_install_it(tmp_path):
    # What importing a package that is not installed raises, on a path
    # searched before the installed one.
    (tmp_path / "ocpp").mkdir()
    (tmp_path / "ocpp" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'ocpp'\", name='ocpp')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    assert refused(["--csms", "ws://127.0.0.1:1", "--station-id", "X"], env) == (
        "reservation-ocpp needs the ocpp extra: pip install 'reservation-actor[ocpp]'\n")
