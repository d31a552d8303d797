"""The published event contract (docs/schemas/): generated from the models and up to date, valid
JSON Schema 2020-12 and AsyncAPI 3.0 whose references resolve, and in agreement with the worker:
what producers may write (the golden fixtures) and what the worker writes (encoded as the
worker encodes) validate, and what the worker refuses the schemas refuse too."""

from __future__ import annotations

import json
import types
from datetime import timedelta
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import orjson
import pytest
from pydantic import BaseModel

from deliverytrack.models import codec
from deliverytrack.models.codec import DecodeError
from deliverytrack.models.enums import MessageType
from deliverytrack.models.enums import TrackingStatus as S
from deliverytrack.models.events import (
    DeadLetter,
    FailoverRequested,
    PurgeRecord,
    RecordDeleted,
    RecordFailoverOutcome,
    StatusChanged,
)
from deliverytrack.models.outbound import WebhookAttempted
from deliverytrack.models.policy import ApiFailoverPolicy, FoldPolicy
from deliverytrack.streams import contract
from deliverytrack.streams.boundary import Source, dead_letter
from deliverytrack.streams.cli.entry import build_parser
from deliverytrack.streams.topics import Topics
from deliverytrack.tables.fold import fold
from tests.factories import (
    T0,
    alimtalk_send_factory,
    send_recorded_factory,
    update_status_factory,
)
from tests.schema_check import CONTRACT_DIR, load, problems, schema_validator

FIXTURES = Path(__file__).parents[1] / "fixtures" / "events"
OUTPUT_MODELS = (StatusChanged, DeadLetter, FailoverRequested, WebhookAttempted, RecordDeleted)
# Golden fixtures of events that travel on internal topics only: checked against the schema the
# models give (not published: internal topics are the app's own).
INTERNAL_EVENTS = {"RecordExpiryDue": codec.DueCheckAdapter}


