"""One partition's batch of fold inputs, hot path first: the pure part of the engine's
``BatchFold.fold``/``fold_one`` and ``Router.fold_outputs`` (``streams/engine``), without
Kafka, RocksDB, metrics or the clock.

Per input, in the engine's order: size check, decode, key check, read of its record (and
marker), fold, encoding and size check of what it produced. Each input takes the hot path
(``HotFold``) when it can and the pydantic path (``models.codec`` + ``fold_marked``) when it
cannot; the outputs are the same bytes either way. An input whose work raises is refused with
a reason (the engine's dead letter), and the batch goes on.

Records in a batch are :class:`~deliverytrack.tables.hot.codec.HotRecord`s, or
``TrackingRecord``s where only the pydantic path can read them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from deliverytrack.models.codec import (
    Marker,
    decode_command,
    decode_correlated_report,
    decode_due_check,
    decode_observation,
    decode_send_result,
    encode,
    encode_record,
    encode_status_changed,
)
from deliverytrack.models.correlation import SourceRef
from deliverytrack.models.events import (
    DeadLetter,
    EventRejected,
    FailoverRequested,
    MessageEvent,
    PollRequested,
    ProviderIdLinked,
    RecordDeleted,
    RecordFailoverOutcome,
    StatusChanged,
    provider_key,
)
from deliverytrack.models.records import TrackingRecord
from deliverytrack.tables.deletion import fold_marked
from deliverytrack.tables.hot.codec import (
    COMMAND,
    DUE,
    OBSERVATION,
    REPORT,
    SEND,
    HotEvent,
    HotRecord,
    load_record,
    to_model,
)
from deliverytrack.tables.hot.fold import (
    POLL_REQUEST,
    PROVIDER_ID_LINK,
    STATUS_CHANGE,
    HotFold,
)
from deliverytrack.tables.refusals import Refused, check_size, refusal

Record = HotRecord | TrackingRecord

FAILOVER_REQUEST: Final = "failover-request"
"""Output kinds besides the hot path's (status change, poll request, provider-id link)."""
FAILOVER_OUTCOME: Final = "failover-outcome"
RECORD_DELETED: Final = "record-deleted"
HELD_LETTER: Final = "held-letter"
"""A held command that expired unmatched: the payload is its ``DeadLetter``."""
REJECTED: Final = "rejected"
"""The fold refused the input (e.g. unknown message): the payload is (reason, detail)."""
REFUSED: Final = "refused"
"""The input's work raised: the payload is (reason, detail), as ``streams.boundary.refusal``."""

DECODERS: Final[dict[str, Callable[[bytes | None], MessageEvent]]] = {
    SEND: decode_send_result,
    COMMAND: decode_command,
    DUE: decode_due_check,
    OBSERVATION: decode_observation,
    REPORT: decode_correlated_report,
}

Output = tuple[int, str, bytes | None, Any, str | None]
"""(input index, kind, key or None for the input's, payload, new status of a status change)."""
Change = tuple[Record | None, Record | None, bytes | None]
MarkerChange = tuple[Marker | None, Marker | None, bytes | None]


