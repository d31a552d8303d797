"""Where what the fold and the correlator emit goes: each output's topic, key and (when it is
keyed like its input) partition, and the dead letters of inputs that could not be processed."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeAlias

from aiokafka.structs import ConsumerRecord

from deliverytrack.models.codec import encode, encode_record, encode_status_changed
from deliverytrack.models.correlation import SourceRef
from deliverytrack.models.events import (
    CorrelationEvent,
    DeadLetter,
    EventRejected,
    FailoverRequested,
    HoldExpiryDue,
    PollRequested,
    ProviderIdLinked,
    RecordDeleted,
    RecordFailoverOutcome,
    ReportCorrelated,
    StatusChanged,
    provider_key,
)
from deliverytrack.models.settings import Settings
from deliverytrack.streams.boundary import Source, check_size, dead_letter, refusal
from deliverytrack.streams.engine.stats import EngineStats
from deliverytrack.streams.metrics import Metrics
from deliverytrack.streams.topics import Topics
from deliverytrack.tables.correlation import CorrelationEmitted
from deliverytrack.tables.fold import Emitted
from deliverytrack.tables.pii import mask_phone_text

if TYPE_CHECKING:
    from deliverytrack.streams.engine.batch import FoldStep

log = logging.getLogger(__name__)

Input: TypeAlias = "ConsumerRecord[bytes, bytes]"


@dataclass(slots=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes
    # The input partition, when the key is the input's key (the messageId): the output lands on
    # the same partition number if its topic has the input's partition count (no murmur2).
    partition: int | None = None


def source_ref(msg: Input, value: bytes | None = None) -> SourceRef:
    """Where a held input came from, with its bytes (for its dead letter if it expires):
    ``value`` if given, else the input's own."""
    value = msg.value if value is None else value
    return SourceRef(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        value_base64=None if value is None else base64.b64encode(value).decode(),
    )


