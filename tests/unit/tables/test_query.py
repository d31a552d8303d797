"""k-msg's filter, ordering, count-by and stats rules (kmsg-behaviour.md 4.4 and 10)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from deliverytrack.models.enums import MessageType, TrackingStatus
from deliverytrack.tables.aggregates import Counter
from deliverytrack.tables.due_index import epoch_ms
from deliverytrack.tables.query import (
    FAR_FUTURE_MS,
    ListOptions,
    QueryError,
    RecordFilter,
    count_by_rows,
    matches,
    page,
    parse_filter,
    parse_group_by,
    parse_list_options,
    parse_period,
    parse_summary,
    stats,
    summary,
)
from tests.factories import T0, sent_record_factory

S = TrackingStatus


def test_scalars_are_equality_and_lists_are_in() -> None:
    r = sent_record_factory(provider_id="solapi")
    assert matches(r, RecordFilter.model_validate({"providerId": "solapi"}))
    assert matches(r, RecordFilter.model_validate({"providerId": ["iwinv", "solapi"]}))
    assert not matches(r, RecordFilter.model_validate({"providerId": ["iwinv"]}))
    assert matches(r, RecordFilter(status=(S.SENT,), type=(MessageType.SMS,)))


def test_an_empty_list_matches_nothing() -> None:
    flt = RecordFilter(status=())
    assert flt.is_empty_match()
    assert not matches(sent_record_factory(), flt)


def test_ranges_are_inclusive_on_both_ends() -> None:
    r = sent_record_factory(requested_at=T0)
    assert matches(r, RecordFilter(requested_at_from=T0, requested_at_to=T0))
    assert not matches(r, RecordFilter(requested_at_from=T0 + timedelta(milliseconds=1)))
    assert not matches(r, RecordFilter(requested_at_to=T0 - timedelta(milliseconds=1)))
    assert RecordFilter(requested_at_from=T0, requested_at_to=T0 - timedelta(1)).is_empty_match()


def test_missing_from_compares_as_empty_string() -> None:
    r = sent_record_factory().model_copy(update={"from_": None})
    assert matches(r, RecordFilter.model_validate({"from": [""]}))
    assert not matches(r, RecordFilter.model_validate({"from": ["021"]}))


def test_which_filters_aggregates_can_answer() -> None:
    assert RecordFilter(provider_id=("a",), requested_at_from=T0).dims_only()
    assert not RecordFilter(to=("010",)).dims_only()
    assert not RecordFilter(status_updated_at_to=T0).dims_only()
    assert RecordFilter(requested_at_to=T0).requested_range_ms() == (0, 1_795_424_400_001)


def test_page_orders_with_a_message_id_tie_break_and_cuts() -> None:
    items = [(2, "b", b""), (1, "z", b""), (2, "a", b""), (3, "c", b"")]
    asc = ListOptions(limit=3, offset=0, order_direction="asc")
    assert [mid for _, mid, _ in page(items, asc)] == ["z", "a", "b"]
    desc = ListOptions(limit=2, offset=1)
    assert [mid for _, mid, _ in page(items, desc)] == ["b", "a"]
    assert page(items, ListOptions(limit=0)) == []


def test_count_by_rows_have_k_msg_shape_largest_first() -> None:
    rows = count_by_rows({("SENT",): 1, ("DELIVERED",): 7, ("FAILED",): 0}, ("status",))
    assert rows == [
        {"key": {"status": "DELIVERED"}, "count": 7},
        {"key": {"status": "SENT"}, "count": 1},
    ]


def test_stats_of_seven_delivered_and_three_failed() -> None:
    """Old tracker test 3: 10 messages, 7 DELIVERED, 3 FAILED -> rates 70 / 30."""
    result = stats(
        {
            ("solapi", "SMS", "DELIVERED"): Counter(7, 7 * 2000, 7),
            ("solapi", "SMS", "FAILED"): Counter(3, 0, 0),
        }
    )
    assert result["totalMessages"] == 10
    assert (result["deliveryRate"], result["failureRate"]) == (70, 30)
    assert result["averageDeliveryTime"] == 2000


def test_stats_of_the_analytics_case() -> None:
    """solapi SMS DELIVERED, solapi SMS FAILED, iwinv ALIMTALK PENDING, solapi ALIMTALK
    DELIVERED -> total 4, rates 50 and 25, solapi 3 / iwinv 1, SMS 2 / ALIMTALK 2."""
    result = stats(
        {
            ("solapi", "SMS", "DELIVERED"): Counter(1),
            ("solapi", "SMS", "FAILED"): Counter(1),
            ("iwinv", "ALIMTALK", "PENDING"): Counter(1),
            ("solapi", "ALIMTALK", "DELIVERED"): Counter(1),
        }
    )
    assert result["totalMessages"] == 4
    assert (result["deliveryRate"], result["failureRate"]) == (50, 25)
    assert result["byProvider"] == {"iwinv": 1, "solapi": 3}
    assert result["byType"] == {"ALIMTALK": 2, "SMS": 2}


def test_stats_with_no_records_are_zero_not_stale() -> None:
    assert stats({}) == {
        "totalMessages": 0,
        "byStatus": {},
        "byProvider": {},
        "byType": {},
        "averageDeliveryTime": 0,
        "deliveryRate": 0,
        "failureRate": 0,
    }


def test_parsing_accepts_repeats_commas_and_any_case() -> None:
    flt = parse_filter(
        {
            "status": ["delivered,FAILED"],
            "providerId": ["a", "b"],
            "requestedAtFrom": ["2026-11-23T18:00:00+09:00"],
            "requestedAtTo": ["1795424400000"],
        }
    )
    assert flt.status == (S.DELIVERED, S.FAILED)
    assert flt.provider_id == ("a", "b")
    assert flt.requested_at_from == T0
    assert flt.requested_at_to == T0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": ["DONE"]}, "status: unknown value 'DONE'"),
        ({"type": ["WHATSAPP"]}, "type: unknown value 'WHATSAPP'"),
        ({"providerId": [""]}, "providerId: empty value"),
        ({"requestedAtFrom": ["soon"]}, "is not a time"),
        ({"requestedAtFrom": ["2026-11-23T09:00:00"]}, "has no timezone"),
        ({"requestedAtFrom": ["1", "2"]}, "give it once"),
        ({"colour": ["red"]}, "unknown parameter 'colour'"),
    ],
)
def test_bad_filters_say_what_is_wrong(params: dict[str, list[str]], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        parse_filter(params)


def test_list_options_and_group_by_and_period() -> None:
    options = parse_list_options(
        {"limit": ["5"], "offset": ["2"], "orderBy": ["statusUpdatedAt"], "orderDirection": ["ASC"]}
    )
    assert (options.limit, options.offset, options.order_by, options.order_direction) == (
        5,
        2,
        "statusUpdatedAt",
        "asc",
    )
    for bad, message in [
        ({"limit": ["-1"]}, "limit: must be between"),
        ({"limit": ["100001"]}, "limit: must be between"),
        ({"offset": ["x"]}, "offset: 'x' is not an integer"),
        ({"orderBy": ["createdAt"]}, "orderBy"),
        ({"orderDirection": ["up"]}, "orderDirection"),
    ]:
        with pytest.raises(QueryError, match=message):
            parse_list_options(bad)
    assert parse_group_by({"groupBy": ["status,providerId,status"]}) == ("status", "providerId")
    with pytest.raises(QueryError, match="groupBy: required"):
        parse_group_by({})
    with pytest.raises(QueryError, match="groupBy: 'to'"):
        parse_group_by({"groupBy": ["to"]})
    with pytest.raises(QueryError, match="from: must not be after to"):
        parse_period({"from": ["2026-12-02T00:00:00Z"], "to": ["2026-12-01T00:00:00Z"]})


@pytest.mark.parametrize(
    "text",
    ["99999999999999999999", "\u00b2", "9" * 5000, "9999-12-31T23:59:59-01:00", "-99999999999999"],
)
def test_out_of_range_times_are_a_400_not_a_crash(text: str) -> None:
    with pytest.raises(QueryError, match="is not a time"):
        parse_filter({"requestedAtFrom": [text]})


def test_repeated_values_count_once_and_offsets_are_bounded() -> None:
    assert parse_filter({"messageId": ["m1,m1", "m1"]}).message_id == ("m1",)
    assert RecordFilter.model_validate({"messageId": ["a", "a", "b"]}).message_id == ("a", "b")
    with pytest.raises(QueryError, match="offset: must be between"):
        parse_list_options({"offset": [str(2**64)]})


def test_times_compare_at_millisecond_precision() -> None:
    """Counters and indexes hold milliseconds: a bound, like a record's time, counts by its
    millisecond (truncated), so counts and lists always agree."""
    r = sent_record_factory(requested_at=T0 + timedelta(microseconds=429))
    at_ms = RecordFilter(requested_at_from=T0, requested_at_to=T0)
    assert matches(r, at_ms)
    inside = RecordFilter(requested_at_from=T0 + timedelta(microseconds=100))
    assert inside.requested_at_from == T0
    assert matches(r, inside)
    assert inside.requested_range_ms() == (1_795_424_400_000, FAR_FUTURE_MS)
    assert not matches(r, RecordFilter(requested_at_from=T0 + timedelta(milliseconds=1)))


@pytest.mark.parametrize("micros", [1, 429, 500, 999])
def test_a_bound_equal_to_a_records_own_time_matches_it(micros: int) -> None:
    """k-msg bounds are inclusive (kmsg-behaviour.md 4.4): a range from or to a record's own
    ``requestedAt``/``statusUpdatedAt`` includes it, sub-millisecond digits or not (the lower
    bound used to round up to the next millisecond and miss it)."""
    at = T0 + timedelta(seconds=7, microseconds=micros)
    r = sent_record_factory(requested_at=at, recorded_at=at)
    for flt in (
        RecordFilter(requested_at_from=at),
        RecordFilter(requested_at_to=at),
        RecordFilter(requested_at_from=at, requested_at_to=at),
        RecordFilter(status_updated_at_from=at),
        RecordFilter(status_updated_at_from=at, status_updated_at_to=at),
    ):
        assert matches(r, flt), flt
        assert not flt.is_empty_match()
    start, end = RecordFilter(requested_at_from=at, requested_at_to=at).requested_range_ms() or (
        0,
        0,
    )
    assert start <= epoch_ms(r.requested_at) < end
    # The same through the query parameters (ISO-8601 with microseconds) and /stats periods.
    text = at.isoformat()
    assert matches(r, parse_filter({"requestedAtFrom": [text], "requestedAtTo": [text]}))
    period = parse_period({"from": [text], "to": [text]})
    assert matches(r, RecordFilter(requested_at_from=period.start, requested_at_to=period.end))


def test_an_empty_from_matches_records_without_a_sender() -> None:
    """k-msg compares a missing ``from`` (toHash, fromHash) as "": ``from=`` is a value."""
    no_sender = sent_record_factory().model_copy(update={"from_": None})
    with_sender = sent_record_factory("msg-2")
    flt = parse_filter({"from": [""]})
    assert flt.from_ == ("",)
    assert matches(no_sender, flt) and not matches(with_sender, flt)
    both = parse_filter({"from": ["", "0212345678"]})
    assert both.from_ == ("", "0212345678")
    assert matches(no_sender, both) and matches(with_sender, both)
    assert parse_filter({"toHash": [""], "fromHash": [" "]}).to_hash == ("",)
    with pytest.raises(QueryError, match="to: empty value"):
        parse_filter({"to": [""]})  # every record has a recipient


def test_summary_of_the_analytics_case() -> None:
    """kmsg-behaviour.md 12 and k-msg's analytics test: solapi SMS DELIVERED, solapi SMS
    FAILED, iwinv ALIMTALK PENDING, solapi ALIMTALK DELIVERED -> total 4, rates 50, 25 and
    66.67; solapi 3 / iwinv 1; SMS 2 / ALIMTALK 2; every status zero-filled."""
    rows = {
        ("solapi", "SMS", "DELIVERED"): Counter(1),
        ("solapi", "SMS", "FAILED"): Counter(1),
        ("iwinv", "ALIMTALK", "PENDING"): Counter(1),
        ("solapi", "ALIMTALK", "DELIVERED"): Counter(1),
    }
    result = summary(rows, by_provider_id=True, by_type=True)
    zero = {status.value: 0 for status in TrackingStatus}
    assert result["total"] == 4
    assert result["byStatus"] == {**zero, "DELIVERED": 2, "FAILED": 1, "PENDING": 1}
    rates = result["rates"]
    assert (rates["deliveredOfTotalPct"], rates["failedOfTotalPct"]) == (50, 25)
    assert rates["deliveredOfFinalizedPct"] == pytest.approx(200 / 3)
    assert {k: v["total"] for k, v in result["byProviderId"].items()} == {"iwinv": 1, "solapi": 3}
    assert {k: v["total"] for k, v in result["byType"].items()} == {"ALIMTALK": 2, "SMS": 2}
    solapi = result["byProviderId"]["solapi"]
    assert solapi["byStatus"] == {**zero, "DELIVERED": 2, "FAILED": 1}
    assert solapi["rates"]["deliveredOfFinalizedPct"] == pytest.approx(200 / 3)
    assert result["byProviderId"]["iwinv"]["rates"] == {
        "deliveredOfTotalPct": 0,
        "failedOfTotalPct": 0,
        "deliveredOfFinalizedPct": 0,
    }
    assert "byProviderId" not in summary(rows) and "byType" not in summary(rows)


def test_summary_counts_every_status_and_clicked_as_delivered() -> None:
    result = summary(
        {
            ("p", "SMS", "CLICKED"): Counter(1),
            ("p", "SMS", "QUEUED"): Counter(2),
            ("p", "SMS", "FAILED"): Counter(1),
        }
    )
    assert result["total"] == sum(result["byStatus"].values()) == 4
    assert result["rates"]["deliveredOfTotalPct"] == 25
    assert result["rates"]["deliveredOfFinalizedPct"] == 50
    assert summary({})["rates"] == {
        "deliveredOfTotalPct": 0,
        "failedOfTotalPct": 0,
        "deliveredOfFinalizedPct": 0,
    }


def test_summary_parameters() -> None:
    query = parse_summary(
        {
            "from": ["2026-11-23T09:00:00Z"],
            "to": ["1795424400000"],
            "providerId": ["solapi,iwinv"],
            "type": ["sms"],
            "includeByProviderId": ["true"],
        }
    )
    assert query.filter.requested_at_from == query.filter.requested_at_to == T0
    assert query.filter.provider_id == ("solapi", "iwinv")
    assert query.filter.type == (MessageType.SMS,)
    assert (query.by_provider_id, query.by_type) == (True, False)
    assert query.filter.dims_only()  # answered from the aggregates
    period = {"from": ["2026-11-23T09:00:00Z"], "to": ["2026-11-24T09:00:00Z"]}
    for params, message in [
        ({"to": ["2026-11-23T09:00:00Z"]}, "from: required"),
        ({"from": ["2026-11-23T09:00:00Z"]}, "to: required"),
        ({"from": ["2026-11-24T00:00:00Z"], "to": ["2026-11-23T00:00:00Z"]}, "must not be after"),
        ({**period, "status": ["SENT"]}, r"unknown parameter\(s\) \['status'\]"),
        ({**period, "includeByType": ["maybe"]}, "includeByType: 'maybe'"),
        ({**period, "type": ["FAXX"]}, "type: unknown value"),
        ({"from": ["soon"], "to": ["2026-11-23T00:00:00Z"]}, "from: 'soon' is not a time"),
    ]:
        with pytest.raises(QueryError, match=message):
            parse_summary(params)
