"""Query semantics: k-msg's record filter, list options, count-by and delivery stats. Pure.

kmsg-behaviour.md 4.4 (filters, ordering, count-by) and 10 (DeliveryTracker stats). The storage
layer decides *how* to answer (aggregates, an index walk or a scan); this module says *what*
the answer is, so every path agrees with :func:`matches`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from deliverytrack.models.common import Frozen, UtcBound, utc_text
from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.models.records import TrackingRecord
from deliverytrack.tables.aggregates import Counter, Dims
from deliverytrack.tables.due_index import epoch_ms, from_epoch_ms

OrderBy = Literal["requestedAt", "statusUpdatedAt"]
Direction = Literal["asc", "desc"]
GroupField = Literal["providerId", "type", "status"]
GROUP_FIELDS: tuple[GroupField, ...] = ("providerId", "type", "status")

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_WINDOW = 10_000
"""offset + limit at most: each partition holds that many records until the page is cut, so a
deeper page pages on with ``after`` (keyset) instead."""
MAX_OFFSET = MAX_WINDOW


class QueryError(ValueError):
    """A query the caller got wrong; the message says what and how to fix it (HTTP 400)."""


def plain(message: str) -> str:
    """pydantic's message without its "Value error, " / "Assertion failed, " prefix."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


_LIST_FIELDS = (
    "message_id",
    "provider_id",
    "provider_message_id",
    "type",
    "status",
    "to",
    "to_hash",
    "from_",
    "from_hash",
)


class RecordFilter(Frozen):
    """k-msg's ``DeliveryTrackingRecordFilter``: list fields match any of their values (IN),
    ranges are inclusive, conditions are ANDed, absent keys are unconstrained. An empty list
    matches nothing (k-msg's memory store; its SQL stores ignore it [quirk])."""

    message_id: tuple[str, ...] | None = None
    provider_id: tuple[str, ...] | None = None
    provider_message_id: tuple[str, ...] | None = None
    type: tuple[MessageType, ...] | None = None
    status: tuple[TrackingStatus, ...] | None = None
    to: tuple[str, ...] | None = None
    to_hash: tuple[str, ...] | None = None
    from_: tuple[str, ...] | None = Field(default=None, alias="from")
    from_hash: tuple[str, ...] | None = None
    requested_at_from: UtcBound | None = None
    requested_at_to: UtcBound | None = None
    status_updated_at_from: UtcBound | None = None
    status_updated_at_to: UtcBound | None = None

    @field_validator(*_LIST_FIELDS, mode="before")
    @classmethod
    def _scalar_is_one_value(cls, value: Any) -> Any:
        """k-msg filters take a scalar (equality) or an array (IN); repeats count once."""
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list | tuple):
            try:
                return tuple(dict.fromkeys(value))
            except TypeError:  # an unhashable item (a JSON object or array): refused below
                return tuple(value)
        return value

    @field_validator(
        "requested_at_from", "requested_at_to", "status_updated_at_from", "status_updated_at_to"
    )
    @classmethod
    def _bound_to_ms(cls, value: datetime | None) -> datetime | None:
        """Times are compared at millisecond precision (k-msg's: JavaScript Dates; and the
        precision of the indexes and the counters): a bound, like a record's own time, counts
        by its millisecond (truncated), so a bound equal to a record's time always matches it,
        whatever its sub-millisecond digits."""
        return None if value is None else from_epoch_ms(epoch_ms(value))

    def is_empty_match(self) -> bool:
        """True when the filter can match nothing (an empty IN list or an empty range)."""
        for name in _LIST_FIELDS:
            value = getattr(self, name)
            if value is not None and len(value) == 0:
                return True
        for low, high in (
            (self.requested_at_from, self.requested_at_to),
            (self.status_updated_at_from, self.status_updated_at_to),
        ):
            if low is not None and high is not None and low > high:
                return True
        return False

    def dims_only(self) -> bool:
        """Answerable from aggregates: constrains only providerId, type, status, requestedAt."""
        return all(getattr(self, name) is None for name in _NON_DIM_FIELDS)

    def requested_range_ms(self) -> tuple[int, int] | None:
        """The requestedAt bounds as a half-open ms range, or None when unbounded."""
        if self.requested_at_from is None and self.requested_at_to is None:
            return None
        start = 0 if self.requested_at_from is None else epoch_ms(self.requested_at_from)
        end = FAR_FUTURE_MS if self.requested_at_to is None else epoch_ms(self.requested_at_to) + 1
        return start, end


