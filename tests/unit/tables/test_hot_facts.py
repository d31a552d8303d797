"""``HotFacts`` (what the store's derived data reads of a hot record) against the model's own
attributes, for every record the fold makes of generated inputs, under every policy."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deliverytrack.models.codec import decode_record, encode_record
from deliverytrack.tables.aggregates import contribution, requested_key, updated_key
from deliverytrack.tables.due_index import due_key_of
from deliverytrack.tables.facts import RecordFacts
from deliverytrack.tables.hot.batch import FoldInput, Limits, fold_batch
from deliverytrack.tables.hot.codec import load_record
from deliverytrack.tables.hot.fold import HotFold
from deliverytrack.tables.retention import expiry_key_of
from tests.strategies import POLICIES, Input, fold_inputs

FACTS = [name for name in dir(RecordFacts) if not name.startswith("_")]


def _records(policy: str, inputs: list[Input]) -> list[bytes]:
    """The JSON of every record a batch of ``inputs`` ends with."""
    hot = HotFold(POLICIES[policy])
    items = [FoldInput(kind, key, value) for kind, key, value in inputs]
    result = fold_batch(hot, items, lambda _: None, lambda _: None, Limits(1 << 20, 1 << 20))
    return [raw for _, _, raw in result.changes.values() if raw is not None]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(POLICIES)), fold_inputs())
def test_hot_facts_are_the_models_attributes(policy: str, inputs: list[Input]) -> None:
    for raw in _records(policy, inputs):
        model = decode_record(raw)
        hot = load_record(encode_record(model))
        if hot is None:
            continue  # a record the hot path leaves to the models (e.g. one with webhooks)
        facts = hot.facts()
        for name in FACTS:
            got, want = getattr(facts, name), getattr(model, name)
            assert got == want and type(got) is type(want), name
        for derived in (due_key_of, expiry_key_of, requested_key, updated_key):
            assert derived(facts) == derived(model)
        ours: Any = contribution(facts)
        assert ours == contribution(model)
        assert facts.status is model.status and facts.type is model.type
