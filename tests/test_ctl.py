"""`reservation-ctl` as an operator meets it: the real console script (and
`python -m protocol.ctl`) against a real actor, over real sockets; and the
Python client's `expiry_time` given as a datetime."""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bench.procs import free_port
from protocol import ctl

from .conftest import endpoints_for, start_actor
from .test_security import pki, secure_actor   # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parent.parent
CTL = Path(sys.executable).with_name("reservation-ctl")
SUBCOMMANDS = ["reserve", "cancel", "exists", "use", "event", "plug", "possible", "state",
               "stats", "ping", "watch"]


def run(*args: str, module: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "protocol.ctl"] if module else [str(CTL)]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def tcp_actor(tmp_path_factory):
    running = start_actor(**endpoints_for("tcp", str(tmp_path_factory.mktemp("ctl"))))
    yield running
    running.kill()


def test_help_describes_every_subcommand_its_results_and_exit_statuses():
    top = run("--help")
    assert top.returncode == 0
    for word in ("Accepted", "Occupied", "Faulted", "Unavailable", "Rejected", "NotReserved"):
        assert word in top.stdout
    for status in ("0 ", "1 ", "2 ", "3 ", "4 "):
        assert f"\n  {status} " in top.stdout
    for name in SUBCOMMANDS:
        summary = next(line for line in top.stdout.splitlines() if line.strip().startswith(name))
        assert len(summary.split()) > 2, f"{name} has no one-line description in --help"
    own = run("reserve", "--help")
    assert own.returncode == 0 and "(reserve_now)." in own.stdout and "exit status:" in own.stdout


def test_every_option_and_argument_has_a_help_text():
    parser = ctl.build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(subcommands.choices) == sorted(SUBCOMMANDS)
    for name, sub in [("reservation-ctl", parser), *subcommands.choices.items()]:
        assert sub.description, f"{name} has no description"
        for action in sub._actions:
            assert action.help, f"{name}: {action.dest} has no help text"


def test_python_m_protocol_ctl_is_reservation_ctl():
    assert run("--help", module=True).stdout == run("--help").stdout
    assert run("--version", module=True).stdout == run("--version").stdout


def test_an_unknown_connector_type_lists_the_words_in_one_line():
    done = run("reserve", "--id", "1", "--token", "A", "--type", "CCS2")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "'CCS2'" in done.stderr and "cCCS2" in done.stderr and "cType2" in done.stderr
    assert "<ConnectorType" not in done.stderr


def test_a_timeout_that_is_not_positive_and_finite_is_one_line_exit_2():
    for args in (["--timeout", "-1", "ping"], ["ping", "--timeout", "0"],
                 ["state", "--timeout", "nan"], ["--timeout", "inf", "stats"]):
        done = run(*args)
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr.count("\n") == 1 and "--timeout" in done.stderr, done.stderr


def test_connection_options_are_accepted_after_the_subcommand(tcp_actor):
    done = run("ping", "--endpoint", tcp_actor.command_endpoint, "--timeout", "5")
    assert (done.returncode, done.stdout.strip()) == (0, '"pong"'), done.stderr
    # Given after the subcommand it wins over the one given before it.
    done = run("--endpoint", "tcp://127.0.0.1:1", "reserve", "--id", "3", "--token", "ANA",
               "--evse", "1", "--endpoint", tcp_actor.command_endpoint)
    assert (done.returncode, done.stdout.strip()) == (0, '"Accepted"'), done.stderr
    done = run("--endpoint", tcp_actor.command_endpoint, "exists", "--token", "ana", "--evse", "1")
    assert (done.returncode, done.stdout.strip()) == (0, '"ReservedForToken"'), done.stderr


def test_an_error_reply_is_exit_1(tcp_actor):
    done = run("--endpoint", tcp_actor.command_endpoint, "event", "99", "1", "Faulted")
    assert done.returncode == 1 and "invalid_argument" in done.stderr


def test_no_actor_there_is_exit_3():
    done = run("--endpoint", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.2", "ping")
    assert done.returncode == 3, done.stderr
    assert "is the actor running?" in done.stderr and done.stderr.count("\n") == 1


def test_a_client_refused_by_curve_is_exit_4_and_told_so(secure_actor, pki):
    endpoint = secure_actor.command_endpoint
    stranger = run("--endpoint", endpoint, "--timeout", "0.5", "ping",
                   "--server-key", pki["server_key"], "--client-key", pki["stranger_key"])
    plain = run("--endpoint", endpoint, "--timeout", "0.5", "ping")
    wrong_server_key = run("--endpoint", endpoint, "--timeout", "0.5", "ping",
                           "--server-key", pki["stranger_key"], "--client-key", pki["client_key"])
    for done, says in ((stranger, "refused this client's CURVE key"),
                       (plain, "requires CURVE, so give --server-key and --client-key"),
                       (wrong_server_key, "is --server-key its public key")):
        assert done.returncode == 4, done.stderr
        assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert "is the actor running?" not in done.stderr
    done = run("--endpoint", endpoint, "ping",
               "--server-key", pki["server_key"], "--client-key", pki["client_key"])
    assert (done.returncode, done.stdout.strip()) == (0, '"pong"'), done.stderr


def test_client_takes_an_aware_datetime_expiry_and_refuses_a_naive_one(tcp_actor):
    expiry = datetime.now(timezone(timedelta(hours=2))) + timedelta(minutes=10)
    with tcp_actor.client() as client:
        assert client.reserve_now(reservation_id=11, id_token="DT", evse_id=2,
                                  expiry_time=expiry) == "Accepted"
        listed = {r["reservation_id"]: r for r in client.get_state()["reservations"]}[11]
        sent = datetime.fromisoformat(listed["expiry_time"].replace("Z", "+00:00"))
        assert abs(sent - expiry) < timedelta(milliseconds=1)
        with pytest.raises(ValueError, match="no time zone"):
            client.reserve_now(reservation_id=12, id_token="NAIVE", evse_id=2,
                               expiry_time=datetime.now() + timedelta(minutes=10))
        assert 12 not in {r["reservation_id"] for r in client.get_state()["reservations"]}
