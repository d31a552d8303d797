"""What the hot path accepts, derived from the pydantic models when it is imported.

The pydantic models stay the one definition of the contract. This module reads their fields
(aliases, order, required or default, types, length and range constraints, validators,
config) and builds plain-Python checkers from them. A checker never refuses anything on its
own: it either returns the value in its canonical JSON form (what ``orjson.loads(encode(m))``
gives for the validated model ``m``), or :data:`BAD`, meaning "not sure". The caller then
takes the pydantic path for that input, which accepts it or refuses it with its own reason.

So the rule every checker keeps is one-sided: **whatever it accepts, pydantic accepts with the
same values**. It may defer more than pydantic refuses (it accepts only JSON's own types: no
``"5"`` for an int, no ``1.0`` for an int, no number for a time, times only as
``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+00:00)``), which costs speed on odd inputs, never
correctness. What a checker does not know how to check (a model with its own validators, a
discriminated union, a type not listed below) makes :func:`compile_model` raise
:class:`Unsupported`, or, for a container of it, accepts only the empty container.
"""

from __future__ import annotations

import hashlib
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Annotated, Any, Final, Literal, Union, cast, get_args, get_origin

import annotated_types
from pydantic import AwareDatetime, BaseModel, JsonValue, Strict, TypeAdapter
from pydantic.functional_validators import AfterValidator

from deliverytrack.models import common
from deliverytrack.models.common import MAX_JSON_DEPTH


class _Bad:
    __slots__ = ()

    def __repr__(self) -> str:
        return "BAD"


BAD: Final[Any] = _Bad()
"""A checker's answer for "not sure": take the pydantic path for this input."""

Check = Callable[[Any], Any]
"""A value checker: the canonical JSON value, or :data:`BAD`."""


class Unsupported(TypeError):
    """A model (or field) the hot path cannot check by hand: it always takes the pydantic path."""


# --- times ---------------------------------------------------------------------------------------

_UTC_TEXT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|\+00:00)"
)
_EARLIEST = 1970  # models.common._to_utc: not before the epoch ...
_LATEST = common.LATEST.year  # ... and before LATEST (the start of a year, checked below)
assert common.LATEST == datetime(_LATEST, 1, 1, tzinfo=UTC)  # noqa: S101 - import-time fact
_fromisoformat = datetime.fromisoformat


def utc_text(value: Any) -> Any:
    """A ``UtcDatetime`` as the models write it (``2026-11-23T09:00:00Z``, microseconds only
    when not zero, always six digits), from the subset of ISO-8601 texts accepted here:
    ``YYYY-MM-DDTHH:MM:SS[.f{1,6}]`` then ``Z`` or ``+00:00``; else :data:`BAD` (other offsets
    are left to pydantic, which converts them)."""
    if type(value) is not str:
        return BAD
    size = len(value)
    # The canonical shapes (the common case), their separators read in one stride:
    # 2026-11-23T09:00:00Z and 2026-11-23T09:00:00.123456Z are their own canonical form.
    if (
        (size == 20 and value[4:20:3] == "--T::Z")
        or (
            size == 27
            and value[4:20:3] == "--T::."
            and value[26] == "Z"
            and value[20:26].isdigit()
            and value[20:26] != "000000"
        )
    ) and value.isascii():
        try:
            moment = _fromisoformat(value)
        except ValueError:  # a non-digit, hour 24, second 60, 30 February, ...
            return BAD
        return value if _EARLIEST <= moment.year < _LATEST else BAD
    if _UTC_TEXT.fullmatch(value) is None:
        return BAD
    try:
        moment = _fromisoformat(value)
    except ValueError:
        return BAD
    return text_of(moment) if _EARLIEST <= moment.year < _LATEST else BAD


def parse_utc(text: str) -> datetime:
    """The moment of a canonical time text (the hot path's records and events hold texts)."""
    return _fromisoformat(text)


