"""Durable state: an embedded SQLite database (WAL) holding what the core cannot
recompute: active reservations in placement order, connector states, plug flags,
and the update seq.

The actor commits each loop turn's changes in one transaction before any reply
or update of that turn leaves, so what a client was told is what is on disk.
The store never decides anything: loading returns the stored image, and the
core applies the start-up rules (expired, vanished EVSE, guarantee) to it.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from protocol.messages import Reservation, parse_rfc3339

SCHEMA_VERSION = 1
MEMORY = ":memory:"
SYNCHRONOUS_MODES = ("full", "normal")

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE reservation (
    reservation_id INTEGER PRIMARY KEY,
    position INTEGER NOT NULL,            -- placement order: the oldest is kept first
    id_token TEXT NOT NULL,
    expiry_time TEXT NOT NULL,
    evse_id INTEGER,
    parent_id_token TEXT,
    connector_type TEXT
);
CREATE TABLE evse (evse_id INTEGER PRIMARY KEY, plugged_in INTEGER NOT NULL);
CREATE TABLE connector (
    evse_id INTEGER NOT NULL,
    connector_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (evse_id, connector_id)
);
INSERT INTO meta VALUES ('seq', 0), ('position', 0);
"""


class StoreError(Exception):
    """The store cannot be opened or written; the message is meant for the operator."""


@dataclass
class StoredState:
    seq: int = 0
    reservations: list[Reservation] = field(default_factory=list)   # oldest first
    evses: dict[int, tuple[bool, dict[int, str]]] = field(default_factory=dict)


@dataclass
class Changes:
    """What one loop turn changed, as the core reports it."""
    seq: int
    reservations: list[tuple[int, Reservation | None]]     # None: ended, delete it
    evses: list[tuple[int, bool, list[tuple[int, str]]]]    # (id, plugged_in, connector states)

    def __bool__(self) -> bool:
        return bool(self.reservations or self.evses)


class MemoryStore:
    """`--store :memory:`: nothing survives a restart, so nothing is written,
    not even to an in-memory database."""

    path = MEMORY

    def load(self) -> StoredState:
        return StoredState()

    def commit(self, changes: Changes) -> None:
        pass

    def close(self) -> None:
        pass


def open_store(path: str | Path, *, synchronous: str = "full",
               reset: bool = False) -> "Store | MemoryStore":
    if str(path) == MEMORY:
        return MemoryStore()
    return Store(path, synchronous=synchronous, reset=reset)


def default_store_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "reservation-actor" / "store.sqlite3"


class Store:
    def __init__(self, path: str | Path, *, synchronous: str = "full", reset: bool = False) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise StoreError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, "
                             f"got {synchronous!r}")
        self.path = str(path)
        if self.path != MEMORY:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit mode: transactions are begun and ended explicitly below.
            self._db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: cannot be opened ({exc})") from None
        try:
            self._open(synchronous, reset)
        except StoreError:
            self._db.close()
            raise
        except sqlite3.Error as exc:
            self._db.close()
            raise StoreError(f"store {self.path}: cannot be used ({exc}); it was left untouched. "
                             "Move it aside to start with an empty store") from None

    def _open(self, synchronous: str, reset: bool) -> None:
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"store {self.path}: written by a newer version (schema {version}, "
                             f"this actor knows {SCHEMA_VERSION}); it was left untouched")
        if self.path != MEMORY:
            db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        if reset and version:
            db.executescript("BEGIN; DROP TABLE meta; DROP TABLE reservation; DROP TABLE evse; "
                             "DROP TABLE connector; PRAGMA user_version = 0; COMMIT;")
            version = 0
        if version == 0:
            db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        db.execute("SELECT count(*) FROM reservation").fetchone()   # fails early on a damaged file

    def load(self) -> StoredState:
        db = self._db
        state = StoredState(seq=db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
        for rid, token, expiry_time, evse_id, parent, ctype in db.execute(
                "SELECT reservation_id, id_token, expiry_time, evse_id, parent_id_token, "
                "connector_type FROM reservation ORDER BY position"):
            state.reservations.append(Reservation(
                reservation_id=rid, id_token=token, expiry_time=expiry_time,
                expiry=parse_rfc3339(expiry_time), evse_id=evse_id,
                parent_id_token=parent, connector_type=ctype))
        for evse_id, plugged in db.execute("SELECT evse_id, plugged_in FROM evse"):
            state.evses[evse_id] = (bool(plugged), {})
        for evse_id, connector_id, connector_state in db.execute(
                "SELECT evse_id, connector_id, state FROM connector"):
            state.evses.setdefault(evse_id, (False, {}))[1][connector_id] = connector_state
        return state

    def commit(self, changes: Changes) -> None:
        """Write one turn in one transaction, or raise StoreError having written nothing."""
        db = self._db
        try:
            db.execute("BEGIN")
            position = db.execute("SELECT value FROM meta WHERE key = 'position'").fetchone()[0]
            for reservation_id, reservation in changes.reservations:
                if reservation is None:
                    db.execute("DELETE FROM reservation WHERE reservation_id = ?", (reservation_id,))
                    continue
                position += 1
                db.execute("INSERT OR REPLACE INTO reservation VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (reservation_id, position, reservation.id_token, reservation.expiry_time,
                            reservation.evse_id, reservation.parent_id_token,
                            reservation.connector_type))
            for evse_id, plugged_in, connectors in changes.evses:
                db.execute("INSERT OR REPLACE INTO evse VALUES (?, ?)", (evse_id, int(plugged_in)))
                db.executemany("INSERT OR REPLACE INTO connector VALUES (?, ?, ?)",
                               [(evse_id, cid, state) for cid, state in connectors])
            db.execute("UPDATE meta SET value = ? WHERE key = 'position'", (position,))
            db.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (changes.seq,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"store {self.path}: commit failed: {exc}") from exc

    def close(self) -> None:
        self._db.close()
