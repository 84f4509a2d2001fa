"""Durable state: an embedded SQLite database (WAL) holding what the core cannot
recompute: active reservations in placement order, connector states, plug flags,
and the update seq.

The actor commits each loop turn's changes in one transaction before any reply
or update of that turn leaves, so what a client was told is what is on disk.
The store never decides anything: loading returns the stored image, and the
core applies the start-up rules (expired, vanished EVSE, guarantee) to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
from pathlib import Path
from typing import Protocol

from protocol.messages import reservation_from
from protocol.vocabulary import ConnectorState
from protocol.wire import ProtocolError

from .config import SYNCHRONOUS_MODES
from .changes import Changes, StoredState

log = logging.getLogger("reservation_actor")

SCHEMA_VERSION = 1
MEMORY = ":memory:"

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
_META_KEYS = ("seq", "position")
# The counters grow by one per update or placement: even at a million a second
# they take 285 years to pass 2**53, past which a client whose numbers are
# doubles (JSON, JavaScript) can no longer tell seq n from n + 1. A larger
# stored value is damage or tampering, and near 2**63 SQLite could not even
# store the next one.
MAX_COUNTER = 2 ** 53 - 1
_CONNECTOR_STATES = frozenset(ConnectorState)


class StoreError(Exception):
    """The store cannot be opened or written; the message is meant for the operator."""


class StateStore(Protocol):
    """What the actor needs of a store; Store and MemoryStore are the two."""

    path: str
    durable: bool   # False: nothing survives a restart, so the core need not record changes

    def load(self) -> StoredState:
        """The stored image, or StoreError."""

    def commit(self, changes: Changes) -> None:
        """Write one turn's changes in one transaction, or raise StoreError having written nothing."""

    def close(self) -> None:
        """Release the store (and its lock)."""


class MemoryStore:
    """`--store :memory:`: nothing survives a restart, so nothing is written,
    not even to an in-memory database."""

    path = MEMORY
    durable = False

    def load(self) -> StoredState:
        return StoredState()

    def commit(self, changes: Changes) -> None:
        pass

    def close(self) -> None:
        pass


def open_store(path: str | Path, *, synchronous: str = "full",
               reset: bool = False) -> StateStore:
    if str(path) == MEMORY:
        return MemoryStore()
    return Store(path, synchronous=synchronous, reset=reset)


def default_store_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "reservation-actor" / "store.sqlite3"


