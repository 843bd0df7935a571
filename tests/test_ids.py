"""Ids sort in creation order, also within one millisecond, and session ids stay unguessable."""

from __future__ import annotations

import os
import warnings

from photodrop.ids import entropy, new_id, new_ordered_id, token_hex

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


def test_random_bits_fill_their_width_and_no_more() -> None:
    drawn = [entropy.bits(80) for _ in range(2000)]
    assert max(drawn) < 2**80 and any(value >= 2**79 for value in drawn)
    assert len(set(drawn)) == len(drawn)
    assert len({token_hex(16) for _ in range(2000)}) == 2000 and len(token_hex(16)) == 32


def test_a_forked_child_draws_its_own_random_bytes() -> None:
    """The pool of drawn bytes is not inherited: a parent and its child would otherwise hand out the same ids."""
    entropy.bytes(1)  # the pool holds bytes the child would inherit
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # newer Pythons warn of fork beside threads
        child = os.fork()
    if child == 0:
        os.write(write, entropy.bytes(32))
        os._exit(0)
    os.close(write)
    from_child = os.read(read, 32)
    os.close(read)
    os.waitpid(child, 0)
    assert len(from_child) == 32 and from_child != entropy.bytes(32)
