"""The published event contract: a JSON Schema (draft 2020-12) of every public topic's value and
an AsyncAPI 3.0 document of the public topics, both generated from the pydantic models.

``deliverytrack schemas --out docs/schemas/`` writes them; ``tests/unit/test_contract.py``
fails when the checked-in files differ from what the models generate now.

Inputs (what producers write) are described as the worker reads them: validation mode,
defaults shown, unknown fields allowed (the worker ignores them). Outputs are described as the
worker writes them (``codec.encode``): serialization mode, closed objects, and a field without
a value is left out, never null, so optional fields are never null and fields that always have
a value are required; the one exception is ``StatusChanged.previousStatus``, always present
and null for a record's first status (``codec.encode_status_changed``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from deliverytrack import __version__
from deliverytrack.models.codec import (
    CommandAdapter,
    DeadLetterAdapter,
    ProviderReportAdapter,
    SendRecordedAdapter,
    StatusChangedAdapter,
)
from deliverytrack.models.events import FailoverRequested, RecordDeleted
from deliverytrack.models.outbound import WebhookAttempted
from deliverytrack.models.settings import Settings
from deliverytrack.streams.topics import Topics

REGENERATE = "deliverytrack schemas --out docs/schemas/"
"""The command that rewrites the checked-in contract (run from the repository root)."""
GENERATED = f"Generated from deliverytrack's models by `{REGENERATE}`: do not edit."
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
ASYNCAPI_FILE = "asyncapi.json"
DEFAULT_PREFIX: str = Settings.model_fields["topic_prefix"].default
BROKER: str = Settings.model_fields["broker"].default
KAFKA_BINDING = "0.5.0"

Side = Literal["input", "output"]


@dataclass(frozen=True)
class PublicTopic:
    field: str
    """The topic's attribute of :class:`Topics`."""
    side: Side
    adapter: TypeAdapter[Any]
    key: str
    written_by: str
    read_by: str
    worker_sends: str = ""
    """What the worker writes on it ("": nothing)."""
    worker_receives: str = ""
    """What the worker reads from it ("": nothing)."""
    sent_events: tuple[str, ...] = ()
    """The events the worker writes, where it writes only some of the topic's."""


PUBLIC_TOPICS: tuple[PublicTopic, ...] = (
    PublicTopic(
        "send_results", "input", SendRecordedAdapter, "messageId",
        "sending applications", "the fold",
        worker_receives="The fold folds each send result into its record.",
    ),
    PublicTopic(
        "commands", "input", CommandAdapter, "messageId",
        "operators and applications (and the fold: RecordFailoverOutcome 'sent')", "the fold",
        worker_sends="The fold records that a failover's fallback was sent (RecordFailoverOutcome "
        "'sent', on the original messageId) when the fallback's send result arrives.",
        worker_receives="The fold applies each command to its record.",
        sent_events=("RecordFailoverOutcome",),
    ),
    PublicTopic(
        "provider_webhooks", "input", ProviderReportAdapter, "providerId:providerMessageId",
        "the worker's webhook ingress, or applications that receive reports themselves",
        "the correlator",
        worker_sends="The webhook ingress publishes each provider report it accepts.",
        worker_receives="The correlator matches each report to our messageId.",
    ),
    PublicTopic(
        "status_changes", "output", StatusChangedAdapter, "messageId",
        "the fold", "you, and the worker's outbound-webhook dispatcher",
        worker_sends="The fold publishes every applied transition.",
        worker_receives="The outbound-webhook dispatcher posts status changes to endpoints.",
    ),
    PublicTopic(
        "dead_letters", "output", DeadLetterAdapter, "the original input's key",
        "the fold, the correlator, the poller and the webhook dispatcher", "you",
        worker_sends="An input that could not be processed, with its reason.",
    ),
    PublicTopic(
        "failover_requests", "output", TypeAdapter(FailoverRequested), "the original messageId",
        "the fold", "your fallback sender",
        worker_sends="The fold asks for an AlimTalk message's SMS/LMS fallback, once.",
    ),
    PublicTopic(
        "webhook_deliveries", "output", TypeAdapter(WebhookAttempted), "messageId",
        "the webhook dispatcher", "you",
        worker_sends="The dispatcher publishes the outcome of each outbound webhook attempt.",
    ),
    PublicTopic(
        "record_deletions", "output", TypeAdapter(RecordDeleted), "messageId",
        "the fold", "you",
        worker_sends="The fold publishes each record it deletes (retention, expiry, purge).",
    ),
)  # fmt: skip