_NON_DIM_FIELDS = (
    "message_id",
    "provider_message_id",
    "to",
    "to_hash",
    "from_",
    "from_hash",
    "status_updated_at_from",
    "status_updated_at_to",
)
_EPOCH = from_epoch_ms(0)
FAR_FUTURE_MS = epoch_ms(datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)) + 1
"""Exclusive end of every time range (datetime's maximum)."""


class ListOptions(Frozen):
    limit: int = Field(default=DEFAULT_LIMIT, ge=0, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    order_by: OrderBy = "requestedAt"
    order_direction: Direction = "desc"
    after: tuple[int, str] | None = Field(
        default=None,
        description="Keyset paging: only records after (orderBy value in epoch ms, messageId) "
        "in the requested order; the previous page's nextAfter",
    )

    @model_validator(mode="after")
    def _window(self) -> ListOptions:
        if self.offset + self.limit > MAX_WINDOW:
            raise ValueError(window_error(self.offset, self.limit))
        return self


def window_error(offset: int, limit: int) -> str:
    return (
        f"offset + limit: at most {MAX_WINDOW:,}, got {offset + limit:,}; page on with the "
        "previous answer's nextAfter (after=...) instead of a deep offset"
    )


def after_cursor(order_ms: int, message_id: str) -> str:
    """The ``after`` parameter that continues a list past this record: ``<ms>:<messageId>``."""
    return f"{order_ms}:{message_id}"


def next_after(records: Sequence[Mapping[str, Any]], options: ListOptions) -> str | None:
    """The ``after`` of the next page: None when this page (JSON records, as answered) is not
    full, so nothing follows."""
    if options.limit == 0 or len(records) < options.limit:
        return None
    last = records[-1]
    moment = datetime.fromisoformat(str(last[options.order_by]))
    return after_cursor(epoch_ms(moment), str(last["messageId"]))


def is_after(order_ms: int, message_id: str, options: ListOptions) -> bool:
    """The record comes after ``options.after`` in the requested order (always, without one)."""
    if options.after is None:
        return True
    if options.order_direction == "desc":
        return (order_ms, message_id) < options.after
    return (order_ms, message_id) > options.after


def matches(record: TrackingRecord, flt: RecordFilter) -> bool:
    if flt.message_id is not None and record.message_id not in flt.message_id:
        return False
    if flt.provider_id is not None and record.provider_id not in flt.provider_id:
        return False
    if (
        flt.provider_message_id is not None
        and record.provider_message_id not in flt.provider_message_id
    ):
        return False
    if flt.type is not None and record.type not in flt.type:
        return False
    if flt.status is not None and record.status not in flt.status:
        return False
    if flt.to is not None and record.to not in flt.to:
        return False
    if flt.to_hash is not None and (record.to_hash or "") not in flt.to_hash:
        return False
    if flt.from_ is not None and (record.from_ or "") not in flt.from_:
        return False
    if flt.from_hash is not None and (record.from_hash or "") not in flt.from_hash:
        return False
    if not _within(record.requested_at, flt.requested_at_from, flt.requested_at_to):
        return False
    return _within(record.status_updated_at, flt.status_updated_at_from, flt.status_updated_at_to)


def _within(value: datetime, low: datetime | None, high: datetime | None) -> bool:
    """Inclusive, at millisecond precision (bounds are whole milliseconds, see RecordFilter)."""
    if low is None and high is None:
        return True
    ms = epoch_ms(value)
    return (low is None or ms >= epoch_ms(low)) and (high is None or ms <= epoch_ms(high))


def dims_match(dims: Dims, flt: RecordFilter) -> bool:
    provider_id, type_, status = dims
    if flt.provider_id is not None and provider_id not in flt.provider_id:
        return False
    if flt.type is not None and type_ not in flt.type:
        return False
    return flt.status is None or status in flt.status


# --- ordering ---------------------------------------------------------------------------------


def order_value(record: TrackingRecord, order_by: OrderBy) -> int:
    moment = record.requested_at if order_by == "requestedAt" else record.status_updated_at
    return epoch_ms(moment)


def page(
    candidates: Iterable[tuple[int, str, bytes]], options: ListOptions
) -> list[tuple[int, str, bytes]]:
    """Order ``(order value ms, messageId, record JSON)`` candidates and cut the page. Ties
    break on messageId (k-msg has no tie-breaker), in the same direction, so pages are stable
    and the answer does not depend on how records are spread over partitions or workers."""
    ordered = sorted(
        (c for c in candidates if is_after(c[0], c[1], options)),
        key=lambda c: (c[0], c[1]),
        reverse=options.order_direction == "desc",
    )
    return ordered[options.offset : options.offset + options.limit]


# --- count-by and stats -----------------------------------------------------------------------


def group_key(dims: Dims, group_by: Sequence[GroupField]) -> tuple[str, ...]:
    provider_id, type_, status = dims
    values = {"providerId": provider_id, "type": type_, "status": status}
    return tuple(values[name] for name in group_by)


def count_by_rows(
    counts: Mapping[tuple[str, ...], int], group_by: Sequence[GroupField]
) -> list[dict[str, Any]]:
    """k-msg's countBy rows ``{key: {field: value}, count}``, largest first then by key."""
    ordered = sorted(
        ((key, count) for key, count in counts.items() if count > 0),
        key=lambda item: (-item[1], item[0]),
    )
    return [
        {"key": dict(zip(group_by, key, strict=True)), "count": count} for key, count in ordered
    ]


def stats(counters: Mapping[Dims, Counter]) -> dict[str, Any]:
    """k-msg DeliveryTracker's stats over the given rows (section 10): totalMessages,
    byStatus, byProvider (and byType), averageDeliveryTime = mean(deliveredAt - sentAt) in ms
    over records having both, deliveryRate = DELIVERED/total x 100 (CLICKED counted as
    delivered too: a clicked message was delivered; k-msg leaves it out [quirk]),
    failureRate = FAILED/total x 100. With no records the average and rates are 0 (k-msg keeps
    stale values [quirk])."""
    total = 0
    by_status: dict[str, int] = {}
    by_provider: dict[str, int] = {}
    by_type: dict[str, int] = {}
    delivery_sum = delivery_count = 0
    for (provider_id, type_, status), counter in counters.items():
        if counter.count == 0:
            continue
        total += counter.count
        by_status[status] = by_status.get(status, 0) + counter.count
        by_provider[provider_id] = by_provider.get(provider_id, 0) + counter.count
        by_type[type_] = by_type.get(type_, 0) + counter.count
        delivery_sum += counter.delivery_ms_sum
        delivery_count += counter.delivery_count
    delivered = by_status.get(TrackingStatus.DELIVERED, 0) + by_status.get(
        TrackingStatus.CLICKED, 0
    )
    failed = by_status.get(TrackingStatus.FAILED, 0)
    return {
        "totalMessages": total,
        "byStatus": dict(sorted(by_status.items())),
        "byProvider": dict(sorted(by_provider.items())),
        "byType": dict(sorted(by_type.items())),
        "averageDeliveryTime": delivery_sum / delivery_count if delivery_count else 0,
        "deliveryRate": delivered / total * 100 if total else 0,
        "failureRate": failed / total * 100 if total else 0,
    }


def _breakdown(by_status: Mapping[str, int]) -> dict[str, Any]:
    """One k-msg ``DeliveryTrackingAnalyticsBreakdown``: total, byStatus zero-filled for every
    status, and the three rates (each 0 when its denominator is 0)."""
    counts = {status.value: by_status.get(status.value, 0) for status in TrackingStatus}
    total = sum(counts.values())
    delivered = counts[TrackingStatus.DELIVERED] + counts[TrackingStatus.CLICKED]
    failed = counts[TrackingStatus.FAILED]
    finalized = delivered + failed
    return {
        "total": total,
        "byStatus": counts,
        "rates": {
            "deliveredOfTotalPct": delivered / total * 100 if total else 0,
            "failedOfTotalPct": failed / total * 100 if total else 0,
            "deliveredOfFinalizedPct": delivered / finalized * 100 if finalized else 0,
        },
    }


def summary(
    counters: Mapping[Dims, Counter], *, by_provider_id: bool = False, by_type: bool = False
) -> dict[str, Any]:
    """k-msg analytics ``getSummary`` (kmsg-behaviour.md 12) over the given rows: ``total``,
    ``byStatus`` (every status, zero-filled), ``rates`` {deliveredOfTotalPct,
    failedOfTotalPct, deliveredOfFinalizedPct = delivered / (delivered + FAILED)}, and on
    request ``byProviderId`` / ``byType``, each a map to the same breakdown. As in
    :func:`stats`, CLICKED counts as delivered. Every total is the number of records (k-msg's
    group totals sum only its six statuses [quirk]; here every status is counted)."""
    overall: dict[str, int] = {}
    groups: dict[str, dict[str, dict[str, int]]] = {"byProviderId": {}, "byType": {}}
    for (provider_id, type_, status), counter in counters.items():
        if counter.count == 0:
            continue
        overall[status] = overall.get(status, 0) + counter.count
        for name, key in (("byProviderId", provider_id), ("byType", type_)):
            group = groups[name].setdefault(key, {})
            group[status] = group.get(status, 0) + counter.count
    out = _breakdown(overall)
    for name, wanted in (("byProviderId", by_provider_id), ("byType", by_type)):
        if wanted:
            out[name] = {key: _breakdown(groups[name][key]) for key in sorted(groups[name])}
    return out


# --- parsing query parameters -----------------------------------------------------------------

_FILTER_PARAMS: dict[str, str] = {
    "messageId": "message_id",
    "providerId": "provider_id",
    "providerMessageId": "provider_message_id",
    "type": "type",
    "status": "status",
    "to": "to",
    "toHash": "to_hash",
    "from": "from_",
    "fromHash": "from_hash",
}
_RANGE_PARAMS: dict[str, str] = {
    "requestedAtFrom": "requested_at_from",
    "requestedAtTo": "requested_at_to",
    "statusUpdatedAtFrom": "status_updated_at_from",
    "statusUpdatedAtTo": "status_updated_at_to",
}
FILTER_PARAM_NAMES = frozenset(_FILTER_PARAMS) | frozenset(_RANGE_PARAMS)


def parse_time(name: str, text: str) -> datetime:
    """ISO-8601 with a timezone (``2026-12-01T00:00:00Z``) or epoch milliseconds."""
    text = text.strip()
    hint = (
        "use ISO-8601 with a timezone (2026-12-01T09:00:00Z) or epoch milliseconds, "
        "from 1970 to 9999"
    )
    digits = text[1:] if text.startswith("-") else text
    try:
        if digits.isascii() and digits.isdigit():
            if len(digits) > 16:
                raise OverflowError(text)
            moment = from_epoch_ms(int(text))
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                raise QueryError(
                    f"{name}: {text!r} has no timezone; add Z or an offset like +09:00"
                )
            moment = moment.astimezone(UTC)
    except QueryError:
        raise
    except (ValueError, OverflowError):
        raise QueryError(f"{name}: {text!r} is not a time; {hint}") from None
    if moment < _EPOCH:
        # Index and counter keys are unsigned epoch milliseconds: nothing is before 1970.
        raise QueryError(f"{name}: {text!r} is before 1970; {hint}")
    return moment


_BLANK_MATCHES_MISSING = frozenset({"from", "toHash", "fromHash"})
"""Filters where an empty value is a value: k-msg compares a missing ``from``, ``toHash`` or
``fromHash`` as "", so ``from=`` matches the records without a sender."""


def _values(name: str, raw: Sequence[str]) -> tuple[str, ...]:
    values: list[str] = []
    for item in raw:
        if not item.strip() and name in _BLANK_MATCHES_MISSING:
            values.append("")
        values.extend(part.strip() for part in item.split(",") if part.strip())
    if not values:
        raise QueryError(f"{name}: empty value; give one or more values, comma-separated")
    return tuple(dict.fromkeys(values))


def _enum_values(name: str, raw: Sequence[str], enum: type[Any]) -> tuple[Any, ...]:
    out = []
    for value in _values(name, raw):
        try:
            out.append(enum(value.upper()))
        except ValueError:
            allowed = ", ".join(member.value for member in enum)
            message = f"{name}: unknown value {value!r}; expected one of {allowed}"
            raise QueryError(message) from None
    return tuple(out)


def _single(name: str, raw: Sequence[str]) -> str:
    if len(raw) != 1:
        raise QueryError(f"{name}: give it once, got {len(raw)} values")
    return raw[0]


def parse_filter(params: Mapping[str, Sequence[str]], allowed: Iterable[str] = ()) -> RecordFilter:
    """A filter from query parameters (``{name: [values...]}``); any parameter that is neither
    a filter nor in ``allowed`` is refused, so a typo never silently widens a query."""
    extra = set(allowed)
    fields: dict[str, Any] = {}
    for name, raw in params.items():
        if name in _FILTER_PARAMS:
            target = _FILTER_PARAMS[name]
            if name == "type":
                fields[target] = _enum_values(name, raw, MessageType)
            elif name == "status":
                fields[target] = _enum_values(name, raw, TrackingStatus)
            else:
                fields[target] = _values(name, raw)
        elif name in _RANGE_PARAMS:
            fields[_RANGE_PARAMS[name]] = parse_time(name, _single(name, raw))
        elif name not in extra:
            known = sorted(FILTER_PARAM_NAMES | extra)
            raise QueryError(f"unknown parameter {name!r}; known: {', '.join(known)}")
    for low, high in (
        ("requestedAtFrom", "requestedAtTo"),
        ("statusUpdatedAtFrom", "statusUpdatedAtTo"),
    ):
        _check_order(low, fields.get(_RANGE_PARAMS[low]), high, fields.get(_RANGE_PARAMS[high]))
    return _validated_filter(fields, _PARAM_OF_FIELD)


def _check_order(low: str, start: datetime | None, high: str, end: datetime | None) -> None:
    """A range whose start is after its end can match nothing: refused (400) on every route,
    lists and counts as stats, rather than answered empty on some and refused on others."""
    if start is not None and end is not None and epoch_ms(start) > epoch_ms(end):
        raise QueryError(
            f"{low}: must not be after {high} ({utc_text(start)} > {utc_text(end)}); "
            "no record could match: swap them"
        )


_PARAM_OF_FIELD = {field: param for param, field in {**_FILTER_PARAMS, **_RANGE_PARAMS}.items()}


def _validated_filter(fields: dict[str, Any], names: Mapping[str, str]) -> RecordFilter:
    """``RecordFilter`` of ``fields``; a value it refuses is a ``QueryError`` naming the query
    parameter it came from (``names``: field -> parameter)."""
    try:
        return RecordFilter.model_validate(fields)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{names.get(str(err['loc'][0]), str(err['loc'][0])) if err['loc'] else '<filter>'}"
            f": {plain(err['msg'])}"
            for err in exc.errors(include_url=False)[:5]
        )
        raise QueryError(reasons) from None


