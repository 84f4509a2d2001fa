"""Load, soak and SIGTERM under load (issue 5), on loopback only and bounded in time.

The actor runs as users run it (`python -m actor`, INFO log) in its own process;
the clients run in their own processes (multiprocessing), each with its own
DEALER socket, pipelining WINDOW requests. Every client reserves only on its own
EVSEs, so it can predict every reply exactly from what it sent before (the actor
decides one peer's requests in the order they were sent): a wrong result, a lost
reply, a duplicated reply and an unknown id are all counted and must be zero.

The actor's stderr goes to a file (bench.procs, through conftest's start_actor) rather
than to a pipe the test process drains: at INFO it writes two lines per reserve/cancel
cycle, and a reader thread here would compete with the actor and the clients for the
CPUs being measured.
"""

from __future__ import annotations

import random
import re
import signal
import socket
import time
from collections import Counter

import msgpack
import pytest
import zmq

from bench.procs import Workers, serve_commands, station_config
from protocol.client import Client
from protocol.vocabulary import ConnectorType
from .conftest import RunningActor, endpoints_for, start_actor
from .helpers import rfc3339


WINDOW = 64                 # requests in flight per client
CLIENTS = 4
EVSES_PER_CLIENT = 4
LOAD_SECONDS = 3.0          # the fixed time the load test runs for
REPLY_TIMEOUT_MS = 10_000   # a client waiting this long for a reply counts the rest as lost

# Soak: RSS after SOAK_CYCLES reserve/cancel cycles must be within RSS_GROWTH of
# RSS after the first SOAK_CYCLES // 10. Issue 5 asks for 1M against 100k; the
# unmarked CI version runs CI_CYCLES (see test_rss_is_flat_over_reserve_cancel_cycles).
SOAK_CYCLES = 1_000_000
CI_CYCLES = 30_000
RSS_GROWTH = 0.10



def write_station(directory: str, evses: int) -> str:
    """A station of `evses` EVSEs (ids 1..evses), each with one cCCS2 connector."""
    return station_config(directory, evses, (ConnectorType.cCCS2,))


# -- the actor process ---------------------------------------------------------------------


