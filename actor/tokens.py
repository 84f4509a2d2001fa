"""Which reservation a token may use: EVerest's matching rule, and the index
that applies it to the non-EVSE-specific reservations without a scan."""

from __future__ import annotations

from protocol.messages import Reservation


def token_matches(reservation: Reservation, id_token: str, parent_token: str | None) -> bool:
    """EVerest's matches_reserved_identifier: same token, or same parent (group)
    token on both sides; tokens are case-insensitive (CiString)."""
    if reservation.id_token.casefold() == id_token.casefold():
        return True
    return (parent_token is not None and reservation.parent_id_token is not None
            and reservation.parent_id_token.casefold() == parent_token.casefold())


Saved = list[tuple[dict[str, dict[int, int]], str, dict[int, int]]]


class TokenIndex:
    """Non-EVSE-specific reservations by casefolded id_token and by casefolded
    parent_id_token, each bucket in placement order (reservation id -> placement
    number): use and exists look up by token, where a scan of thousands of
    reservations per request held up everything else."""

    def __init__(self) -> None:
        self._by_token: dict[str, dict[int, int]] = {}
        self._by_parent: dict[str, dict[int, int]] = {}
        self._placements = 0

    def add(self, reservation: Reservation) -> None:
        self._placements += 1
        for index, key in self._keys(reservation):
            index.setdefault(key, {})[reservation.reservation_id] = self._placements

    def remove(self, reservation: Reservation) -> None:
        for index, key in self._keys(reservation):
            bucket = index[key]
            del bucket[reservation.reservation_id]
            if not bucket:
                del index[key]

    def save(self, reservation: Reservation) -> Saved:
        """The buckets `reservation` is filed in as they are now, for put_back():
        removing and adding it again would make it the newest."""
        return [(index, key, index[key].copy()) for index, key in self._keys(reservation)]

    @staticmethod
    def put_back(saved: Saved) -> None:
        for index, key, bucket in saved:
            index[key] = bucket

    def oldest_match(self, id_token: str, parent_token: str | None) -> int | None:
        """The id of the oldest reservation token_matches() accepts: the older of
        the first in its token's bucket and the first in its parent's."""
        buckets = [self._by_token.get(id_token.casefold())]
        if parent_token is not None:
            buckets.append(self._by_parent.get(parent_token.casefold()))
        firsts = [next(iter(bucket.items())) for bucket in buckets if bucket]
        if not firsts:
            return None
        return min(firsts, key=lambda first: first[1])[0]

    def _keys(self, reservation: Reservation) -> list[tuple[dict[str, dict[int, int]], str]]:
        if reservation.evse_id is not None:
            return []
        keys = [(self._by_token, reservation.id_token.casefold())]
        if reservation.parent_id_token is not None:
            keys.append((self._by_parent, reservation.parent_id_token.casefold()))
        return keys