class FoldInput(NamedTuple):
    """One input of a batch (a tuple: the engine builds one per input, a frozen dataclass
    cost a microsecond each)."""

    kind: str
    key: bytes | None
    value: bytes | None
    source: Callable[[], SourceRef] | None = None
    """The input's coordinates and bytes, kept with a held command (None: never held)."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_input_bytes: int
    max_record_bytes: int
    reroute_commands: bool = True


@dataclass(slots=True)
class BatchResult:
    outputs: list[Output] = field(default_factory=list)
    changes: dict[str, Change] = field(default_factory=dict)
    markers: dict[str, MarkerChange] = field(default_factory=dict)
    applied: int = 0
    hot: int = 0
    """Inputs the hot path folded (the rest took the pydantic path or were refused)."""


class _Batch:
    """``streams.engine._FoldBatch`` with records of either kind."""

    __slots__ = ("read", "read_marker", "before", "current", "changed", "marks_before", "marks")

    def __init__(
        self, read: Callable[[str], Record | None], read_marker: Callable[[str], Marker | None]
    ) -> None:
        self.read = read
        self.read_marker = read_marker
        self.before: dict[str, Record | None] = {}
        self.current: dict[str, tuple[Record | None, bytes | None]] = {}
        self.changed: set[str] = set()
        self.marks_before: dict[str, Marker | None] = {}
        self.marks: dict[str, tuple[Marker | None, bytes | None]] = {}

    def record(self, message_id: str) -> Record | None:
        known = self.current.get(message_id)
        if known is None:
            record = self.read(message_id)
            self.before[message_id] = record
            self.current[message_id] = (record, None)
            return record
        return known[0]

    def marker(self, message_id: str) -> Marker | None:
        known = self.marks.get(message_id)
        if known is None:
            mark = self.read_marker(message_id)
            self.marks_before[message_id] = mark
            self.marks[message_id] = (mark, None)
            return mark
        return known[0]


@dataclass(slots=True)
class _Step:
    message_id: str
    record: Record | None
    new: Record | None
    marker: Marker | None
    new_marker: Marker | None
    outputs: list[Output]
    record_json: bytes | None = None
    marker_json: bytes | None = None
    hot: bool = False


def fold_batch(
    hot: HotFold,
    inputs: Sequence[FoldInput],
    read: Callable[[str], Record | None],
    read_marker: Callable[[str], Marker | None],
    limits: Limits,
    fatal: tuple[type[BaseException], ...] = (),
) -> BatchResult:
    """Fold one partition's inputs (in the order given). ``read``/``read_marker`` give the
    stored record (hot when the store could read it so) and marker of a messageId; an
    exception of a ``fatal`` type (the store failing) stops the batch, any other refuses the
    one input."""
    batch = _Batch(read, read_marker)
    result = BatchResult()
    outputs = result.outputs
    current = batch.current
    changed = batch.changed
    max_input, max_record = limits.max_input_bytes, limits.max_record_bytes
    decode = hot.decode
    for index, item in enumerate(inputs):
        try:
            # The hot path, inline: it is most of the inputs.
            value = item.value
            if value is not None and len(value) > max_input:
                check_size(value, max_input, "too-large", "the value")
            hot_event = decode(item.kind, value)
            if hot_event is not None:
                message_id = hot_event["messageId"]
                key = item.key
                if key is None or key != message_id.encode() or message_id[:1] == "\x00":
                    _check_key(key, message_id)
                known = current.get(message_id)
                record = batch.record(message_id) if known is None else known[0]
                if record is None or type(record) is HotRecord:
                    if record is not None or batch.marker(message_id) is None:
                        done = hot.fold(record, item.kind, hot_event)
                        if done is not None:
                            new = done.record
                            if new is not None and new is not record:
                                if len(new.json) > max_record:
                                    check_size(
                                        new.json, max_record, "record-too-large", "the record"
                                    )
                                current[message_id] = (new, None)
                                changed.add(message_id)
                                result.applied += 1
                            for out in done.outputs:
                                outputs.append((index, *out))
                            result.hot += 1
                            continue
            step = _fold_one(hot, index, item, batch, limits, hot_event)
        except fatal:
            raise
        except Exception as exc:  # one input's failure: park it, keep going
            outputs.append((index, REFUSED, None, refusal(exc), None))
            continue
        _keep(batch, result, step)
    _finish(batch, result)
    return result


def _keep(batch: _Batch, result: BatchResult, step: _Step) -> None:
    """What an input the hot path did not fold did, kept."""
    message_id = step.message_id
    if step.new is not step.record:
        batch.current[message_id] = (step.new, step.record_json)
        batch.changed.add(message_id)
        result.applied += 1
    if step.new_marker is not step.marker:
        batch.marks_before.setdefault(message_id, step.marker)
        batch.marks[message_id] = (step.new_marker, step.marker_json)
    result.outputs.extend(step.outputs)
    result.hot += step.hot


def _finish(batch: _Batch, result: BatchResult) -> None:
    """The batch's changes: each changed record (and marker) once, with its JSON."""
    for message_id in batch.changed:
        last, raw = batch.current[message_id]
        if last is not None and raw is None:
            raw = encode_record(last) if isinstance(last, TrackingRecord) else last.json
        result.changes[message_id] = (batch.before[message_id], last, raw)
    for message_id, (mark, raw) in batch.marks.items():
        if mark is not batch.marks_before[message_id]:
            result.markers[message_id] = (batch.marks_before[message_id], mark, raw)


