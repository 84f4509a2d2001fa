"""Server processes for the benchmarks and the tests: the actor, the bare echo and the
bare publisher, and the one launcher that starts each of them.

Each runs in its own process, exactly as a user runs it (`python -m actor`,
`python -m bench.echo`), with stderr sent to a file: the bound endpoints are
read from its "bound" log line (so `tcp://127.0.0.1:*` works), and the actor's
per-reservation INFO lines cost what they cost in production without a reader
in the measuring process competing for the CPUs. Every process started here is
killed at interpreter exit if nobody stopped it, and its log file removed.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import msgpack
import zmq

from bench import c
from bench.echo import write_c_script
from protocol.vocabulary import Command, ConnectorType

ROOT = Path(__file__).resolve().parent.parent

# What each server logs once its sockets are bound; the groups are its endpoints.
ACTOR_BOUND = re.compile(r"serving commands on (\S+), updates on (\S+)")
ECHO_BOUND = re.compile(r"echo serving on (\S+)")
PUB_BOUND = re.compile(r"publisher serving on (\S+), updates on (\S+)")
FLOOR_BOUND = re.compile(r"floor serving on (\S+), updates on (\S+)")
# An OCPP station (reservation-ocpp, the ocpp suite's null station): connected to its CSMS.
OCPP_CONNECTED = re.compile(r"connected to (\S+)")
FLOOR_SCRIPT = "floor-script.msgpack"   # what start_floor recorded, in its directory

_live: set[subprocess.Popen] = set()
_logs: set[str] = set()


def _kill_all() -> None:
    for process in list(_live):
        if process.poll() is None:
            process.kill()
            process.wait()
    for path in list(_logs):
        try:
            os.unlink(path)
        except OSError:
            pass


atexit.register(_kill_all)


def track(process: subprocess.Popen) -> None:
    """Have a process started elsewhere killed at exit too (untrack() once stopped)."""
    _live.add(process)


def untrack(process: subprocess.Popen) -> None:
    _live.discard(process)


def rss_kib(pid: int) -> int:
    """VmRSS of process `pid`, in KiB (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process `pid` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A started server process: its bound endpoints, its process and its log.

    The log stays readable after the process ends (a test reads why it exited);
    close() removes it, and so does interpreter exit."""

    def __init__(self, name: str, process: subprocess.Popen, log_path: str) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self.endpoints: tuple[str, ...] = ()

    @property
    def endpoint(self) -> str:
        return self.endpoints[0]

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def signal(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `sig` (if still running) and return the exit status; raises
        subprocess.TimeoutExpired if it does not exit within `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        status = self.process.wait(timeout)
        _live.discard(self.process)
        return status

    def stop(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        try:
            return self.signal(signal.SIGTERM, timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        return self.signal(signal.SIGKILL)

    def close(self) -> None:
        """Stop it and remove its log."""
        self.stop()
        _logs.discard(self.log_path)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


class ServerExited(RuntimeError):
    """A server exited before binding (an operator mistake it refused, say)."""

    def __init__(self, name: str, status: int, log: str) -> None:
        super().__init__(f"{name} exited with status {status} before binding:\n{log}")
        self.status = status
        self.log = log


def start_process(name: str, argv: list[str], bound: re.Pattern, *, env: dict | None = None,
                  timeout: float = 30.0, executable: str = sys.executable) -> Server:
    """`python ARGV...` (a module, `-m actor`, as its console script runs it; or
    another `executable`) in this project's directory, with `env` added to the environment; returns once
    its log shows `bound`, whose groups become the server's endpoints. A process
    that exits or does not bind within `timeout` raises RuntimeError with its log."""
    log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
    _logs.add(log.name)
    try:
        process = subprocess.Popen([executable, *argv], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT,
                                   env={**os.environ, **env} if env else None)
    finally:
        log.close()
    _live.add(process)
    server = Server(name, process, log.name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = bound.search(server.log())
        if match:
            server.endpoints = match.groups()
            return server
        if process.poll() is not None:
            break
        time.sleep(0.01)
    text = server.log()
    server.close()
    if process.returncode is not None and process.returncode != -signal.SIGKILL:
        raise ServerExited(name, process.returncode, text)
    raise RuntimeError(f"{name} did not bind within {timeout} s:\n{text}")


def actor_argv(command: str, update: str, *args: str, store: str,
               log_level: str = "INFO") -> list[str]:
    """`python -m actor` on two endpoints and `store` (a path or ':memory:'; never
    the per-user default, which neither a test nor a benchmark may touch)."""
    return ["-m", "actor", "--command-endpoint", command, "--update-endpoint", update,
            "--store", store, "--log-level", log_level, *args]


def start_actor(command: str, update: str, *args: str, store: str, synchronous: str | None = None,
                config: str | None = None, log_level: str = "INFO", env: dict | None = None,
                timeout: float = 30.0) -> Server:
    """The actor at its default log level (INFO: one line per reservation placed
    or ended, as in production); `args` are more command-line options.
    endpoints = (command, update)."""
    extra = list(args)
    if synchronous:
        extra += ["--synchronous", synchronous]
    if config:
        extra += ["--config", config]
    return start_process("actor", actor_argv(command, update, *extra, store=store,
                                             log_level=log_level), ACTOR_BOUND,
                         env=env, timeout=timeout)


def start_echo(endpoint: str) -> Server:
    return start_process("echo", ["-m", "bench.echo", endpoint], ECHO_BOUND)


def start_c_echo(endpoint: str) -> Server:
    """The bare echo in C (bench/c/floor.c); raises bench.c.Unavailable where it cannot be built."""
    return start_process("c-echo", ["echo", endpoint], ECHO_BOUND, executable=c.build())


def start_publisher(control: str, update: str) -> Server:
    return start_process("publisher", ["-m", "bench.echo", "--publisher", control, update], PUB_BOUND)


def record_script(actor: Server, requests: list[bytes], timeout: float = 10.0) -> dict:
    """What `actor` answers and publishes for each request, by the request's cmd:
    {cmd: {"reply": bytes, "updates": [[frame, ...], ...]}}, the I/O floor's script.

    The requests are sent one at a time, in order, and must leave the actor as
    they found it (a reserve_now, then its cancel_reservation). The actor's own
    `stats` count says how many updates each one published; a round in which the
    subscriber missed any (it was still joining) is recorded again."""
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    sub = context.socket(zmq.SUB)
    try:
        for sock in (dealer, sub):
            sock.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.RCVTIMEO, int(timeout * 1000))
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        dealer.connect(actor.endpoints[0])
        sub.connect(actor.endpoints[1])

        def published() -> int:
            dealer.send(msgpack.packb({"id": 0, "cmd": Command.STATS}))
            return msgpack.unpackb(dealer.recv())["result"]["updates_published"]

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            script: dict = {}
            complete = True
            for request in requests:
                before = published()
                dealer.send(request)
                reply = dealer.recv()
                updates = []
                for _ in range(published() - before):
                    if not sub.poll(200):
                        complete = False
                        break
                    updates.append(sub.recv_multipart())
                script[msgpack.unpackb(request)["cmd"]] = {"reply": reply, "updates": updates}
            if complete:
                return script
            while sub.poll(50):       # what a half-joined round left behind
                sub.recv_multipart()
        raise RuntimeError(f"could not record the actor's updates within {timeout} s")
    finally:
        dealer.close()
        sub.close()
        context.term()


def start_floor(actor: Server, requests: list[bytes], directory: str, command: str,
                update: str) -> Server:
    """The I/O floor (`python -m bench.echo --floor`) on `command` and `update`,
    answering and publishing what `actor` did for each of `requests` (record_script)."""
    path = os.path.join(directory, FLOOR_SCRIPT)
    Path(path).write_bytes(msgpack.packb(record_script(actor, requests)))
    return start_process("floor", ["-m", "bench.echo", "--floor", command, update, path],
                         FLOOR_BOUND)


def start_c_floor(directory: str, command: str, update: str) -> Server:
    """The I/O floor in C (bench/c/floor.c) on `command` and `update`, sending what
    the script start_floor recorded in `directory` says; raises bench.c.Unavailable
    where it cannot be built."""
    binary = c.build()
    with open(os.path.join(directory, FLOOR_SCRIPT), "rb") as f:
        script = msgpack.unpackb(f.read())
    path = os.path.join(directory, "floor-script.bin")
    write_c_script(script, path)
    return start_process("c-floor", ["floor", command, update, path], FLOOR_BOUND,
                         executable=binary)


@contextmanager
def servers() -> Iterator[list[Server]]:
    """A list to put started servers in; all are stopped (and their logs removed) on the way out."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in reversed(started):
            server.close()


@contextmanager
def short_tmp() -> Iterator[str]:
    # Unix socket paths are limited to about 100 bytes.
    path = tempfile.mkdtemp(prefix="rab-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def endpoint(transport: str, directory: str, name: str) -> str:
    if transport == "tcp":
        return "tcp://127.0.0.1:*"
    return f"ipc://{directory}/{name}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def station_config(directory: str | os.PathLike, evses: int | Mapping[int, Sequence[str]],
                   connectors: Sequence[str] = (ConnectorType.cCCS2, ConnectorType.cType2),
                   tables: Mapping[str, Mapping[str, int]] | None = None,
                   name: str = "") -> str:
    """A TOML station written as station-EVSES[-NAME].toml in `directory`.

    `evses` is a count (EVSE ids 1..evses, each with `connectors`, ids 1..) or
    {evse_id: connector types} for a station whose EVSEs differ; `tables` are
    further sections, e.g. {"limits": {"turn_reply_bytes": 0}, "timer": {"tick_ms": 5}}."""
    station = evses if isinstance(evses, Mapping) else dict.fromkeys(range(1, evses + 1),
                                                                      connectors)
    lines = []
    for evse_id, types in station.items():
        listed = ", ".join(f'{{ id = {n}, type = "{kind}" }}' for n, kind in enumerate(types, 1))
        lines += ["[[evse]]", f"id = {evse_id}", f"connectors = [{listed}]", ""]
    for table, values in (tables or {}).items():
        lines += [f"[{table}]", *(f"{key} = {value}" for key, value in values.items()), ""]
    path = os.path.join(directory, f"station-{len(station)}{f'-{name}' if name else ''}.toml")
    Path(path).write_text("\n".join(lines))
    return path


# -- client processes -------------------------------------------------------------------

_mp = None


def mp_context():
    """forkserver: children fork from a clean server process (no zmq threads of
    ours inherited), which is much faster than spawn for 50 subscribers."""
    global _mp
    if _mp is None:
        import multiprocessing
        _mp = multiprocessing.get_context("forkserver")
        _mp.set_forkserver_preload(["zmq", "msgpack", "bench.procs"])
    return _mp


class Workers:
    """`count` processes each running target(conn, index, *args), driven by
    messages on a pipe: the target loops on conn.recv() and answers each
    command with conn.send(); None tells it to return."""

    def __init__(self, target, count: int, *args, start_timeout: float = 60.0) -> None:
        mp = mp_context()
        self.conns = []
        self.processes = []
        try:
            for index in range(count):
                parent, child = mp.Pipe()
                process = mp.Process(target=target, args=(child, index, *args), daemon=True)
                process.start()
                child.close()
                self.conns.append(parent)
                self.processes.append(process)
            self.recv_all(start_timeout)   # each says it is up (and connected)
        except BaseException:
            self.stop()
            raise

    def send_all(self, message, count: int | None = None) -> None:
        """Send to the first `count` workers (all by default)."""
        for conn in self.conns[:count]:
            conn.send(message)

    def recv_all(self, timeout: float, count: int | None = None) -> list:
        deadline = time.monotonic() + timeout
        out = []
        for conn, process in zip(self.conns[:count], self.processes):
            while not conn.poll(0.05):
                if not process.is_alive():
                    raise RuntimeError(f"client process {process.pid} died (exit {process.exitcode})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"client process {process.pid} did not answer in {timeout} s")
            reply = conn.recv()
            if isinstance(reply, BaseException):
                raise RuntimeError(f"client process {process.pid} failed: {reply!r}")
            out.append(reply)
        return out

    def ask(self, message, timeout: float, count: int | None = None) -> list:
        self.send_all(message, count)
        return self.recv_all(timeout, count)

    def stop(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 5
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self.conns:
            conn.close()

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_commands(conn, handle) -> None:
    """The worker side of Workers: answer each command with handle(command);
    an exception is sent back instead of killing the worker silently."""
    conn.send("up")
    while True:
        try:
            command = conn.recv()
        except EOFError:
            return
        if command is None:
            return
        try:
            conn.send(handle(command))
        except Exception as exc:   # reported to the parent, which raises it
            conn.send(RuntimeError(f"{type(exc).__name__}: {exc}"))


# -- the listener: one subscriber process ------------------------------------------------


def listen_process(conn, index: int) -> None:
    """Workers' target for Listener: SUB sockets reading every topic, one per
    attached endpoint, each counting the messages it received."""
    context = zmq.Context()
    subs: list[zmq.Socket] = []
    counts: list[int] = []
    poller = zmq.Poller()
    pipe = conn.fileno()
    poller.register(pipe, zmq.POLLIN)

    def detach() -> None:
        for sock in subs:
            poller.unregister(sock)
            sock.close(linger=0)
        subs.clear()

    conn.send("up")
    try:
        while True:
            ready = dict(poller.poll())
            # The messages first: a command may close the sockets they came on.
            for n, sock in enumerate(subs):
                if sock in ready:
                    recv = sock.recv_multipart
                    try:
                        while True:
                            recv(zmq.NOBLOCK)
                            counts[n] += 1
                    except zmq.Again:
                        pass
            if pipe not in ready:
                continue
            command = conn.recv()
            if command is None:
                return
            if command[0] == "attach":
                detach()
                counts = [0] * len(command[1])
                for address in command[1]:
                    sub = context.socket(zmq.SUB)
                    sub.setsockopt(zmq.SUBSCRIBE, b"")
                    sub.connect(address)
                    poller.register(sub, zmq.POLLIN)
                    subs.append(sub)
            elif command[0] == "detach":
                detach()
            conn.send(list(counts))
    finally:
        detach()
        context.term()


class Listener:
    """One live subscriber process reading all topics of the PUB endpoints it is
    attached to, as real deployments have; detached, the servers publish to nobody."""

    def __init__(self) -> None:
        self.workers = Workers(listen_process, 1)
        self.attached = 0

    def attach(self, endpoints: list[str], poke: Callable[[], None], timeout: float = 10.0) -> None:
        """Subscribe to every endpoint and return once each has delivered a message:
        `poke` makes every server publish something (ZeroMQ's subscriptions take a
        moment to reach the publisher, and what it sends before is not delivered)."""
        self.workers.ask(("attach", endpoints), timeout)
        deadline = time.monotonic() + timeout
        while True:
            poke()
            if all(self.counts()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"listener: no updates from {endpoints} within {timeout} s")
            time.sleep(0.01)
        # The last poke's updates may still be arriving: counts() read after this
        # are of what came next only.
        last = self.counts()
        while True:
            time.sleep(0.01)
            now = self.counts()
            if now == last:
                break
            last = now
        self.attached = len(endpoints)

    def counts(self) -> list[int]:
        """Messages received on each attached endpoint so far."""
        return self.workers.ask(("counts",), 10)[0]

    def detach(self) -> None:
        self.workers.ask(("detach",), 10)
        self.attached = 0

    def close(self) -> None:
        self.workers.stop()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
