"""The bridge as a CSMS operator meets it: what BootNotification says the
station is, the hint when the OCPP version is wrong, the log while the actor is
down, 1.6's HeartbeatInterval, and the demo CSMS with the bridge, each as
real processes against a real CSMS built with the `ocpp` library."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ocpp.exceptions import InternalError
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from bench.procs import OCPP_CONNECTED, ROOT, start_process
from protocol.ocpp.cli import NEEDS_EXTRA
from protocol.version import installed_version

from .conftest import start_actor
from .helpers import in_future
from .ocpp_csms import LOOPBACK, Csms, start_bridge, start_setup

pytestmark = pytest.mark.timeout(60)

WAIT = 15.0
IDENTITY = ("--vendor", "ACME Charging", "--model", "AC-22", "--serial-number", "SN-0042",
            "--firmware-version", "4.2.0")


def wait_for(predicate, what: str, within: float = WAIT):
    deadline = time.monotonic() + within
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"no {what} within {within} s"
        time.sleep(0.05)
    return found


def test_2_0_1_boot_notification_says_what_the_operator_gave():
    setup = start_setup("2.0.1", bridge_args=IDENTITY)
    try:
        boot = next(m for m in setup.csms.messages if m.action == "BootNotification")
        assert boot.payload["charging_station"] == {
            "vendor_name": "ACME Charging", "model": "AC-22", "serial_number": "SN-0042",
            "firmware_version": "4.2.0"}
    finally:
        setup.stop()


def test_1_6_boot_notification_and_heartbeat_interval_in_get_configuration():
    setup = start_setup("1.6", heartbeat=120, bridge_args=IDENTITY)
    try:
        boot = next(m for m in setup.csms.messages if m.action == "BootNotification")
        assert {key: boot.payload.get(key) for key in (
            "charge_point_vendor", "charge_point_model", "charge_point_serial_number",
            "firmware_version")} == {
            "charge_point_vendor": "ACME Charging", "charge_point_model": "AC-22",
            "charge_point_serial_number": "SN-0042", "firmware_version": "4.2.0"}
        answer = setup.csms.call(call16.GetConfiguration(key=["HeartbeatInterval"]))
        assert answer.configuration_key == [
            {"key": "HeartbeatInterval", "readonly": True, "value": "120"}]
        assert answer.unknown_key is None
    finally:
        setup.stop()


def test_a_csms_of_the_other_version_gets_one_hint_per_streak():
    csms = Csms("1.6")
    actor = start_actor(**LOOPBACK)
    refused = re.compile(r"did not accept OCPP 2\.0\.1 .*try --ocpp 1\.6")
    bridge = start_process("reservation-ocpp", [
        "-m", "protocol.ocpp", "--csms", csms.url, "--station-id", "CS1", "--ocpp", "2.0.1",
        "--endpoint", actor.command_endpoint, "--update-endpoint", actor.update_endpoint],
        refused)
    try:
        wait_for(lambda: bridge.log().count("reconnecting in") >= 2, "second retry")
        log = bridge.log()
        assert len(refused.findall(log)) == 1, log
        assert "is it a 1.6 CSMS?" in log and "HTTP 400" in log
        assert "Traceback" not in log
    finally:
        bridge.close()
        actor.stop()
        csms.close()


def test_actor_down_is_one_warning_per_request_then_one_recovery_line(short_tmp):
    endpoints = dict(command=f"ipc://{short_tmp}/cmd", update=f"ipc://{short_tmp}/upd")
    setup = start_setup("2.0.1", endpoints=endpoints)
    try:
        setup.actor.kill()
        for rid in (1, 2):
            with pytest.raises(InternalError, match="reservation service unavailable"):
                setup.csms.call(call201.ReserveNow(
                    id=rid, expiry_date_time=in_future(), evse_id=1,
                    id_token={"id_token": "T", "type": "Central"}))
        log = setup.bridge.log()
        warnings = [line for line in log.splitlines() if "did not answer reserve_now" in line]
        assert len(warnings) == 2 and all(" WARNING " in line for line in warnings), log
        assert "Traceback" not in log and " ERROR " not in log, log
        setup.actor = start_actor(**endpoints)
        answer = setup.csms.call(call201.ReserveNow(
            id=3, expiry_date_time=in_future(), evse_id=1,
            id_token={"id_token": "T", "type": "Central"}))
        assert answer.status == "Accepted"
        assert "reservation actor reachable again after 2 failed calls" in setup.bridge.log()
    finally:
        setup.stop()


def test_the_demo_csms_and_the_bridge_in_two_commands():
    actor = start_actor(**LOOPBACK)
    out = tempfile.NamedTemporaryFile(prefix="demo-csms-", suffix=".out", delete=False)
    demo = subprocess.Popen([sys.executable, "-m", "protocol.ocpp.csms", "--port", "0",
                             "--reserve", "1"], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    printed = lambda: Path(out.name).read_text()   # noqa: E731
    bridge = None
    try:
        url = wait_for(lambda: re.search(r"listening on (ws://\S+)", printed()), "listening line")
        bridge = start_process("reservation-ocpp", [
            "-m", "protocol.ocpp", "--csms", url.group(1), "--station-id", "CS1",
            "--endpoint", actor.command_endpoint, "--update-endpoint", actor.update_endpoint],
            OCPP_CONNECTED)
        wait_for(lambda: "CS1 <- ReserveNow: Accepted" in printed(), "reservation answer")
        boot = next(line for line in printed().splitlines() if "-> BootNotification" in line)
        assert '"vendorName": "reservation-actor"' in boot and '"model": "reservation-ocpp"' in boot
        assert f'"firmwareVersion": "{installed_version()}"' in boot
        assert "serialNumber" not in boot
        wait_for(lambda: '"connectorStatus": "Reserved"' in printed(), "Reserved status")
    finally:
        if bridge is not None:
            bridge.close()
        demo.terminate()
        assert demo.wait(10) == 0, printed()
        Path(out.name).unlink()
        actor.stop()


def test_the_demo_csms_without_the_ocpp_extra_is_one_line_and_exit_2(tmp_path):
    # What importing a package that is not installed raises, on a path
    # searched before the installed one.
    (tmp_path / "ocpp").mkdir()
    (tmp_path / "ocpp" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'ocpp'\", name='ocpp')\n")
    done = subprocess.run([sys.executable, "-m", "protocol.ocpp.csms"], capture_output=True,
                          text=True, cwd=ROOT, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert (done.returncode, done.stderr) == (2, NEEDS_EXTRA + "\n")
