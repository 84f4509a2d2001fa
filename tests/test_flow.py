"""FlowControl in process (actor/flow.py): what it admits, parks, sheds and releases.

Necessary, not sufficient: tests/test_fairness.py holds the same promises over
real sockets, with peers that stop reading and peers that disconnect.
"""

from __future__ import annotations

import zmq

from actor.flow import MAX_PARKED, FlowControl

LIMIT = 100


class Tracker:
    """A sent reply's zmq.MessageTracker: done once libzmq has handed it on."""

    done = False


class Frame:
    """The last frame of a request, as admit() asks it: an inproc connection,
    which has no descriptor and so is never taken for gone."""

    def get(self, option: int) -> int:
        assert option == zmq.SRCFD
        return -1


def request(peer: bytes, n: int) -> list[bytes]:
    return [peer, b"request %d" % n]


def stalled(flow: FlowControl, peer: bytes) -> Tracker:
    """`peer` has more than LIMIT bytes of replies not yet read."""
    tracker = Tracker()
    flow.sent(peer, tracker, LIMIT + 1)
    return tracker


def test_a_peer_that_reads_nothing_is_held_in_order_and_released_when_it_reads():
    flow = FlowControl(LIMIT)
    assert not flow.watching and not flow.waiting
    tracker = stalled(flow, b"slow")
    assert flow.watching
    assert [flow.admit(request(b"slow", n), Frame()) for n in range(3)] == [False] * 3
    assert flow.admit(request(b"other", 0), Frame())
    assert flow.waiting and flow.next_parked() is None     # nothing read yet
    tracker.done = True
    assert [flow.next_parked() for _ in range(4)] == [request(b"slow", n) for n in range(3)] + [None]
    assert not flow.waiting
    flow.forget_caught_up()
    assert not flow.watching
    assert flow.requests_shed == flow.requests_abandoned == 0


def test_past_max_parked_requests_are_shed_and_counted():
    flow = FlowControl(LIMIT)
    stalled(flow, b"slow")
    for n in range(MAX_PARKED + 5):
        assert not flow.admit(request(b"slow", n), Frame())
    assert flow.requests_shed == 5


def test_parked_and_read_requests_take_turns():
    flow = FlowControl(LIMIT)
    tracker = stalled(flow, b"slow")
    for n in range(3):
        flow.admit(request(b"slow", n), Frame())
    tracker.done = True
    # After a read, a parked request goes first; after it, a read one's turn.
    assert flow.parked_turn() == request(b"slow", 0)
    assert flow.parked_turn() is None
    assert flow.parked_turn() == request(b"slow", 1)


def test_without_a_limit_nothing_is_tracked():
    assert FlowControl(float("inf")).track_from == float("inf")
