"""Fixtures that run the actor the way a user does: `python -m actor` in its own process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq

from protocol.client import Client, Subscriber

_BOUND = re.compile(r"serving commands on (\S+), updates on (\S+)")


@dataclass
class RunningActor:
    process: subprocess.Popen
    command_endpoint: str
    update_endpoint: str
    log: list[str]

    def client(self, **kwargs) -> Client:
        return Client(self.command_endpoint, **kwargs)

    def subscriber(self) -> Subscriber:
        return Subscriber(self.update_endpoint)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def start_actor(*args: str, command: str, update: str, store: str = ":memory:",
                env: dict | None = None) -> RunningActor:
    """Start the actor and wait for its 'serving' line, which it logs once
    both sockets are bound (so the endpoints' real ports are known)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "actor", "--command-endpoint", command,
         "--update-endpoint", update, "--store", store, "--log-level", "INFO", *args],
        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        cwd=Path(__file__).resolve().parent.parent)
    log: list[str] = []
    for line in process.stderr:
        log.append(line)
        bound = _BOUND.search(line)
        if bound:
            # Keep draining stderr so the actor never blocks on a full pipe.
            threading.Thread(target=lambda: log.extend(process.stderr), daemon=True).start()
            return RunningActor(process, bound.group(1), bound.group(2), log)
    process.wait()
    raise RuntimeError("actor exited before binding:\n" + "".join(log))


@pytest.fixture
def short_tmp():
    # Unix socket paths are limited to about 100 bytes; pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="ra-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def endpoints_for(transport: str, directory: str) -> dict[str, str]:
    if transport == "tcp":
        return dict(command="tcp://127.0.0.1:*", update="tcp://127.0.0.1:*")
    return dict(command=f"ipc://{directory}/cmd", update=f"ipc://{directory}/upd")


@pytest.fixture(params=["tcp", "ipc"])
def actor(request, short_tmp):
    running = start_actor(**endpoints_for(request.param, short_tmp))
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)
