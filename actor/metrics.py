"""Metrics a monitoring system can scrape: the `stats` counters and the time
each request took to decide, in Prometheus' text format over HTTP.

Theory of operation: the HTTP endpoint is a ZeroMQ STREAM socket in the
actor's own poller, so a scrape is one more event in the single-threaded loop
and reads the counters without sharing them across threads. Each message on a
STREAM socket is [connection id, bytes]; an empty one announces a connection
(or its end), and sending one closes it. A request is read until its headers
end (at most MAX_REQUEST_BYTES, across as many reads as it takes), answered,
and its connection closed; nothing else of HTTP is needed by a scraper.

The text format is written here rather than with prometheus-client: it is a
few lines of `# HELP`, `# TYPE` and `name{label="value"} value`, and the
actor's run-time dependencies stay pyzmq and msgspec.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any, Callable
from urllib.parse import urlsplit

import zmq

from protocol.vocabulary import Command, ErrorCode

log = logging.getLogger("reservation_actor")

PREFIX = "reservation_actor_"
DEFAULT_PATH = "/metrics"
# Upper bounds of the decide-time buckets, in seconds: 50 µs .. 100 ms.
DECIDE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
INVALID_COMMAND = "invalid"   # the command label of a request that named no known command
MAX_REQUEST_BYTES = 8 * 1024  # a scraper's GET is a few hundred bytes
MAX_CONNECTIONS = 64          # open at once; the oldest is closed to make room
READS_PER_WAKE = 256          # messages read per wake, so a flood leaves turns to the requests

COUNTER, GAUGE = "counter", "gauge"
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"

# What each `stats` key is as a metric; `pid` is not one. Counters get `_total`.
STATS_METRICS: dict[str, tuple[str, str] | None] = {
    "requests": (COUNTER, "Requests decided (stats.requests)."),
    "errors": (COUNTER, "Requests answered with an error, by error code (stats.errors)."),
    "active_reservations": (GAUGE, "Reservations held now (stats.active_reservations)."),
    "updates_published": (COUNTER, "Updates published (stats.updates_published)."),
    "replies_dropped": (COUNTER, "Replies dropped: the peer was gone or past its high-water "
                                 "mark (stats.replies_dropped)."),
    "requests_shed": (COUNTER, "Requests shed from a peer that does not read its replies "
                               "(stats.requests_shed)."),
    "requests_abandoned": (COUNTER, "Requests dropped undecided: their peer disconnected "
                                    "(stats.requests_abandoned)."),
    "clients_refused": (COUNTER, "Clients refused by CURVE authentication (stats.clients_refused)."),
    "connections_shed": (COUNTER, "Connections shed while out of file descriptors "
                                  "(stats.connections_shed)."),
    "store_failures": (COUNTER, "Failed store commits (stats.store_failures)."),
    "seq": (GAUGE, "Sequence number of the last update (stats.seq)."),
    "uptime_s": (GAUGE, "Seconds since the actor started (stats.uptime_s)."),
    "pid": None,
}
_NAMES = {"uptime_s": "uptime_seconds"}


class MetricsError(ValueError):
    pass


def http_endpoint(url: str) -> tuple[str, str]:
    """(ZeroMQ tcp endpoint to bind, path served) of `http://HOST:PORT[/PATH]`."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or parts.query \
            or parts.fragment or parts.username is not None:
        raise MetricsError(f"{url!r} is not http://HOST:PORT/PATH (e.g. "
                           f"http://127.0.0.1:9464{DEFAULT_PATH})")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"tcp://{host}:{port}", parts.path or DEFAULT_PATH


class DecideTimes:
    """One histogram of decide times per command, fixed buckets."""

    __slots__ = ("by_command", "_invalid")

    def __init__(self) -> None:
        # Per command: the count of each bucket (not cumulative), then of the
        # one past the last bound (+Inf), then the sum; one list, so observing
        # costs one dict look-up (observe runs once per request).
        self.by_command = {label: [0] * (len(DECIDE_BUCKETS) + 1) + [0.0]
                           for label in [*Command, INVALID_COMMAND]}
        self._invalid = self.by_command[INVALID_COMMAND]

    def observe(self, command: str | None, seconds: float) -> None:
        histogram = self.by_command.get(command, self._invalid)
        histogram[bisect.bisect_left(DECIDE_BUCKETS, seconds)] += 1
        histogram[-1] += seconds


