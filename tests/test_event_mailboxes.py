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
