"""The actor's log (actor/logs.py): batched reservation lines are the lines plain
`logging` would write with the same format, held only until the turn's flush."""

from __future__ import annotations

import io
import logging

import pytest

from actor import logs


@pytest.fixture
def stream():
    saved = logging.root.handlers[:], logging.root.level
    out = io.StringIO()
    logs.configure("INFO", out)
    yield out
    logging.root.handlers[:], _ = saved
    logging.root.setLevel(saved[1])
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = True


def plain_line(record: logging.LogRecord) -> str:
    return logging.Formatter(logs.FORMAT).format(record)


def test_batched_lines_are_held_until_flush_and_are_what_logging_writes(stream):
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
    assert stream.getvalue().splitlines() == [plain_line(r) for r in records]
    assert [r.getMessage() for r in records] == [
        "reservation 1 Placed", "reservation 2 Cancelled", "reservation 3 Expired"]


def test_other_records_are_written_at_once_and_flush_keeps_the_order(stream):
    log = logging.getLogger("reservation_actor.test")
    logs.log_batched(log, "reservation %s %s", [(1, "Placed")])
    log.warning("store failed")
    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["reservation 1 Placed", "store failed"]
    assert " WARNING " in lines[1]


def test_below_the_level_nothing_is_made(stream):
    logging.root.setLevel(logging.WARNING)
    logs.log_batched(logging.getLogger("reservation_actor.test"), "reservation %s %s", [(1, "Placed")])
    logs.flush()
    assert stream.getvalue() == ""
