"""The QBO SQL subset the emulator understands, parsed and evaluated.

    SELECT * | COUNT(*) | field[, field ...] | *, field[, ...] FROM Entity [WHERE cond AND cond ...]
        [ORDERBY field [ASC|DESC][, ...]] [STARTPOSITION n] [MAXRESULTS n]

Keywords and field names are case-insensitive (`Metadata.LastUpdatedTime` works), `ORDER BY`
is accepted too. A condition is `field op literal` (op: = != < <= > >=), `field IN (lit, ...)`
or `field LIKE '%text%'`; literals are 'strings' (with '' or \\' escapes), true/false, numbers.
No OR, like QBO. A field list (`SELECT Id, MetaData.LastUpdatedTime FROM ...`) returns objects
holding just those fields (`project`), as QBO does. Bad input raises `QueryError` with Intuit's wording; a MAXRESULTS over 1000
raises `QueryError("QueryValidationError: value N is too large. Max allowed value is 1000")`.

Records are anything with the attributes `id` (int), `json` (bytes), `created`, `updated`
(epoch seconds), `active`, `doc`, `name`; other fields are read from the JSON text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from services.core.limits import DEFAULT_MAX_RESULTS, MAX_RESULTS
from services.emulator.jsontext import dumps, loads, parse_ts

__all__ = ["Query", "QueryError", "parse_query", "filter_records", "project", "MAX_RESULTS", "DEFAULT_MAX_RESULTS"]


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<str>'(?:[^'\\]|\\.|'')*')
     |(?P<num>-?\d+(?:\.\d+)?)
     |(?P<op><=|>=|!=|<>|=|<|>)
     |(?P<punct>[(),*])
     |(?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""", re.VERBOSE)
_TIME_FIELDS = {"metadata.lastupdatedtime": "updated", "metadata.createtime": "created"}


class QueryError(Exception):
    """A query QBO would reject with a 400 ValidationFault (code 4000)."""


