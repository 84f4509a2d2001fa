from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from actor.guarantee import can_use, guarantee_holds
from protocol.vocabulary import ConnectorType

UNKNOWN = ConnectorType.Unknown
from bench.everest_baseline import arrival_orders_hold

CCS = "cCCS2"
T2 = "cType2"
CHA = "cCHAdeMO"


def sig(*types: str) -> frozenset[str]:
    return frozenset(types)


def holds(cars: list[str], free: list[frozenset[str]]) -> bool:
    """Both implementations must agree on every spec case; return the verdict."""
    fast = guarantee_holds(Counter(cars), Counter(free))
    assert fast == arrival_orders_hold(cars, free)
    return fast


def test_one_car_one_matching_evse_holds():
    assert holds([CCS], [sig(CCS)])


def test_car_without_matching_evse_fails():
    assert not holds([CCS], [sig(T2)])


def test_cars_competing_for_dual_connector_evse_fails():
    # The cCCS2 car may arrive first and take the dual EVSE, leaving the
    # cType2 car only the cCCS2-only EVSE.
    assert not holds([CCS, T2], [sig(CCS, T2), sig(CCS)])


def test_dual_connector_evse_leaves_room_for_either_type_alone():
    assert holds([CCS], [sig(CCS, T2), sig(CCS)])
    assert holds([T2], [sig(CCS, T2), sig(CCS)])


def test_cars_of_distinct_types_on_disjoint_evses_hold():
    assert holds([CCS, T2], [sig(CCS), sig(T2)])


def test_unknown_car_takes_any_available_connector():
    assert can_use(UNKNOWN, sig(T2))
    assert holds([UNKNOWN, UNKNOWN], [sig(CCS), sig(T2)])


def test_unknown_car_may_take_the_evse_another_car_needs():
    assert not holds([UNKNOWN, CCS], [sig(CCS), sig(T2)])


def test_unknown_connector_serves_every_type():
    assert can_use(CCS, sig(UNKNOWN))
    assert holds([CCS, T2, UNKNOWN], [sig(UNKNOWN)] * 3)


def test_empty_signature_is_unusable():
    assert not can_use(UNKNOWN, sig())
    assert not holds([UNKNOWN], [sig(), sig()])
    assert holds([CCS], [sig(), sig(CCS)])


def test_no_cars_always_holds():
    assert holds([], [])
    assert holds([], [sig()])
    assert guarantee_holds({CCS: 0}, {})


def test_zero_counts_are_ignored():
    assert guarantee_holds({CCS: 1, T2: 0}, {sig(CCS): 1, sig(T2): 0})


def test_more_cars_than_evses_fails():
    assert not holds([CCS, CCS, CCS], [sig(CCS), sig(CCS)])
    assert not holds([UNKNOWN] * 3, [sig(UNKNOWN), sig(CCS, T2)])


def test_many_identical_cars_and_evses():
    assert guarantee_holds({CCS: 150}, {sig(CCS): 150})
    assert not guarantee_holds({CCS: 151}, {sig(CCS): 150, sig(T2): 50})


TYPES = [CCS, T2, CHA, UNKNOWN]
signatures = st.frozensets(st.sampled_from(TYPES))


@settings(max_examples=1000, deadline=None)
@given(
    cars=st.lists(st.sampled_from(TYPES), max_size=5),
    free=st.lists(signatures, max_size=5),
)
def test_matches_everest_brute_force(cars, free):
    assert guarantee_holds(Counter(cars), Counter(free)) == arrival_orders_hold(cars, free)