def text_of(moment: datetime) -> str:
    """A UTC moment as the models serialise it (``models.common.utc_text`` for UTC input)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- value checkers -----------------------------------------------------------------------------

_EXACT_FLOAT = float(2**63)
"""orjson reads a JSON integer outside the 64-bit range as a float, pydantic as an int: a float
this large may be such an integer, so it is left to pydantic."""


_TEXT_AND_INTEGERS = frozenset({str, int, bool, type(None)})


def _json_object_check(max_depth: int) -> Check:
    """``models.common.checked_json``: finite numbers (orjson reads no others), nested at most
    ``max_depth`` levels, plus the float caveat above."""

    def check(value: Any) -> Any:
        if type(value) is not dict:
            return BAD
        for element in value.values():
            if type(element) not in _TEXT_AND_INTEGERS:
                break
        else:
            return value  # flat, no floats: the common case
        pending: list[tuple[Any, int]] = [(value, 1)]
        while pending:
            item, depth = pending.pop()
            if depth > max_depth:
                return BAD
            for element in item.values() if type(item) is dict else item:
                kind = type(element)
                if kind is float:
                    if not -_EXACT_FLOAT < element < _EXACT_FLOAT:
                        return BAD
                elif kind is dict or kind is list:
                    pending.append((element, depth + 1))
        return value

    return check


def _str_dict_check(value: Any) -> Any:
    if type(value) is not dict:
        return BAD
    for item in value.values():
        if type(item) is not str:
            return BAD
    return value


def _list_check(element: Kind) -> Check:
    if element.test == "type(v) is not str":

        def texts(value: Any) -> Any:
            if type(value) is not list:
                return BAD
            for item in value:
                if type(item) is not str:
                    return BAD
            return value

        return texts
    check = element.check

    def items(value: Any) -> Any:
        if type(value) is not list:
            return BAD
        out: list[Any] | None = None
        for i, item in enumerate(value):
            if item is None:
                return BAD
            checked = check(item)
            if checked is BAD:
                return BAD
            if checked is not item:
                if out is None:
                    out = list(value)
                out[i] = checked
        return value if out is None else out

    return items


def _list_verify(element: Kind) -> Check:
    if element.test == "type(v) is not str":
        return _list_check(element)
    verify = element.verify or element.check

    def items(value: Any) -> Any:
        if type(value) is not list:
            return BAD
        for item in value:
            if item is None or verify(item) is not item:
                return BAD
        return value

    return items


def _only_empty(value: Any) -> Any:
    """A container of something this module cannot check: only the empty one is known."""
    return value if type(value) is list and not value else BAD


def _never(value: Any) -> Any:
    return BAD


@dataclass(frozen=True, slots=True)
class Kind:
    """How to check one value: ``test`` is a Python expression over ``v`` that is true when
    ``v`` is not acceptable as it is (then the value needs no conversion), inlined into the
    generated model checkers; without it, ``check`` is called and may convert."""

    check: Check
    test: str | None = None
    constants: tuple[tuple[str, Any], ...] = ()
    verify: Check | None = None
    """For a value that must be canonical already: the value itself or :data:`BAD` (without
    it, ``check`` does, as it gives back a canonical value itself)."""


def _inline(test: str, **constants: Any) -> Kind:
    namespace = {"BAD": BAD, **constants}
    code = compile(f"lambda v: BAD if ({test}) else v", "<hot check>", "eval")
    check: Check = eval(code, namespace)  # noqa: S307 - built from the model's own constraints
    return Kind(check, test, tuple(constants.items()))


def _str_kind(min_length: int, max_length: int | None) -> Kind:
    test = "type(v) is not str"
    if max_length is not None:
        test += f" or not {min_length} <= len(v) <= {max_length}"
    elif min_length:
        test += f" or len(v) < {min_length}"
    return _inline(test)


def _int_kind(low: int | None, high: int | None) -> Kind:
    test = "type(v) is not int"
    if low is not None:
        test += f" or v < {low}"
    if high is not None:
        test += f" or v > {high}"
    return _inline(test)


def _choice_kind(values: Iterable[str]) -> Kind:
    return _inline("type(v) is not str or v not in CHOICES", CHOICES=frozenset(values))


# --- models -------------------------------------------------------------------------------------

_MISSING: Any = object()
_KNOWN_CONFIG: dict[str, Any] = {
    "frozen": True,
    "populate_by_name": True,
    "use_enum_values": False,
    "ser_json_timedelta": "float",
}
_ALLOWED_CONFIG = {*_KNOWN_CONFIG, "extra", "alias_generator", "title"}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    alias: str
    kind: Kind
    required: bool
    optional: bool  # null is a valid value (read as "absent": the models omit nulls)
    default: Any  # canonical JSON of the default, _MISSING when required or None


class ModelSpec:
    """The checkers of one model: ``read`` and ``canonical``, generated from its fields.

    ``read(payload)``: an input payload checked in place (values made canonical, defaults
    filled in, unknown keys left: a tolerant model ignores them and the fold never reads them);
    the payload or :data:`BAD`.

    ``canonical(payload)``: a new dict, the canonical JSON form of the model ``payload``
    validates to (field order, nulls omitted, defaults present, unknown keys dropped); or
    :data:`BAD`.

    ``verify(payload)``: the payload itself if it is that canonical form already (what our own
    state holds), else :data:`BAD`; builds nothing."""

    __slots__ = ("model", "fields", "order", "read", "canonical", "verify", "source")

    def __init__(
        self,
        model: type[BaseModel],
        fields: tuple[FieldSpec, ...],
        forbid: bool,
        name_keys: frozenset[str],
        after: Callable[[dict[str, Any]], bool] | None,
    ) -> None:
        self.model = model
        self.fields = fields
        self.order = tuple(f.alias for f in fields)
        self.source = _generate(fields, forbid, bool(name_keys), after is not None)
        namespace: dict[str, Any] = {
            "BAD": BAD,
            "MISSING": _MISSING,
            "NAME_KEYS": name_keys,
            "ALIASES": frozenset(self.order),
            "RANK": {alias: rank for rank, alias in enumerate(self.order)}.__getitem__,
            "AFTER": after,
            "fresh": _fresh,
        }
        for i, spec in enumerate(fields):
            namespace[f"K{i}"] = spec.kind.check
            namespace[f"V{i}"] = spec.kind.verify or spec.kind.check
            namespace[f"D{i}"] = spec.default
            for name, value in spec.kind.constants:
                namespace[f"{name}{i}"] = value
        code = compile(self.source, f"<hot checkers of {model.__name__}>", "exec")
        exec(code, namespace)  # noqa: S102 - generated from the model's own fields
        self.read: Callable[[Any], Any] = namespace["read"]
        self.canonical: Callable[[Any], Any] = namespace["canonical"]
        self.verify: Callable[[Any], Any] = namespace["verify"]


def _generate(fields: tuple[FieldSpec, ...], forbid: bool, names: bool, after: bool) -> str:
    """Straight-line Python for ``read`` and ``canonical`` (a loop over field specs costs
    several times more per field)."""
    head = ["    if type(p) is not dict:", "        return BAD"]
    if names:  # populate_by_name: "message_id" counts too; pydantic decides which wins
        head += ["    if not NAME_KEYS.isdisjoint(p):", "        return BAD"]
    if forbid:
        head += ["    if not ALIASES.issuperset(p):", "        return BAD"]
    read = ["def read(p):", *head]
    canonical = ["def canonical(p):", *head, "    o = {}"]
    for i, spec in enumerate(fields):
        read += _field_code(i, spec, "p")
        canonical += _field_code(i, spec, "o")
    if after:
        read += ["    if not AFTER(p):", "        return BAD"]
        canonical += ["    if not AFTER(o):", "        return BAD"]
    read.append("    return p")
    canonical.append("    return o")
    verify = [
        "def verify(p):",
        "    if type(p) is not dict:",
        "        return BAD",
        "    try:",
        "        ranks = list(map(RANK, p))",  # unknown keys (snake_case ones too) fail here
        "    except KeyError:",
        "        return BAD",
        "    if ranks != sorted(ranks) or None in p.values():",
        "        return BAD",
    ]
    for i, spec in enumerate(fields):
        verify += _verify_code(i, spec)
    if after:
        verify += ["    if not AFTER(p):", "        return BAD"]
    verify.append("    return p")
    return "\n".join([*read, "", "", *canonical, "", "", *verify, ""])


def _verify_code(i: int, spec: FieldSpec) -> list[str]:
    """The checks of one field of a payload that must be canonical: no conversion allowed, and
    a field with a default is present (the models write defaults)."""
    alias = repr(spec.alias)
    test = spec.kind.test
    if test is not None:
        for name, _ in spec.kind.constants:
            test = re.sub(rf"\b{name}\b", f"{name}{i}", test)
        bad = f"({test})"
    else:
        bad = f"V{i}(v) is not v"
    if spec.required or spec.default is not _MISSING:
        lines = [f"v = p.get({alias})", f"if v is None or {bad}:", "    return BAD"]
    else:
        lines = [f"v = p.get({alias})", f"if v is not None and {bad}:", "    return BAD"]
    return [f"    {line}" for line in lines]


def _field_code(i: int, spec: FieldSpec, out: str) -> list[str]:
    """The checks of one field. ``out`` is ``p`` (fix the payload in place) or ``o`` (build the
    canonical dict in field order)."""
    alias = repr(spec.alias)
    test = spec.kind.test
    if test is not None:
        for name, _ in spec.kind.constants:  # each field's constants get its number
            test = re.sub(rf"\b{name}\b", f"{name}{i}", test)
        bad = f"({test})"
        keep = [] if out == "p" else [f"{out}[{alias}] = v"]
    else:
        bad = f"(t := K{i}(v)) is BAD"
        keep = ["if t is not v:", f"    p[{alias}] = t"] if out == "p" else [f"o[{alias}] = t"]
    if spec.default is _MISSING:
        default: list[str] = []
    elif type(spec.default) in (list, dict):
        default = [f"{out}[{alias}] = fresh(D{i})"]
    else:
        default = [f"{out}[{alias}] = D{i}"]
    lines: list[str]
    if spec.required and not spec.optional:
        lines = [f"v = p.get({alias})", f"if v is None or {bad}:", "    return BAD", *keep]
    elif spec.required:
        lines = [f"if {alias} not in p:", "    return BAD", f"v = p[{alias}]"]
        lines += ["if v is not None:", f"    if {bad}:", "        return BAD"]
        lines += [f"    {line}" for line in keep]
    elif not default and spec.optional:
        lines = [f"v = p.get({alias})", "if v is not None:", f"    if {bad}:", "        return BAD"]
        lines += [f"    {line}" for line in keep]
    elif not default:
        lines = [f"v = p.get({alias}, MISSING)", "if v is None:", "    return BAD"]
        lines += ["if v is not MISSING:", f"    if {bad}:", "        return BAD"]
        lines += [f"    {line}" for line in keep]
    else:
        null = "pass" if spec.optional else "return BAD"
        lines = [f"v = p.get({alias}, MISSING)", "if v is MISSING:", f"    {default[0]}"]
        lines += ["elif v is None:", f"    {null}", f"elif {bad}:", "    return BAD"]
        if keep:
            lines += ["else:", *(f"    {line}" for line in keep)]
    return [f"    {line}" for line in lines]


def _fresh(default: Any) -> Any:
    return [] if default == [] else dict(default) if type(default) is dict else default


_SPECS: dict[type[BaseModel], ModelSpec] = {}


def compile_model(
    model: type[BaseModel],
    validators: Mapping[str, Callable[[dict[str, Any]], bool]] | None = None,
) -> ModelSpec:
    """The checkers of ``model``. ``validators`` names the model's own pydantic validators
    (``@field_validator``/``@model_validator`` methods) and gives for each a check of the
    (canonical) payload that accepts only what the validator accepts. A model with a
    validator not given here, a serializer, or config this module does not know raises
    :class:`Unsupported`."""
    if validators is None and model in _SPECS:
        return _SPECS[model]
    given = dict(validators or {})
    _check_supported(model, given)
    config = model.model_config
    specs: list[FieldSpec] = []
    name_keys: set[str] = set()
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if info.validation_alias not in (None, alias) or info.serialization_alias not in (
            None,
            alias,
        ):
            raise Unsupported(f"{model.__name__}.{name}: separate validation/serialization alias")
        if info.exclude or info.discriminator is not None or info.default_factory is not None:
            raise Unsupported(f"{model.__name__}.{name}: exclude, discriminator or factory")
        if not alias.isidentifier():
            raise Unsupported(f"{model.__name__}.{name}: alias {alias!r}")
        if alias != name and config.get("populate_by_name"):
            name_keys.add(name)
        optional, kind = _field_kind(info.annotation, list(info.metadata))
        required = info.is_required()
        default = _MISSING
        if not required and info.default is not None:
            adapter: TypeAdapter[Any] = TypeAdapter(cast(Any, info.annotation))
            default = adapter.dump_python(info.default, mode="json")
        specs.append(FieldSpec(name, alias, kind, required, optional, default))
    after = None
    if len(given) == 1:
        (after,) = given.values()
    elif given:
        first, *rest = given.values()

        def after(payload: dict[str, Any]) -> bool:
            if not first(payload):
                return False
            for check in rest:
                if not check(payload):
                    return False
            return True

    spec = ModelSpec(model, tuple(specs), config["extra"] == "forbid", frozenset(name_keys), after)
    if validators is None:
        _SPECS[model] = spec
    return spec


def _check_supported(model: type[BaseModel], given: Mapping[str, Any]) -> None:
    """Raise :class:`Unsupported` for config, validators or serializers not accounted for."""
    config = model.model_config
    unknown = set(config) - _ALLOWED_CONFIG
    if unknown or any(config.get(k, v) != v for k, v in _KNOWN_CONFIG.items()):
        raise Unsupported(f"{model.__name__}: model config {sorted(unknown) or config}")
    if config.get("extra") not in ("forbid", "ignore"):
        raise Unsupported(f"{model.__name__}: extra={config.get('extra')!r}")
    decorators = model.__pydantic_decorators__
    own = {**decorators.field_validators, **decorators.model_validators}
    others = (
        decorators.validators,
        decorators.root_validators,
        decorators.field_serializers,
        decorators.model_serializers,
        decorators.computed_fields,
    )
    if set(own) != set(given) or any(others):
        raise Unsupported(
            f"{model.__name__}: validators {sorted(own)} (checked by hand: {sorted(given)}), "
            f"serializers or computed fields {[list(o) for o in others if o]}"
        )


def _field_kind(annotation: Any, metadata: list[Any]) -> tuple[bool, Kind]:
    """(null allowed, how to check a value) of one field."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1 or len(get_args(annotation)) != 2:
            raise Unsupported(f"union {annotation!r}")
        return True, _kind(args[0], metadata)
    return False, _kind(annotation, metadata)


