"""The hot path follows the pydantic models, or switches itself off and fails here.

- Its checkers are derived from the models (``tables.hot.schema``): every field, checked
  against pydantic itself on probe values, accepts only what pydantic accepts, as pydantic
  writes it.
- What it writes by hand (key orders, the record a send result makes) is checked against the
  models when it is imported, with a digest of every model it reads or writes: a model change
  switches the hot path off (the pydantic path folds everything, so nothing is ever written
  differently) until someone has reviewed ``tables/hot`` and updated ``codec.MODELS_DIGEST``.
- The fold functions it mirrors are pinned by a digest of their syntax trees (comments and
  formatting aside): change one, and this test names what to review.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from typing import Annotated, Any

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError, field_validator

from deliverytrack.models import codec as model_codec
from deliverytrack.models import common, policy
from deliverytrack.models.events import UpdateStatus
from deliverytrack.models.policy import FoldPolicy
from deliverytrack.tables import deletion, due_index, failover, pii, retention
from deliverytrack.tables import fold as pydantic_fold
from deliverytrack.tables.hot import codec, schema
from deliverytrack.tables.hot.batch import FoldInput, Limits, fold_batch
from deliverytrack.tables.hot.fold import HotFold


def test_the_hot_path_was_checked_against_the_current_models() -> None:
    assert codec.contract_problems() == []
    assert codec.ENABLED


def test_a_model_change_switches_the_hot_path_off(monkeypatch: pytest.MonkeyPatch) -> None:
    class Changed(UpdateStatus):
        note: str | None = None  # a field the hot path was never written for

    models = tuple(Changed if m is UpdateStatus else m for m in codec.MODELS)
    monkeypatch.setattr(codec, "MODELS", models)
    problems = codec.contract_problems()
    assert len(problems) == 1 and "update codec.MODELS_DIGEST" in problems[0]
    monkeypatch.setattr(codec, "ENABLED", False)
    hot = HotFold(FoldPolicy())
    assert not hot.enabled
    send = orjson.dumps(
        {
            "eventId": "s",
            "messageId": "m",
            "providerId": "p",
            "providerMessageId": "pm",
            "type": "SMS",
            "to": "010",
            "requestedAt": "2026-11-23T09:00:00Z",
        }
    )
    assert hot.decode(codec.SEND, send) is None
    result = fold_batch(
        hot,
        [FoldInput(codec.SEND, b"m", send)],
        lambda _: None,
        lambda _: None,
        Limits(9_999, 9_999),
    )
    assert result.hot == 0 and result.applied == 1


MIRRORED = (
    pydantic_fold.fold,
    pydantic_fold.can_transition,
    pydantic_fold._record_send,
    pydantic_fold._send_metadata,
    pydantic_fold._update_status,
    pydantic_fold._due_check,
    pydantic_fold._observed,
    pydantic_fold._apply_result,
    pydantic_fold._reported,
    pydantic_fold._report_time,
    pydantic_fold._give_up,
    pydantic_fold._changed,
    pydantic_fold._apply_transition,
    pydantic_fold._status_changed,
    pydantic_fold._slim,
    pydantic_fold._json_of,
    pydantic_fold._remember,
    deletion.fold_marked,
    retention.retention_labels,
    retention.resolve_retention_days,
    retention.to_retention_bucket_ym,
    pii.protect_send,
    pii.plain_to,
    pii.redact_record_raw,
    failover.request_failover,
    due_index.effective_due,
    due_index.epoch_ms,
    policy.PollingPolicy.backoff_delay_ms,
    common._to_utc,
    common.checked_json,
    model_codec.encode,
    model_codec.encode_status_changed,
    model_codec._fast,
    model_codec._decoder,
    model_codec.parse_json_object,
    model_codec.upcast,
)
MIRRORED_DIGEST = "ac9a0d6326e9f6de"
"""Digest of the syntax trees of ``MIRRORED`` when ``tables/hot`` was last checked against them."""


def _tree_digest() -> str:
    # ast.unparse: the code without comments and formatting (and the same text on 3.11-3.13).
    trees = (ast.unparse(ast.parse(textwrap.dedent(inspect.getsource(f)))) for f in MIRRORED)
    return hashlib.sha256("\n".join(trees).encode()).hexdigest()[:16]


def test_the_fold_functions_the_hot_path_mirrors_are_the_ones_it_was_checked_against() -> None:
    current = _tree_digest()
    assert current == MIRRORED_DIGEST, (
        f"a function tables/hot mirrors changed (digest {current}): bring tables/hot/fold.py "
        "(or codec.py) in line with it, run tests/unit/tables/test_hot_equivalence.py, and "
        "update MIRRORED_DIGEST"
    )


# --- the derived checkers against pydantic, field by field ---------------------------------------

PROBES: tuple[Any, ...] = (
    "",
    "x",
    " x ",
    "x" * 512,
    "x" * 513,
    "x" * 2_049,
    0,
    -1,
    1,
    2,
    2**63,
    1.0,
    1.5,
    True,
    False,
    "1",
    "SENT",
    "FAILED",
    "manual",
    "SMS",
    "result",
    "plain",
    "opsLogs",
    "sms",
    "2026-11-23T09:00:00Z",
    "2026-11-23T09:00:00.000000Z",
    "2026-11-23T09:00:00.5+00:00",
    "2026-11-23T18:00:00+09:00",
    "1969-12-31T23:59:59Z",
    {},
    {"a": 1},
    {"a": {"b": [1, 2.5, None, True]}},
    {"a": "b"},
    {"code": "E"},
    {"code": "E", "message": "m", "extra": 1},
    {"code": ""},
    {"status": "SENT"},
    [],
    ["x"],
    [{"code": "W"}],
    [1],
)


def _specs() -> list[tuple[str, schema.FieldSpec, Any]]:
    found = []
    for _, spec in codec.SPECS.values():
        for field in spec.fields:
            info = spec.model.model_fields[field.name]
            found.append((f"{spec.model.__name__}.{field.name}", field, info))
    for field in codec.RECORD_SPEC.fields:
        info = codec.RECORD_SPEC.model.model_fields[field.name]
        found.append((f"TrackingRecord.{field.name}", field, info))
    return found


@pytest.mark.parametrize(
    ("name", "field", "info"), _specs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_field_checker_accepts_only_what_pydantic_accepts_and_writes_it_the_same(
    name: str, field: schema.FieldSpec, info: Any
) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(info.rebuild_annotation())
    for probe in PROBES:
        checked = field.kind.check(probe)
        if checked is schema.BAD:
            continue
        raw = orjson.dumps(probe)
        try:
            value = adapter.validate_json(raw)
        except ValidationError as exc:
            pytest.fail(f"{name}: the hot checker takes {probe!r}, pydantic refuses it: {exc}")
        written = adapter.dump_json(value, by_alias=True, exclude_none=True)
        assert written == orjson.dumps(checked), f"{name}: {probe!r}"


def test_the_checkers_follow_the_constraints_of_the_model() -> None:
    from deliverytrack.models.common import Frozen

    class Narrow(Frozen):
        code: Annotated[str, schema.annotated_types.MaxLen(3)]
        count: int = 0

    spec = schema.compile_model(Narrow)
    assert spec.read({"code": "abc"}) == {"code": "abc", "count": 0}
    assert spec.read({"code": "abcd"}) is schema.BAD
    assert spec.read({"code": "abc", "count": 1.0}) is schema.BAD
    assert spec.read({"code": "abc", "other": 1}) is schema.BAD  # extra="forbid"

    class Validated(Frozen):
        code: str

        @field_validator("code")
        @classmethod
        def _upper(cls, value: str) -> str:
            return value.upper()

    with pytest.raises(schema.Unsupported, match="_upper"):
        schema.compile_model(Validated)
