"""One partition's share of a batch, folded: the per-input boundary of the fold and of the
webhook correlator, written against a state interface (no Kafka, no producer), so it runs on a
RocksDB ``PartitionStore`` or anything else that reads like one.

Each input's whole work (size check, decode, key check, read of its state, fold or correlate,
encoding and size check of what it produced) is done before anything of it is kept; if it
raises, the input becomes a dead letter and the batch goes on. Only a store failure
(:class:`StoreError`) escapes: that is the worker's problem, not the input's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from deliverytrack.models.codec import (
    Marker,
    decode_command,
    decode_correlated_report,
    decode_correlation_state,
    decode_due_check,
    decode_link_or_expiry,
    decode_observation,
    decode_provider_report,
    decode_send_result,
    encode,
    encode_record,
)
from deliverytrack.models.correlation import CorrelationState, SourceRef
from deliverytrack.models.events import (
    CorrelationEvent,
    MessageEvent,
    ProviderReportReceived,
    provider_key,
)
from deliverytrack.models.records import TrackingRecord
from deliverytrack.models.settings import Settings
from deliverytrack.streams.boundary import Refused, check_size
from deliverytrack.streams.engine.routing import Input, Output, Router, source_ref
from deliverytrack.streams.engine.stats import EngineSensor, EngineStats, NoSensor
from deliverytrack.streams.state.store import CorrelationChange, MarkerChange, Position, StoreError
from deliverytrack.streams.topics import Topics
from deliverytrack.tables.correlation import correlate
from deliverytrack.tables.deletion import fold_marked
from deliverytrack.tables.pii import protect_report

Decoder = Callable[[bytes | None], MessageEvent]
CorrelationDecoder = Callable[[bytes | None], CorrelationEvent]
Change = tuple[TrackingRecord | None, TrackingRecord | None, bytes | None]
"""(record before the batch, record after it, the JSON of the latter)."""
S = TypeVar("S")
B = TypeVar("B")
T = TypeVar("T")


class StateReader(Protocol):
    """What the batch fold reads: one partition's state (``PartitionStore`` is one)."""

    def get(self, message_id: str) -> TrackingRecord | None: ...

    def get_marker(self, message_id: str) -> Marker | None: ...

    def get_correlation_raw(self, key: str) -> bytes | None: ...


@dataclass(slots=True)
class PartitionResult:
    """What a partition's share of a batch changed: written in one WriteBatch."""

    records: dict[str, Change]
    states: dict[str, CorrelationChange] | None
    markers: dict[str, MarkerChange]


def read_state(decode: Callable[[bytes], S], raw: bytes) -> S:
    """Decode state read back from the store; a value that does not decode (written by an
    older version, or damaged) refuses the input that needs it, not the worker."""
    try:
        return decode(raw)
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is this key's problem
        raise Refused("unreadable-state", f"stored state does not decode: {exc}") from exc


def _stored(read: Callable[[str], S], key: str) -> S:
    """A store read for one input: RocksDB failing is the worker's problem (StoreError), a
    value that does not decode is the input's (see read_state)."""
    try:
        return read(key)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever it is, it is this key's problem
        raise Refused(
            "unreadable-state", f"stored state of {key!r} does not decode: {exc}"
        ) from exc


def _protected(
    msg: Input, event: CorrelationEvent, settings: Settings
) -> tuple[CorrelationEvent, Callable[[], SourceRef]]:
    """A report (from the ingress, or published by an app) as the correlator may store and
    forward it (``tables.pii.protect_report``), and its source for a hold. A protected report
    is held with its own bytes, not the input's: those may carry plain numbers, also in fields
    the tolerant reader dropped."""
    if not isinstance(event, ProviderReportReceived):
        return event, lambda: source_ref(msg)
    report = protect_report(event, settings.pii, settings.webhook_raw)
    if report is event and not settings.pii.protects_plain:
        return event, lambda: source_ref(msg)
    return report, lambda: source_ref(msg, encode(report))


def advance(position: Position, records: list[Input]) -> None:
    """The source offsets the partition's state reflects once ``records`` are kept."""
    offsets = position.offsets
    for record in records:
        offsets[record.topic] = max(offsets.get(record.topic, 0), record.offset + 1)


@dataclass(slots=True)
class FoldStep:
    """What one input did, not yet kept (see BatchFold.fold_one)."""

    message_id: str
    record: TrackingRecord | None
    new: TrackingRecord | None
    marker: Marker | None
    new_marker: Marker | None
    outputs: list[Output] = field(default_factory=list)
    encoded: tuple[TrackingRecord, bytes] | None = None
    marker_json: bytes | None = None
    status_changes: int = 0
    poll_requests: int = 0
    deletions: int = 0