def render(stats: dict[str, Any], decide_times: DecideTimes) -> str:
    """The text exposition of `stats` (as the stats command answers it) and the decide times."""
    lines: list[str] = []
    for key, value in stats.items():
        spec = STATS_METRICS.get(key)
        if spec is None:
            continue
        kind, help_text = spec
        name = PREFIX + _NAMES.get(key, key) + ("_total" if kind is COUNTER else "")
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        if key == "errors":
            # Every code, so a rate over a code never seen yet is 0, not absent.
            lines += [f'{name}{{code="{code}"}} {value.get(code, 0)}' for code in ErrorCode]
        else:
            lines.append(f"{name} {value}")
    name = PREFIX + "decide_seconds"
    lines += [f"# HELP {name} Time the loop spent deciding each request, by command.",
              f"# TYPE {name} histogram"]
    bounds = [*(repr(bound) for bound in DECIDE_BUCKETS), "+Inf"]
    for command, histogram in decide_times.by_command.items():
        total = 0
        for bound, count in zip(bounds, histogram):
            total += count
            lines.append(f'{name}_bucket{{command="{command}",le="{bound}"}} {total}')
        lines.append(f'{name}_sum{{command="{command}"}} {histogram[-1]!r}')
        lines.append(f'{name}_count{{command="{command}"}} {total}')
    lines.append("")
    return "\n".join(lines)


def response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8",
             extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n").encode() + body


def answer(request: bytes, path: str, body: Callable[[], str]) -> bytes | None:
    """The response to what a connection has sent so far, None while its
    headers have not all arrived. `body` renders the metrics."""
    end = request.find(b"\r\n\r\n")
    if end < 0:
        if len(request) > MAX_REQUEST_BYTES:
            return response("431 Request Header Fields Too Large",
                            f"a request's headers are at most {MAX_REQUEST_BYTES} bytes\n".encode())
        return None
    words = request[:request.find(b"\r\n")].split(b" ")
    if len(words) != 3 or not words[2].startswith(b"HTTP/1."):
        return response("400 Bad Request", b"expected an HTTP/1.x request line\n")
    method, target, _ = words
    if method != b"GET":
        return response("405 Method Not Allowed", b"only GET is served\n", extra="Allow: GET\r\n")
    if target.split(b"?", 1)[0] != path.encode():
        return response("404 Not Found", f"the metrics are at {path}\n".encode())
    return response("200 OK", body().encode(), EXPOSITION)


class MetricsServer:
    """The HTTP endpoint: a STREAM socket the actor's poller watches; handle()
    when it is readable."""

    def __init__(self, context: zmq.Context, url: str, body: Callable[[], str]) -> None:
        endpoint, self.path = http_endpoint(url)
        self.body = body
        self.socket = context.socket(zmq.STREAM)
        self.socket.setsockopt(zmq.LINGER, 0)
        self._requests: dict[bytes, bytes] = {}   # connection id -> what it sent; oldest first
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError:
            self.socket.close()
            raise

    @property
    def url(self) -> str:
        endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        return f"http://{endpoint.partition('://')[2]}{self.path}"

    def handle(self) -> None:
        sock = self.socket
        requests = self._requests
        for _ in range(READS_PER_WAKE):
            try:
                connection, data = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if not data:
                # A new connection, or the end of one (never both for one id).
                if requests.pop(connection, None) is None:
                    requests[connection] = b""
                    if len(requests) > MAX_CONNECTIONS:
                        self._close(next(iter(requests)))
                continue
            if connection not in requests:
                continue   # what a connection closed here sent meanwhile
            request = requests[connection] + data
            reply = answer(request, self.path, self.body)
            if reply is None:
                requests[connection] = request
                continue
            self._send(connection, reply)
            self._close(connection)

    def _send(self, connection: bytes, data: bytes) -> None:
        try:
            self.socket.send(connection, zmq.SNDMORE | zmq.NOBLOCK)
            self.socket.send(data, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass   # the scraper is gone or not reading: never wait for it

    def _close(self, connection: bytes) -> None:
        self._requests.pop(connection, None)
        self._send(connection, b"")

    def close(self) -> None:
        self.socket.close()
