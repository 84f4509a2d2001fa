"""Per-peer flow control: a peer whose replies are not being read stops being served.

Replies of TRACKED_REPLY_BYTES or more are tracked until libzmq has handed
them to the kernel, and while more than `peer_unread_bytes` of a peer's are
still waiting, its requests are parked, in order, and decided once it catches
up (at most MAX_PARKED; past that they are shed, like messages past a
high-water mark, and counted). Parked requests and requests read from the
ROUTER take turns, so a backlog never starves the others. The parked requests
of a peer that disconnected are dropped undecided (and counted), found by the
connection they came on being closed, and so is what it sent before leaving
that is read afterwards.

The loop asks FlowControl; FlowControl never sends or receives. Its
attributes `waiting` and `watching` are plain truth values the loop reads
before calling in, so a request from a peer it holds nothing for costs no call.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque

import zmq

log = logging.getLogger("reservation_actor")

TRACKED_REPLY_BYTES = 16 * 1024     # smaller replies cannot pile up much below the high-water mark
MAX_PARKED = 1000                   # requests held for one peer that does not read its replies
PARKED_RECHECK_MS = 5               # how often the loop looks at parked peers' unread replies
MAX_GONE = 1024                     # peers found gone, remembered while what they sent is read


def socket_at(fd: int) -> tuple[int, int] | None:
    """What is open on a connection's file descriptor (the ZMQ_SRCFD of a message
    that came on it): the socket's (device, inode), None once libzmq has closed it
    because the peer disconnected.

    Why not a socket monitor: its DISCONNECTED events carry only the fd, which
    the next connection may reuse before the event is read, and a full monitor
    pipe drops events. The inode tells one socket from the next on the same fd,
    and asking costs one fstat, only for peers whose requests are parked. A
    connection without an fd (inproc) is never taken for gone."""
    if fd < 0:
        return fd, fd
    try:
        status = os.fstat(fd)
    except OSError:
        return None
    return status.st_dev, status.st_ino


class _Peer:
    """One peer's replies that libzmq has not yet handed to the kernel (the
    tracked ones), the requests parked until it reads them, and the connection
    they came on."""

    __slots__ = ("sending", "unread", "parked", "connection")

    def __init__(self) -> None:
        self.sending: deque[tuple[zmq.MessageTracker, int]] = deque()
        self.unread = 0
        self.parked: deque[list[bytes]] = deque()
        self.connection: tuple[int, tuple[int, int]] | None = None   # fd, socket_at(fd)

    def gone(self) -> bool:
        """Whether the connection its parked requests came on is closed. libzmq
        closes the fd as soon as it sees the disconnect; a peer's queued replies
        are dropped (making it look caught up) only later, once everything it
        sent has been read, so a gone peer is seen as gone when its turn comes."""
        fd, socket_there = self.connection
        return socket_at(fd) != socket_there

    def unread_bytes(self) -> int:
        sending = self.sending
        # One pipe per peer, sent in order: replies are done in order too.
        while sending and sending[0][0].done:
            self.unread -= sending.popleft()[1]
        return self.unread


class FlowControl:
    """Which request to decide next, as far as peers' unread replies allow."""

    __slots__ = ("track_from", "waiting", "watching", "requests_shed", "requests_abandoned",
                 "_limit", "_peers", "_gone", "_parked_next")

    def __init__(self, peer_unread_bytes: float) -> None:
        """`peer_unread_bytes`: math.inf for no limit (nothing is then tracked)."""
        self._limit = peer_unread_bytes
        # Replies from this size on are to be sent tracked and reported to sent().
        self.track_from = TRACKED_REPLY_BYTES if peer_unread_bytes != math.inf else math.inf
        self.waiting: dict[bytes, _Peer] = {}   # peers with parked requests
        self.watching = False    # whether admit() may hold back a request just read
        self.requests_shed = 0
        self.requests_abandoned = 0
        self._peers: dict[bytes, _Peer] = {}
        self._gone: dict[bytes, None] = {}      # peers found gone, oldest first
        self._parked_next = False               # parked and read requests take turns

    def admit(self, frames: list[bytes], frame: zmq.Frame) -> bool:
        """Whether a request just read (`frame`: its last frame) is to be decided
        now. If not, it was parked until its peer reads its replies, or dropped
        and counted: its peer is gone, or has too many parked already."""
        identity = frames[0]
        if self._gone and identity in self._gone:
            if socket_at(frame.get(zmq.SRCFD)) is None:
                # Sent before its peer disconnected, read after: nobody to answer.
                self.requests_abandoned += 1
                return False
            del self._gone[identity]   # the same routing id, connected again
            self.watching = bool(self._peers or self._gone)
        peer = self._peers.get(identity)
        if peer is None or not (peer.parked or peer.unread_bytes() > self._limit):
            return True
        self._park(identity, peer, frames, frame.get(zmq.SRCFD))
        return False

    def parked_turn(self) -> list[bytes] | None:
        """A parked request whose peer caught up, when it is the parked
        requests' turn; None when it is a read request's turn (or none is ready)."""
        if self._parked_next:
            frames = self.next_parked()
            if frames is not None:
                self._parked_next = False
                return frames
        self._parked_next = True
        return None

    def next_parked(self) -> list[bytes] | None:
        """The oldest parked request of a peer that caught up. A peer found gone
        has its parked requests dropped, not decided: nobody would get the replies."""
        limit = self._limit
        waiting = self.waiting
        for identity, peer in list(waiting.items()):
            if peer.unread_bytes() > limit:
                continue
            if peer.gone():
                self._abandon(identity, peer)
                del waiting[identity]
                continue
            frames = peer.parked.popleft()
            if not peer.parked:
                del waiting[identity]
            return frames
        return None

    def sent(self, identity: bytes, tracker: zmq.MessageTracker, size: int) -> None:
        """A reply of `size` bytes (at least track_from) was queued for `identity`."""
        peer = self._peers.get(identity)
        if peer is None:
            peer = self._peers[identity] = _Peer()
            self.watching = True
        peer.sending.append((tracker, size))
        peer.unread += size

    def forget_caught_up(self) -> None:
        """Stop tracking the peers with nothing parked and nothing unread."""
        peers = self._peers
        for identity in [i for i, p in peers.items() if not p.parked and not p.unread_bytes()]:
            del peers[identity]
        self.watching = bool(peers or self._gone)

    def _park(self, identity: bytes, peer: _Peer, frames: list[bytes], fd: int) -> None:
        socket_there = socket_at(fd)
        if socket_there is None:
            self.requests_abandoned += 1
            self._abandon(identity, peer)
            return
        connection = fd, socket_there
        if peer.parked and peer.connection != connection:
            # The same routing id on a new connection: the old one is gone.
            self._abandon(identity, peer)
        peer.connection = connection
        if len(peer.parked) >= MAX_PARKED:
            if not self.requests_shed:
                log.warning("shedding requests of a peer that does not read its replies "
                            "(%d already parked); counted in stats.requests_shed", MAX_PARKED)
            self.requests_shed += 1
            return
        peer.parked.append(frames)
        self.waiting[identity] = peer
        self._parked_next = True   # as after any read: the parked requests go first next

    def _abandon(self, identity: bytes, peer: _Peer) -> None:
        """Drop what `peer` left parked, and drop what it sent before leaving as
        it is read (libzmq may still hold some once its replies are discarded)."""
        self.requests_abandoned += len(peer.parked)
        peer.parked.clear()
        self._gone[identity] = None
        self.watching = True
        if len(self._gone) > MAX_GONE:
            del self._gone[next(iter(self._gone))]
