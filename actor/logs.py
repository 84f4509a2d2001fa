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

import json
import logging
import sys
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")   # --log-format
# What every LogRecord has; the rest of a record's attributes are its extra fields.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "batched"}


class SecondCachingFormatter(logging.Formatter):
    """Time stamps in UTC with the zone, RFC 3339 (2026-12-04T18:00:00.123Z):
    a log read beside another host's, or across a daylight-saving change, means
    one instant. strftime'd once per second; and for batched records of one
    instant, the line before the message made once."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self, fmt: str | None = FORMAT) -> None:
        super().__init__(fmt)
        self._second = -1
        self._stamp = ""
        self._instant: tuple | None = None
        self._head = ""

    def format(self, record: logging.LogRecord) -> str:
        instant = (record.created, record.levelno, record.name)
        if getattr(record, "batched", False) and instant == self._instant:
            return self._head + self.tail(record.getMessage())
        line = self.format_record(record)
        if getattr(record, "batched", False) and not record.exc_info:
            tail = self.tail(record.message)
            if line.endswith(tail):
                self._instant = instant
                self._head = line[:len(line) - len(tail)]
        return line

    def format_record(self, record: logging.LogRecord) -> str:
        return super().format(record)

    def tail(self, message: str) -> str:
        """How a line made by format_record ends for a record with `message`."""
        return message

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
        return self.default_msec_format % (self._stamp, record.msecs)


class JsonFormatter(SecondCachingFormatter):
    """One JSON object per line, for a log collector: time, level, logger,
    message, then the record's extra fields (`extra=`) and its exception."""

    def __init__(self) -> None:
        super().__init__(None)

    def format_record(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        fields = {"time": self.formatTime(record), "level": record.levelname,
                  "logger": record.name, "message": record.message}
        fields.update((key, value) for key, value in record.__dict__.items()
                      if key not in _RECORD_ATTRIBUTES)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json.dumps(fields, separators=(",", ":"), default=str)

    def tail(self, message: str) -> str:
        return json.dumps(message) + "}"


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


def formatter(log_format: str) -> SecondCachingFormatter:
    return JsonFormatter() if log_format == "json" else SecondCachingFormatter()


def configure(level: str, stream: TextIO = sys.stderr, log_format: str = "text") -> None:
    """`log_format`: one of FORMATS, text lines (FORMAT) or JSON lines."""
    handler = TurnHandler(stream)
    handler.setFormatter(formatter(log_format))
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
