"""The actor's log: the standard `logging` module, with the per-reservation
INFO lines of one loop turn written in one write.

Theory of operation: the loop logs one INFO line per reservation placed or
ended, which at full load is tens of thousands a second. Each line is still
its own record through the same logger, level and handlers (`log_batched`),
but the records of one call are copies of one made for that instant, so they
share its time stamp and what the formatter made of it; they are marked
batched, which tells `TurnHandler` that it may hold their lines until
`flush()`, which the loop calls once per turn after publishing. Every other
record (start-up lines, warnings, errors) is written at once.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class SecondCachingFormatter(logging.Formatter):
    """logging.Formatter's default time stamp, strftime'd once per second; and
    for batched records of one instant, the line before the message made once."""

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""
        self._instant: tuple | None = None
        self._head = ""

    def format(self, record: logging.LogRecord) -> str:
        instant = (record.created, record.levelno, record.name)
        if getattr(record, "batched", False) and instant == self._instant:
            return self._head + record.getMessage()
        line = super().format(record)
        if getattr(record, "batched", False) and line.endswith(record.message) \
                and not record.exc_info:
            self._instant = instant
            self._head = line[:len(line) - len(record.message)]
        return line

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
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # The format uses none of these; LogRecord would look them up for every line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def log_batched(logger: logging.Logger, message: str, args_list: list[tuple]) -> None:
    """logger.info(message, *args) for each args, held until flush(): records
    of this instant, copied from one made once (making a LogRecord costs more
    than the rest of logging it)."""
    if not args_list or not logger.isEnabledFor(logging.INFO):
        return
    # No findCaller walk up the stack: the format shows no file or line.
    template = logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, (), None)
    template.batched = True
    fields = template.__dict__
    for args in args_list:
        record = logging.LogRecord.__new__(logging.LogRecord)
        record.__dict__.update(fields)
        record.args = args
        logger.handle(record)


def flush() -> None:
    """Write what the turn's batched records hold (every handler's flush)."""
    for handler in logging.root.handlers:
        handler.flush()