@dataclass(slots=True)
class Router:
    """Topic, key and partition of every output; dead letters bounded and masked."""

    settings: Settings
    topics: Topics
    stats: EngineStats
    metrics: Metrics
    reroute_commands: bool = True
    """Failover outcomes go to the commands topic; a replay, which reads the recorded ones,
    does not write them again."""
    record_limit: int = field(default=0)

    def __post_init__(self) -> None:
        self.record_limit = self.record_limit or self.settings.max_record_bytes

    def limit_records(self, topic_limit: int | None) -> None:
        """Existing topics that take less than the settings would write (their smallest
        ``max.message.bytes``, ``topic_limit``): refuse (dead-letter) the inputs whose record
        would not fit, instead of failing the batch on every restart."""
        settings = self.settings
        self.record_limit = settings.max_record_bytes
        if topic_limit is not None and topic_limit - 65_536 < settings.max_record_bytes:
            self.record_limit = max(4_096, topic_limit - 65_536)
            log.warning(
                "fold: topics take records up to max.message.bytes=%s; records over %s bytes "
                "are refused (record-too-large). Raise max.message.bytes on the topics to %s "
                "for DELIVERYTRACK_MAX_RECORD_BYTES=%s",
                topic_limit,
                self.record_limit,
                settings.max_message_bytes,
                settings.max_record_bytes,
            )

    def fold_outputs(
        self, msg: Input, emitted: Iterable[Emitted | DeadLetter], step: FoldStep
    ) -> None:
        """The outputs of one folded input into ``step`` (a status change's record JSON is
        kept: it is the changelog value too if nothing changes the record again)."""
        topics, limit, outputs = self.topics, self.record_limit, step.outputs
        for out in emitted:
            if isinstance(out, StatusChanged):
                record_json = encode_record(out.record)
                check_size(record_json, limit, "record-too-large", "the record")
                step.encoded = (out.record, record_json)
                value = encode_status_changed(out, record_json)
                outputs.append(Output(topics.status_changes, msg.key, value, msg.partition))
                step.status_changes += 1
                self.metrics.status_changes[out.record.status] += 1
            elif isinstance(out, PollRequested):
                outputs.append(Output(topics.poll_requests, msg.key, encode(out), msg.partition))
                step.poll_requests += 1
            elif isinstance(out, FailoverRequested):
                outputs.append(Output(topics.failover_requests, msg.key, encode(out)))
            elif isinstance(out, RecordFailoverOutcome) and self.reroute_commands:
                # Re-keyed to the original message, which may live on another partition.
                outputs.append(Output(topics.commands, out.message_id.encode(), encode(out)))
            elif isinstance(out, ProviderIdLinked):
                key = provider_key(out.provider_id, out.provider_message_id).encode()
                outputs.append(Output(topics.provider_ids, key, encode(out)))
            elif isinstance(out, RecordDeleted):
                deletions = topics.record_deletions
                outputs.append(Output(deletions, msg.key, encode(out), msg.partition))
                step.deletions += 1
            elif isinstance(out, DeadLetter):  # a held command that expired unmatched
                outputs.append(self.letter_of(out))
            elif isinstance(out, EventRejected):
                outputs.append(self.dead_letter(msg, out.reason, out.detail))

    def correlation_outputs(
        self,
        msg: Input,
        key: str,
        event: CorrelationEvent,
        emitted: Iterable[CorrelationEmitted],
    ) -> list[Output]:
        """The outputs of one correlated report or link (keyed by messageId once matched)."""
        outputs: list[Output] = []
        correlated = 0
        for out in emitted:
            if isinstance(out, ReportCorrelated):
                value = encode(out)
                outputs.append(
                    Output(self.topics.correlated_reports, out.message_id.encode(), value)
                )
                correlated += 1
            elif isinstance(out, DeadLetter):
                outputs.append(self.letter_of(out, key.encode()))
            else:
                outputs.append(self.dead_letter(msg, out.reason, out.detail))
        stats = self.stats
        if isinstance(event, HoldExpiryDue):
            stats.hold_expiries += 1
        elif not isinstance(event, ProviderIdLinked):
            stats.reports += 1
        stats.reports_correlated += correlated
        return outputs

    # --- dead letters -----------------------------------------------------------------------

    def refused(self, msg: Input, exc: Exception) -> Output:
        reason, detail = refusal(exc)
        self.metrics.input_refused(msg.topic, reason)
        if reason == "processing-error" and self.settings.pii.protects_plain:
            # The traceback (in detail) with phone numbers masked, not the exception as is.
            log.error(
                "processing failed on %s@%s:%s: %s",
                msg.topic,
                msg.partition,
                msg.offset,
                mask_phone_text(detail),
            )
        elif reason == "processing-error":
            log.error(
                "processing failed on %s@%s:%s", msg.topic, msg.partition, msg.offset, exc_info=exc
            )
        return self.dead_letter(msg, reason, detail)

    def dead_letter(self, msg: Input, reason: str, detail: str) -> Output:
        source = Source(msg.topic, msg.partition, msg.offset, msg.key, msg.value)
        return self.letter(source, reason, detail)

    def letter(self, source: Source, reason: str, detail: str) -> Output:
        self.stats.dead_letters += 1
        self.metrics.dead_letter(source.topic, reason)
        # Personal data protected: the letter keeps a masked copy, not the input's bytes.
        masked = self.settings.pii.protects_plain
        log.warning(
            "dead letter %s@%s:%s: %s: %s",
            source.topic,
            source.partition,
            source.offset,
            reason,
            mask_phone_text(detail)[:500] if masked else detail[:500],
        )
        key, value = dead_letter(
            source,
            reason,
            detail,
            datetime.now(UTC),
            self.settings.dead_letter_value_bytes,
            mask_phones=masked,
        )
        return Output(self.topics.dead_letters, key, value)

    def letter_of(self, letter: DeadLetter, key: bytes | None = None) -> Output:
        """A dead letter the pure core built for a held input (its source kept in the state),
        bounded like every other."""
        value = None if letter.value_base64 is None else base64.b64decode(letter.value_base64)
        if key is None and letter.key_base64 is not None:
            key = base64.b64decode(letter.key_base64)
        source = Source(letter.topic, letter.partition, letter.offset, key, value)
        return self.letter(source, letter.reason, letter.error)
