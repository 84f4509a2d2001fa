"""Fixtures that run the actor the way a user does: `python -m actor` in its own process."""

from __future__ import annotations

import signal
import subprocess

import pytest
import zmq

from bench import procs
from protocol.client import Client, Subscriber


class RunningActor:
    """An actor started by start_actor(): its endpoints, its process and its log
    (the lines it has written to stderr so far, readable after it exits)."""

    def __init__(self, server: procs.Server) -> None:
        self.server = server
        self.process: subprocess.Popen = server.process
        self.command_endpoint, self.update_endpoint = server.endpoints

    @property
    def log(self) -> list[str]:
        return self.server.log().splitlines(keepends=True)

    @property
    def pid(self) -> int:
        return self.server.pid

    def rss_kib(self) -> int:
        return self.server.rss_kib()

    def client(self, **kwargs) -> Client:
        return Client(self.command_endpoint, **kwargs)

    def subscriber(self) -> Subscriber:
        return Subscriber(self.update_endpoint)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        return self.server.signal(sig, timeout)

    def kill(self) -> None:
        self.server.kill()


def start_actor(*args: str, command: str, update: str, store: str = ":memory:",
                env: dict | None = None) -> RunningActor:
    """Start the actor (`python -m actor`, INFO log) and wait for its 'serving'
    line, which it logs once both sockets are bound (so the endpoints' real
    ports are known)."""
    return RunningActor(procs.start_actor(command, update, *args, store=store, env=env,
                                          timeout=60))


@pytest.fixture
def short_tmp():
    # pytest's tmp_path can be longer than a Unix socket path may be.
    with procs.short_tmp() as path:
        yield path


def endpoints_for(transport: str, directory: str) -> dict[str, str]:
    return dict(command=procs.endpoint(transport, directory, "cmd"),
                update=procs.endpoint(transport, directory, "upd"))


@pytest.fixture(params=["tcp", "ipc"])
def actor(request, short_tmp):
    running = start_actor(**endpoints_for(request.param, short_tmp))
    yield running
    running.kill()


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)
