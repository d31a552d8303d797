"""The query surface over the partition stores of every worker.

Two layers:

- :class:`LocalQueries` answers for the partitions this worker has caught up: aggregates when
  the filter allows (providerId, type, status, requestedAt), an ordered index walk for lists,
  a scan otherwise. Each query reads and holds within a budget (``streams/query/limits.py``):
  long scans yield to the event loop every few milliseconds so the fold and the webhooks keep
  running, wait for a scan slot, are refused (422) past their budget, and stop if the
  partition is taken away meanwhile.
- :class:`QueryService` routes: one record goes to the worker owning its key; lists, counts,
  count-by and stats are gathered from every partition's owner (``POST /internal/query``) and
  merged. The partition -> worker map comes from the consumer group (``streams.membership``);
  a worker calls the others with its API token (the next one if refused: rotation).
  An answer is given only when every partition answered; during a rebalance the missing ones
  are retried for a few seconds, then the caller gets 503 rather than a silently partial count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from deliverytrack.models.codec import decode_record
from deliverytrack.models.records import TrackingRecord
from deliverytrack.streams.engine.loop import FoldEngine
from deliverytrack.streams.http.auth import outgoing_tokens
from deliverytrack.streams.query.limits import QueryLimitExceeded, ScanBudget
from deliverytrack.streams.state.store import REQUESTED, UPDATED, PartitionStore
from deliverytrack.tables.aggregates import TOTAL, Counter, Dims, contribution, cover
from deliverytrack.tables.due_index import epoch_ms
from deliverytrack.tables.pii import to_filter_hashes
from deliverytrack.tables.query import (
    FAR_FUTURE_MS,
    MAX_LIMIT,
    GroupField,
    ListOptions,
    QueryError,
    RecordFilter,
    count_by_rows,
    dims_match,
    group_key,
    is_after,
    matches,
    order_value,
    page,
    parse_time,
    stats,
    summary,
)

log = logging.getLogger(__name__)

GATHER_DEADLINE_S = 10.0


class PartitionGone(Exception):
    """The partition was revoked or closed while a query ran on it."""


class Unavailable(Exception):
    """Some partitions have no worker able to answer right now (HTTP 503)."""


Rows = dict[Dims, Counter]


def _merge_rows(into: Rows, rows: Rows) -> None:
    for dims, counter in rows.items():
        row = into.get(dims)
        if row is None:
            row = into[dims] = Counter()
        row.add(counter)


def rows_to_json(rows: Rows) -> list[list[Any]]:
    return [
        [*dims, c.count, c.delivery_ms_sum, c.delivery_count] for dims, c in rows.items() if c.count
    ]


def rows_from_json(items: list[list[Any]]) -> Rows:
    return {
        (str(p), str(t), str(s)): Counter(int(n), int(total), int(k))
        for p, t, s, n, total, k in items
    }


@dataclass(slots=True)
class LocalQueries:
    """Answers over this worker's ready partitions."""

    stores: Mapping[int, PartitionStore]
    ready: set[int]
    budget: ScanBudget = field(default_factory=ScanBudget)
    """What this query may read and hold (unbounded unless the service sets it)."""

    def store(self, partition: int) -> PartitionStore:
        """The partition's store, if it is (still) here and caught up; else PartitionGone."""
        store = self.stores.get(partition)
        if store is None or store.closed or partition not in self.ready:
            raise PartitionGone(partition)
        return store

    async def _pause(self, partition: int, store: PartitionStore) -> None:
        await self.budget.pause()
        if store.closed or self.stores.get(partition) is not store:
            raise PartitionGone(partition)

    async def _read(
        self, partition: int, store: PartitionStore, raw: bytes, *, counted: bool = True
    ) -> TrackingRecord:
        """Decode one record read from the store, within the budget (yielding between
        slices). ``counted=False``: bounded by construction, it only yields."""
        if self.budget.take() if counted else self.budget.slice_over():
            await self._pause(partition, store)
        return decode_record(raw)

    # --- rows: counts, count-by, stats ------------------------------------------------------

    async def rows(self, partition: int, flt: RecordFilter) -> Rows:
        store = self.store(partition)
        out: Rows = {}
        if flt.is_empty_match():
            return out
        if flt.dims_only():
            bounds = flt.requested_range_ms()
            if bounds is None:
                _add_counters(out, store.counters(TOTAL), flt)
                return out
            split = cover(*bounds)
            for granularity, start, end in split.buckets:
                _add_counters(out, store.counters(granularity, start, end), flt)
            for start, end in split.edges:
                # At most the two partial minutes of the range: not a scan, not budgeted.
                edge = self._walk_records(partition, store, REQUESTED, start, end, counted=False)
                async for record in edge:
                    if matches(record, flt):
                        _add_record(out, record)
            return out
        async for record in self._candidates(partition, store, flt):
            if matches(record, flt):
                _add_record(out, record)
        return out

    async def _candidates(self, partition: int, store: PartitionStore, flt: RecordFilter) -> Any:
        """Records that may match, through the narrowest access path the filter allows."""
        if flt.message_id is not None:
            for raw in store.get_many_raw(flt.message_id):
                if raw is not None:
                    yield await self._read(partition, store, raw)
            return
        if flt.requested_at_from is not None or flt.requested_at_to is not None:
            start, end = flt.requested_range_ms() or (0, FAR_FUTURE_MS)
            async for record in self._walk_records(partition, store, REQUESTED, start, end):
                yield record
            return
        if flt.status_updated_at_from is not None or flt.status_updated_at_to is not None:
            start = _ms(flt.status_updated_at_from, 0)
            end = _ms(flt.status_updated_at_to, FAR_FUTURE_MS - 1) + 1
            async for record in self._walk_records(partition, store, UPDATED, start, end):
                yield record
            return
        for _, raw in store.iter_raw():
            yield await self._read(partition, store, raw)

    async def _walk_records(
        self,
        partition: int,
        store: PartitionStore,
        index: bytes,
        start: int,
        end: int,
        *,
        descending: bool = False,
        counted: bool = True,
    ) -> Any:
        """Records in index order, fetched in chunks."""
        walker: Iterator[tuple[int, str]] = store.walk(index, start, end, descending=descending)
        while True:
            chunk = [mid for _, mid in _take(walker, 500)]
            if not chunk:
                return
            for raw in store.get_many_raw(chunk):
                if raw is not None:
                    yield await self._read(partition, store, raw, counted=counted)

    # --- lists ------------------------------------------------------------------------------

    async def list_records(
        self, partition: int, flt: RecordFilter, options: ListOptions
    ) -> list[tuple[int, str, bytes]]:
        """This partition's first ``offset + limit`` matches in the requested order (after
        ``options.after``, where the walk starts)."""
        store = self.store(partition)
        wanted = options.offset + options.limit
        found: list[tuple[int, str, bytes]] = []
        if wanted == 0 or flt.is_empty_match():
            return found
        if flt.message_id is not None:
            for raw in store.get_many_raw(flt.message_id):
                if raw is not None:
                    record = await self._read(partition, store, raw)
                    if matches(record, flt):
                        value = order_value(record, options.order_by)
                        found.append((value, record.message_id, raw))
                        self.budget.hold(len(raw))
            return page(found, options.model_copy(update={"offset": 0, "limit": wanted}))
        if options.order_by == "requestedAt":
            index, low, high = REQUESTED, flt.requested_at_from, flt.requested_at_to
        else:
            index, low, high = UPDATED, flt.status_updated_at_from, flt.status_updated_at_to
        start, end = _ms(low, 0), _ms(high, FAR_FUTURE_MS - 1) + 1
        descending = options.order_direction == "desc"
        if options.after is not None:  # keyset: start the walk at the previous page's end
            if descending:
                end = min(end, options.after[0] + 1)
            else:
                start = max(start, options.after[0])
        walker = store.walk(index, start, end, descending=descending)
        while len(found) < wanted:
            taken = list(_take(walker, 500))
            if not taken:
                break
            # Entries at the cursor's own millisecond up to the cursor are skipped unread.
            chunk = [(ms, mid) for ms, mid in taken if is_after(ms, mid, options)]
            raws = store.get_many_raw([mid for _, mid in chunk]) if chunk else []
            for (ms, mid), raw in zip(chunk, raws, strict=True):
                if raw is None:
                    continue
                record = await self._read(partition, store, raw)
                if matches(record, flt):
                    found.append((ms, mid, raw))
                    self.budget.hold(len(raw))
                    if len(found) >= wanted:
                        break
        return found

    async def due(self, partition: int, now: datetime, limit: int) -> list[tuple[int, str, bytes]]:
        """k-msg listDue on this partition: pollable records due at ``now``, oldest first.
        Like any list, within the budget's bytes, fetched in chunks, yielding between slices
        (bounded by ``limit``, so not counted as reads)."""
        store = self.store(partition)
        out: list[tuple[int, str, bytes]] = []
        due = store.due(now, limit)
        for start in range(0, len(due), 500):
            chunk = due[start : start + 500]
            raws = store.get_many_raw([mid for _, mid in chunk])
            for (ms, mid), raw in zip(chunk, raws, strict=True):
                if raw is not None:
                    self.budget.hold(len(raw))
                    out.append((ms, mid, raw))
            if self.budget.slice_over():
                await self._pause(partition, store)
        return out


