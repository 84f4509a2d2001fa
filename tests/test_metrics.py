"""The Prometheus endpoint as a monitoring system meets it: the real actor
started with --metrics-endpoint, scraped over real HTTP, the text read with
prometheus-client's own parser; and the renderer and the HTTP request reader
on plain values and bytes."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actor.config import Config, ConfigError, config_from_dict
from actor.metrics import (
    DECIDE_BUCKETS, INVALID_COMMAND, MAX_REQUEST_BYTES, STATS_METRICS, DecideTimes, MetricsError,
    answer, http_endpoint, render,
)
from actor.server import Actor
from actor.store import MemoryStore
from bench.procs import free_port
from protocol.client import CommandFailed
from protocol.vocabulary import Command, ErrorCode

from .conftest import start_actor
from .helpers import in_future

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = dict(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*")


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of an exposition, as Prometheus reads it."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# -- the renderer and the request reader, on plain values ------------------------------------

def some_stats() -> dict:
    return Actor(Config(), MemoryStore())._stats()


def test_every_stats_key_is_a_metric_or_named_as_not_one():
    assert set(some_stats()) == set(STATS_METRICS)


def test_render_reads_back_as_the_stats_and_cumulative_buckets():
    stats = {**some_stats(), "requests": 7, "errors": {ErrorCode.BAD_REQUEST: 2},
             "active_reservations": 3, "seq": 41}
    times = DecideTimes()
    for seconds in (0.00001, 0.00005, 0.0003, 0.2):
        times.observe(Command.RESERVE_NOW, seconds)
    times.observe("no_such_command", 0.001)
    times.observe(None, 0.001)
    read = samples(render(stats, times))
    assert read[("reservation_actor_requests_total", ())] == 7
    assert read[("reservation_actor_errors_total", (("code", "bad_request"),))] == 2
    assert read[("reservation_actor_errors_total", (("code", "internal"),))] == 0
    assert read[("reservation_actor_active_reservations", ())] == 3
    assert read[("reservation_actor_seq", ())] == 41
    assert not any(name.endswith("pid") for name, _ in read)

    def bucket(command: str, le: str) -> float:
        return read[("reservation_actor_decide_seconds_bucket",
                     (("command", command), ("le", le)))]
    # le is "at most": 50 µs falls in the 50 µs bucket; 0.2 s only in +Inf.
    assert bucket(Command.RESERVE_NOW, "5e-05") == 2
    assert bucket(Command.RESERVE_NOW, "0.0005") == 3
    assert bucket(Command.RESERVE_NOW, repr(DECIDE_BUCKETS[-1])) == 3
    assert bucket(Command.RESERVE_NOW, "+Inf") == 4
    assert read[("reservation_actor_decide_seconds_count",
                 (("command", Command.RESERVE_NOW),))] == 4
    assert read[("reservation_actor_decide_seconds_sum",
                 (("command", Command.RESERVE_NOW),))] == pytest.approx(0.20036)
    assert read[("reservation_actor_decide_seconds_count", (("command", INVALID_COMMAND),))] == 2
    assert read[("reservation_actor_decide_seconds_count", (("command", Command.PING),))] == 0


def body() -> str:
    return "metrics here\n"


def status(reply: bytes) -> str:
    return reply.split(b"\r\n", 1)[0].decode()


def test_a_request_split_across_reads_is_answered_once_its_headers_end():
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"
    for cut in range(len(request)):
        assert answer(request[:cut], "/metrics", body) is None
    reply = answer(request, "/metrics", body)
    assert status(reply) == "HTTP/1.1 200 OK"
    assert reply.endswith(b"\r\n\r\nmetrics here\n")
    assert b"Content-Length: 13\r\n" in reply and b"Connection: close\r\n" in reply


@pytest.mark.parametrize("request_bytes, expected", [
    (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK"),
    (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
    (b"GET /metricsX HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
    (b"POST /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    (b"GET  /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    (b"X" * (MAX_REQUEST_BYTES + 1), "HTTP/1.1 431 Request Header Fields Too Large"),
], ids=["query", "root", "prefix", "post", "tls", "http-0.9", "two-spaces", "oversized"])
def test_answer(request_bytes, expected):
    assert status(answer(request_bytes, "/metrics", body)) == expected


@pytest.mark.parametrize("url, bound", [
    ("http://127.0.0.1:9464/metrics", ("tcp://127.0.0.1:9464", "/metrics")),
    ("http://127.0.0.1:9464", ("tcp://127.0.0.1:9464", "/metrics")),
    ("http://[::1]:9464/m", ("tcp://[::1]:9464", "/m")),
    ("http://0.0.0.0:80/x/y", ("tcp://0.0.0.0:80", "/x/y")),
])
def test_http_endpoint(url, bound):
    assert http_endpoint(url) == bound


@pytest.mark.parametrize("url", [
    "tcp://127.0.0.1:9464", "https://127.0.0.1:9464/metrics", "http://127.0.0.1/metrics",
    "http://127.0.0.1:99999/metrics", "http://:9464/metrics", "http://127.0.0.1:9464/m?x=1",
    "127.0.0.1:9464",
])
def test_what_is_not_an_http_endpoint(url):
    with pytest.raises(MetricsError, match="http://HOST:PORT/PATH"):
        http_endpoint(url)


def test_the_config_key_is_checked_like_every_key():
    assert config_from_dict({"endpoints": {"metrics": "http://127.0.0.1:1/m"}}).metrics_endpoint \
        == "http://127.0.0.1:1/m"
    assert Config().metrics_endpoint is None
    with pytest.raises(ConfigError, match="endpoints.metrics"):
        config_from_dict({"endpoints": {"metrics": "127.0.0.1:1"}})
    with pytest.raises(ConfigError, match="endpoints.metrics must be str"):
        config_from_dict({"endpoints": {"metrics": 9464}})


# -- the real actor, scraped over HTTP -----------------------------------------------------

@pytest.fixture
def scraped():
    port = free_port()
    running = start_actor("--metrics-endpoint", f"http://127.0.0.1:{port}/metrics", **LOOPBACK)
    running.metrics_url = f"http://127.0.0.1:{port}/metrics"
    yield running
    running.kill()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


def reserve(client, reservation_id: int, evse_id: int) -> str:
    return client.reserve_now(reservation_id=reservation_id, id_token=f"T{reservation_id}",
                              expiry_time=in_future(), evse_id=evse_id)


def test_the_scrape_counts_what_stats_counts_and_times_each_command(scraped):
    with scraped.client() as client:
        assert reserve(client, 1, 1) == "Accepted"
        assert reserve(client, 2, 2) == "Accepted"
        assert client.cancel_reservation(1) is True
        with pytest.raises(CommandFailed):
            client.call("no_such_command")
        with pytest.raises(CommandFailed):
            client.call(Command.CANCEL_RESERVATION, {"reservation_id": "one"})
        stats = client.stats()
    read = samples(scrape(scraped.metrics_url))
    assert read[("reservation_actor_requests_total", ())] == stats["requests"] == 6
    for code in ErrorCode:
        assert read[("reservation_actor_errors_total", (("code", code),))] == \
            stats["errors"].get(code, 0)
    assert stats["errors"] == {ErrorCode.UNKNOWN_COMMAND: 1, ErrorCode.INVALID_ARGUMENT: 1}
    for key in ("active_reservations", "seq"):
        assert read[(f"reservation_actor_{key}", ())] == stats[key]
    for key in ("updates_published", "replies_dropped", "requests_shed", "requests_abandoned",
                "clients_refused", "connections_shed", "store_failures"):
        assert read[(f"reservation_actor_{key}_total", ())] == stats[key]
    assert stats["active_reservations"] == 1 and stats["updates_published"] > 0
    assert read[("reservation_actor_uptime_seconds", ())] >= stats["uptime_s"]

    def decided(command: str) -> float:
        return read[("reservation_actor_decide_seconds_count", (("command", command),))]
    assert decided(Command.RESERVE_NOW) == 2
    assert decided(Command.CANCEL_RESERVATION) == 2   # the one refused for its args too
    assert decided(Command.STATS) == 1
    assert decided(INVALID_COMMAND) == 1
    assert decided(Command.PING) == 0
    # Every request decided is in exactly one histogram.
    assert sum(decided(c) for c in [*Command, INVALID_COMMAND]) == stats["requests"]
    assert 0 < read[("reservation_actor_decide_seconds_sum",
                     (("command", Command.RESERVE_NOW),))]


def http_exchange(port: int, *parts: bytes) -> bytes:
    """Send `parts` one write each, then read until the actor closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for part in parts:
            conn.sendall(part)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received


