"""Exact, polynomial-time check of EVerest's guarantee for non-EVSE-specific
reservations (EVerest's "global" reservations).

Theory of operation
-------------------
Each non-EVSE-specific reservation is a car of some connector type that will arrive later
and take *any* free EVSE it can use. The guarantee is adversarial: it must hold
for every arrival order and every choice each car makes among the EVSEs it can
use. EVerest checks this by enumerating all of them, which is factorial.

It fails exactly when some car c can be left stranded, i.e. when the *other*
cars can occupy every EVSE in N(c), the set of free EVSEs c could use:

* if a matching of other cars into N(c) saturates N(c), let those cars arrive
  first and each pick its matched EVSE; c then arrives to find N(c) full
  (with N(c) empty, c is stranded whatever happens);
* conversely, in any failing run the first stranded car c finds N(c) fully
  occupied by earlier cars, each on a distinct EVSE it could use, which is
  such a saturating matching.

Cars of one type share N(c) and see the same multiset of "other" cars, so one
check per car type present is enough. Cars of one type are interchangeable,
as are EVSEs with the same signature (the types of their Available
connectors), so the matching becomes a max flow on a compressed graph:

    source -> car type s   capacity count(s), minus one when s is the type t
                           under test (that car is the one being stranded)
    car type s -> sig g    when can_use(s, g) and g is in N(t)
    sig g -> sink          capacity: number of free EVSEs with signature g

N(t) is saturated iff the flow equals |N(t)|. The graph has one node per car
type and per signature, so the cost does not depend on the number of EVSEs or
cars beyond grouping them.
"""

from collections import Counter
from collections.abc import Mapping

from protocol.vocabulary import ConnectorType

_UNKNOWN = ConnectorType.Unknown   # bound once: these run in the guarantee's inner loops


def types_match(car_type: str, connector_type: str) -> bool:
    """A car of `car_type` fits a connector of `connector_type`: "Unknown" on
    either side is a wildcard. can_use below is the same rule over a signature."""
    return car_type == connector_type or car_type == _UNKNOWN or connector_type == _UNKNOWN


def can_use(car_type: str, signature: frozenset[str]) -> bool:
    # An EVSE with no Available connector cannot charge anyone, even a car of
    # unknown type; otherwise "Unknown" on either side is a wildcard.
    return bool(signature) and (
        car_type == _UNKNOWN or car_type in signature or _UNKNOWN in signature
    )


def guarantee_holds(
    cars: Mapping[str, int], free: Mapping[frozenset[str], int]
) -> bool:
    types = [t for t, n in cars.items() if n > 0]
    if not types:
        return True
    counts = [cars[t] for t in types]
    # EVSEs with no Available connector host nobody, so they must not count
    # as room in the pigeonhole test below.
    sigs = [g for g, n in free.items() if n > 0 and g]
    room = [free[g] for g in sigs]
    total = sum(counts)
    # Pigeonhole: whatever happens, some car ends up without an EVSE.
    if total > sum(room):
        return False
    usable = [
        [j for j, g in enumerate(sigs) if can_use(t, g)] for t in types
    ]
    for i, reach in enumerate(usable):
        need = sum(room[j] for j in reach)
        # Nothing to fill: this car is stranded in every arrival order.
        if need == 0:
            return False
        # The other cars number total - 1; with fewer of them than EVSEs in
        # N(t) they cannot fill it, so no flow is needed.
        if total - 1 < need:
            continue
        in_reach = set(reach)
        supply = counts.copy()
        supply[i] -= 1
        adj = [[j for j in u if j in in_reach] for u in usable]
        if _saturates(supply, adj, room, reach, need):
            return False
    return True


def holds_with_one_more(
    cars: Mapping[str, int], wanted: str, free: Mapping[frozenset[str], int]
) -> bool:
    """Whether one more car of type `wanted` would keep the guarantee."""
    more = Counter(cars)
    more[wanted] += 1
    return guarantee_holds(more, free)


def _saturates(
    supply: list[int],
    adj: list[list[int]],
    room: list[int],
    reach: list[int],
    need: int,
) -> bool:
    """Whether car types (supply) can fill every EVSE of the signatures in reach."""
    k = len(supply)
    m = len(room)
    left = [0] * m
    for j in reach:
        left[j] = room[j]
    supply = supply.copy()
    flow = [[0] * m for _ in range(k)]
    # A greedy pass carries most of the flow on these tiny graphs, leaving
    # only a few augmenting paths to correct its mistakes.
    for s in range(k):
        for j in adj[s]:
            if supply[s] == 0:
                break
            x = min(supply[s], left[j])
            if x:
                flow[s][j] += x
                supply[s] -= x
                left[j] -= x
                need -= x
    while need:
        # BFS from car types with spare cars; sig -> car type hops follow
        # existing flow backwards (re-routing that car type elsewhere).
        via_sig = [-1] * m  # car type that first reached each sig
        via_type = [-1] * k  # sig whose flow led back to each car type
        queue = [s for s in range(k) if supply[s]]
        for s in queue:
            via_type[s] = m  # marks a path start at the source
        end = -1
        for s in queue:
            for j in adj[s]:
                if via_sig[j] != -1:
                    continue
                via_sig[j] = s
                if left[j]:
                    end = j
                    break
                for r in range(k):
                    if flow[r][j] and via_type[r] == -1:
                        via_type[r] = j
                        queue.append(r)
            if end != -1:
                break
        if end == -1:
            return False
        # Bottleneck over the spare cars at the start, the room at the end and
        # every flow pushed back along the way.
        x = left[end]
        j = end
        s = via_sig[j]
        while via_type[s] != m:
            j = via_type[s]
            x = min(x, flow[s][j])
            s = via_sig[j]
        x = min(x, supply[s])
        left[end] -= x
        need -= x
        j = end
        s = via_sig[j]
        flow[s][j] += x
        while via_type[s] != m:
            j = via_type[s]
            flow[s][j] -= x
            s = via_sig[j]
            flow[s][j] += x
        supply[s] -= x
    return True