@dataclass(frozen=True)
class Cond:
    field: str  # lower-case dotted path
    op: str  # = != < <= > >= in like
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Query:
    entity: str  # as written; the caller maps it to a known entity
    count: bool
    conds: tuple[Cond, ...]
    order: tuple[tuple[str, bool], ...]  # (lower-case field, descending)
    start: int
    max_results: int
    fields: tuple[str, ...] | None = None  # a SELECT field list (as written); None for `*`

    @property
    def has_active_condition(self) -> bool:
        return any(c.field == "active" for c in self.conds)

    def listing_key(self) -> tuple[Any, ...]:
        """What the result list depends on (everything but paging)."""
        return (self.conds, self.order)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip().rstrip(";")
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError(f"QueryParserError: Encountered \"{text[pos:].strip()[:20]}\" at column {pos + 1}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _literal(kind: str, raw: str) -> Any:
    if kind == "str":
        body = raw[1:-1]
        return body.replace("''", "'").replace("\\'", "'").replace("\\\\", "\\")
    if kind == "num":
        return Decimal(raw)
    if kind == "word" and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise QueryError(f"QueryParserError: Encountered \"{raw}\": expected a value")


def parse_query(text: str) -> Query:
    """Parse one statement; raise QueryError (Intuit's message) on anything outside the subset."""
    toks = _tokens(text)
    i = 0

    def peek(offset: int = 0) -> tuple[str, str]:
        return toks[i + offset] if i + offset < len(toks) else ("eof", "")

    def kw(word: str) -> bool:
        kind, raw = peek()
        return kind == "word" and raw.upper() == word

    def expect_kw(word: str) -> None:
        nonlocal i
        if not kw(word):
            raise QueryError(f"QueryParserError: Encountered \"{peek()[1] or '<EOF>'}\": expected {word}")
        i += 1

    def expect(kind: str, value: str | None = None) -> str:
        nonlocal i
        k, raw = peek()
        if k != kind or (value is not None and raw != value):
            raise QueryError(f"QueryParserError: Encountered \"{raw or '<EOF>'}\": expected {value or kind}")
        i += 1
        return raw

    def integer(name: str) -> int:
        raw = expect("num")
        if "." in raw or raw.startswith("-"):
            raise QueryError(f"QueryParserError: {name} must be a whole number")
        return int(raw)

    expect_kw("SELECT")
    count = False
    fields: tuple[str, ...] | None = None
    if kw("COUNT"):
        i += 1
        expect("punct", "(")
        expect("punct", "*")
        expect("punct", ")")
        count = True
    else:  # `*`, fields, or both (`SELECT *, Sku FROM Item`, as python-quickbooks sends): `*` wins
        selected: list[str] = []
        star = False
        while True:
            if peek() == ("punct", "*"):
                i += 1
                star = True
            else:
                selected.append(expect("word"))
            if peek() != ("punct", ","):
                break
            i += 1
        fields = None if star else tuple(selected)
    expect_kw("FROM")
    entity = expect("word")
    conds: list[Cond] = []
    order: list[tuple[str, bool]] = []
    start, max_results = 1, DEFAULT_MAX_RESULTS
    if kw("WHERE"):
        i += 1
        while True:
            fld = expect("word").lower()
            kind, raw = peek()
            if kind == "op":
                i += 1
                op = "!=" if raw == "<>" else raw
                vkind, vraw = peek()
                i += 1
                conds.append(Cond(fld, op, (_literal(vkind, vraw),)))
            elif kind == "word" and raw.upper() == "IN":
                i += 1
                expect("punct", "(")
                values = []
                while True:
                    vkind, vraw = peek()
                    i += 1
                    values.append(_literal(vkind, vraw))
                    if peek() == ("punct", ","):
                        i += 1
                        continue
                    expect("punct", ")")
                    break
                conds.append(Cond(fld, "in", tuple(values)))
            elif kind == "word" and raw.upper() == "LIKE":
                i += 1
                pattern = _literal(*peek())
                i += 1
                if not isinstance(pattern, str):
                    raise QueryError("QueryParserError: LIKE needs a string")
                conds.append(Cond(fld, "like", (pattern,)))
            else:
                raise QueryError(f"QueryParserError: Encountered \"{raw or '<EOF>'}\" after {fld}")
            if kw("AND"):
                i += 1
                continue
            if kw("OR"):
                raise QueryError("QueryParserError: Encountered \" \"OR\" \"OR \"\" OR is not supported")
            break
    if kw("ORDERBY") or (kw("ORDER") and peek(1)[0] == "word" and peek(1)[1].upper() == "BY"):
        i += 2 if kw("ORDER") else 1
        while True:
            fld = expect("word").lower()
            desc = False
            if kw("ASC") or kw("DESC"):
                desc = peek()[1].upper() == "DESC"
                i += 1
            order.append((fld, desc))
            if peek() == ("punct", ","):
                i += 1
                continue
            break
    seen: set[str] = set()
    while kw("STARTPOSITION") or kw("MAXRESULTS"):
        word = peek()[1].upper()
        if word in seen:
            raise QueryError(f"QueryParserError: {word} given twice")
        seen.add(word)
        i += 1
        if word == "STARTPOSITION":
            start = integer(word)
        else:
            max_results = integer(word)
    if peek()[0] != "eof":
        raise QueryError(f"QueryParserError: Encountered \"{peek()[1]}\" at the end of the query")
    if max_results > MAX_RESULTS:
        raise QueryError(f"QueryValidationError: value {max_results} is too large. Max allowed value is {MAX_RESULTS}")
    if start < 1:
        start = 1
    return Query(entity, count, tuple(conds), tuple(order), start, max_results, fields)


def project(query: Query, json_text: bytes) -> bytes:
    """One record's JSON reduced to the query's field list (dotted paths keep their nesting);
    the record unchanged for `SELECT *`."""
    if not query.fields:
        return json_text
    obj = loads(json_text)
    out: dict[str, Any] = {}
    for path in query.fields:
        src: Any = obj
        dst = out
        parts = path.split(".")
        for k, part in enumerate(parts):
            key = next((name for name in src if name.lower() == part.lower()), None) if isinstance(src, dict) else None
            if key is None:
                break
            if k == len(parts) - 1:
                dst[key] = src[key]
            else:
                dst = dst.setdefault(key, {})
                src = src[key]
    return dumps(out).encode()


# ---- evaluation ----------------------------------------------------------------------------
def _path_value(record: Any, path: str, cache: dict[int, Any]) -> Any:
    obj = cache.get(id(record))
    if obj is None:
        obj = loads(record.json)
        cache[id(record)] = obj
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        if part in cur:
            cur = cur[part]
            continue
        for key in cur:
            if key.lower() == part:
                cur = cur[key]
                break
        else:
            return None
    if isinstance(cur, dict) and "value" in cur:  # a Ref compares by its id
        return cur["value"]
    return cur


def _getter(path: str, cache: dict[int, Any]) -> Callable[[Any], Any]:
    if path == "id":
        return lambda r: r.id
    if path == "active":
        return lambda r: r.active
    if path in _TIME_FIELDS:
        attr = _TIME_FIELDS[path]
        return lambda r: getattr(r, attr)
    if path == "docnumber":
        return lambda r: r.doc
    if path in ("displayname", "name"):
        return lambda r: r.name
    return lambda r: _path_value(r, path, cache)


def _coerce(path: str, value: Any) -> Any:
    if path == "id":
        try:
            return int(str(value))
        except ValueError:
            raise QueryError(f"QueryValidationError: invalid Id {value!r}") from None
    if path in _TIME_FIELDS:
        try:
            return parse_ts(str(value))
        except ValueError:
            raise QueryError(f"QueryValidationError: invalid date-time {value!r}") from None
    if path == "active":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise QueryError(f"QueryValidationError: invalid boolean {value!r}")
    return value


def _norm(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value) if re.fullmatch(r"-?\d+(\.\d+)?", value) else value
        except InvalidOperation:  # pragma: no cover
            return value
    return value


def _like(pattern: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in pattern.split("%")]
    return re.compile("^" + ".*".join(parts) + "$", re.IGNORECASE | re.DOTALL)


def _matcher(cond: Cond, cache: dict[int, Any]) -> Callable[[Any], bool]:
    get = _getter(cond.field, cache)
    plain = cond.field in ("id", "active") or cond.field in _TIME_FIELDS
    values = tuple(_coerce(cond.field, v) for v in cond.values)
    if not plain:
        values = tuple(_norm(v) for v in values)
    fix: Callable[[Any], Any] = (lambda v: v) if plain else _norm
    if cond.op == "in":
        wanted = set(values)
        return lambda r: fix(get(r)) in wanted
    if cond.op == "like":
        rx = _like(str(cond.values[0]))
        return lambda r: isinstance(get(r), str) and rx.match(get(r)) is not None
    target = values[0]
    if cond.field in _TIME_FIELDS and cond.op == "=":
        return lambda r: int(get(r)) == int(target)

    def compare(r: Any) -> bool:
        value = fix(get(r))
        if value is None:
            return False
        try:
            if cond.op == "=":
                return bool(value == target)
            if cond.op == "!=":
                return bool(value != target)
            if cond.op == "<":
                return bool(value < target)
            if cond.op == "<=":
                return bool(value <= target)
            if cond.op == ">":
                return bool(value > target)
            return bool(value >= target)
        except TypeError:
            return False
    return compare


def filter_records(query: Query, records: Sequence[Any], *, hide_inactive: bool) -> list[Any]:
    """The records `query` selects (before paging), in its order; `records` must be in Id order.
    `hide_inactive` drops Active=false rows unless the query has an Active condition."""
    cache: dict[int, Any] = {}
    matchers = [_matcher(c, cache) for c in query.conds]
    if hide_inactive and not query.has_active_condition:
        matchers.insert(0, lambda r: r.active)
    rows = [r for r in records if all(m(r) for m in matchers)] if matchers else list(records)
    for fld, desc in reversed(query.order):  # stable multi-key sort, last key first
        if fld == "id":
            if desc:
                rows.reverse() if _is_sorted_by_id(rows) else rows.sort(key=lambda r: r.id, reverse=True)
            else:
                if not _is_sorted_by_id(rows):
                    rows.sort(key=lambda r: r.id)
            continue
        get = _getter(fld, cache)
        rows.sort(key=lambda r: _sort_key(get(r)), reverse=desc)
    return rows


def _is_sorted_by_id(rows: list[Any]) -> bool:
    return all(rows[k].id < rows[k + 1].id for k in range(len(rows) - 1))


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float, Decimal)):
        return (2, Decimal(str(value)))
    return (3, str(value).lower())