def test_a_request_in_pieces_other_paths_and_bad_requests_leave_the_actor_serving(scraped):
    port = int(scraped.metrics_url.split(":")[2].split("/")[0])
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)
    assert refused.value.code == 404
    pieces = http_exchange(port, b"GE", b"T /metr", b"ics HTTP/1.1\r\nHost: a\r", b"\n\r\n")
    assert pieces.startswith(b"HTTP/1.1 200 OK\r\n")
    assert samples(pieces.split(b"\r\n\r\n", 1)[1].decode())
    assert http_exchange(port, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    oversized = http_exchange(port, b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 2000)
    assert oversized.startswith(b"HTTP/1.1 431 ")
    # A scraper that connects and says nothing holds no one up.
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        with scraped.client() as client:
            assert client.ping() == "pong"
        assert scrape(scraped.metrics_url)
    assert scraped.process.poll() is None


def test_many_idle_connections_do_not_keep_a_scrape_out(scraped):
    port = int(scraped.metrics_url.split(":")[2].split("/")[0])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(100)]
    try:
        assert scrape(scraped.metrics_url)
        with scraped.client() as client:
            assert client.ping() == "pong"
        # Past MAX_CONNECTIONS the oldest are closed, so they hold no memory.
        assert idle[0].recv(1) == b""
        assert select.select(idle[-1:], [], [], 0)[0] == []
    finally:
        for conn in idle:
            conn.close()


