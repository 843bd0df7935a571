"""The newest-state mailbox behind session watches and long polls: coalescing, waiting, cutting off."""

from __future__ import annotations

import asyncio

import pytest

from photodrop.events import Envelope, NewestState, SubscriberTooSlow

pytestmark = pytest.mark.anyio


def _state(session_id: str, version: int) -> Envelope:
    return Envelope(
        type="session.active", data={"session": {"version": version}}, project_id="proj_1", session_id=session_id
    )


async def test_a_waiting_reader_gets_the_newest_version_once() -> None:
    newest = NewestState()
    reading = asyncio.ensure_future(newest.get())
    await asyncio.sleep(0)  # the reader is now waiting on an empty mailbox
    assert not reading.done()
    newest.offer(_state("sess_a", 1))
    newest.offer(_state("sess_a", 3))
    assert (await reading).version == 3
    newest.offer(_state("sess_a", 2))  # older than what was handed out
    newest.offer(_state("sess_a", 3))  # the same again
    newest.offer(_state("sess_a", 4))
    assert (await newest.get()).version == 4


async def test_a_reader_that_stops_waiting_can_wait_again() -> None:
    newest = NewestState()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(newest.get(), 0.01)
    newest.offer(_state("sess_a", 1))
    assert (await newest.get()).version == 1


async def test_more_sessions_waiting_than_allowed_cut_the_reader_off_once_it_has_read_the_rest() -> None:
    newest = NewestState(max_sessions=2)
    for session_id in ("sess_a", "sess_b", "sess_c"):
        newest.offer(_state(session_id, 1))
    assert [(await newest.get()).session_id for _ in range(2)] == ["sess_a", "sess_b"]
    with pytest.raises(SubscriberTooSlow):
        await newest.get()


async def test_readers_with_deadlines_get_what_came_in_time_or_none_once_it_passed() -> None:
    now = asyncio.get_running_loop().time()
    late, early, answered = NewestState(), NewestState(), NewestState()
    readers = [asyncio.ensure_future(m.get_before(now + d)) for m, d in ((late, 0.05), (early, 0.01), (answered, 30))]
    await asyncio.sleep(0)  # all three are waiting, on one timer
    answered.offer(_state("sess_a", 1))
    assert (await readers[2]).version == 1
    assert await readers[1] is None
    assert await readers[0] is None
    late.offer(_state("sess_b", 1))  # after its deadline: the next read has it at once
    again = await late.get_before(now)
    assert again is not None and again.version == 1


async def test_a_reader_that_gives_up_leaves_the_others_deadlines_in_place() -> None:
    now = asyncio.get_running_loop().time()
    first, second = NewestState(), NewestState()
    giving_up = asyncio.ensure_future(first.get_before(now + 0.01))
    waiting = asyncio.ensure_future(second.get_before(now + 0.03))
    await asyncio.sleep(0)
    giving_up.cancel()
    with pytest.raises(asyncio.CancelledError):
        await giving_up
    assert await waiting is None