def _int(name: str, text: str, low: int, high: int | None = None) -> int:
    bound = f">= {low}" if high is None else f"between {low} and {high}"
    digits = text.strip().removeprefix("-").removeprefix("+")
    if digits.isascii() and digits.isdigit() and len(digits) > 20:
        # A number all the same, only too large to be worth converting.
        raise QueryError(f"{name}: must be {bound}, got a {len(digits)}-digit number")
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{name}: {text[:40]!r} is not an integer") from None
    if value < low or (high is not None and value > high):
        raise QueryError(f"{name}: must be {bound}, got {value}")
    return value


LIST_PARAMS = ("limit", "offset", "orderBy", "orderDirection", "after")


def parse_list_options(params: Mapping[str, Sequence[str]]) -> ListOptions:
    fields: dict[str, Any] = {}
    if "limit" in params:
        fields["limit"] = _int("limit", _single("limit", params["limit"]), 0, MAX_LIMIT)
    if "offset" in params:
        fields["offset"] = _int("offset", _single("offset", params["offset"]), 0, MAX_OFFSET)
    if "orderBy" in params:
        value = _single("orderBy", params["orderBy"])
        if value not in ("requestedAt", "statusUpdatedAt"):
            raise QueryError(f"orderBy: {value!r}; expected requestedAt or statusUpdatedAt")
        fields["order_by"] = value
    if "orderDirection" in params:
        value = _single("orderDirection", params["orderDirection"]).lower()
        if value not in ("asc", "desc"):
            raise QueryError(f"orderDirection: {value!r}; expected asc or desc")
        fields["order_direction"] = value
    if "after" in params:
        fields["after"] = parse_after(_single("after", params["after"]))
    offset, limit = fields.get("offset", 0), fields.get("limit", DEFAULT_LIMIT)
    if offset + limit > MAX_WINDOW:
        raise QueryError(window_error(offset, limit))
    return ListOptions.model_validate(fields)


