"""Brute-force global-reservation check, mirroring EVerest's ReservationHandler.

Like EVerest, it enumerates every distinct arrival order of the reserved cars
and, for each order, recursively every choice of a free EVSE the arriving car
can use; the reservations hold only if every car finds an EVSE in all of them.
That is factorial in the number of cars and EVSEs. It is kept as the test
oracle for actor.guarantee and as the baseline for benchmarks.
"""

from collections.abc import Iterator, Sequence

from actor.guarantee import can_use


def arrival_orders_hold(cars: Sequence[str], free: Sequence[frozenset[str]]) -> bool:
    taken = [False] * len(free)
    return all(_every_choice_holds(order, 0, free, taken) for order in _distinct_orders(cars))


def _distinct_orders(cars: Sequence[str]) -> Iterator[list[str]]:
    # std::next_permutation over a sorted sequence, as EVerest does: each
    # distinct order of identical car types is produced exactly once.
    order = sorted(cars)
    while True:
        yield order.copy()
        i = len(order) - 2
        while i >= 0 and order[i] >= order[i + 1]:
            i -= 1
        if i < 0:
            return
        j = len(order) - 1
        while order[j] <= order[i]:
            j -= 1
        order[i], order[j] = order[j], order[i]
        order[i + 1 :] = reversed(order[i + 1 :])


def _every_choice_holds(
    order: list[str], n: int, free: Sequence[frozenset[str]], taken: list[bool]
) -> bool:
    if n == len(order):
        return True
    found = False
    for e, signature in enumerate(free):
        if taken[e] or not can_use(order[n], signature):
            continue
        found = True
        taken[e] = True
        ok = _every_choice_holds(order, n + 1, free, taken)
        taken[e] = False
        if not ok:
            return False
    return found