class ContractSchema(GenerateJsonSchema):
    """pydantic's generator, without per-field titles (they only repeat the name), and in
    serialization mode shaped like ``codec.encode``'s output (``exclude_none``)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        if self.mode != "serialization" or field["type"] == "typed-dict-field":
            return super().field_is_required(field, total)
        schema: Any = field["schema"]
        if schema["type"] != "default":
            return True
        # exclude_none drops a field whose value is None: one whose default is not None is
        # always written (tests/unit/test_contract.py checks that such fields are not nullable).
        return "default_factory" in schema or schema.get("default") is not None

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        if self.mode != "serialization":
            return super().default_schema(schema)
        json_schema = self.generate_inner(schema["schema"])
        if "default_factory" not in schema and schema.get("default") is None:
            json_schema = _without_null(json_schema)  # never written as null: left out
        return json_schema


def _without_null(json_schema: JsonSchemaValue) -> JsonSchemaValue:
    branches = json_schema.get("anyOf")
    if not branches or {"type": "null"} not in branches:
        return json_schema
    rest = [branch for branch in branches if branch != {"type": "null"}]
    others = {key: value for key, value in json_schema.items() if key != "anyOf"}
    if len(rest) == 1:
        return {**rest[0], **others}
    return {"anyOf": rest, **others}


def topic_name(topic: PublicTopic, prefix: str = DEFAULT_PREFIX) -> str:
    name: str = getattr(Topics.from_prefix(prefix, "deliverytrack"), topic.field)
    return name


def topic_suffix(topic: PublicTopic) -> str:
    """The name without the prefix (``send-results``): the schema file's name too."""
    return topic_name(topic, "")


def _description(topic: PublicTopic) -> str:
    if topic.side == "input":
        reads = "Unknown fields are ignored (a tolerant reader): producers may add fields."
    else:
        reads = "Exactly what the worker writes: a field without a value is left out (never null)"
        if topic.field == "status_changes":
            reads += ", except previousStatus, always present and null for a record's first status"
        reads += "."
    return (
        f"Value of the topic {topic_name(topic)} (DELIVERYTRACK_TOPIC_PREFIX, default "
        f"'{DEFAULT_PREFIX}', + '{topic_suffix(topic)}'); key: {topic.key}. Written by "
        f"{topic.written_by}; read by {topic.read_by}. {reads}"
    )


def topic_schema(topic: PublicTopic) -> dict[str, Any]:
    """The JSON Schema of one topic's value: the events as ``$defs``, the root referring to the
    one event (``$ref``) or choosing among several by ``eventType`` (``oneOf``)."""
    mode: Literal["validation", "serialization"] = (
        "validation" if topic.side == "input" else "serialization"
    )
    root = topic.adapter.json_schema(by_alias=True, mode=mode, schema_generator=ContractSchema)
    defs: dict[str, Any] = root.pop("$defs", {})
    document: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$comment": GENERATED,
        "title": topic_name(topic),
        "description": _description(topic),
    }
    if "discriminator" in root:  # several events (one model may have a oneOf of its own)
        discriminator = root["discriminator"]["propertyName"]
        for ref in root["discriminator"]["mapping"].values():
            _require(defs[ref.removeprefix("#/$defs/")], discriminator)
        document.update(root)
    else:
        defs[root["title"]] = root
        document["$ref"] = f"#/$defs/{root['title']}"
    document["$defs"] = dict(sorted(defs.items()))
    return document


def _require(model: dict[str, Any], name: str) -> None:
    """On a topic with several kinds of event the worker needs ``eventType`` (no default)."""
    required = {*model.get("required", ()), name}
    model["required"] = [prop for prop in model["properties"] if prop in required]


def event_names(schema: dict[str, Any]) -> dict[str, str]:
    """eventType -> the ``$defs`` entry of that event in a topic schema."""
    if "discriminator" in schema:
        mapping: dict[str, str] = schema["discriminator"]["mapping"]
        return {event: ref.removeprefix("#/$defs/") for event, ref in mapping.items()}
    name = schema["$ref"].removeprefix("#/$defs/")
    return {schema["$defs"][name]["properties"]["eventType"]["const"]: name}


def _camel(suffix: str) -> str:
    head, *rest = suffix.split("-")
    return head + "".join(part.title() for part in rest)