def _check_key(key: bytes | None, message_id: str) -> None:
    if key is None or key != message_id.encode() or message_id.startswith("\x00"):
        raise Refused(
            "wrong-key", f"the Kafka key must be the messageId {message_id!r}, got {key!r}"
        )


def _fold_one(
    hot: HotFold,
    index: int,
    item: FoldInput,
    batch: _Batch,
    limits: Limits,
    hot_event: HotEvent | None,
) -> _Step:
    """An input the hot path did not fold, the way the engine folds it today (the hot
    decoder's answer is reused: what it accepts the pydantic decoder accepts too)."""
    if hot_event is None:
        event = DECODERS[item.kind](item.value)
        message_id = event.message_id
        _check_key(item.key, message_id)
    else:
        message_id = hot_event["messageId"]  # the key was checked
        event = DECODERS[item.kind](item.value)
    record = batch.record(message_id)
    marker = batch.marker(message_id) if record is None else None
    if hot_event is not None and marker is None and isinstance(record, TrackingRecord):
        again = _hot_again(batch, message_id)
        if again is not None:
            done = hot.fold(again, item.kind, hot_event)
            if done is not None:
                new = done.record
                step = _Step(message_id, again, new, None, None, [], hot=True)
                if new is not None and new is not again:
                    check_size(new.json, limits.max_record_bytes, "record-too-large", "the record")
                    step.record_json = new.json
                step.outputs = [(index, *out) for out in done.outputs]
                return step
            record = again
    model = to_model(record) if isinstance(record, HotRecord) else record
    new_model, new_marker, emitted = fold_marked(
        model, marker, event, hot.policy, source=item.source
    )
    step = _Step(message_id, model, new_model, marker, new_marker, [])
    if new_model is model:
        step.new = step.record = record  # unchanged: keep the record as the batch has it
    _encode_emitted(index, emitted, step, limits)
    return step


def _hot_again(batch: _Batch, message_id: str) -> HotRecord | None:
    """A record the pydantic path made earlier in this batch, as a hot record if it can be
    one (then the next inputs of its messageId take the hot path again)."""
    _, raw = batch.current[message_id]
    again = None if raw is None else load_record(raw)
    if again is not None:
        batch.current[message_id] = (again, raw)
    return again


def _encode_emitted(index: int, emitted: Sequence[Any], step: _Step, limits: Limits) -> None:
    """``Router.fold_outputs``' encoding of what ``fold_marked`` emitted."""
    outputs = step.outputs
    limit = limits.max_record_bytes
    encoded: tuple[TrackingRecord, bytes] | None = None
    for out in emitted:
        if isinstance(out, StatusChanged):
            if out.record is None:  # slim: changes instead of the record
                value = encode_status_changed(out)
            else:
                record_json = encode_record(out.record)
                check_size(record_json, limit, "record-too-large", "the record")
                encoded = (out.record, record_json)
                value = encode_status_changed(out, record_json)
            outputs.append((index, STATUS_CHANGE, None, value, out.status.value))
        elif isinstance(out, PollRequested):
            outputs.append((index, POLL_REQUEST, None, encode(out), None))
        elif isinstance(out, FailoverRequested):
            outputs.append((index, FAILOVER_REQUEST, None, encode(out), None))
        elif isinstance(out, RecordFailoverOutcome) and limits.reroute_commands:
            outputs.append((index, FAILOVER_OUTCOME, out.message_id.encode(), encode(out), None))
        elif isinstance(out, ProviderIdLinked):
            key = provider_key(out.provider_id, out.provider_message_id).encode()
            outputs.append((index, PROVIDER_ID_LINK, key, encode(out), None))
        elif isinstance(out, RecordDeleted):
            outputs.append((index, RECORD_DELETED, None, encode(out), None))
        elif isinstance(out, DeadLetter):
            outputs.append((index, HELD_LETTER, None, out, None))
        elif isinstance(out, EventRejected):
            outputs.append((index, REJECTED, None, (out.reason, out.detail), None))
    new = step.new
    if isinstance(new, TrackingRecord) and new is not step.record:
        if encoded is None or encoded[0] is not new:
            record_json = encode_record(new)
            check_size(record_json, limit, "record-too-large", "the record")
            encoded = (new, record_json)
        step.record_json = encoded[1]
    if step.new_marker is not None and step.new_marker is not step.marker:
        step.marker_json = encode(step.new_marker)
        check_size(step.marker_json, limit, "state-too-large", "the held state")