def parse_after(text: str) -> tuple[int, str]:
    """``after=<epoch ms>:<messageId>`` (a previous answer's ``nextAfter``)."""
    ms, sep, message_id = text.partition(":")
    if not sep or not message_id:
        raise QueryError(f"after: {text[:80]!r}; expected <epoch ms>:<messageId> (nextAfter)")
    return _int("after", ms, 0, FAR_FUTURE_MS), message_id


def parse_group_by(params: Mapping[str, Sequence[str]]) -> tuple[GroupField, ...]:
    if "groupBy" not in params:
        raise QueryError("groupBy: required, a comma-separated subset of providerId,type,status")
    out: list[GroupField] = []
    for value in _values("groupBy", params["groupBy"]):
        if value not in GROUP_FIELDS:
            raise QueryError(f"groupBy: {value!r}; expected a subset of providerId,type,status")
        if value not in out:
            out.append(value)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime | None
    end: datetime | None


def parse_period(params: Mapping[str, Sequence[str]]) -> Period:
    """``/stats?from=..&to=..``: inclusive bounds on requestedAt (k-msg's createdAt)."""
    start = parse_time("from", _single("from", params["from"])) if "from" in params else None
    end = parse_time("to", _single("to", params["to"])) if "to" in params else None
    _check_order("from", start, "to", end)
    # The bounds become a filter's requestedAt range: refused here, under their own names, if
    # the filter would refuse them.
    _validated_filter(
        {"requested_at_from": start, "requested_at_to": end},
        {"requested_at_from": "from", "requested_at_to": "to"},
    )
    return Period(start, end)


