"""Server processes for the benchmarks: the actor, the bare echo and the bare publisher.

Each runs in its own process, exactly as a user runs it (`python -m actor`,
`python -m bench.echo`), with stderr sent to a temporary file: the bound
endpoints are read from its first log line (so `tcp://127.0.0.1:*` works), and
the actor's per-reservation INFO lines cost what they cost in production
without a reader in the measuring process. Every process started here is
stopped by `stop()`, and killed at interpreter exit if a suite forgot.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent

_ACTOR_BOUND = re.compile(r"serving commands on (\S+), updates on (\S+)")
_ECHO_BOUND = re.compile(r"echo serving on (\S+)")
_PUB_BOUND = re.compile(r"publisher serving on (\S+), updates on (\S+)")

_live: set[subprocess.Popen] = set()


def _kill_all() -> None:
    for process in list(_live):
        if process.poll() is None:
            process.kill()
            process.wait()


atexit.register(_kill_all)


def track(process: subprocess.Popen) -> None:
    """Have a process started elsewhere killed at exit too (untrack() once stopped)."""
    _live.add(process)


def untrack(process: subprocess.Popen) -> None:
    _live.discard(process)


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    endpoints: tuple[str, ...]
    log_path: str

    @property
    def endpoint(self) -> str:
        return self.endpoints[0]

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _live.discard(process)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def start_process(name: str, argv: list[str], bound: re.Pattern, timeout: float = 15.0) -> Server:
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
    try:
        process = subprocess.Popen([sys.executable, *argv], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
    finally:
        log.close()
    _live.add(process)
    server = Server(name, process, (), log.name)
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
    server.stop()
    raise RuntimeError(f"{name} did not bind within {timeout} s:\n{text}")


def start_actor(command: str, update: str, *, store: str, synchronous: str | None = None,
                config: str | None = None, log_level: str = "INFO") -> Server:
    """`python -m actor` at its default log level (INFO: one line per reservation
    placed or ended, as in production), on `store` (a path or ':memory:'; never
    the per-user default, which a benchmark must not touch)."""
    argv = ["-m", "actor", "--command-endpoint", command, "--update-endpoint", update,
            "--store", store, "--log-level", log_level]
    if synchronous:
        argv += ["--synchronous", synchronous]
    if config:
        argv += ["--config", config]
    return start_process("actor", argv, _ACTOR_BOUND)


def start_echo(endpoint: str) -> Server:
    return start_process("echo", ["-m", "bench.echo", endpoint], _ECHO_BOUND)


def start_publisher(control: str, update: str) -> Server:
    return start_process("publisher", ["-m", "bench.echo", "--publisher", control, update], _PUB_BOUND)


@contextmanager
def servers() -> Iterator[list[Server]]:
    """A list to put started servers in; all are stopped on the way out."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for server in reversed(started):
            server.stop()


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


def station_config(directory: str, evses: int) -> str:
    """A TOML station of `evses` EVSEs, each with a cCCS2 and a cType2 connector."""
    lines = []
    for evse_id in range(1, evses + 1):
        lines += ["[[evse]]", f"id = {evse_id}",
                  'connectors = [{ id = 1, type = "cCCS2" }, { id = 2, type = "cType2" }]', ""]
    path = os.path.join(directory, f"station-{evses}.toml")
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