def _kind(annotation: Any, metadata: list[Any]) -> Kind:
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        return _kind(base, [*extra, *metadata])
    min_length, max_length, low, high, after = _constraints(metadata)
    lengths = (min_length, max_length) != (0, None)
    bounds = (low, high) != (None, None)
    if after:
        if lengths or bounds:
            raise Unsupported(f"constraints on {annotation!r}")
        return _validated_kind(annotation, after)
    if lengths and annotation is not str:
        raise Unsupported(f"length constraint on {annotation!r}")
    if bounds and annotation is not int:
        raise Unsupported(f"range constraint on {annotation!r}")
    if annotation is str:
        return _str_kind(min_length, max_length)
    if annotation is int:
        return _int_kind(low, high)
    if annotation is bool:
        return _inline("type(v) is not bool")
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return _choice_kind(member.value for member in annotation)
    if get_origin(annotation) is Literal:
        values = get_args(annotation)
        if not all(type(v) is str for v in values):
            raise Unsupported(f"non-text literal {annotation!r}")
        return _choice_kind(values)
    if get_origin(annotation) is dict and get_args(annotation) == (str, str):
        return Kind(_str_dict_check)
    if get_origin(annotation) is tuple:
        args = get_args(annotation)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise Unsupported(f"tuple {annotation!r}")
        try:
            element = _kind(args[0], [])
        except Unsupported:
            return Kind(_only_empty)
        return Kind(_list_check(element), verify=_list_verify(element))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        try:
            nested = compile_model(annotation)
        except Unsupported:
            return Kind(_never)
        return Kind(nested.canonical, verify=nested.verify)
    raise Unsupported(f"type {annotation!r}")


