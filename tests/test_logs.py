"""The actor's log (actor/logs.py): batched reservation lines are the lines plain
`logging` would write with the same format, held only until the turn's flush;
in either format (text, JSON lines), stamped in UTC with the zone."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from actor import logs


@pytest.fixture(params=logs.FORMATS)
def log_format(request):
    return request.param


@pytest.fixture
def stream(log_format):
    saved = logging.root.handlers[:], logging.root.level
    out = io.StringIO()
    logs.configure("INFO", out, log_format=log_format)
    yield out
    logging.root.handlers[:], _ = saved
    logging.root.setLevel(saved[1])
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = True


def plain_line(record: logging.LogRecord, log_format: str) -> str:
    """What the format writes for `record` without the per-instant cache."""
    return logs.formatter(log_format).format_record(record)


def fields(line: str, log_format: str) -> dict:
    """time, level, logger and message of a line (and a JSON line's other fields)."""
    if log_format == "json":
        return json.loads(line)
    head, message = line.split(": ", 1)
    stamp, level, logger = head.split(" ")
    return {"time": stamp, "level": level, "logger": logger, "message": message}


def test_batched_lines_are_held_until_flush_and_are_what_logging_writes(stream, log_format):
    log = logging.getLogger("reservation_actor.test")
    records: list[logging.LogRecord] = []
    log.addHandler(capture := logging.Handler())
    capture.emit = records.append
    try:
        logs.log_batched(log, "reservation %s %s", [(1, "Placed"), (2, "Cancelled"), (3, "Expired")])
        assert stream.getvalue() == ""                   # held for the turn
        logs.flush()
    finally:
        log.removeHandler(capture)
    assert stream.getvalue().splitlines() == [plain_line(r, log_format) for r in records]
    assert [r.getMessage() for r in records] == [
        "reservation 1 Placed", "reservation 2 Cancelled", "reservation 3 Expired"]


def test_other_records_are_written_at_once_and_flush_keeps_the_order(stream, log_format):
    log = logging.getLogger("reservation_actor.test")
    logs.log_batched(log, "reservation %s %s", [(1, "Placed")])
    log.warning("store failed")
    lines = [fields(line, log_format) for line in stream.getvalue().splitlines()]
    assert [(line["level"], line["message"]) for line in lines] == [
        ("INFO", "reservation 1 Placed"), ("WARNING", "store failed")]


def test_below_the_level_nothing_is_made(stream):
    logging.root.setLevel(logging.WARNING)
    logs.log_batched(logging.getLogger("reservation_actor.test"), "reservation %s %s", [(1, "Placed")])
    logs.flush()
    assert stream.getvalue() == ""


def test_time_stamps_are_utc_with_the_zone_to_the_millisecond(stream, log_format):
    log = logging.getLogger("reservation_actor.test")
    records: list[logging.LogRecord] = []
    log.addHandler(capture := logging.Handler())
    capture.emit = records.append
    try:
        log.info("bound")
    finally:
        log.removeHandler(capture)
    stamp = fields(stream.getvalue().splitlines()[0], log_format)["time"]
    assert stamp.endswith("Z") and len(stamp) == len("2026-12-04T18:00:00.123Z")
    written = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    created = datetime.fromtimestamp(records[0].created, timezone.utc)
    assert timedelta(0) <= created - written < timedelta(milliseconds=1)   # truncated to the ms


@pytest.mark.parametrize("log_format", ["json"])
def test_a_json_line_carries_extra_fields_and_the_exception(stream):
    log = logging.getLogger("reservation_actor.test")
    try:
        raise ValueError("bad row")
    except ValueError:
        log.exception("store %s unreadable", "/var/lib/x", extra={"store": "/var/lib/x",
                                                                   "attempt": 2})
    line = json.loads(stream.getvalue())
    assert {key: line[key] for key in ("level", "logger", "message", "store", "attempt")} == {
        "level": "ERROR", "logger": "reservation_actor.test",
        "message": "store /var/lib/x unreadable", "store": "/var/lib/x", "attempt": 2}
    assert line["exception"].endswith("ValueError: bad row")
    assert "\n" not in stream.getvalue().rstrip("\n")   # one line, traceback included
