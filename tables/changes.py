"""What a transition changed in a record: a slim status change's ``changes``
(``DELIVERYTRACK_STATUS_CHANGE_RECORD=changes``).

One function for both fold paths: ``tables.fold`` gives it the records as pydantic dumps them
(JSON mode, by alias, nulls left out), ``tables.hot`` its records' canonical JSON dicts; both
are the values of the record's JSON, so both paths find the same changes and write the same
bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from deliverytrack.models.records import CHANGES_CARRIED, CHANGES_LEFT_OUT, RECORD_FIELDS

_RANK: Final = {name: rank for rank, name in enumerate(RECORD_FIELDS)}
_CARRIED: Final = frozenset(CHANGES_CARRIED)


def record_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level fields of ``after`` whose value differs from ``before`` (all of them for
    a new record), a field ``before`` had and ``after`` has not as None, plus ``providerId``,
    ``type`` and a non-empty ``webhooks`` whether they changed or not; never ``statusHistory``
    or ``processedEventIds``. In the record's field order, the removed fields last. Values are
    compared as JSON values (1, 1.0 and true differ; an object's key order does not matter)."""
    changes: dict[str, Any] = {}
    if before is None:
        for key, value in after.items():
            if key not in CHANGES_LEFT_OUT:
                changes[key] = value
        return changes
    get = before.get
    added = 0
    # Runs per status change on the hot path: most values are the very objects of ``before``
    # (the hot fold copies the record's dict), so the first test settles them.
    for key, value in after.items():
        old = get(key, _ABSENT)
        if old is not value:
            kind = type(value)
            if type(old) is not kind:
                if key not in CHANGES_LEFT_OUT:
                    added += old is _ABSENT
                    changes[key] = value
                continue
            if key in CHANGES_LEFT_OUT:
                continue
            if kind is dict or kind is list:
                if not _same(old, value):
                    changes[key] = value
                    continue
            elif old != value:  # a string, number or boolean: == is JSON's equality here
                changes[key] = value
                continue
        if key in _CARRIED and (value or key != "webhooks"):
            changes[key] = value
    if len(before) + added != len(after):  # some removed: last, in the record's order
        gone = before.keys() - after.keys()
        for key in sorted(gone, key=_RANK.__getitem__) if len(gone) > 1 else gone:
            if key not in CHANGES_LEFT_OUT:
                changes[key] = None
    return changes


_ABSENT: Any = object()


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: the same type (``1 == True`` in Python, not in JSON), objects with
    the same members, arrays with the same items in order."""
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:
        return len(a) == len(b) and all(key in b and _same(v, b[key]) for key, v in a.items())
    if kind is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
