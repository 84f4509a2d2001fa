"""Readiness for a supervisor: systemd's notify protocol (`Type=notify`), with
the standard library only.

systemd starts the service with `$NOTIFY_SOCKET` naming a Unix datagram
socket (a path, or an abstract-namespace name when it starts with `@`) and
counts it started only when the service sends `READY=1` there; units ordered
after it, and `systemctl start`, wait for that. The actor sends it once its
sockets are bound and start-up's own updates are committed and published
(Actor.serve's `ready`), so whatever starts after it finds requests answered.
`STOPPING=1` on SIGTERM or SIGINT tells systemd the stop is under way.

The variable is removed from the environment when read, as sd_notify(3) does
with unset_environment: a process the actor might start must not speak for it.
Without `$NOTIFY_SOCKET` (not under systemd) every message is a no-op. A
message that cannot be sent is logged and otherwise ignored: a supervisor that
does not listen is no reason to stop serving.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("reservation_actor")

ENVIRONMENT_VARIABLE = "NOTIFY_SOCKET"


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address

    @classmethod
    def from_environment(cls) -> "Notifier":
        """The supervisor named in $NOTIFY_SOCKET, taken out of the environment."""
        return cls(os.environ.pop(ENVIRONMENT_VARIABLE, None) or None)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def _send(self, message: str) -> None:
        if self.address is None:
            return
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), target)
        except OSError as exc:
            log.warning("cannot notify the supervisor at %s (%s): %s", ENVIRONMENT_VARIABLE,
                        self.address, exc)