def _constraints(
    metadata: list[Any],
) -> tuple[int, int | None, int | None, int | None, list[Callable[..., Any]]]:
    """(min length, max length, lowest, highest, after-validators) of a field's metadata."""
    min_length, max_length = 0, None
    low: int | None = None
    high: int | None = None
    after: list[Callable[..., Any]] = []
    for item in metadata:
        if isinstance(item, annotated_types.MinLen):
            min_length = item.min_length
        elif isinstance(item, annotated_types.MaxLen):
            max_length = item.max_length
        elif isinstance(item, annotated_types.Ge) and type(item.ge) is int:
            low = item.ge
        elif isinstance(item, annotated_types.Le) and type(item.le) is int:
            high = item.le
        elif isinstance(item, Strict) and item.strict:
            pass  # the hot checkers are stricter than strict already
        elif isinstance(item, AfterValidator):
            after.append(item.func)
        else:
            raise Unsupported(f"constraint {item!r}")
    return min_length, max_length, low, high, after


_TO_UTC = get_args(common.UtcDatetime)[1].func
"""The validator of ``UtcDatetime`` (and of nothing else)."""
_FINITE_NUMBERS = get_args(common.JsonObject)[1].func
"""The validator of ``JsonObject``: finite numbers, at most ``MAX_JSON_DEPTH`` levels."""
check_json_object: Check = _json_object_check(MAX_JSON_DEPTH)
"""The hot checker of a ``JsonObject``."""


