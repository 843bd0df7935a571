"""Ids sort in creation order, also within one millisecond, and session ids stay unguessable."""

from __future__ import annotations

from photodrop.ids import new_id, new_ordered_id

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _value(identifier: str) -> int:
    value = 0
    for char in identifier.split("_", 1)[1]:
        value = value * 32 + _CROCKFORD.index(char)
    return value


def test_ids_made_in_one_burst_sort_in_the_order_they_were_made() -> None:
    for make in (new_id, new_ordered_id):
        made = [make("sess") for _ in range(2000)]  # many share a millisecond
        assert made == sorted(made) and len(set(made)) == len(made)


def test_a_session_id_does_not_give_away_its_neighbour() -> None:
    made = [_value(new_id("sess")) for _ in range(2000)]
    steps = [later - earlier for earlier, later in zip(made, made[1:], strict=False)]
    # Inside one millisecond each step is random up to 2**64: a step below 2**24 has odds of
    # 2**-40 each, so this fails only if the step were predictable.
    assert min(steps) > 2**24
