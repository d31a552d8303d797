"""Where what the fold and the correlator emit goes: each output's topic, key and (when it is
keyed like its input) partition, and the dead letters of inputs that could not be processed."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeAlias

from aiokafka.structs import ConsumerRecord

from deliverytrack.models.codec import encode
from deliverytrack.models.correlation import SourceRef
from deliverytrack.models.events import (
    CorrelationEvent,
    DeadLetter,
    HoldExpiryDue,
    ProviderIdLinked,
    ReportCorrelated,
)
from deliverytrack.models.settings import Settings
from deliverytrack.streams.boundary import Source, dead_letter, refusal
from deliverytrack.streams.engine.stats import EngineStats
from deliverytrack.streams.metrics import Metrics
from deliverytrack.streams.topics import Topics
from deliverytrack.tables.correlation import CorrelationEmitted
from deliverytrack.tables.hot.batch import (
    FAILOVER_OUTCOME,
    FAILOVER_REQUEST,
    HELD_LETTER,
    RECORD_DELETED,
    REJECTED,
)
from deliverytrack.tables.hot.batch import Output as HotOutput
from deliverytrack.tables.hot.fold import POLL_REQUEST, PROVIDER_ID_LINK, STATUS_CHANGE
from deliverytrack.tables.pii import mask_phone_text

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

    def fold_batch_outputs(
        self, records: list[Input], emitted: list[HotOutput], outputs: list[Output]
    ) -> None:
        """The outputs of a partition's folded inputs (``tables.hot.batch.fold_batch``'s, each
        naming its input by index) into ``outputs``: status changes, poll requests and
        deletions keyed and partitioned like their input, links and failover outcomes with
        their own key, refusals and expired holds as dead letters."""
        topics, stats, tally = self.topics, self.stats, self.metrics.status_changes
        same_key = {
            STATUS_CHANGE: topics.status_changes,
            POLL_REQUEST: topics.poll_requests,
            RECORD_DELETED: topics.record_deletions,
        }
        own_key = {PROVIDER_ID_LINK: topics.provider_ids, FAILOVER_OUTCOME: topics.commands}
        for index, kind, key, payload, status in emitted:
            msg = records[index]
            topic = same_key.get(kind)
            if topic is not None:
                outputs.append(Output(topic, msg.key, payload, msg.partition))
                if kind == STATUS_CHANGE:
                    stats.status_changes += 1
                    tally[status] += 1
                elif kind == POLL_REQUEST:
                    stats.poll_requests += 1
                else:
                    stats.deletions += 1
            elif kind in own_key:
                outputs.append(Output(own_key[kind], key, payload))
            elif kind == FAILOVER_REQUEST:
                outputs.append(Output(topics.failover_requests, msg.key, payload))
            elif kind == HELD_LETTER:  # a held command that expired unmatched
                outputs.append(self.letter_of(payload))
            elif kind == REJECTED:
                outputs.append(self.dead_letter(msg, *payload))
            else:  # REFUSED: the input's work raised
                outputs.append(self.refused_as(msg, *payload))

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
        return self.refused_as(msg, *refusal(exc))

    def refused_as(self, msg: Input, reason: str, detail: str) -> Output:
        """The dead letter of an input whose work raised (``detail``: for a processing error,
        its traceback), counted and logged (masked when personal data is protected)."""
        self.metrics.input_refused(msg.topic, reason)
        if reason == "processing-error":
            log.error(
                "processing failed on %s@%s:%s: %s",
                msg.topic,
                msg.partition,
                msg.offset,
                mask_phone_text(detail) if self.settings.pii.protects_plain else detail,
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
