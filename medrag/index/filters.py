"""Metadata filters applied at search time, from Python (a dict) or from the CLI (a short text syntax).

A filter (``Where``) is a mapping of metadata key -> condition; every key must match:

    {"source": "ch06.pdf"}                      equality
    {"modality": ["CT", "MR"]}                  membership (any of)
    {"page": {"gte": 10, "lte": 20}}            range, either bound optional (inclusive)
    {"date": {"gte": "2020-01-01"}}             ISO dates compare as strings, so ranges work on them

The same filter as text (``--where`` in the CLI, ``parse_where`` in Python); conditions are
separated by ``;`` or given as repeated ``--where`` options::

    source=ch06.pdf; modality=CT|MR; page=10..20; date>=2020-01-01

``key=a|b`` is membership, ``key=a..b`` an inclusive range (either end may be left open:
``page=10..``), ``key>=v`` / ``key<=v`` one-sided ranges. Values that read as integers or
decimals become numbers; quote them to keep them strings (``report_id="00123"``).
``book`` is an alias of ``source`` (the file a passage comes from).

These are the only operators, on purpose: external stores (Milvus, pgvector) translate the
same dict into their own filter expressions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from medrag.errors import InputError

Where = Mapping[str, Any]
RANGE_OPS = ("gte", "lte")
# Friendlier names users type for fields the index stores under another key.
FIELD_ALIASES = {"book": "source"}

_KEY = r"[A-Za-z_][A-Za-z0-9_.-]*"
_CONDITION = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>>=|<=|=)\s*(?P<value>.*?)\s*$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def check_where(where: Where | None) -> dict[str, Any]:
    """``where`` validated (unknown shapes are InputError) with aliases resolved; {} when empty."""
    if not where:
        return {}
    if not isinstance(where, Mapping):
        raise InputError(f"where must be a mapping of metadata key to condition, got {type(where).__name__}")
    out: dict[str, Any] = {}
    for key, cond in where.items():
        if not isinstance(key, str) or not key:
            raise InputError(f"filter keys must be non-empty strings, got {key!r}")
        if isinstance(cond, Mapping):
            unknown = set(cond) - set(RANGE_OPS)
            if unknown or not cond:
                raise InputError(f"range filter on {key!r} takes 'gte' and/or 'lte', got {sorted(map(str, cond))}")
        elif not isinstance(cond, (list, tuple, set, frozenset, str, int, float, bool)) and cond is not None:
            raise InputError(f"filter value for {key!r} must be a scalar, a list or a range, got {type(cond).__name__}")
        out[FIELD_ALIASES.get(key, key)] = cond
    return out


def matches(metadata: Mapping[str, Any], where: Where | None) -> bool:
    """True when ``metadata`` satisfies every condition of ``where`` (a missing key never matches a range)."""
    if not where:
        return True
    for key, cond in where.items():
        value = metadata.get(key)
        if isinstance(cond, Mapping):
            if value is None:
                return False
            try:
                if "gte" in cond and not value >= cond["gte"]:
                    return False
                if "lte" in cond and not value <= cond["lte"]:
                    return False
            except TypeError:  # a string page vs a numeric bound: not a match, not a crash
                return False
        elif isinstance(cond, (list, tuple, set, frozenset)):
            if value not in cond:
                return False
        elif value != cond:
            return False
    return True


def _value(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if _NUMBER.match(text):
        return float(text) if "." in text else int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_where(conditions: str | Sequence[str] | None) -> dict[str, Any]:
    """The text filter syntax (see the module docstring) as a Where dict; {} for nothing."""
    if conditions is None:
        return {}
    if isinstance(conditions, str):
        conditions = [conditions]
    where: dict[str, Any] = {}
    for text in conditions:
        stripped = text.strip()
        if stripped.startswith("{"):  # a JSON object is accepted as is
            try:
                where.update(json.loads(stripped))
            except ValueError as exc:
                raise InputError(f"filter {text!r} is not valid JSON: {exc}") from exc
            continue
        for part in filter(None, (p.strip() for p in text.split(";"))):
            found = _CONDITION.match(part)
            if not found or not found["value"]:
                raise InputError(
                    f"cannot read the filter {part!r}; write key=value, key=a|b, key=lo..hi, key>=v or key<=v "
                    "(several joined by ';'), e.g. \"source=ch06.pdf; page=10..20\""
                )
            key, op, raw = found["key"], found["op"], found["value"]
            if op == ">=":
                cond: Any = {"gte": _value(raw)}
            elif op == "<=":
                cond = {"lte": _value(raw)}
            elif ".." in raw and raw[0] not in "\"'":
                low, high = raw.split("..", 1)
                cond = {**({"gte": _value(low)} if low.strip() else {}), **({"lte": _value(high)} if high.strip() else {})}
                if not cond:
                    raise InputError(f"the range in {part!r} has no bounds; write e.g. page=10..20")
            elif "|" in raw and raw[0] not in "\"'":
                cond = [_value(v) for v in raw.split("|") if v.strip()]
            else:
                cond = _value(raw)
            previous = where.get(key)
            if isinstance(previous, Mapping) and isinstance(cond, Mapping):  # page>=10; page<=20
                cond = {**previous, **cond}
            where[key] = cond
    return check_where(where)
