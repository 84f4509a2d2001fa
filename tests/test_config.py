"""Station configuration: the TOML an operator writes, and what a mistake in it does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from actor.config import DEFAULT_STATION, Config, ConfigError, config_from_dict, load_config

from .conftest import start_actor
from .helpers import in_future

ROOT = Path(__file__).resolve().parent.parent


def test_no_config_serves_the_default_station_on_the_default_endpoints():
    config = load_config(None)
    assert config == Config()
    assert [(e.id, e.connectors) for e in config.evses] == [
        (1, ((1, "cCCS2"), (2, "cType2"))), (2, ((1, "cCCS2"), (2, "cType2")))]
    assert config.command_endpoint == "tcp://127.0.0.1:5555"
    assert config.update_endpoint == "tcp://127.0.0.1:5556"
    assert config.tick == 0.01
    assert config.reservations_enabled and config.non_evse_specific


def test_a_full_file_is_read_as_written(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text('''
[reservations]
enabled = true
non_evse_specific = false
[endpoints]
command = "ipc:///run/ra/cmd"
update = "ipc:///run/ra/upd"
[timer]
tick_ms = 5
[store]
path = "/var/lib/ra/store.sqlite3"
synchronous = "normal"
[limits]
max_message_bytes = 4096
[[evse]]
id = 7
connectors = [{ id = 1, type = "cCCS1" }, { id = 2 }]
[[evse]]
id = 0
connectors = [{ id = 3, type = "sType2" }]
''')
    config = load_config(path)
    assert [(e.id, e.connectors) for e in config.evses] == [
        (7, ((1, "cCCS1"), (2, "Unknown"))), (0, ((3, "sType2"),))]
    assert config.non_evse_specific is False
    assert (config.command_endpoint, config.update_endpoint) == ("ipc:///run/ra/cmd",
                                                                 "ipc:///run/ra/upd")
    assert config.tick == 0.005
    assert (config.store_path, config.store_synchronous) == ("/var/lib/ra/store.sqlite3", "normal")
    assert config.max_message_bytes == 4096


def test_sections_are_optional_and_evse_absent_means_the_default_station():
    assert config_from_dict({"timer": {"tick_ms": 20}}).evses == DEFAULT_STATION


@pytest.mark.parametrize("data, complaint", [
    ({"reservation": {}}, "unknown section [reservation]"),
    ({"reservations": {"enable": True}}, "unknown key reservations.enable"),
    ({"reservations": {"enabled": "yes"}}, "reservations.enabled must be bool"),
    ({"timer": {"tick_ms": 0}}, "timer.tick_ms must be between 1 and 1000"),
    ({"timer": {"tick_ms": True}}, "timer.tick_ms must be int or float"),
    ({"store": {"synchronous": "off"}}, "store.synchronous must be one of full, normal"),
    ({"security": {"secret_key_file": "k"}}, "needs both secret_key_file and authorized_keys"),
    ({"limits": {"max_message_bytes": 10}}, "limits.max_message_bytes must be between"),
    ({"limits": {"turn_decide_ms": -1}},
     "limits.turn_decide_ms must be 0 (no bound) or a number of milliseconds"),
    ({"evse": []}, "at least one EVSE"),
    ({"evse": [{"connectors": [{"id": 1}]}]}, "evse #1: missing id"),
    ({"evse": [{"id": -1, "connectors": [{"id": 1}]}]}, "evse #1: id must be an integer"),
    ({"evse": [{"id": 1, "connectors": [{"id": 1}]}, {"id": 1, "connectors": [{"id": 1}]}]},
     "evse #2: id 1 is used by another EVSE"),
    ({"evse": [{"id": 1}]}, "evse 1: connectors must be a non-empty array"),
    ({"evse": [{"id": 1, "connectors": [{"id": 1}, {"id": 1}]}]},
     "evse 1: connector id 1 appears twice"),
    ({"evse": [{"id": 1, "connectors": [{"id": 1, "type": "CCS2"}]}]},
     "type 'CCS2' is not a ConnectorTypeEnum name"),
    ({"evse": [{"id": 1, "connectors": [{"id": 1, "kind": "cCCS2"}]}]},
     "unknown connector key kind"),
])
def test_each_mistake_is_named(data, complaint):
    with pytest.raises(ConfigError) as refused:
        config_from_dict(data)
    assert complaint in str(refused.value)


@pytest.mark.parametrize("content, complaint", [
    pytest.param(b'[[evse]]\nid = 1\nconnectors = [{ id = 1, type = "Schuko" }]\n', "Schuko",
                 id="bad-value"),
    pytest.param(b'[reservations]\nenabled = true  # r\xe9servations\n', "not UTF-8",
                 id="latin-1"),
    pytest.param(b"\xff\xfe[\x00r\x00", "not UTF-8", id="utf-16"),
    pytest.param(b"x = " + b"[" * 1000 + b"]" * 1000 + b"\n", "nested too deeply", id="deep-array"),
    pytest.param(b"x = " + b"{ a = " * 1000 + b"1" + b" }" * 1000 + b"\n", "nested too deeply",
                 id="deep-table"),
])
def test_a_bad_file_stops_start_up_with_one_line_naming_it(tmp_path, content, complaint):
    path = tmp_path / "station.toml"
    path.write_bytes(content)
    done = subprocess.run([sys.executable, "-m", "actor", "--config", str(path),
                           "--store", ":memory:"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(path) in lines[0] and complaint in lines[0]


def test_unreadable_toml_is_refused_too(tmp_path):
    path = tmp_path / "station.toml"
    path.write_text("[reservations\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


@pytest.mark.parametrize("settings, request_args", [
    ("[reservations]\nenabled = false\n", {"evse_id": 1}),
    ("[reservations]\nnon_evse_specific = false\n", {}),
])
def test_disabled_reservations_are_rejected_end_to_end(tmp_path, settings, request_args):
    path = tmp_path / "station.toml"
    path.write_text(settings)
    running = start_actor("--config", str(path), command="tcp://127.0.0.1:*",
                          update="tcp://127.0.0.1:*")
    try:
        with running.client() as client:
            assert client.reserve_now(reservation_id=1, id_token="T", expiry_time=in_future(),
                                      **request_args) == "Rejected"
            assert client.get_state()["reservations"] == []
    finally:
        running.stop()
