"""Failures that must stay small (issue 8): a full disk, a REQ peer that sends too
many frames, args of the wrong shape, a restart that must re-decide what it
restores, and one client that floods the actor with expensive requests.

The full-disk tests put the store on a tmpfs of its own (so they need root to
mount one, and are skipped with that reason otherwise) and fill it with a
file, exactly as a full /var would look to the actor.
"""

from __future__ import annotations

import os
import subprocess
import time

import msgpack
import pytest
import zmq
from zmq.utils import z85

from actor.changes import StoredState
from actor.core import ReservationCore
from actor.flow import TRACKED_REPLY_BYTES
from actor.security import ZAP_ENDPOINT, CurveKeys, ZapHandler
from bench.procs import cpu_seconds, station_config
from protocol.client import CommandFailed
from protocol.messages import parse_command
from protocol.vocabulary import Command, ErrorCode

from .conftest import start_actor
from .helpers import in_future, rfc3339, wait_until_subscribed
from .test_core import statuses

LOCAL = dict(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*")


# -- a full disk ------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, and a way to fill it and to free it again."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {done.stderr.strip()}")
    filler = mount_point / "filler"

    class Disk:
        path = mount_point

        def fill(self) -> None:
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError:
                pass   # ENOSPC: the disk is full
            finally:
                os.close(fd)

        def free(self) -> None:
            filler.unlink(missing_ok=True)

    yield Disk()
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def problems(log: list[str]) -> list[str]:
    return [line for line in log if " ERROR " in line or " WARNING " in line]


def test_full_disk_fails_only_writes_and_recovers_when_space_frees(small_disk):
    running = start_actor(**LOCAL, store=str(small_disk.path / "store.sqlite3"))
    try:
        with running.client() as client, running.subscriber() as sub:
            wait_until_subscribed(sub, client)
            assert client.reserve_now(reservation_id=1, id_token="ALICE", evse_id=1,
                                      expiry_time=in_future()) == "Accepted"
            small_disk.fill()
            with pytest.raises(CommandFailed) as failed:
                client.reserve_now(reservation_id=2, id_token="BOB", evse_id=2,
                                   expiry_time=in_future())
            assert failed.value.code == "store_failed"

            # Memory equals the store: nothing is pending, so what only reads is answered.
            state = client.get_state()
            assert [r["reservation_id"] for r in state["reservations"]] == [1]
            assert client.ping() == "pong"
            assert client.exists_reservation(id_token="alice", evse_id=1) == "ReservedForToken"
            assert client.is_charging_possible(2) is True
            stats = client.stats()
            assert stats["store_failures"] == 1
            assert stats["errors"] == {"store_failed": 1}
            # ... and every write still answers store_failed, changing nothing.
            for call in (lambda: client.cancel_reservation(1),
                         lambda: client.connector_event(2, 1, "Faulted")):
                with pytest.raises(CommandFailed) as failed:
                    call()
                assert failed.value.code == "store_failed"
            assert client.get_state() == state

            small_disk.free()
            assert client.reserve_now(reservation_id=2, id_token="BOB", evse_id=2,
                                      expiry_time=in_future()) == "Accepted"
            assert client.cancel_reservation(1) is True
    finally:
        running.stop()
    assert running.process.returncode == 0


def test_full_disk_with_an_expiry_due_backs_off_then_publishes_it_once_stored(small_disk):
    running = start_actor(**LOCAL, store=str(small_disk.path / "store.sqlite3"))
    try:
        with running.client() as client, running.subscriber() as sub:
            wait_until_subscribed(sub, client)
            expiry = time.time() + 1.0
            assert client.reserve_now(reservation_id=7, id_token="ALICE", evse_id=1,
                                      expiry_time=rfc3339(expiry)) == "Accepted"
            _, placed = sub.recv(timeout=5)
            assert sub.recv(timeout=5)[0] == "evse_reserved"
            small_disk.fill()
            while time.time() < expiry + 0.5:    # the expiry falls due while the disk is full
                assert client.ping() == "pong"
            # The actor cannot store the Expired, so it must not publish it; it retries
            # with a backoff instead of spinning (CPU) or logging every attempt.
            lines_before = len(problems(running.log))
            cpu_before, window_start = cpu_seconds(running.process.pid), time.monotonic()
            with pytest.raises(TimeoutError):
                sub.recv(timeout=3)
            cpu_share = (cpu_seconds(running.process.pid) - cpu_before) / (
                time.monotonic() - window_start)
            assert cpu_share < 0.25, f"the actor spins at {cpu_share:.0%} CPU on a full disk"
            assert len(problems(running.log)) - lines_before <= 2, problems(running.log)[-5:]
            assert client.ping() == "pong"
            assert client.stats()["store_failures"] >= 2

            small_disk.free()
            topic, body = sub.recv(timeout=10)      # the backoff is capped at about 5 s
            assert (topic, body["reservation_id"], body["reservation_status"]) == \
                ("reservation_update", 7, "Expired")
            assert body["seq"] == placed["seq"] + 2   # evse_reserved came between
            assert client.get_state()["reservations"] == []
            deadline = time.monotonic() + 5
            while not any("recovered" in line for line in running.log):
                assert time.monotonic() < deadline, "no 'recovered' line in the log"
                time.sleep(0.05)
    finally:
        running.stop()
    # Restarting finds the Expired stored: nothing is ended (or published) twice.
    again = start_actor(**LOCAL, store=str(small_disk.path / "store.sqlite3"))
    try:
        with again.client() as client:
            assert client.get_state()["reservations"] == []
            assert client.stats()["updates_published"] == 0
    finally:
        again.stop()


# -- routing frames and request shape -------------------------------------------------------

def test_req_client_sending_too_many_frames_gets_a_readable_bad_request(context):
    running = start_actor(**LOCAL)
    try:
        req = context.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(running.command_endpoint)
        req.send_multipart([b"x"] * 8 + [msgpack.packb({"id": 1, "cmd": "ping"})])
        assert req.poll(5000), "the REQ socket got no reply it could read"
        # Every frame before the last is echoed as the route, so the REQ sees its
        # eight frames again and the reply last.
        *route, body = req.recv_multipart()
        assert route == [b"x"] * 8
        reply = msgpack.unpackb(body)
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
        assert "frames" in reply["error"]["message"]
        # The REQ socket is not stuck: its next request is answered.
        req.send(msgpack.packb({"id": 2, "cmd": "ping"}))
        assert req.poll(5000)
        assert msgpack.unpackb(req.recv()) == {"id": 2, "ok": True, "result": "pong"}
        req.close()
    finally:
        running.stop()


def test_args_that_is_not_a_map_is_a_bad_request():
    running = start_actor(**LOCAL)
    try:
        with running.client() as client:
            for args in ([1, 2], "request", 5, True):
                for cmd in (Command.PING, Command.RESERVE_NOW):
                    request_id = client.send(cmd, args)
                    reply = client.recv()
                    assert reply["id"] == request_id
                    assert reply["error"]["code"] == ErrorCode.BAD_REQUEST, (args, reply)
                    assert "args" in reply["error"]["message"], (args, reply)
    finally:
        running.stop()


# -- start-up re-decides what it restores -----------------------------------------------------

def test_restore_removes_a_specific_reservation_its_evse_can_no_longer_honour():
    now = 1000.0
    two_ccs = [(1, [(1, "cCCS2"), (2, "cCCS2")]), (2, [(1, "cCCS2")])]
    core = ReservationCore(two_ccs, now=now)
    core.apply(parse_command("connector_event", {"evse_id": 1, "connector_id": 1,
                                                 "event": "Faulted"}), now)
    assert core.apply(parse_command("reserve_now", {"request": {
        "reservation_id": 5, "id_token": "T", "evse_id": 1, "connector_type": "cCCS2",
        "expiry_time": rfc3339(now + 3600)}}), now).result == "Accepted"
    stored = StoredState(seq=core.seq, reservations=core.reservations,
                         evses={1: (False, {1: "Faulted", 2: "Available"})})

    # The operator removes the Available cCCS2 connector from EVSE 1.
    restarted = ReservationCore([(1, [(1, "cCCS2")]), (2, [(1, "cCCS2")])], now=now)
    updates = restarted.restore(stored, now)
    assert statuses(updates) == [(5, "Removed")]
    assert restarted.reservations == []
    # Exactly what the live rule does when that connector faults with the reservation held.
    assert core.apply(parse_command("connector_event", {"evse_id": 1, "connector_id": 2,
                                                        "event": "Faulted"}), now).result
    assert core.reservations == []


# -- one client flooding the actor with expensive requests ------------------------------------

# 200 EVSEs make a get_state reply of about 24 kB, above TRACKED_REPLY_BYTES, so the actor
# tracks whether the flooder reads them; bounds this small park the flooder after a few.
FLOOD_EVSES = 200
FLOOD_LIMITS = {"turn_reply_bytes": 32 * 1024, "peer_unread_bytes": 64 * 1024}
# An unbounded actor decides a whole turn of them (MAX_REQUESTS_PER_TURN, 256) before it reads the other's ping.
FLOOD = 300


def test_a_peer_that_does_not_read_its_replies_does_not_starve_the_others(tmp_path, context):
    """FLOOD get_state requests whose replies are not read must not hold the
    actor: the other client is answered while most of them are still waiting,
    and once the flooding peer reads, it gets every reply, in order."""
    config = station_config(tmp_path, FLOOD_EVSES, tables={"limits": FLOOD_LIMITS})
    running = start_actor("--config", config, **LOCAL)
    try:
        flooder = context.socket(zmq.DEALER)
        flooder.setsockopt(zmq.LINGER, 0)
        flooder.setsockopt(zmq.RCVHWM, 2)      # reads nothing, so keep libzmq's own queue short
        flooder.setsockopt(zmq.RCVBUF, 65536)
        flooder.connect(running.command_endpoint)
        # Connected first, so the flood arrives in one stream: sent while the handshake is
        # under way it can trickle in, and an unbounded actor would then end its turns early.
        flooder.send(msgpack.packb({"id": -1, "cmd": Command.PING}))
        assert flooder.poll(10000)
        flooder.recv()
        for n in range(FLOOD):
            flooder.send(msgpack.packb({"id": n, "cmd": Command.GET_STATE}))
        with running.client() as client:
            assert client.ping() == "pong"
            taken = client.stats()["requests"]
            assert taken < FLOOD // 2, f"{taken} requests decided for a peer that reads nothing"
        frames = []
        while len(frames) < FLOOD:
            assert flooder.poll(10000), f"got only {len(frames)} of {FLOOD} replies"
            frames.append(flooder.recv())
        assert len(frames[0]) >= TRACKED_REPLY_BYTES, "replies this small are not tracked"
        replies = [msgpack.unpackb(frame) for frame in frames]
        assert [r["id"] for r in replies] == list(range(FLOOD))
        assert all(r["ok"] for r in replies)
        with running.client() as client:
            assert client.stats()["replies_dropped"] == 0
        flooder.close()
    finally:
        running.stop()


# -- a malformed ZAP request -------------------------------------------------------------------

@pytest.mark.parametrize("frames", [[b"1.0", b"7", b"x"], [b"1.0"]])
def test_a_short_zap_request_is_refused_and_the_handler_keeps_answering(context, frames):
    public, secret = zmq.curve_keypair()
    handler = ZapHandler(context, CurveKeys(public, secret, frozenset()))
    asker = context.socket(zmq.REQ)
    asker.setsockopt(zmq.LINGER, 0)
    asker.connect(ZAP_ENDPOINT)
    try:
        asker.send_multipart(frames)
        assert handler.socket.poll(5000)
        handler.handle()
        assert asker.poll(5000)
        reply = asker.recv_multipart()
        assert reply[2] == b"400"
        if len(frames) >= 2:
            assert reply[:2] == frames[:2]     # the request id is echoed when there is one
        # A well-formed request after it is still answered (and refused: no key is listed).
        asker.send_multipart([b"1.0", b"8", b"", b"127.0.0.1", b"", b"CURVE", public])
        assert handler.socket.poll(5000)
        handler.handle()
        assert asker.poll(5000)
        assert asker.recv_multipart()[:3] == [b"1.0", b"8", b"400"]
        assert handler.refused == 1
    finally:
        asker.close()
        handler.close()


@pytest.mark.parametrize("version, credential", [
    (b"2.0", None),          # the authorized key, but only ZAP 1.0 exists
    (b"1.0", b"short"),      # a CURVE credential is a 32-byte key
], ids=["another version", "a CURVE credential that is no key"])
def test_a_zap_request_libzmq_would_not_send_is_refused_and_the_handler_keeps_answering(
        context, version, credential):
    public, secret = zmq.curve_keypair()
    handler = ZapHandler(context, CurveKeys(public, secret, frozenset([public])))
    asker = context.socket(zmq.REQ)
    asker.setsockopt(zmq.LINGER, 0)
    asker.connect(ZAP_ENDPOINT)
    try:
        asker.send_multipart([version, b"7", b"", b"127.0.0.1", b"", b"CURVE",
                              credential or z85.decode(public)])
        assert handler.socket.poll(5000)
        handler.handle()
        assert asker.poll(5000)
        assert asker.recv_multipart()[:3] == [b"1.0", b"7", b"400"]
        asker.send_multipart([b"1.0", b"8", b"", b"127.0.0.1", b"", b"CURVE", z85.decode(public)])
        assert handler.socket.poll(5000)
        handler.handle()
        assert asker.poll(5000)
        assert asker.recv_multipart() == [b"1.0", b"8", b"200", b"OK", public, b""]
    finally:
        asker.close()
        handler.close()
