"""One partition's share of a batch, folded: the per-input boundary of the fold and of the
webhook correlator, written against a state interface (no Kafka, no producer), so it runs on a
RocksDB ``PartitionStore`` or anything else that reads like one.

Each input's whole work (size check, decode, key check, read of its state, fold or correlate,
encoding and size check of what it produced) is done before anything of it is kept; if it
raises, the input becomes a dead letter and the batch goes on. Only a store failure
(:class:`StoreError`) escapes: that is the worker's problem, not the input's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeVar

from deliverytrack.models.codec import (
    Marker,
    decode_correlation_state,
    decode_link_or_expiry,
    decode_provider_report,
    encode,
)
from deliverytrack.models.correlation import CorrelationState, SourceRef
from deliverytrack.models.events import CorrelationEvent, ProviderReportReceived, provider_key
from deliverytrack.models.policy import FoldPolicy
from deliverytrack.models.settings import Settings
from deliverytrack.streams.boundary import Refused, check_size
from deliverytrack.streams.engine.routing import Input, Output, Router, source_ref
from deliverytrack.streams.engine.stats import EngineSensor, EngineStats, NoSensor
from deliverytrack.streams.state.store import (
    CorrelationChange,
    MarkerChange,
    Position,
    Record,
    RecordChange,
    StoreError,
)
from deliverytrack.streams.topics import Topics
from deliverytrack.tables.correlation import correlate
from deliverytrack.tables.hot.batch import FoldInput, Limits, fold_batch
from deliverytrack.tables.hot.codec import (
    COMMAND,
    DUE,
    OBSERVATION,
    REPORT,
    SEND,
    contract_problems,
)
from deliverytrack.tables.hot.fold import HotFold
from deliverytrack.tables.pii import protect_report

log = logging.getLogger(__name__)

CorrelationDecoder = Callable[[bytes | None], CorrelationEvent]
S = TypeVar("S")
B = TypeVar("B")
T = TypeVar("T")


class StateReader(Protocol):
    """What the batch fold reads: one partition's state (``PartitionStore`` is one)."""

    def get_for_fold(self, message_id: str) -> Record | None: ...

    def get_marker(self, message_id: str) -> Marker | None: ...

    def get_correlation_raw(self, key: str) -> bytes | None: ...


@dataclass(slots=True)
class PartitionResult:
    """What a partition's share of a batch changed: written in one WriteBatch."""

    records: dict[str, RecordChange]
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
        self.router = router
        self.stats = stats
        self.sensor = sensor or NoSensor()
        self.hot = HotFold(settings.fold_policy)
        self.kinds = {
            topics.send_results: SEND,
            topics.commands: COMMAND,
            topics.due_checks: DUE,
            topics.observations: OBSERVATION,
            topics.correlated_reports: REPORT,
        }
        """The fold input kind of each topic (``tables.hot.codec.KINDS``)."""
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

    def log_hot_path(self) -> None:
        """Say at start when the hot path is off (``tables.hot.codec.contract_problems``)."""
        if not self.hot.enabled:
            log.warning(
                "fold: the hot path is off, every input takes the models' path (correct, "
                "slower): %s",
                "; ".join(contract_problems()),
            )

    @property
    def policy(self) -> FoldPolicy:
        return self.hot.policy

    @policy.setter
    def policy(self, policy: FoldPolicy) -> None:
        self.hot = HotFold(policy)

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
    ) -> dict[str, RecordChange]:
        """Fold one partition's records (``tables.hot.batch.fold_batch``: the hot path where it
        can, the models where it cannot, the same bytes either way); returns {messageId:
        (before batch, after, JSON)} and puts the deletion markers' changes into ``markers``."""
        kinds = self.kinds
        items = [FoldInput(kinds[m.topic], m.key, m.value, partial(source_ref, m)) for m in records]
        router = self.router
        limits = Limits(self.settings.max_input_bytes, router.record_limit, router.reroute_commands)
        result = fold_batch(
            self.hot,
            items,
            partial(_stored, store.get_for_fold),
            partial(_stored, store.get_marker),
            limits,
            fatal=(StoreError,),
        )
        router.fold_batch_outputs(records, result.outputs, outputs)
        stats = self.stats
        stats.events += len(records)
        stats.applied += result.applied
        stats.hot += result.hot
        if markers is not None:
            markers.update(result.markers)
        return result.changes

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