def _take(iterator: Iterator[Any], n: int) -> Iterator[Any]:
    for _ in range(n):
        try:
            yield next(iterator)
        except StopIteration:
            return


def _ms(moment: datetime | None, default: int) -> int:
    return default if moment is None else epoch_ms(moment)


def _add_counters(out: Rows, rows: Iterator[tuple[Dims, Counter]], flt: RecordFilter) -> None:
    for dims, counter in rows:
        if dims_match(dims, flt):
            row = out.get(dims)
            if row is None:
                row = out[dims] = Counter()
            row.add(counter)


def _add_record(out: Rows, record: TrackingRecord) -> None:
    item = contribution(record)
    row = out.get(item.dims)
    if row is None:
        row = out[item.dims] = Counter()
    row.add(item.counter)


# --- the body of POST /internal/query ---------------------------------------------------------

QUERY_OPS = ("rows", "list", "due", "get")
MAX_PARTITION = 1_000_000
"""Partition numbers an internal query may name (Kafka topics have far fewer)."""


def parse_internal_query(body: bytes) -> tuple[dict[str, Any], list[int]]:
    """A ``POST /internal/query`` body, checked before anything runs: ``(payload for
    run_local, partitions)``. Raises ``QueryError`` or pydantic's ``ValidationError`` (both
    ``ValueError``) with the reason; the view answers them 400."""
    payload = orjson.loads(body)
    if not isinstance(payload, dict):
        raise QueryError(f"expected a JSON object, got {type(payload).__name__}")
    partitions = payload.pop("partitions", None)
    if not isinstance(partitions, list) or not all(
        type(p) is int and 0 <= p < MAX_PARTITION for p in partitions
    ):
        raise QueryError(f"partitions: a list of partition numbers (0 to {MAX_PARTITION - 1})")
    op = payload.get("op")
    if op not in QUERY_OPS:
        raise QueryError(f"op: {op!r}; expected one of {', '.join(QUERY_OPS)}")
    flt = payload.get("filter")
    if flt is not None:
        if not isinstance(flt, dict):
            raise QueryError("filter: expected a JSON object")
        RecordFilter.model_validate(flt)
    if op == "list":
        options = payload.get("options")
        if not isinstance(options, dict):
            raise QueryError("options: expected a JSON object")
        ListOptions.model_validate(options)
    elif op == "due":
        now, limit = payload.get("now"), payload.get("limit")
        if not isinstance(now, str):
            raise QueryError("now: expected an ISO-8601 time with a timezone")
        payload["now"] = parse_time("now", now).isoformat()
        if type(limit) is not int or not 0 <= limit <= MAX_LIMIT:
            raise QueryError(f"limit: expected an integer between 0 and {MAX_LIMIT}")
    elif op == "get":
        message_id = payload.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            raise QueryError("messageId: expected a non-empty string")
    return payload, list(dict.fromkeys(partitions))


