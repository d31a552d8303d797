"""What the derived data of a record (the due and expiry indexes, the time indexes, the
aggregates) reads of it: a ``TrackingRecord`` has all of it, and so does the hot path's view of
a record kept as its JSON dict (``tables.hot.facts.HotFacts``)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from deliverytrack.models.enums import MessageType, TrackingStatus


class RecordFacts(Protocol):
    @property
    def message_id(self) -> str: ...

    @property
    def provider_id(self) -> str: ...

    @property
    def type(self) -> MessageType: ...

    @property
    def status(self) -> TrackingStatus: ...

    @property
    def requested_at(self) -> datetime: ...

    @property
    def status_updated_at(self) -> datetime: ...

    @property
    def sent_at(self) -> datetime | None: ...

    @property
    def delivered_at(self) -> datetime | None: ...

    @property
    def next_check_at(self) -> datetime | None: ...

    @property
    def check_lease_until(self) -> datetime | None: ...

    @property
    def tracking_stopped_at(self) -> datetime | None: ...

    @property
    def retention_until(self) -> datetime | None: ...

    @property
    def expires_at(self) -> datetime | None: ...