SUMMARY_PARAMS = ("from", "to", "providerId", "type", "includeByProviderId", "includeByType")


@dataclass(frozen=True, slots=True)
class SummaryQuery:
    """``/stats/summary``'s parameters: k-msg ``getSummary(query, options)``."""

    filter: RecordFilter
    by_provider_id: bool = False
    by_type: bool = False


def _flag(name: str, params: Mapping[str, Sequence[str]]) -> bool:
    if name not in params:
        return False
    value = _single(name, params[name]).strip().lower()
    if value in ("true", "1", "yes", ""):
        return True
    if value in ("false", "0", "no"):
        return False
    raise QueryError(f"{name}: {value!r}; expected true or false")


def parse_summary(params: Mapping[str, Sequence[str]]) -> SummaryQuery:
    """``from`` and ``to`` (the inclusive ``requestedAt`` period, both required as in k-msg),
    optional ``providerId`` and ``type`` (repeatable or comma-separated),
    ``includeByProviderId`` and ``includeByType`` (true/false)."""
    unknown = sorted(set(params) - set(SUMMARY_PARAMS))
    if unknown:
        raise QueryError(f"unknown parameter(s) {unknown}; known: {', '.join(SUMMARY_PARAMS)}")
    for name in ("from", "to"):
        if name not in params:
            raise QueryError(
                f"{name}: required; the summary is over a requestedAt period (inclusive), "
                "from ... to ..."
            )
    period = parse_period(params)
    dims = parse_filter({k: v for k, v in params.items() if k in ("providerId", "type")})
    flt = _validated_filter(
        {**dict(dims), "requested_at_from": period.start, "requested_at_to": period.end},
        {**_PARAM_OF_FIELD, "requested_at_from": "from", "requested_at_to": "to"},
    )
    return SummaryQuery(flt, _flag("includeByProviderId", params), _flag("includeByType", params))