def _validated_kind(annotation: Any, after: list[Callable[..., Any]]) -> Kind:
    """The two after-validated types of the models: ``UtcDatetime`` and ``JsonObject``."""
    if annotation is AwareDatetime and after == [_TO_UTC]:
        return Kind(utc_text)
    if get_origin(annotation) is dict and get_args(annotation) == (str, JsonValue):
        if after == [_FINITE_NUMBERS]:
            return Kind(check_json_object)
    raise Unsupported(f"{annotation!r} validated by {[f.__qualname__ for f in after]}")


# --- the contract the hot path was written against ---------------------------------------------


def describe(model: type[BaseModel]) -> str:
    """A stable description of what a model accepts and writes: config, validators, and per
    field its alias, type (enums with their values), constraints and default; not its
    documentation, and spelt the same on every Python version (no ``repr`` of typing forms)."""
    config = {k: getattr(v, "__qualname__", v) for k, v in sorted(model.model_config.items())}
    decorators = model.__pydantic_decorators__
    lines = [
        f"{model.__module__}.{model.__qualname__} {config}",
        "validators " + repr(sorted([*decorators.field_validators, *decorators.model_validators])),
    ]
    for name, info in model.model_fields.items():
        metadata = ", ".join(_metadata_text(m) for m in info.metadata)
        default = "required" if info.is_required() else _value_text(info.default)
        lines.append(f"{name} {info.alias} {_type_text(info.annotation)} [{metadata}] {default}")
    return "\n".join(lines)


def _type_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        base, *extra = args
        return f"Annotated[{_type_text(base)}, {', '.join(_metadata_text(m) for m in extra)}]"
    if origin in (Union, types.UnionType):
        return "Union[" + ", ".join(sorted(_type_text(a) for a in args)) + "]"
    if origin is Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_text(a) for a in args)
        return f"{getattr(origin, '__qualname__', origin)}[{inner}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return f"{annotation.__qualname__}{[member.value for member in annotation]}"
    if isinstance(annotation, type):
        return f"{annotation.__module__}.{annotation.__qualname__}"
    return str(getattr(annotation, "__name__", annotation))  # JsonValue (a type alias)


def _metadata_text(item: Any) -> str:
    func = getattr(item, "func", None)
    if func is not None:
        return f"{type(item).__name__}({func.__module__}.{func.__qualname__})"
    return repr(item)  # annotated_types and pydantic constraints: dataclass reprs


def _value_text(value: Any) -> str:
    if isinstance(value, Enum):
        return repr(value.value)
    return repr(value)


def digest(models: Iterable[type[BaseModel]]) -> str:
    text = "\n\n".join(describe(model) for model in models)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