def test_the_config_key_serves_metrics(short_tmp):
    port = free_port()
    config = Path(short_tmp) / "station.toml"
    config.write_text(f'[endpoints]\nmetrics = "http://127.0.0.1:{port}/scrape"\n')
    running = start_actor("--config", str(config), **LOOPBACK)
    try:
        assert any(f"serving metrics on http://127.0.0.1:{port}/scrape" in line
                   for line in running.log)
        assert "reservation_actor_requests_total 0" in scrape(f"http://127.0.0.1:{port}/scrape")
    finally:
        running.kill()


def test_no_metrics_endpoint_without_the_flag():
    running = start_actor(**LOOPBACK)
    try:
        assert not any("metrics" in line for line in running.log)
    finally:
        running.kill()


def run_actor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actor", "--store", ":memory:",
                           "--command-endpoint", "tcp://127.0.0.1:0",
                           "--update-endpoint", "tcp://127.0.0.1:0", *args],
                          capture_output=True, text=True, timeout=20, cwd=ROOT)


@pytest.mark.parametrize("url, says", [
    ("http://0.0.0.0:9464/metrics", "--insecure"),
    ("9464", "http://HOST:PORT/PATH"),
])
def test_an_exposed_or_malformed_metrics_endpoint_is_one_line_exit_2(url, says):
    done = run_actor("--metrics-endpoint", url)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("reservation-actor:")]
    assert len(errors) == 1 and url in errors[0] and says in errors[0], done.stderr
    assert "serving" not in done.stderr and "Traceback" not in done.stderr


def test_a_metrics_port_in_use_is_one_line_exit_2():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        url = f"http://127.0.0.1:{taken.getsockname()[1]}/metrics"
        done = run_actor("--metrics-endpoint", url)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("reservation-actor:")]
    assert len(errors) == 1 and url in errors[0] and "in use" in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_insecure_serves_exposed_metrics_with_a_warning():
    port = free_port()
    running = start_actor("--insecure", "--metrics-endpoint", f"http://0.0.0.0:{port}/metrics",
                          **LOOPBACK)
    try:
        assert any(" WARNING " in line and "INSECURE" in line and f"0.0.0.0:{port}" in line
                   for line in running.log)
        assert scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        running.kill()
