"""The actor over real sockets (tcp loopback and ipc), as a controller and a listener see it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import pytest
import zmq

from protocol.client import CommandFailed

from .helpers import in_future, rfc3339, wait_until_subscribed



def synced_subscriber(actor, client):
    sub = actor.subscriber()
    wait_until_subscribed(sub, client)
    return sub


def test_every_command_round_trips(actor):
    with actor.client() as client:
        assert client.ping() == "pong"
        assert client.reserve_now(reservation_id=1, id_token="ALICE", evse_id=1,
                                  connector_type="cCCS2", expiry_time=in_future()) == "Accepted"
        assert client.reserve_now(reservation_id=2, id_token="BOB", parent_id_token="FLEET",
                                  expiry_time=in_future()) == "Accepted"
        assert client.exists_reservation(id_token="alice", evse_id=1) == "ReservedForToken"
        assert client.exists_reservation(id_token="CAROL", evse_id=1) == "ReservedForOtherToken"
        assert client.exists_reservation(id_token="BOB") == "ReservedForToken"
        assert client.is_charging_possible(1) is False
        # EVSE 2 is the only one left for BOB's non-specific reservation.
        assert client.is_charging_possible(2) is False
        assert client.use_reservation(id_token="x", parent_id_token="fleet") == 2
        assert client.is_charging_possible(2) is True
        assert client.connector_event(2, 1, "Faulted") == "Faulted"
        assert client.plug_event(2, True) is None
        assert client.cancel_reservation(1) is True
        assert client.cancel_reservation(1) is False
        state = client.get_state()
        assert state["reservations"] == []
        evse2 = state["evses"][1]
        assert evse2["plugged_in"] is True
        assert evse2["connectors"][0] == {"id": 1, "type": "cCCS2", "state": "Faulted"}
        stats = client.stats()
        assert stats["requests"] == 16   # this stats request included
        assert stats["active_reservations"] == 0
        assert stats["updates_published"] == state["seq"]


def test_updates_carry_one_gap_free_seq_across_topics(actor):
    with actor.client() as client:
        sub = synced_subscriber(actor, client)
        start = client.get_state()["seq"]
        assert client.reserve_now(reservation_id=7, id_token="T", evse_id=2,
                                  expiry_time=in_future()) == "Accepted"
        assert client.connector_event(2, 1, "Faulted") == "Faulted"  # removes reservation 7
        end = client.get_state()["seq"]
        received = [sub.recv(timeout=5) for _ in range(end - start)]
        sub.close()
    assert [body["seq"] for _, body in received] == list(range(start + 1, end + 1))
    placed = received[0][1].pop("reservation")
    assert placed["reservation_id"] == 7 and placed["evse_id"] == 2
    faulted_connectors = [{"id": 1, "type": "cCCS2", "state": "Faulted"},
                          {"id": 2, "type": "cType2", "state": "Available"}]
    assert received == [
        ("reservation_update", {"seq": start + 1, "reservation_id": 7,
                                "reservation_status": "Placed", "evse_id": 2}),
        ("evse_reserved", {"seq": start + 2, "evse_id": 2, "reserved": True, "reservation_id": 7,
                           "held_for_non_evse_specific": False}),
        ("evse_state", {"seq": start + 3, "evse_id": 2, "plugged_in": False,
                        "connectors": faulted_connectors}),
        ("reservation_update", {"seq": start + 4, "reservation_id": 7,
                                "reservation_status": "Removed", "evse_id": 2}),
        ("evse_reserved", {"seq": start + 5, "evse_id": 2, "reserved": False,
                           "reservation_id": None, "held_for_non_evse_specific": False}),
    ]


def test_reservation_expires_at_its_expiry_time_not_before(actor):
    with actor.client() as client:
        sub = synced_subscriber(actor, client)
        expiry = time.time() + 0.3
        assert client.reserve_now(reservation_id=3, id_token="T", evse_id=1,
                                  expiry_time=rfc3339(expiry)) == "Accepted"
        while True:
            topic, body = sub.recv(timeout=5)
            if topic == "reservation_update" and body["reservation_status"] == "Expired":
                break
        arrived = time.time()
        sub.close()
        assert body["reservation_id"] == 3
        assert arrived >= expiry
        assert client.get_state()["reservations"] == []


def test_req_client_gets_its_reply_through_the_empty_delimiter(actor, context):
    req = context.socket(zmq.REQ)
    req.connect(actor.command_endpoint)
    req.send(msgpack.packb({"id": "r1", "cmd": "ping"}))
    assert req.poll(5000)
    assert msgpack.unpackb(req.recv()) == {"id": "r1", "ok": True, "result": "pong"}
    req.close()


def test_pipelined_requests_are_answered_in_order(actor):
    with actor.client() as client:
        ids = [client.send("reserve_now", {"request": {
            "reservation_id": n, "id_token": f"T{n}", "evse_id": 1 + n % 2,
            "expiry_time": in_future()}}) for n in range(200)]
        replies = [client.recv() for _ in ids]
    assert [r["id"] for r in replies] == ids
    # Only the first reservation per EVSE can be accepted; the rest find it taken.
    assert [r["result"] for r in replies[:2]] == ["Accepted", "Accepted"]
    assert {r["result"] for r in replies[2:]} == {"Occupied"}


@pytest.mark.parametrize("frame, code", [
    (b"\xc1", "bad_request"),                                     # never valid msgpack
    (msgpack.packb([1, 2]), "bad_request"),                       # not a map
    (msgpack.packb({"id": 1}), "bad_request"),                    # no cmd
    (msgpack.packb({"id": 1, "cmd": "ping", "x": 1}), "bad_request"),
    (msgpack.packb({"id": 1, "cmd": "reserve"}), "unknown_command"),
    (msgpack.packb({"id": 1, "cmd": "reserve_now", "args": {"request": {
        "reservation_id": 1, "id_token": "T", "expiry_time": "tomorrow"}}}), "invalid_argument"),
    (msgpack.packb({"id": 1, "cmd": "reserve_now", "args": {"request": {
        "reservation_id": 1, "id_token": "T", "expiry_time": "2099-01-01T00:00:00Z",
        "connector_type": "CCS"}}}), "invalid_argument"),
    (msgpack.packb({"id": 1, "cmd": "connector_event", "args": {
        "evse_id": 5, "connector_id": 1, "event": "Faulted"}}), "invalid_argument"),
    (msgpack.packb({"id": 1, "cmd": "plug_event", "args": {
        "evse_id": 1, "plugged_in": 1}}), "invalid_argument"),
])
def test_bad_input_gets_its_code_and_changes_nothing(actor, context, frame, code):
    with actor.client() as client:
        assert client.reserve_now(reservation_id=1, id_token="T", evse_id=1,
                                  expiry_time=in_future()) == "Accepted"
        before = client.get_state()
        dealer = context.socket(zmq.DEALER)
        dealer.connect(actor.command_endpoint)
        dealer.send(frame)
        assert dealer.poll(5000)
        reply = msgpack.unpackb(dealer.recv())
        dealer.close()
        assert reply["ok"] is False
        assert reply["error"]["code"] == code
        assert reply["error"]["message"]
        assert client.get_state() == before
        assert client.stats()["errors"] == {code: 1}


def test_error_reply_echoes_the_request_id(actor):
    with actor.client() as client:
        with pytest.raises(CommandFailed) as failed:
            client.call("cancel_reservation", {"reservation_id": "one"})
    assert failed.value.code == "invalid_argument"
    assert "args.reservation_id" in failed.value.message


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_actor_cleanly(actor, sig):
    with actor.client() as client:
        assert client.ping() == "pong"
    assert actor.stop(sig) == 0
    # No stale ipc socket files are left for the next start to trip over.
    for endpoint in (actor.command_endpoint, actor.update_endpoint):
        transport, _, path = endpoint.partition("://")
        if transport == "ipc":
            assert not os.path.exists(path)


@pytest.mark.parametrize("args, says", [
    (["--endpoint", "foo", "ping"], "Invalid argument"),
    (["--server-key", "/etc/hostname", "--client-key", "/etc/hostname", "ping"], "No public key"),
    (["--server-key", "/nonexistent.key", "--client-key", "/nonexistent.key", "ping"], "nonexistent"),
])
def test_reservation_ctl_refuses_an_unusable_command_line_with_one_line_and_exit_2(args, says):
    ctl = Path(sys.executable).with_name("reservation-ctl")
    done = subprocess.run([str(ctl), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert says in done.stderr


def test_an_endpoint_in_use_stops_start_up_with_one_line_and_exit_2(actor):
    done = subprocess.run(
        [sys.executable, "-m", "actor", "--store", ":memory:", "--command-endpoint",
         actor.command_endpoint, "--update-endpoint", "tcp://127.0.0.1:*"],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 2
    problems = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert len(problems) == 1 and "cannot bind" in problems[0], done.stderr
    assert "Traceback" not in done.stderr