def asyncapi(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the public topics, seen from the worker (its operations
    ``send`` and ``receive``); each channel names who else writes and reads it. Payloads refer
    to the topic schemas by relative path: the document lives beside them."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic in PUBLIC_TOPICS:
        suffix = topic_suffix(topic)
        channel_id = _camel(suffix)
        schema = schemas[f"{suffix}.json"]
        events = event_names(schema)
        for event, definition in events.items():
            if event in messages:
                raise ValueError(f"event {event} is on two public topics: name its messages apart")
            messages[event] = _message(topic, event, schema, f"./{suffix}.json", definition)
        channels[channel_id] = {
            "address": topic_name(topic),
            "title": suffix,
            "description": f"{_description(topic)} Schema of the value: {suffix}.json.",
            "messages": {event: {"$ref": f"#/components/messages/{event}"} for event in events},
        }
        for action, summary in (("send", topic.worker_sends), ("receive", topic.worker_receives)):
            if summary:
                sent = topic.sent_events if action == "send" and topic.sent_events else events
                operations[action + channel_id[0].upper() + channel_id[1:]] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel_id}"},
                    "summary": summary,
                    "messages": [
                        {"$ref": f"#/channels/{channel_id}/messages/{event}"} for event in sent
                    ],
                }
    return {
        "asyncapi": "3.0.0",
        "info": _info(),
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": BROKER.removeprefix("kafka://"),
                "protocol": "kafka",
                "description": f"DELIVERYTRACK_BROKER ({BROKER} by default)",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _message(
    topic: PublicTopic, event: str, schema: dict[str, Any], file: str, definition: str
) -> dict[str, Any]:
    return {
        "name": event,
        "title": event,
        "description": " ".join(schema["$defs"][definition].get("description", "").split()),
        "contentType": "application/json",
        "payload": {
            "schemaFormat": SCHEMA_FORMAT,
            "schema": {"$ref": f"{file}#/$defs/{definition}"},
        },
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": topic.key},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _info() -> dict[str, Any]:
    example = PUBLIC_TOPICS[0]
    return {
        "title": "deliverytrack",
        "version": __version__,
        "description": "The public Kafka topics of deliverytrack, seen from its worker. Topic "
        "names are DELIVERYTRACK_TOPIC_PREFIX + a fixed name, shown here with the default "
        f"prefix '{DEFAULT_PREFIX}': with DELIVERYTRACK_TOPIC_PREFIX=acme.dt. the topic "
        f"{topic_name(example)} is {topic_name(example, 'acme.dt.')}. Values are JSON (UTF-8) "
        "with camelCase fields, keys UTF-8 strings. Internal topics (<prefix><appId>-...) are "
        f"the app's own and not part of this contract. {GENERATED}",
        "license": {"name": "MIT"},
    }


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render() -> dict[str, str]:
    """Every file of the contract by name (``<topic>.json`` per public topic, and
    ``asyncapi.json``), as written to the output directory."""
    schemas = {f"{topic_suffix(topic)}.json": topic_schema(topic) for topic in PUBLIC_TOPICS}
    files = {name: _dumps(schema) for name, schema in schemas.items()}
    files[ASYNCAPI_FILE] = _dumps(asyncapi(schemas))  # refers to the schemas beside it
    return files


def differences(directory: Path) -> list[str]:
    """What in ``directory`` differs from what the models generate now (empty: up to date)."""
    wanted = render()
    found = {path.name: path for path in directory.glob("*.json")} if directory.is_dir() else {}
    problems = []
    for name, text in wanted.items():
        if name not in found:
            problems.append(f"{name} is missing")
        elif found[name].read_text(encoding="utf-8") != text:
            problems.append(f"{name} differs from the models")
    for name in sorted(set(found) - set(wanted)):
        if _generated(found[name]):
            problems.append(f"{name} is no longer generated")
    return problems


def _generated(path: Path) -> bool:
    try:
        return GENERATED in path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def write(directory: Path) -> list[str]:
    """Write the contract into ``directory``; remove files an earlier run generated that are
    no longer generated (a topic gone). Returns the names of the files that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    wanted = render()
    for name, text in wanted.items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    for path in sorted(directory.glob("*.json")):
        if path.name not in wanted and _generated(path):
            path.unlink()
            changed.append(path.name)
    return changed


def add_command(commands: Any) -> None:
    """``deliverytrack schemas``: register the subcommand on the CLI's subparsers."""
    parser = commands.add_parser(
        "schemas",
        help="write the event contract: JSON Schema per public topic and an AsyncAPI document",
    )
    parser.add_argument(
        "--out", default="docs/schemas/", help="directory to write into (docs/schemas/)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the directory differs from what the models generate",
    )
    parser.set_defaults(run=_run)


def _run(args: Any) -> int:
    directory = Path(args.out)
    if args.check:
        problems = differences(directory)
        for problem in problems:
            print(f"{directory}: {problem}", file=sys.stderr)
        if problems:
            print(f"regenerate with: deliverytrack schemas --out {args.out}", file=sys.stderr)
        return 1 if problems else 0
    try:
        changed = write(directory)
    except OSError as exc:  # not a directory, no permission, read-only: say so, no traceback
        print(f"deliverytrack schemas: cannot write {directory}: {exc}", file=sys.stderr)
        return 2
    print(f"{directory}: {len(render())} files, {len(changed)} changed" + (
        f" ({', '.join(changed)})" if changed else ""
    ))  # fmt: skip
    return 0