class Store:
    """The SQLite store, owned by one actor for its whole life.

    Ownership is an flock(2) on PATH.lock, holding the owner's pid. Why not
    SQLite's own locking_mode = EXCLUSIVE: it is taken only at the first write
    and refuses with a bare "database is locked" that cannot name the owner, and
    the refusal must happen before SQLite touches the database at all (a refused
    start-up changes no file). The kernel drops an flock when its process dies,
    SIGKILL included, so a crashed owner never blocks the next start. flock, not
    fcntl/lockf record locks: those are per process and vanish when any file
    descriptor on the file is closed, so a second Store in the same process
    would both succeed and release the first one's lock. The lock file is never
    deleted: unlinking it would let two starters lock two different inodes.
    """

    durable = True

    def __init__(self, path: str | Path, *, synchronous: str = "full", reset: bool = False) -> None:
        if synchronous not in SYNCHRONOUS_MODES:
            raise StoreError(f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, "
                             f"got {synchronous!r}")
        self.path = str(path)
        if self.path == MEMORY:
            # One meaning everywhere: ':memory:' is MemoryStore, which writes nothing.
            raise ValueError("Store is a file; for ':memory:' use MemoryStore (open_store does)")
        if os.path.isdir(self.path):   # before its lock file appears beside it
            raise StoreError(f"store {self.path}: is a directory; give the database file's "
                             "path, e.g. DIRECTORY/store.sqlite3")
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"store {self.path}: cannot create its directory "
                             f"({exc.strerror})") from None
        self._lock: int | None = _take_lock(self.path)
        try:
            self._refuse_truncated_file(reset)
            self._db = self._connect(synchronous, reset)
        except BaseException:
            self._release()
            raise

    def _refuse_truncated_file(self, reset: bool) -> None:
        """A 0-byte file is a new store only when it is really empty: no WAL
        with content beside it. SQLite deletes the WAL of a 0-byte database on
        open, and a WAL can hold every commit of a store never checkpointed, so
        a truncated database file would silently lose them all."""
        try:
            if os.stat(self.path).st_size:
                return
        except OSError:
            return   # missing: a new store; anything else SQLite reports
        wal = f"{self.path}-wal"
        try:
            wal_bytes = os.stat(wal).st_size
        except OSError:
            wal_bytes = 0
        if wal_bytes:
            if reset:
                return   # discarded on purpose
            raise StoreError(f"store {self.path}: the database file is empty (0 bytes) but {wal} "
                             f"holds {wal_bytes} bytes of commits that opening it would discard; "
                             "both were left untouched. Restore the database file, or move both "
                             "aside (or pass --reset-store) to start with an empty store")
        log.info("store %s is empty (0 bytes, no WAL content beside it): starting a new store, "
                 "as for a missing file", self.path)

    def _connect(self, synchronous: str, reset: bool) -> sqlite3.Connection:
        try:
            # Autocommit mode: transactions are begun and ended explicitly below.
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: cannot be opened ({exc})") from None
        try:
            self._open(db, synchronous, reset)
        except StoreError:
            db.close()
            raise
        except sqlite3.Error as exc:
            db.close()
            raise StoreError(f"store {self.path}: cannot be used ({exc}); it was left untouched. "
                             "Move it aside to start with an empty store") from None
        return db

    def _open(self, db: sqlite3.Connection, synchronous: str, reset: bool) -> None:
        # Every refusal comes before the first write (the journal mode included).
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"store {self.path}: written by a newer version (schema {version}, "
                             f"this actor knows {SCHEMA_VERSION}); it was left untouched")
        if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StoreError(f"store {self.path}: a database with tables but no schema version, "
                             "not a reservation-actor store; it was left untouched")
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
        """The stored image, every value checked as the wire would check it,
        or StoreError: a hand-edited or damaged row must stop start-up with
        one line, not reach the core."""
        try:
            return self._load()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: cannot be read ({exc}); it was left untouched. "
                             "Move it aside to start with an empty store") from None

    def _malformed(self, what: str) -> StoreError:
        return StoreError(f"store {self.path}: {what}; it was left untouched. Correct it, or "
                          "move it aside to start with an empty store")

    def _load(self) -> StoredState:
        db = self._db
        meta = dict(db.execute("SELECT key, value FROM meta"))
        for key in _META_KEYS:
            value = meta.get(key)
            if type(value) is not int or not 0 <= value <= MAX_COUNTER:
                raise self._malformed(f"meta {key!r} is " + (
                    "missing" if key not in meta else
                    f"{value!r}, not an integer from 0 to {MAX_COUNTER} (2**53 - 1)"))
        state = StoredState(seq=meta["seq"])
        for rid, token, expiry_time, evse_id, parent, ctype in db.execute(
                "SELECT reservation_id, id_token, expiry_time, evse_id, parent_id_token, "
                "connector_type FROM reservation ORDER BY position"):
            try:
                state.reservations.append(reservation_from({
                    "reservation_id": rid, "id_token": token, "expiry_time": expiry_time,
                    "evse_id": evse_id, "parent_id_token": parent, "connector_type": ctype}))
            except ProtocolError as error:
                raise self._malformed(f"reservation {rid!r}: {error.message}") from None
        for evse_id, plugged in db.execute("SELECT evse_id, plugged_in FROM evse"):
            if type(plugged) is not int or plugged not in (0, 1):
                raise self._malformed(f"evse {evse_id!r}: plugged_in is {plugged!r}, not 0 or 1")
            state.evses[evse_id] = (bool(plugged), {})
        for evse_id, connector_id, connector_state in db.execute(
                "SELECT evse_id, connector_id, state FROM connector"):
            where = f"connector {connector_id!r} of evse {evse_id!r}"
            if type(evse_id) is not int or type(connector_id) is not int:
                raise self._malformed(f"{where}: ids must be integers")
            if connector_state not in _CONNECTOR_STATES:
                raise self._malformed(f"{where}: state {connector_state!r} is not one of "
                                      f"{', '.join(ConnectorState)}")
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
        except (sqlite3.Error, OverflowError) as exc:   # OverflowError: a value past int64
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"store {self.path}: commit failed: {exc}") from exc

    def close(self) -> None:
        self._db.close()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock, 0)   # no pid left behind to blame
            os.close(self._lock)              # which releases the flock
            self._lock = None


def _take_lock(path: str) -> int:
    """The open, flocked PATH.lock holding this pid, or StoreError naming the
    owner. Next to the real file, so two names for one store share one lock."""
    lock_path = os.path.realpath(path) + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(f"store {path}: cannot open its lock file {lock_path} "
                         f"({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        # The owner writes its pid just after locking: it may not be there yet.
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        if isinstance(exc, BlockingIOError):
            owner = f"pid {holder}" if holder.isdigit() else "pid not known yet"
            raise StoreError(f"store {path}: held by another actor ({owner}, lock {lock_path}); "
                             "stop that one first, or give this one another --store") from None
        raise StoreError(f"store {path}: cannot lock {lock_path} ({exc.strerror})") from None
    # The pid only informs whoever is refused: a full disk must not stop the owner.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