def fixture(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((FIXTURES / name).read_bytes())
    return value


def topic_of_event() -> dict[str, str]:
    """eventType -> the public topic (suffix) that carries it."""
    found = {}
    for topic in contract.PUBLIC_TOPICS:
        suffix = contract.topic_suffix(topic)
        for event in contract.event_names(load(f"{suffix}.json")):
            found[event] = suffix
    return found


# --- the files: generated, complete, well-formed ------------------------------------------------


def test_checked_in_contract_is_what_the_models_generate() -> None:
    stale = contract.differences(CONTRACT_DIR)
    assert not stale, (
        f"docs/schemas/ does not match the models ({'; '.join(stale)}). Regenerate it from the "
        f"repository root with:\n    {contract.REGENERATE}\n(.venv/bin/deliverytrack in the dev "
        "venv) and commit the result."
    )


def test_every_public_topic_has_a_schema_and_a_channel() -> None:
    topics = Topics.from_prefix(contract.DEFAULT_PREFIX, "any-app-id")
    names = {path.name for path in CONTRACT_DIR.glob("*.json")}
    suffixes = {name.removeprefix(contract.DEFAULT_PREFIX) for name in topics.public}
    assert names == {f"{suffix}.json" for suffix in suffixes} | {contract.ASYNCAPI_FILE}
    spec = load(contract.ASYNCAPI_FILE)
    assert {channel["address"] for channel in spec["channels"].values()} == set(topics.public)
    for suffix in suffixes:
        schema = load(f"{suffix}.json")
        assert schema["title"] == contract.DEFAULT_PREFIX + suffix
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_a_prefix_changes_every_topic_name_alike() -> None:
    for topic in contract.PUBLIC_TOPICS:
        with_prefix = getattr(Topics.from_prefix("acme.dt.", "any-app-id"), topic.field)
        assert contract.topic_name(topic, "acme.dt.") == with_prefix
        assert with_prefix == "acme.dt." + contract.topic_suffix(topic)
    info = load(contract.ASYNCAPI_FILE)["info"]
    assert (
        "DELIVERYTRACK_TOPIC_PREFIX=acme.dt. the topic deliverytrack.send-results is "
        in (info["description"])
    )


@pytest.mark.parametrize("topic", contract.PUBLIC_TOPICS, ids=contract.topic_suffix)
def test_topic_schemas_are_valid_json_schema_2020_12(topic: contract.PublicTopic) -> None:
    schema_validator(load(f"{contract.topic_suffix(topic)}.json"))  # check_schema raises


def _pointer(document: Any, pointer: str) -> Any:
    for part in pointer.removeprefix("/").split("/"):
        document = document[part.replace("~1", "/").replace("~0", "~")]
    return document


def test_asyncapi_document_references_resolve() -> None:
    spec = load(contract.ASYNCAPI_FILE)
    assert spec["asyncapi"] == "3.0.0"

    def resolve(ref: str) -> Any:
        file, _, pointer = ref.partition("#")
        document = load(file.removeprefix("./")) if file else spec
        return _pointer(document, pointer)

    for name, operation in spec["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel = resolve(operation["channel"]["$ref"])
        for message in operation["messages"]:
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")
            resolve(message["$ref"])
        assert channel["messages"]
    for channel in spec["channels"].values():
        for message in channel["messages"].values():
            payload = resolve(message["$ref"])["payload"]
            assert payload["schemaFormat"] == contract.SCHEMA_FORMAT
            assert resolve(payload["schema"]["$ref"])["type"] == "object"
    # Which side writes: the worker only reads send-results; it writes every output topic.
    actions = [(op["action"], op["channel"]["$ref"]) for op in spec["operations"].values()]
    assert [action for action, ref in actions if ref == "#/channels/sendResults"] == ["receive"]
    sends = {ref for action, ref in actions if action == "send"}
    for topic in contract.PUBLIC_TOPICS:
        if topic.side == "output":
            assert f"#/channels/{contract._camel(contract.topic_suffix(topic))}" in sends


# --- inputs: what producers write -------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.name)
def test_golden_fixture_fits_the_schema(path: Path) -> None:
    value = fixture(path.name)
    event = value["eventType"]
    topics = topic_of_event()
    if event in INTERNAL_EVENTS:
        assert event not in topics
        schema = INTERNAL_EVENTS[event].json_schema(
            by_alias=True, mode="validation", schema_generator=contract.ContractSchema
        )
        errors = [e.message for e in schema_validator(schema).iter_errors(value)]
    else:
        errors = problems(topics[event], value)
    assert not errors, f"{path.name}: {errors}"


def test_inputs_are_read_tolerantly_outputs_are_closed() -> None:
    """Input schemas allow unknown fields, as the worker ignores them; output schemas describe
    exactly what the worker writes."""
    value = {**fixture("SendRecorded.v1.json"), "colour": "red", "campaign": {"id": 7}}
    assert not problems("send-results", value)
    codec.decode_send_result(orjson.dumps(value))
    command = {**fixture("UpdateStatus.v1.json"), "colour": "red"}
    assert not problems("commands", command)
    report = {**fixture("ProviderReportReceived.v1.json"), "colour": "red"}
    assert not problems("provider-webhooks", report)
    deleted = _deleted_output()
    assert problems("record-deletions", {**deleted, "colour": "red"})


@pytest.mark.parametrize(
    ("suffix", "fixture_name", "change", "worker_accepts"),
    [
        # eventType may be left out on send-results and provider-webhooks (one kind of event),
        # not on commands (several).
        ("send-results", "SendRecorded.v1.json", {"eventType": None}, True),
        ("provider-webhooks", "ProviderReportReceived.v1.json", {"eventType": None}, True),
        ("commands", "UpdateStatus.v1.json", {"eventType": None}, False),
        ("commands", "UpdateStatus.v1.json", {"eventType": "Unheard"}, False),
        # A timestamp needs a timezone; an id must be text.
        ("send-results", "SendRecorded.v1.json", {"requestedAt": "2026-11-23T09:00:00"}, False),
        ("send-results", "SendRecorded.v1.json", {"requestedAt": "23 Nov 2026"}, False),
        ("commands", "StopTracking.v1.json", {"at": "2026-11-23T09:01:00+09:00"}, True),
        ("send-results", "SendRecorded.v1.json", {"providerMessageId": 12345}, False),
        ("send-results", "SendRecorded.v1.json", {"providerMessageId": None}, True),
        ("send-results", "SendRecorded.v1.json", {"type": "PIGEON"}, False),
        ("send-results", "SendRecorded.v1.json", {"messageId": ""}, False),
        ("send-results", "SendRecorded.v1.json", {"schemaVersion": 2}, False),
        ("provider-webhooks", "ProviderReportReceived.v1.json", {"status": "READ"}, False),
        ("commands", "purge.v1.json", {"messageId": None}, False),
    ],
)
def test_schema_and_worker_agree_on_inputs(
    suffix: str, fixture_name: str, change: dict[str, Any], worker_accepts: bool
) -> None:
    value = fixture(fixture_name)
    for key, new in change.items():
        if new is None and key in ("eventType", "messageId"):
            value.pop(key)
        else:
            value[key] = new
    decode = {
        "send-results": codec.decode_send_result,
        "commands": codec.decode_command,
        "provider-webhooks": codec.decode_provider_report,
    }[suffix]
    try:
        decode(orjson.dumps(value))
        accepted = True
    except DecodeError:
        accepted = False
    assert accepted == worker_accepts
    assert (not problems(suffix, value)) == worker_accepts, problems(suffix, value)


# --- outputs: what the worker writes ----------------------------------------------------------


def _route(emitted: tuple[Any, ...]) -> list[tuple[str, bytes]]:
    """(topic suffix, value) of what the fold emitted, encoded as the engine encodes it."""
    out = []
    for event in emitted:
        if isinstance(event, StatusChanged):
            out.append(("status-changes", codec.encode_status_changed(event)))
        elif isinstance(event, FailoverRequested):
            out.append(("failover-requests", codec.encode(event)))
        elif isinstance(event, RecordDeleted):
            out.append(("record-deletions", codec.encode(event)))
        elif isinstance(event, RecordFailoverOutcome):
            out.append(("commands", codec.encode(event)))
    return out


def _fold_story() -> list[tuple[str, bytes]]:
    """An AlimTalk message that fails for a non-Kakao user (failover requested), its fallback
    sent, the original purged: every kind of fold output."""
    policy = FoldPolicy(api_failover=ApiFailoverPolicy(enabled=True))
    outputs: list[tuple[str, bytes]] = []
    original, emitted = fold(None, alimtalk_send_factory("ct-ak"), policy)
    outputs += _route(emitted)
    failed = update_status_factory(S.FAILED, "ct-ak", provider_status_code="3104")
    original, emitted = fold(original, failed, policy)
    outputs += _route(emitted)
    request = next(e for e in emitted if isinstance(e, FailoverRequested))
    fallback = send_recorded_factory(
        request.fallback_message_id, type=MessageType.LMS, failover_of="ct-ak"
    )
    _, emitted = fold(None, fallback, policy)
    outputs += _route(emitted)
    purge = PurgeRecord(event_id="p-1", message_id="ct-ak", at=T0 + timedelta(days=1))
    _, emitted = fold(original, purge, policy)
    outputs += _route(emitted)
    return outputs


def _deleted_output() -> dict[str, Any]:
    _, value = next(o for o in _fold_story() if o[0] == "record-deletions")
    deleted: dict[str, Any] = orjson.loads(value)
    return deleted


def test_what_the_fold_writes_fits_the_schemas() -> None:
    outputs = _fold_story()
    assert {suffix for suffix, _ in outputs} == {
        "status-changes",
        "failover-requests",
        "commands",
        "record-deletions",
    }
    for suffix, value in outputs:
        assert not problems(suffix, value), (suffix, value)
    first = orjson.loads(outputs[0][1])
    assert first["previousStatus"] is None  # always present, null for the first status
    del first["previousStatus"]
    assert problems("status-changes", first)


def test_outputs_leave_out_what_has_no_value_instead_of_null() -> None:
    changed = orjson.loads(_fold_story()[0][1])
    assert "scheduledAt" not in changed["record"]  # None: left out
    record = {**changed["record"], "scheduledAt": None}
    assert problems("status-changes", {**changed, "record": record})
    letter = orjson.loads(dead_letter(Source("t", 0, 1, None, b"x"), "r", "e", T0, 100)[1])
    assert "keyBase64" not in letter
    assert problems("dead-letters", {**letter, "keyBase64": None})


def _model_types(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (Union, types.UnionType) or get_args(annotation):
        return [t for arg in get_args(annotation) for t in _model_types(arg)]
    return [annotation]


def test_presence_rule_of_output_schemas_holds_for_the_models() -> None:
    """The output schemas require a field when its default is not None (exclude_none writes
    it always) and leave out null otherwise: sound only if such a field can never be None, and
    if the only nullable field without a default is previousStatus (encode_status_changed)."""
    seen: set[type[BaseModel]] = set()
    pending: list[type[BaseModel]] = list(OUTPUT_MODELS)
    nullable_required = set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            kinds = _model_types(info.annotation)
            pending += [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
            if type(None) not in kinds:
                continue
            if info.is_required():
                nullable_required.add(f"{model.__name__}.{name}")
            else:
                assert info.default is None, f"{model.__name__}.{name}: nullable, default not None"
    assert nullable_required == {"StatusChanged.previous_status"}


@pytest.mark.parametrize("masked", [False, True])
def test_dead_letters_fit_the_schema(masked: bool) -> None:
    source = Source("t.send-results", 3, 42, b"k" * 2_000, "01012345678 \xff".encode() * 50)
    _, value = dead_letter(source, "schema-invalid", "bad", T0, 64, mask_phones=masked)
    assert not problems("dead-letters", value)
    _, value = dead_letter(Source("t", 0, 0, None, b"\xff\xfe"), "malformed-json", "x", T0, 64)
    assert not problems("dead-letters", value)


def test_every_webhook_attempt_outcome_fits_the_schema() -> None:
    common: dict[str, Any] = {
        "delivery_id": "m-1:1:own",
        "endpoint_id": "own",
        "event_id": "m-1:1",
        "message_id": "m-1",
        "attempt": 1,
        "latency_ms": 12,
        "attempted_at": T0,
    }
    attempts = [
        WebhookAttempted(outcome="delivered", http_status=200, **common),
        WebhookAttempted(
            outcome="failed", http_status=503, error="HTTP 503", next_attempt_at=T0, **common
        ),
        WebhookAttempted(outcome="exhausted", error="timeout after 5000 ms", **common),
        WebhookAttempted(outcome="refused", error="private address", **common),
    ]
    for attempt in attempts:
        assert not problems("webhook-deliveries", codec.encode(attempt))


# --- the command -------------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    result: int = args.run(args)
    return result


def test_schemas_command_writes_then_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "schemas"
    out.mkdir()
    (out / "gone-topic.json").write_text(json.dumps({"$comment": contract.GENERATED}))
    (out / "mine.json").write_text("{}")  # not generated: left alone
    assert _cli("schemas", "--out", str(out)) == 0
    rendered = contract.render()
    assert {p.name for p in out.iterdir()} == {*rendered, "mine.json"}
    for name, text in rendered.items():
        assert (out / name).read_text(encoding="utf-8") == text
        assert text == (CONTRACT_DIR / name).read_text(encoding="utf-8")
    assert _cli("schemas", "--check", "--out", str(out)) == 0
    (out / "commands.json").write_text("{}")
    capsys.readouterr()
    assert _cli("schemas", "--check", "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "commands.json differs from the models" in err
    assert f"deliverytrack schemas --out {out}" in err


def test_schemas_command_says_why_it_cannot_write_instead_of_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for out in (a_file, a_file / "schemas"):
        assert _cli("schemas", "--out", str(out)) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"deliverytrack schemas: cannot write {out}: ")