LOOPBACK = dict(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*")


@pytest.fixture
def actors():
    """A list to put started actors in; any still running at the end is killed."""
    started: list[RunningActor] = []
    yield started
    for actor in started:
        actor.kill()


# -- client processes --------------------------------------------------------------------------


class Ledger:
    """What one client sent and what came back, by request id (1, 2, 3, ...).

    expected[i] is the result request i must get; answered[i] counts its replies."""

    def __init__(self) -> None:
        self.expected: list = [None]
        self.answered = bytearray(1)
        self.wrong: list = []           # (request id, expected, reply), first few
        self.wrong_count = 0
        self.unknown = 0                # replies whose id was never sent
        self.out_of_order = 0
        self.last = 0
        self.peak_in_flight = 0

    def sent(self, expected) -> int:
        self.expected.append(expected)
        self.answered.append(0)
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return len(self.expected) - 1

    def reply(self, reply: dict) -> None:
        rid = reply.get("id")
        if type(rid) is not int or not 0 < rid < len(self.expected):
            self.unknown += 1
            return
        if rid != self.last + 1:
            self.out_of_order += 1
        self.last = max(self.last, rid)
        self.answered[rid] = min(255, self.answered[rid] + 1)
        result = reply.get("result") if reply.get("ok") else ("error", reply.get("error"))
        if result != self.expected[rid]:
            self.wrong_count += 1
            if len(self.wrong) < 5:
                self.wrong.append((rid, self.expected[rid], reply))

    @property
    def in_flight(self) -> int:
        return len(self.expected) - 1 - self.last

    def summary(self) -> dict:
        answered = self.answered
        return {
            "sent": len(self.expected) - 1,
            "lost": answered.count(0) - 1,              # index 0 is not a request
            "duplicated": len(answered) - answered.count(0) - answered.count(1),
            "unknown": self.unknown,
            "out_of_order": self.out_of_order,
            "wrong": self.wrong_count,
            "wrong_examples": self.wrong,
            "peak_in_flight": self.peak_in_flight,
        }


class LoadClient:
    """Runs in a client process: one DEALER, EVSEs (index * per_client + 1 ...) of its own."""

    def __init__(self, endpoint: str, index: int, evses_per_client: int) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.index = index
        self.token = f"CLIENT{index}"
        self.evses = [index * evses_per_client + k + 1 for k in range(evses_per_client)]
        self.next_reservation = (index + 1) * 10_000_000
        self.expiry = rfc3339(time.time() + 86400)
        self.ledger = Ledger()

    def close(self) -> None:
        self.sock.close()
        self.context.term()

    def send(self, cmd: str, args: dict, expected) -> None:
        request_id = self.ledger.sent(expected)
        self.sock.send(msgpack.packb({"id": request_id, "cmd": cmd, "args": args}))

    def reserve(self, evse: int, expected: str) -> int:
        rid = self.next_reservation
        self.next_reservation += 1
        self.send("reserve_now", {"request": {
            "reservation_id": rid, "id_token": self.token, "evse_id": evse,
            "connector_type": "cCCS2", "expiry_time": self.expiry}}, expected)
        return rid

    def cancel(self, rid: int, expected: bool) -> None:
        self.send("cancel_reservation", {"reservation_id": rid}, expected)

    def receive_one(self) -> bool:
        if not self.sock.poll(REPLY_TIMEOUT_MS):
            return False
        self.ledger.reply(msgpack.unpackb(self.sock.recv()))
        return True

    def drain(self) -> None:
        while self.ledger.in_flight and self.receive_one():
            pass
        # Anything more (a duplicate) arrives right behind the last reply.
        while self.sock.poll(100):
            self.ledger.reply(msgpack.unpackb(self.sock.recv()))

    def run_mix(self, duration: float, seed: int) -> dict:
        """For `duration` seconds keep WINDOW requests in flight: reserve on one
        of its EVSEs (Accepted if free, else Occupied), cancel a held reservation
        (true) or one already ended (false)."""
        rng = random.Random(seed)
        held: dict[int, int] = {}          # EVSE -> reservation id, as the actor must see it
        ended: list[int] = []
        end = time.monotonic() + duration
        while time.monotonic() < end:
            while self.ledger.in_flight < WINDOW:
                roll = rng.random()
                if roll < 0.5:
                    evse = rng.choice(self.evses)
                    if evse in held:
                        self.reserve(evse, "Occupied")
                    else:
                        held[evse] = self.reserve(evse, "Accepted")
                elif roll < 0.85 and held:
                    evse = rng.choice(list(held))
                    rid = held.pop(evse)
                    self.cancel(rid, True)
                    ended.append(rid)
                else:
                    # Ended, or never placed by anyone.
                    rid = rng.choice(ended) if ended and rng.random() < 0.7 else self.next_reservation + 5
                    self.cancel(rid, False)
            if not self.receive_one():
                break
        self.drain()
        return {**self.ledger.summary(), "held": {rid: evse for evse, rid in held.items()},
                "results": self.result_counts()}

    def run_cycles(self, cycles: int) -> dict:
        """`cycles` reserve/cancel pairs on its EVSEs in turn, WINDOW in flight;
        every reserve must be Accepted and every cancel true."""
        evses, n = self.evses, len(self.evses)
        for k in range(cycles):
            while self.ledger.in_flight > WINDOW - 2:
                if not self.receive_one():
                    return self.finish()
            rid = self.reserve(evses[k % n], "Accepted")
            self.cancel(rid, True)
        return self.finish()

    def finish(self) -> dict:
        self.drain()
        return self.ledger.summary()

    def result_counts(self) -> dict[str, int]:
        """How many requests expected each result ("Accepted", "True", ...)."""
        return dict(Counter(map(str, self.ledger.expected[1:])))


def client_process(conn, index: int, endpoint: str, evses_per_client: int) -> None:
    """bench.procs.Workers' target: a connected LoadClient answering ("mix", duration),
    seeded by its index, and ("cycles", n), each with a fresh ledger."""
    client = LoadClient(endpoint, index, evses_per_client)
    try:
        client.send("ping", {}, "pong")
        client.drain()

        def run(command: tuple) -> dict:
            client.ledger = Ledger()
            if command[0] == "mix":
                return client.run_mix(command[1], index)
            return client.run_cycles(*command[1:])

        serve_commands(conn, run)
    finally:
        client.close()


def clients(endpoint: str) -> Workers:
    """CLIENTS client processes on `endpoint`, each reserving only its own EVSEs."""
    return Workers(client_process, CLIENTS, endpoint, EVSES_PER_CLIENT)


def assert_clean(summary: dict, who: str) -> None:
    problems = {key: summary[key] for key in
                ("lost", "duplicated", "unknown", "out_of_order", "wrong") if summary[key]}
    assert not problems, f"{who}: {problems}; first wrong replies: {summary['wrong_examples']}"


def parent_client(endpoint: str) -> Client:
    return Client(endpoint, timeout=REPLY_TIMEOUT_MS / 1000, context=zmq.Context.instance())


# -- load ----------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_pipelining_client_processes_get_every_reply_once_and_right(short_tmp, actors):
    station = write_station(short_tmp, CLIENTS * EVSES_PER_CLIENT)
    actor = start_actor("--config", station, **LOOPBACK)
    actors.append(actor)
    with clients(actor.command_endpoint) as workers:
        results = workers.ask(("mix", LOAD_SECONDS), LOAD_SECONDS + 60)
    for index, summary in enumerate(results):
        assert_clean(summary, f"client {index}")
        assert summary["peak_in_flight"] == WINDOW, summary
        # The mix exercised every outcome it predicts.
        assert set(summary["results"]) == {"Accepted", "Occupied", "True", "False"}, summary
    sent = sum(summary["sent"] for summary in results)
    print(f"\nload: {CLIENTS} client processes, {sent} requests in {LOAD_SECONDS} s "
          f"({sent / LOAD_SECONDS:.0f}/s), every one answered once, as predicted")
    assert sent >= CLIENTS * WINDOW * 10, "the load test hardly loaded anything"
    with parent_client(actor.command_endpoint) as client:
        state = client.get_state()
        stats = client.stats()
    held = {rid: evse for summary in results for rid, evse in summary["held"].items()}
    assert {r["reservation_id"]: r["evse_id"] for r in state["reservations"]} == held
    assert stats["replies_dropped"] == 0
    assert stats["errors"] == {}
    # Every request the clients sent reached the actor once: theirs, a ping each, these two.
    assert stats["requests"] == sent + CLIENTS + 2


# -- soak: memory stays flat ----------------------------------------------------------------------


def rss_after_cycles(directory: str, cycles: int, actors: list) -> tuple[int, int]:
    """(RSS after the first cycles // 10 reserve/cancel cycles, RSS after all
    `cycles`), in KiB, the cycles spread over CLIENTS pipelining processes."""
    station = write_station(directory, CLIENTS * EVSES_PER_CLIENT)
    actor = start_actor("--config", station, **LOOPBACK)
    actors.append(actor)
    first = cycles // 10
    per_client = [first // CLIENTS, (cycles - first) // CLIENTS]
    rss = []
    started = time.monotonic()
    with clients(actor.command_endpoint) as workers:
        for n in per_client:
            for index, summary in enumerate(workers.ask(("cycles", n), 3600)):
                assert_clean(summary, f"client {index}")
                assert summary["sent"] == 2 * n
            rss.append(actor.rss_kib())
    elapsed = time.monotonic() - started
    with parent_client(actor.command_endpoint) as client:
        stats = client.stats()
    done = sum(per_client) * CLIENTS
    assert stats["active_reservations"] == 0
    assert stats["replies_dropped"] == 0 and stats["errors"] == {}
    assert stats["requests"] == 2 * done + CLIENTS + 1
    print(f"\nsoak: {done} reserve/cancel cycles in {elapsed:.1f} s ({done / elapsed:.0f}/s); "
          f"actor RSS {rss[0]} KiB after {per_client[0] * CLIENTS}, {rss[1]} KiB after {done} "
          f"({(rss[1] / rss[0] - 1) * 100:+.1f}%)")
    return rss[0], rss[1]


@pytest.mark.timeout(600)
def test_rss_is_flat_over_reserve_cancel_cycles(short_tmp, actors):
    """The CI size of the soak: CI_CYCLES cycles against CI_CYCLES // 10."""
    first, last = rss_after_cycles(short_tmp, CI_CYCLES, actors)
    assert last <= first * (1 + RSS_GROWTH), (first, last)


@pytest.mark.soak
@pytest.mark.timeout(7200)
def test_rss_after_a_million_cycles_is_within_10_percent_of_after_100k(short_tmp, actors):
    first, last = rss_after_cycles(short_tmp, SOAK_CYCLES, actors)
    assert last <= first * (1 + RSS_GROWTH), (first, last)


# -- SIGTERM under load ---------------------------------------------------------------------------

TERM_EVSES = 200
TERM_AFTER = (300, 3000)    # replies received before SIGTERM, drawn per run from a seeded generator
EXIT_TIMEOUT = 20.0         # seconds after SIGTERM by which an actor that has not exited is hung


def stopped_after(log: str) -> int:
    """The request count of the actor's 'stopped after N requests' line."""
    found = re.findall(r"stopped after (\d+) requests", log)
    assert len(found) == 1, log[-2000:]
    return int(found[0])


def port_is_free(endpoint: str) -> bool:
    """True if nothing listens on a tcp://127.0.0.1:PORT endpoint any more.
    SO_REUSEADDR, as ZeroMQ binds: the closed connections' TIME_WAIT does not count."""
    port = int(endpoint.rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
    return True


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_sigterm_under_load_answers_what_it_committed_and_exits_0(short_tmp, actors, transport):
    """A client keeps WINDOW reserve/cancel requests in flight against an actor on a
    file store; SIGTERM arrives mid-stream. The actor finishes the turn it is in
    (commits, answers, publishes), closes its sockets and exits 0.
    Restarted on the same store and endpoints, it holds exactly what the replies
    said: every Accepted reservation not cancelled, no cancelled one, and nothing
    whose reply never came (what it committed, it answered)."""
    station = write_station(short_tmp, TERM_EVSES)
    store = f"{short_tmp}/store.sqlite3"
    actor = start_actor("--config", station, **endpoints_for(transport, short_tmp), store=store)
    actors.append(actor)
    rng = random.Random(f"sigterm-{transport}")
    term_after = rng.randint(*TERM_AFTER)
    expiry = rfc3339(time.time() + 3600)

    as_sent: dict[int, int] = {}        # EVSE -> reservation id, once every request sent is decided
    held: dict[int, int] = {}           # reservation id -> EVSE, as the replies said
    cancelled: set[int] = set()         # a cancel answered true
    sent: dict[int, tuple] = {}         # request id -> (cmd, reservation id, EVSE, expected), no reply yet
    replies = 0
    next_rid = 1
    terminated_at = exited_at = hung_at = None

    def take(reply: dict) -> None:
        nonlocal replies
        replies += 1
        assert reply["id"] in sent, f"a reply to nothing in flight: {reply}"
        cmd, rid, evse, expected = sent.pop(reply["id"])
        assert reply.get("result") == expected, (cmd, rid, evse, reply)
        if cmd == "reserve" and expected == "Accepted":
            held[rid] = evse
        elif cmd == "cancel":
            del held[rid]
            cancelled.add(rid)

    with Client(actor.command_endpoint, context=zmq.Context.instance()) as client:
        while exited_at is None:
            while len(sent) < WINDOW:
                if as_sent and rng.random() < 0.4:
                    evse = rng.choice(list(as_sent))
                    rid = as_sent.pop(evse)
                    request_id = client.send("cancel_reservation", {"reservation_id": rid})
                    sent[request_id] = ("cancel", rid, evse, True)
                else:
                    rid, evse = next_rid, rng.randint(1, TERM_EVSES)
                    next_rid += 1
                    expected = "Occupied" if evse in as_sent else "Accepted"
                    if expected == "Accepted":
                        as_sent[evse] = rid
                    request_id = client.send("reserve_now", {"request": {
                        "reservation_id": rid, "id_token": f"T{rid}", "evse_id": evse,
                        "expiry_time": expiry}})
                    sent[request_id] = ("reserve", rid, evse, expected)
            try:
                take(client.recv(timeout=0.02 if terminated_at else 10))
            except TimeoutError:
                assert terminated_at, "the actor stopped answering before SIGTERM"
                if actor.process.poll() is not None:
                    exited_at = time.monotonic()
                else:
                    assert time.monotonic() < hung_at, f"running {EXIT_TIMEOUT} s after SIGTERM"
            if terminated_at is None and replies >= term_after:
                actor.process.send_signal(signal.SIGTERM)
                terminated_at = time.monotonic()
                hung_at = terminated_at + EXIT_TIMEOUT
                replies_before_term = replies
        # Whatever it sent before exiting may still be on its way.
        while True:
            try:
                take(client.recv(timeout=0.5))
            except TimeoutError:
                break

    assert actor.process.wait(EXIT_TIMEOUT) == 0
    first_log = "".join(actor.log)
    # It stopped mid-stream: requests were still in flight, never read, never answered.
    assert sent, "SIGTERM did not land mid-stream"
    # Every request it read was answered before it exited (none dropped at exit).
    assert stopped_after(first_log) == replies, (replies, first_log[-1000:])
    assert "Traceback" not in first_log

    # The process is gone and its endpoints are free: the restart binds the same ones.
    if transport == "tcp":
        assert port_is_free(actor.command_endpoint) and port_is_free(actor.update_endpoint)
    restarted = start_actor("--config", station, command=actor.command_endpoint,
                            update=actor.update_endpoint, store=store)
    actors.append(restarted)
    assert (restarted.command_endpoint, restarted.update_endpoint) == \
        (actor.command_endpoint, actor.update_endpoint)
    with Client(restarted.command_endpoint, context=zmq.Context.instance()) as client:
        present = {r["reservation_id"]: r["evse_id"] for r in client.get_state()["reservations"]}
    lost = {rid: evse for rid, evse in held.items() if present.get(rid) != evse}
    assert not lost, f"acknowledged reservations missing after restart: {lost}"
    resurrected = cancelled & present.keys()
    assert not resurrected, f"cancelled reservations came back: {sorted(resurrected)}"
    unanswered = present.keys() - held.keys()
    assert not unanswered, f"committed but never answered: {sorted(unanswered)}"
    assert len(held) > 0 and len(cancelled) > 0
    print(f"\nSIGTERM after {replies_before_term} replies ({transport}): "
          f"{replies - replies_before_term} more answered, exit 0 in "
          f"{exited_at - terminated_at:.3f} s, {len(sent)} requests left unread, "
          f"{len(held)} held / {len(cancelled)} cancelled, all as answered after restart")
    assert restarted.process.poll() is None
    restarted.process.send_signal(signal.SIGTERM)
    assert restarted.process.wait(EXIT_TIMEOUT) == 0
