"""What an operator deploys with: `--version` on every console script, readiness
for a supervisor (systemd's notify protocol), the systemd unit, the container
recipe, the example station config and the log format a collector reads.

Each is checked the way it is used: the real console scripts and `python -m
actor` processes, a datagram socket standing in for systemd, the unit and the
Containerfile read the way systemd and the actor's own argument parsers read
them (and `systemd-analyze verify`, where it is installed)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import pytest

from actor import cli
from actor.config import _SECTIONS, Config, load_config
from actor.security import is_loopback
from bench import procs
from protocol import ctl
from protocol.client import Client
from tests.conftest import start_actor
from tests.helpers import in_future, rfc3339

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
UNIT = ROOT / "deploy" / "reservation-actor.service"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
EXAMPLE = ROOT / "examples" / "station.toml"
README = (ROOT / "README.md").read_text()
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
LOOPBACK = dict(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*")
SANDBOX = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "RestrictNamespaces": "yes",
    "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
    "SystemCallFilter": "@system-service", "CapabilityBoundingSet": "", "UMask": "0077",
}


# -- --version ------------------------------------------------------------------------------

@pytest.mark.parametrize("script, module", [
    ("reservation-actor", "actor"), ("reservation-ctl", "protocol.ctl"),
    ("reservation-ocpp", "protocol.ocpp"),
])
def test_every_console_script_prints_its_name_and_the_installed_version(script, module):
    from importlib.metadata import version   # noqa: PLC0415 - what pip installed
    expected = f"{script} {version('reservation-actor')}\n"
    for argv in ([sys.executable, "-m", module, "--version"], [str(BIN / script), "--version"]):
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout, done.stderr) == (0, expected, ""), argv


# -- readiness (systemd Type=notify) --------------------------------------------------------

@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, short_tmp):
    """A datagram socket where systemd would listen; (it, $NOTIFY_SOCKET for it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = name = os.path.join(short_tmp, "notify")
    else:
        name = f"@reservation-actor-test-{uuid.uuid4().hex}"
        address = "\0" + name[1:]
    sock.bind(address)
    sock.settimeout(30)   # a bound on a wait for the actor, not a timing assertion
    yield sock, name
    sock.close()


def messages(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


def test_ready_is_sent_when_requests_are_answered_and_stopping_on_sigterm(notify_socket):
    sock, name = notify_socket
    actor = start_actor(**LOOPBACK, env={"NOTIFY_SOCKET": name})
    try:
        ready = messages(sock.recv(4096))
        assert ready["READY"] == "1"
        assert ready["STATUS"] == (f"serving commands on {actor.command_endpoint}, "
                                   f"updates on {actor.update_endpoint}")
        with Client(actor.command_endpoint, timeout=10) as client:
            assert client.ping() == "pong"
            assert client.reserve_now(reservation_id=1, id_token="A", evse_id=1,
                                      expiry_time=in_future()) == "Accepted"
        assert actor.stop(signal.SIGTERM) == 0
        assert messages(sock.recv(4096))["STOPPING"] == "1"
    finally:
        actor.kill()


# -- the systemd unit --------------------------------------------------------------------------

def unit() -> dict[str, dict[str, list[str]]]:
    """{section: {key: [value, ...]}}: systemd allows a key several times."""
    sections: dict[str, dict[str, list[str]]] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(key: str) -> str:
    """The unit's [Service] `key` (its last value, which is what systemd keeps)."""
    return unit()["Service"][key][-1]


def prevented_statuses() -> set[int]:
    return {int(status) for status in service("RestartPreventExitStatus").split()}


def test_the_unit_runs_the_console_script_with_options_it_accepts_under_a_sandbox():
    assert service("Type") == "notify"
    assert service("Restart") == "on-failure"
    argv = shlex.split(service("ExecStart"))
    assert Path(argv[0]).name == "reservation-actor" and "reservation-actor" in SCRIPTS
    args = cli.parse_args(argv[1:])
    assert Path(args.store).parent == Path("/var/lib") / service("StateDirectory")
    assert Path(args.config).parent == Path("/etc") / service("ConfigurationDirectory")
    assert service("DynamicUser") == "yes"
    sandbox = unit()["Service"]
    assert {key: value for key, value in SANDBOX.items() if value not in sandbox.get(key, [])} == {}


@pytest.mark.parametrize("mistake", ["config", "store"])
def test_an_operator_mistake_exits_with_a_status_the_unit_does_not_restart_on(mistake, tmp_path):
    """README: 2 for the command line, the config file or an endpoint; 3 for the store."""
    if mistake == "config":
        (tmp_path / "station.toml").write_text("[reservations]\nenabled = 1\n")
        args = ["--config", str(tmp_path / "station.toml"), "--store", ":memory:"]
    else:
        (tmp_path / "file").write_text("")
        args = ["--store", str(tmp_path / "file" / "store.sqlite3")]
    done = subprocess.run([sys.executable, "-m", "actor", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode in prevented_statuses(), done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert prevented_statuses() == {2, 3}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
def test_systemd_accepts_the_unit(tmp_path):
    # verify checks that ExecStart's program exists: point it at the one installed here.
    text = UNIT.read_text().replace("/opt/reservation-actor/bin/reservation-actor",
                                    str(BIN / "reservation-actor"))
    (tmp_path / UNIT.name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / UNIT.name)],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")


def test_the_actor_never_needs_memory_both_writable_and_executable(short_tmp):
    """MemoryDenyWriteExecute=yes in the unit: the actor runs under the kernel's
    own equivalent (prctl PR_SET_MDWE, Linux 6.3), reserving and storing."""
    if tuple(map(int, re.match(r"(\d+)\.(\d+)", os.uname().release).groups())) < (6, 3):
        pytest.skip("PR_SET_MDWE needs Linux 6.3 or newer")
    argv = procs.actor_argv(LOOPBACK["command"], LOOPBACK["update"],
                            store=os.path.join(short_tmp, "store.sqlite3"))
    mdwe = ("import ctypes, runpy, sys\n"
            "if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:\n"
            "    sys.exit('PR_SET_MDWE refused')\n"
            f"sys.argv = ['actor', *{argv[2:]!r}]\n"
            "runpy.run_module('actor', run_name='__main__', alter_sys=True)\n")
    server = procs.start_process("actor", ["-c", mdwe], procs.ACTOR_BOUND, timeout=60)
    try:
        with Client(server.endpoints[0], timeout=10) as client:
            assert client.reserve_now(reservation_id=1, id_token="A", evse_id=1,
                                      expiry_time=in_future()) == "Accepted"
            assert len(client.get_state()["reservations"]) == 1
        assert server.stop() == 0, server.log()
    finally:
        server.close()


# -- the container recipe ----------------------------------------------------------------------

def instruction(name: str) -> str:
    """The arguments of the Containerfile's last `name` instruction, continuation lines joined."""
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines()
            if line.split(None, 1)[:1] == [name]][-1]


def test_the_container_runs_the_actor_unprivileged_with_its_store_on_the_volume():
    argv = json.loads(instruction("CMD"))
    assert argv[0] in SCRIPTS
    args = cli.parse_args(argv[1:])
    assert [Path(args.store).parent] == [Path(p) for p in instruction("VOLUME").split()]
    assert Path(args.store).parent == Path(cli.parse_args(
        shlex.split(service("ExecStart"))[1:]).store).parent
    assert instruction("USER") not in ("root", "0")
    copied = dict(reversed(line.split()[1:]) for line in CONTAINERFILE.read_text().splitlines()
                  if line.startswith("COPY deploy/"))
    config = load_config(ROOT / copied[args.config])
    ports = {int(endpoint.rsplit(":", 1)[1])
             for endpoint in (config.command_endpoint, config.update_endpoint)}
    assert ports == {int(port) for port in instruction("EXPOSE").split()}
    # Listening beyond loopback, it must not need --insecure: CURVE from the mounted secret.
    assert not is_loopback(config.command_endpoint) and not args.insecure
    assert config.secret_key_file and config.authorized_keys


def test_the_container_health_check_pings_with_the_actors_key():
    health = instruction("HEALTHCHECK")
    argv = json.loads(health[health.index("CMD") + 3:])
    assert argv[0] in SCRIPTS
    args = ctl.parse_args(argv[1:])
    assert args.command == "ping"
    config = load_config(ROOT / "deploy" / "container-station.toml")
    assert Path(args.server_key).parent == Path(config.secret_key_file).parent
    assert args.endpoint.rsplit(":", 1)[1] == config.command_endpoint.rsplit(":", 1)[1]


# -- the example station config ----------------------------------------------------------------

def test_the_example_config_names_every_key_with_its_default():
    text = EXAMPLE.read_text()
    for section, keys in _SECTIONS.items():
        # A section shown commented out (it needs files of the operator's) counts.
        block = re.split(rf"^#? ?\[{section}\]", text, maxsplit=1, flags=re.M)[1].split("\n[", 1)[0]
        assert {key for key in keys if not re.search(rf"^#? ?{key} = ", block, re.M)} == set(), \
            section
    config = load_config(EXAMPLE)
    defaults = Config()
    assert {field: getattr(config, field) for field in vars(defaults) if field != "evses"} == \
        {field: getattr(defaults, field) for field in vars(defaults) if field != "evses"}


def test_the_actor_serves_the_example_config():
    actor = start_actor("--config", str(EXAMPLE), **LOOPBACK)
    try:
        with Client(actor.command_endpoint, timeout=10) as client:
            assert client.ping() == "pong"
            assert [evse["id"] for evse in client.get_state()["evses"]] == [1, 2, 3]
    finally:
        actor.kill()


def test_every_config_file_the_readme_runs_with_exists():
    named = set(re.findall(r"--config ([^\s`]+)", README))
    assert named and {path for path in named
                      if not path.startswith("/") and not (ROOT / path).is_file()} == set()


# -- the log a collector reads -----------------------------------------------------------------

def test_json_log_lines_are_one_object_each_stamped_in_utc():
    actor = start_actor("--log-format", "json", **LOOPBACK)
    with Client(actor.command_endpoint, timeout=10) as client:
        client.reserve_now(reservation_id=7, id_token="A", evse_id=1, expiry_time=in_future())
    assert actor.stop() == 0
    lines = [json.loads(line) for line in actor.log]
    assert [line["message"] for line in lines if line["message"].startswith("reservation ")] == [
        "reservation 7 Placed"]
    assert {(line["level"], line["logger"]) for line in lines} == {("INFO", "reservation_actor")}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
               for line in lines)


def test_ready_comes_after_what_start_up_ended_is_published(notify_socket, short_tmp):
    """A supervisor that hears READY may rely on start-up's own updates (here a
    reservation that expired while the actor was down) being out already: the
    actor logs each published end, so its log holds the Expired when READY
    arrives (the actor is stopped on the spot, so it cannot catch up)."""
    sock, name = notify_socket
    store = os.path.join(short_tmp, "store.sqlite3")
    first = start_actor(**LOOPBACK, store=store)
    try:
        expiry = time.time() + 1
        with Client(first.command_endpoint, timeout=10) as client:
            assert client.reserve_now(reservation_id=7, id_token="A", evse_id=1,
                                      expiry_time=rfc3339(expiry)) == "Accepted"
        assert first.stop(signal.SIGTERM) == 0
    finally:
        first.kill()
    while time.time() < expiry + 0.1:   # real time passes while the actor is down
        time.sleep(expiry + 0.1 - time.time())
    second = start_actor(**LOOPBACK, store=store, env={"NOTIFY_SOCKET": name})
    try:
        assert messages(sock.recv(4096))["READY"] == "1"
        os.kill(second.pid, signal.SIGSTOP)
        assert any("reservation 7 Expired" in line for line in second.log), "".join(second.log)
        os.kill(second.pid, signal.SIGCONT)
    finally:
        second.kill()
