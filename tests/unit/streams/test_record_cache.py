"""The record cache's ring: whatever it answers is the last record put for that messageId, the
one put last is always there, and it never holds more than its ring."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from deliverytrack.streams.state.cache import ENTRY_BYTES, RecordCache
from deliverytrack.tables.hot.codec import HotRecord

IDS = [f"m-{n}" for n in range(12)]


def _record(message_id: str, filler: int) -> HotRecord:
    data = {"messageId": message_id, "filler": "x" * filler}
    return HotRecord(data, orjson.dumps(data))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=4),
    st.lists(
        st.tuples(st.sampled_from(IDS), st.integers(min_value=0, max_value=1_500), st.booleans()),
        max_size=120,
    ),
)
def test_the_ring_answers_only_the_latest_record(
    size: int, puts: list[tuple[str, int, bool]]
) -> None:
    cache = RecordCache(size)
    latest: dict[str, bytes | None] = {}
    for message_id, filler, delete in puts:
        record = None if delete else _record(message_id, filler)
        cache.put(message_id, record)
        latest[message_id] = None if record is None else record.json
        if record is not None and len(record.json) <= size * ENTRY_BYTES // 8:
            got = cache.get(message_id)
            assert got is not None and got.json == record.json and got.data == record.data
        for other in IDS:
            got = cache.get(other)
            assert got is None or got.json == latest.get(other)
        assert len(cache) <= len(IDS)


def test_models_and_nothing_are_not_kept() -> None:
    cache = RecordCache(10)
    cache.put("m-1", _record("m-1", 10))
    cache.put("m-1", object())  # a record only the models hold: forgotten, not kept
    assert cache.get("m-1") is None and len(cache) == 0
    cache.resize(0)
    cache.put("m-2", _record("m-2", 10))
    assert cache.get("m-2") is None