class FoldBatch:
    """One partition's records and markers as a batch has changed them so far."""

    __slots__ = (
        "store",
        "before",
        "current",
        "changed",
        "marks_before",
        "marks",
        "marks_json",
        "encoded",
    )

    def __init__(self, store: StateReader) -> None:
        self.store = store
        self.before: dict[str, TrackingRecord | None] = {}
        self.current: dict[str, TrackingRecord | None] = {}
        self.changed: set[str] = set()
        self.marks_before: dict[str, Marker | None] = {}
        self.marks: dict[str, Marker | None] = {}
        self.marks_json: dict[str, bytes | None] = {}
        self.encoded: dict[str, tuple[TrackingRecord, bytes]] = {}

    def record(self, message_id: str) -> TrackingRecord | None:
        if message_id not in self.current:
            record = _stored(self.store.get, message_id)
            self.before[message_id] = self.current[message_id] = record
        return self.current[message_id]

    def marker(self, message_id: str) -> Marker | None:
        if message_id not in self.marks:
            mark = _stored(self.store.get_marker, message_id)
            self.marks_before[message_id] = self.marks[message_id] = mark
        return self.marks[message_id]

    def keep(self, step: FoldStep) -> None:
        message_id = step.message_id
        if step.new is not step.record:
            self.current[message_id] = step.new
            self.changed.add(message_id)
        if step.encoded is not None:
            self.encoded[message_id] = step.encoded
        if step.new_marker is not step.marker:
            self.marks_before.setdefault(message_id, step.marker)  # a record had no marker
            self.marks[message_id] = step.new_marker
            self.marks_json[message_id] = step.marker_json

    def changes(self, markers: dict[str, MarkerChange] | None) -> dict[str, Change]:
        """{messageId: (before batch, after, JSON)}; the markers' changes go into ``markers``.
        A record's JSON is encoded once: the last status change's, if it is the final state."""
        result: dict[str, Change] = {}
        for message_id in self.changed:
            new = self.current[message_id]
            if new is None:
                raw = None
            else:
                last = self.encoded.get(message_id)
                raw = last[1] if last is not None and last[0] is new else encode_record(new)
            result[message_id] = (self.before[message_id], new, raw)
        if markers is not None:
            for message_id, mark in self.marks.items():
                if mark is not self.marks_before[message_id]:
                    markers[message_id] = (
                        self.marks_before[message_id],
                        mark,
                        self.marks_json.get(message_id),
                    )
        return result


class CorrelationBatch:
    """One partition's correlation states as a batch has changed them so far."""

    __slots__ = ("store", "before", "current", "encoded")

    def __init__(self, store: StateReader) -> None:
        self.store = store
        self.before: dict[str, CorrelationState | None] = {}
        self.current: dict[str, CorrelationState | None] = {}
        self.encoded: dict[str, bytes | None] = {}

    def state(self, key: str) -> CorrelationState | None:
        if key in self.current:
            return self.current[key]
        raw = self.store.get_correlation_raw(key)
        return None if raw is None else read_state(decode_correlation_state, raw)

    def keep(self, step: CorrelationStep) -> None:
        key, state, new = step.key, step.state, step.new
        self.before.setdefault(key, state)
        self.current[key] = new
        if new is not state:
            self.encoded[key] = step.raw

    def changes(self) -> dict[str, CorrelationChange]:
        return {
            key: (self.before[key], self.current[key], raw)
            for key, raw in self.encoded.items()
            if self.current[key] is not self.before[key]
        }


@dataclass(slots=True)
class CorrelationStep:
    key: str
    state: CorrelationState | None
    new: CorrelationState | None
    raw: bytes | None
    outputs: list[Output]


