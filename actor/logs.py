"""The actor's log: the standard `logging` module, with the per-reservation
INFO lines of one loop turn written in one write.

Theory of operation: the loop logs one INFO line per reservation placed or
ended, which at full load is tens of thousands a second. Each line is still
its own record, formatted exactly as any other, through the same logger and
level; `mark_batched` only tells `TurnHandler` that it may hold the line
until `flush()`, which the loop calls once per turn after publishing. Every
other record (start-up lines, warnings, errors) is written at once. Time
stamps are formatted once per second instead of once per line.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class SecondCachingFormatter(logging.Formatter):
    """logging.Formatter's default time stamp, strftime'd once per second."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
        return self.default_msec_format % (self._stamp, record.msecs)


class TurnHandler(logging.StreamHandler):
    """A StreamHandler that holds batched records' lines until flush()."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._held: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:   # logging's own contract: a bad record never raises here
            self.handleError(record)
            return
        self._held.append(line)
        if not getattr(record, "batched", False):
            self.flush()

    def flush(self) -> None:
        if self._held:
            self.stream.write("".join(self._held))
            self._held.clear()
        super().flush()


def configure(level: str, stream: TextIO = sys.stderr) -> None:
    handler = TurnHandler(stream)
    handler.setFormatter(SecondCachingFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    # The format uses none of these; LogRecord would look them up for every line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def mark_batched(record: logging.LogRecord) -> logging.LogRecord:
    record.batched = True
    return record


def flush() -> None:
    """Write what the turn's batched records hold (every handler's flush)."""
    for handler in logging.root.handlers:
        handler.flush()