# --- routing and gathering --------------------------------------------------------------------


@dataclass(slots=True)
class QueryService:
    """Answers queries for the whole table, wherever its partitions are."""

    engine: FoldEngine
    _session: aiohttp.ClientSession | None = None
    gather_deadline_s: float = GATHER_DEADLINE_S
    _scan_slots: asyncio.Semaphore | None = None
    _token_index: dict[str, int] = field(default_factory=dict)
    """Per worker URL: which of our tokens it accepted last (rotation)."""
    remote_calls: int = field(default=0)

    @property
    def local(self) -> LocalQueries:
        """This worker's partitions, with a fresh budget for one query."""
        settings = self.engine.settings
        if self._scan_slots is None:
            self._scan_slots = asyncio.Semaphore(settings.query_concurrent_scans)
        budget = ScanBudget(
            max_records=settings.query_scan_budget,
            max_bytes=settings.query_max_answer_bytes,
            slots=self._scan_slots,
        )
        partitions = self.engine.partitions
        return LocalQueries(partitions.stores, partitions.ready, budget)

    def partitions(self) -> list[int]:
        return list(range(self.engine.partition_count))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # A hung worker must not hold a query past the gather deadline.
            timeout = aiohttp.ClientTimeout(total=self.gather_deadline_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    # --- single record ----------------------------------------------------------------------

    # Partial answers are JSON values; local ones may hold orjson.Fragment (a record's stored
    # JSON, not parsed), which orjson.dumps writes out as is.

    async def get_raw(self, message_id: str) -> bytes | None:
        """The record JSON, from whichever worker owns its partition."""
        partition = self.engine.partition_of(message_id)
        results = await self._gather({"op": "get", "messageId": message_id}, [partition])
        value = results[partition]
        return None if value is None else orjson.dumps(value)

    # --- gathered queries -------------------------------------------------------------------

    def _protected(self, flt: RecordFilter) -> RecordFilter:
        """With personal data protection on, records keep only hashes of phone numbers: a
        ``to``/``from`` filter becomes a hash filter under every configured key id (records
        written before a key rotation still match)."""
        policy = self.engine.settings.pii
        if not policy.enabled or (flt.to is None and flt.from_ is None):
            return flt
        update: dict[str, Any] = {"to": None, "from_": None}
        for plain, hashed in (("to", "to_hash"), ("from_", "from_hash")):
            values = getattr(flt, plain)
            if values is not None:
                hashes = to_filter_hashes(values, policy)
                if "" in values:
                    # A missing sender compares as "" (k-msg): it has no hash either.
                    hashes.add("")
                existing = getattr(flt, hashed)
                update[hashed] = tuple(
                    sorted(hashes if existing is None else hashes & set(existing))
                )
        return flt.model_copy(update=update)

    async def rows(self, flt: RecordFilter) -> Rows:
        flt = self._protected(flt)
        payload = {"op": "rows", "filter": flt.model_dump(mode="json", by_alias=True)}
        results = await self._gather(payload, self.partitions())
        out: Rows = {}
        for partial in results.values():
            _merge_rows(out, rows_from_json(partial))
        return out

    async def count(self, flt: RecordFilter) -> int:
        return sum(counter.count for counter in (await self.rows(flt)).values())

    async def count_by(
        self, flt: RecordFilter, group_by: tuple[GroupField, ...]
    ) -> list[dict[str, Any]]:
        if not group_by:
            return []
        counts: dict[tuple[str, ...], int] = {}
        for dims, counter in (await self.rows(flt)).items():
            key = group_key(dims, group_by)
            counts[key] = counts.get(key, 0) + counter.count
        return count_by_rows(counts, group_by)

    async def stats(self, flt: RecordFilter) -> dict[str, Any]:
        return stats(await self.rows(flt))

    async def summary(
        self, flt: RecordFilter, *, by_provider_id: bool = False, by_type: bool = False
    ) -> dict[str, Any]:
        """k-msg analytics ``getSummary``, from the same counter rows as count-by."""
        rows = await self.rows(flt)
        return summary(rows, by_provider_id=by_provider_id, by_type=by_type)

    async def list_records(self, flt: RecordFilter, options: ListOptions) -> list[Any]:
        flt = self._protected(flt)
        payload = {
            "op": "list",
            "filter": flt.model_dump(mode="json", by_alias=True),
            "options": options.model_dump(mode="json", by_alias=True),
        }
        results = await self._gather(payload, self.partitions())
        candidates = [
            (int(ms), str(mid), orjson.dumps(record))
            for partial in results.values()
            for ms, mid, record in partial
        ]
        return [orjson.loads(raw) for _, _, raw in page(candidates, options)]

    async def due(self, now: datetime, limit: int) -> list[Any]:
        if limit <= 0:
            return []
        payload = {"op": "due", "now": now.isoformat(), "limit": limit}
        results = await self._gather(payload, self.partitions())
        candidates = sorted(
            (
                (int(ms), str(mid), record)
                for partial in results.values()
                for ms, mid, record in partial
            ),
            key=lambda c: (c[0], c[1]),
        )
        return [record for _, _, record in candidates[:limit]]

    # --- execution --------------------------------------------------------------------------

    async def run_local(self, payload: dict[str, Any], partitions: list[int]) -> dict[int, Any]:
        """Run one partial query on the given local partitions; partitions that are not
        (or no longer) here are left out of the answer."""
        local = self.local
        try:
            return await self._run_local(local, payload, partitions)
        finally:
            local.budget.release()

    async def _run_local(
        self, local: LocalQueries, payload: dict[str, Any], partitions: list[int]
    ) -> dict[int, Any]:
        op = payload["op"]
        out: dict[int, Any] = {}
        flt = RecordFilter.model_validate(payload.get("filter") or {})
        for partition in partitions:
            try:
                if op == "rows":
                    out[partition] = rows_to_json(await local.rows(partition, flt))
                elif op == "list":
                    options = ListOptions.model_validate(payload["options"])
                    found = await local.list_records(partition, flt, options)
                    out[partition] = [[ms, mid, orjson.Fragment(raw)] for ms, mid, raw in found]
                elif op == "due":
                    now = datetime.fromisoformat(payload["now"])
                    found = await local.due(partition, now, int(payload["limit"]))
                    out[partition] = [[ms, mid, orjson.Fragment(raw)] for ms, mid, raw in found]
                elif op == "get":
                    store = local.store(partition)
                    raw = store.get_raw(payload["messageId"])
                    out[partition] = None if raw is None else orjson.Fragment(raw)
                else:
                    raise ValueError(f"unknown query op {op!r}")
            except PartitionGone:
                continue
        return out

    async def _gather(self, payload: dict[str, Any], partitions: list[int]) -> dict[int, Any]:
        """Every partition's partial answer, from whoever owns it; retries the missing ones
        (rebalancing, catching up) until the deadline, then raises :class:`Unavailable`."""
        deadline = time.monotonic() + self.gather_deadline_s
        results: dict[int, Any] = {}
        missing = list(partitions)
        while True:
            engine = self.engine
            mine = [p for p in missing if p in engine.ready_partitions]
            remote: dict[str, list[int]] = {}
            owners = engine.membership.owners
            for p in missing:
                if p in mine:
                    continue
                url = owners.get(p)
                if url and url != engine.membership.url:
                    remote.setdefault(url, []).append(p)
            if mine:
                results.update(await self.run_local(payload, mine))
            if remote:
                answers = await asyncio.gather(
                    *(self._remote(url, payload, parts) for url, parts in remote.items())
                )
                for answer in answers:
                    results.update(answer)
            missing = [p for p in partitions if p not in results]
            if not missing:
                return results
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"no worker could answer for partitions {missing} (rebalancing or a worker "
                    "is down); try again"
                )
            await asyncio.sleep(0.2)

    async def _remote(self, url: str, payload: dict[str, Any], parts: list[int]) -> dict[int, Any]:
        """Another worker's partial answer ({} if it cannot give one now: retried). It is
        called with our API token; refused (401), with the next one (tokens being rotated)."""
        self.remote_calls += 1
        body = orjson.dumps({**payload, "partitions": parts})
        tokens = outgoing_tokens(self.engine.settings)
        first = self._token_index.get(url, 0)
        for attempt in range(max(len(tokens), 1)):
            headers = {"Content-Type": "application/json"}
            index = (first + attempt) % len(tokens) if tokens else 0
            if tokens:
                headers["Authorization"] = f"Bearer {tokens[index]}"
            try:
                async with self._http().post(
                    f"{url}/internal/query", data=body, headers=headers
                ) as response:
                    status, raw = response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("query: %s unreachable (%s)", url, exc)
                return {}
            if status == 401 and attempt + 1 < len(tokens):
                continue
            break
        if status == 200 and tokens:
            self._token_index[url] = index
        if status == 422:  # over the query's budget there: the whole query is refused
            raise QueryLimitExceeded(_error_of(raw) or "the query is over its budget")
        if status != 200:
            refused = " (it accepts none of our DELIVERYTRACK_API_TOKENS)" if status == 401 else ""
            level = logging.WARNING if status == 401 else logging.INFO
            log.log(level, "query: %s answered %s%s", url, status, refused)
            return {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            log.info("query: %s answered malformed JSON (%s)", url, exc)
            return {}
        return {int(p): value for p, value in data["partitions"].items()}


def _error_of(raw: bytes) -> str | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return str(data["error"]) if isinstance(data, dict) and "error" in data else None