class BatchFold:
    """Folds (and correlates) one partition's inputs against its state."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        router: Router,
        stats: EngineStats,
        *,
        correlate: bool = True,
        sensor: EngineSensor | None = None,
    ) -> None:
        """``correlate=False`` folds the records only (a replay reads the recorded
        correlated reports instead of correlating the webhooks again)."""
        self.settings = settings
        self.policy = settings.fold_policy
        self.router = router
        self.stats = stats
        self.sensor = sensor or NoSensor()
        self.decoders: dict[str, Decoder] = {
            topics.send_results: decode_send_result,
            topics.commands: decode_command,
            topics.due_checks: decode_due_check,
            topics.observations: decode_observation,
            topics.correlated_reports: decode_correlated_report,
        }
        self.correlation_decoders: dict[str, CorrelationDecoder] = (
            {
                topics.provider_ids: decode_link_or_expiry,
                topics.provider_webhooks: decode_provider_report,
            }
            if correlate
            else {}
        )
        inputs = (*topics.fold_inputs, *self.correlation_decoders)
        self.rank = {topic: rank for rank, topic in enumerate(inputs)}
        """The topics read, in tie-break order (fold inputs, then links, then reports)."""

    def apply(
        self, store: StateReader, position: Position, records: list[Input], outputs: list[Output]
    ) -> PartitionResult:
        """A partition's records in replay order (timestamp, topic rank, offset): reports and
        links correlated first, then the fold; ``position`` advanced past all of them."""
        rank = self.rank
        records.sort(key=lambda r: (r.timestamp, rank[r.topic], r.offset))
        correlation_topics = self.correlation_decoders
        states = None
        reports = [r for r in records if r.topic in correlation_topics]
        if reports:
            with self.sensor.phase("correlate"):
                states = self.correlate(store, reports, outputs)
            records_for_fold = [r for r in records if r.topic not in correlation_topics]
        else:
            records_for_fold = records
        markers: dict[str, MarkerChange] = {}
        with self.sensor.phase("fold"):
            changes = self.fold(store, records_for_fold, outputs, markers)
        advance(position, records)
        return PartitionResult(changes, states, markers)

    def _guarded(
        self,
        records: list[Input],
        outputs: list[Output],
        one: Callable[[Input, B], T],
        batch: B,
    ) -> Iterator[T]:
        """The per-input boundary: ``one(msg, batch)`` for each input, its result yielded;
        an input it raises on becomes a dead letter (a store failure stops the batch)."""
        stats, refused = self.stats, self.router.refused
        for msg in records:
            stats.events += 1
            try:
                step = one(msg, batch)
            except StoreError:
                raise
            except Exception as exc:  # one input's failure: park it, keep going
                outputs.append(refused(msg, exc))
                continue
            yield step

    def fold(
        self,
        store: StateReader,
        records: list[Input],
        outputs: list[Output],
        markers: dict[str, MarkerChange] | None = None,
    ) -> dict[str, Change]:
        """Fold one partition's records; returns {messageId: (before batch, after, JSON)}
        and puts the deletion markers' changes into ``markers``."""
        batch = FoldBatch(store)
        stats = self.stats
        for step in self._guarded(records, outputs, self.fold_one, batch):
            batch.keep(step)
            outputs.extend(step.outputs)
            stats.applied += step.new is not step.record
            stats.status_changes += step.status_changes
            stats.poll_requests += step.poll_requests
            stats.deletions += step.deletions
        return batch.changes(markers)

    def fold_one(self, msg: Input, batch: FoldBatch) -> FoldStep:
        """Everything one input does, computed without changing ``batch``: raises if the
        input cannot be processed (the caller dead-letters it)."""
        check_size(msg.value, self.settings.max_input_bytes, "too-large", "the value")
        event = self.decoders[msg.topic](msg.value)
        message_id = event.message_id
        if msg.key is None or msg.key != message_id.encode() or message_id.startswith("\x00"):
            raise Refused(
                "wrong-key", f"the Kafka key must be the messageId {message_id!r}, got {msg.key!r}"
            )
        record = batch.record(message_id)
        marker = batch.marker(message_id) if record is None else None
        new, new_marker, emitted = fold_marked(
            record, marker, event, self.policy, source=lambda: source_ref(msg)
        )
        step = FoldStep(message_id, record, new, marker, new_marker)
        self.router.fold_outputs(msg, emitted, step)
        limit = self.router.record_limit
        if new is not None and new is not record:
            if step.encoded is None or step.encoded[0] is not new:
                record_json = encode_record(new)
                check_size(record_json, limit, "record-too-large", "the record")
                step.encoded = (new, record_json)
        if new_marker is not None and new_marker is not marker:
            step.marker_json = encode(new_marker)
            check_size(step.marker_json, limit, "state-too-large", "the held state")
        return step

    def correlate(
        self, store: StateReader, records: list[Input], outputs: list[Output]
    ) -> dict[str, CorrelationChange]:
        """Correlate one partition's reports and links; returns {providerKey: change}."""
        batch = CorrelationBatch(store)
        for step in self._guarded(records, outputs, self.correlate_one, batch):
            batch.keep(step)
            outputs.extend(step.outputs)
        return batch.changes()

    def correlate_one(self, msg: Input, batch: CorrelationBatch) -> CorrelationStep:
        """One report or link: its state before and after, and its outputs; raises if the
        input cannot be processed (the caller dead-letters it)."""
        settings = self.settings
        check_size(msg.value, settings.max_input_bytes, "too-large", "the value")
        event = self.correlation_decoders[msg.topic](msg.value)
        key = provider_key(event.provider_id, event.provider_message_id)
        if msg.key is None or msg.key != key.encode():
            raise Refused(
                "wrong-key",
                f"the Kafka key must be providerId:providerMessageId {key!r}, got {msg.key!r}",
            )
        state = batch.state(key)
        event, source = _protected(msg, event, settings)
        new, emitted = correlate(state, event, source=source, hold_ms=settings.webhook_hold_ms)
        raw = None
        if new is not state and new is not None:
            raw = encode(new)
            check_size(raw, self.router.record_limit, "state-too-large", "the held state")
        outputs = self.router.correlation_outputs(msg, key, event, emitted)
        return CorrelationStep(key, state, new, raw, outputs)
