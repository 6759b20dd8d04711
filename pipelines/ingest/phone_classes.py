"""E.164 normalisation of whole columns: set-based SQL plus one ``phonenumbers`` call per class.

Calling :func:`pipelines.numbers.normalise` per row costs tens of microseconds, minutes for a
province's nightly volume. Instead every value is cleaned in SQL the way ``normalise`` cleans
it (full-width digits, ``00`` → ``+``, spaces, dashes, parentheses) and, when the result has
one of the CN mobile shapes below, put in a *class*: the shape plus the first five digits of
the national number. ``phonenumbers`` decides validity from the leading digits and the length
(CN mobile patterns constrain at most the first five national digits, e.g. ``1740[0-5]``), so
one call on a representative decides the whole class. ``tests/unit/test_ingest.py`` proves
that class results equal per-value ``normalise`` over the full CN five-digit prefix space and
a large random sample. Anything outside the shapes (other countries, odd formatting, a class
whose representative does not map as expected) falls back to ``normalise`` once per distinct
value, so the shortcut is never the reason a number is accepted or refused.

Shapes (first letter of a class key): ``p`` = ``+861`` + 10 digits (any default region);
``c`` = ``861`` + 10 digits and ``n`` = ``1`` + 10 digits (only when the default region is CN,
because they are read in the default region's national plan). Every member of a valid class
has the E.164 form ``+86`` + its last 11 digits.

Every class of the shapes is decided once (:func:`class_table`, about 30,000 ``phonenumbers``
calls, kept per process and in a cache file named for the ``phonenumbers`` version), so a
file needs no pass to find its classes first.

Use: :func:`number_columns_sql` adds the cleaned candidate and class key of each number
column to a SELECT; :func:`load_classes` writes the decided classes to :data:`LOOKUP_TABLE`
and :func:`add_singles` decides the odd values of a SELECT and adds them; :func:`lookup_key_sql`
and :func:`e164_sql` then give each row its E.164 form (or NULL) through one join per column.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import phonenumbers
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.layout import atomic_write_bytes
from pipelines.numbers import normalise

_CN = "CN"

# A value that is already a bare candidate of one of the shapes (nearly every row of a BSS
# export) needs no cleaning: one regex decides it, and its length names the shape.
_PLAIN_CN = r"(?:\+86|0086|86)?1\d{10}"
_PLAIN_OTHER = r"(?:\+86|0086)1\d{10}"
_SHAPE_BY_LENGTH = "CASE length({v}) WHEN 11 THEN 'n' WHEN 13 THEN 'c' ELSE 'p' END"

LOOKUP_TABLE = "_ingest_num_lookup"
_VALUE_MARK = "="  # lookup keys of single values start with it; class keys never do


@dataclass(frozen=True)
class NumberLookup:
    """What :data:`LOOKUP_TABLE` holds, for the SQL that reads it."""

    classes: int  # classes decided by one phonenumbers call each (:func:`class_table`)
    singles: int  # distinct values decided one by one
    fallback_classes: tuple[str, ...]  # classes whose members are looked up one by one


def clean_sql(expr: str) -> str:
    """SQL cleaning ``expr`` the way ``normalise`` does before it parses.

    ``normalise`` translates full-width digits, strips, and turns a leading ``00`` into ``+``
    before anything else, so the ``00`` test happens on the trimmed text, not after removing
    inner separators. ``phonenumbers`` ignores spaces, dashes and parentheses in a number.
    Values of plain ASCII digits and ``+`` take a cheap branch with the same result.
    """
    text = f"trim(translate({expr}, '０１２３４５６７８９＋', '0123456789+'))"
    plus = f"CASE WHEN starts_with({text}, '00') THEN '+' || {text}[3:] ELSE {text} END"
    full = f"regexp_replace({plus}, '[ ()\\-]', '', 'g')"
    simple = f"CASE WHEN starts_with({expr}, '00') THEN '+' || {expr}[3:] ELSE {expr} END"
    return f"CASE WHEN NOT regexp_matches({expr}, '[^0-9+]') THEN {simple} ELSE {full} END"


def _national_prefix(candidate: str) -> str:
    # Candidates are ASCII here, so character positions are byte positions.
    return f"substr({candidate}, length({candidate}) - 10, 5)"


def class_key_sql(cleaned: str, default_region: str) -> str:
    """SQL giving the class key of a cleaned candidate, or NULL when it has no proven shape."""
    whens = [f"WHEN length({cleaned}) = 14 AND starts_with({cleaned}, '+861') THEN 'p'"]
    if default_region == _CN:
        whens.append(f"WHEN length({cleaned}) = 13 AND starts_with({cleaned}, '861') THEN 'c'")
        whens.append(f"WHEN length({cleaned}) = 11 AND starts_with({cleaned}, '1') THEN 'n'")
    # One regex per value: the shapes differ only in length and prefix once all are digits.
    return (
        f"CASE WHEN regexp_full_match({cleaned}, '\\+?\\d{{11,13}}') "
        f"THEN (CASE {' '.join(whens)} END) || {_national_prefix(cleaned)} END"
    )


def number_columns_sql(source_sql: str, columns: Sequence[tuple[str, str, str]], default_region: str) -> str:
    """``source_sql`` plus, per (raw, cleaned, key) column names, the cleaned candidate and key.

    A raw value that is a bare candidate takes the cheap branch: it is its own candidate (a
    leading ``00`` left in place: only its last 11 digits and its length are ever used).
    Only the few other values go through :func:`clean_sql`. One projection per step, so
    that each big expression appears once: CASE runs a branch only on the rows that take
    it, but a large expression tree costs something per batch of rows even when few do.
    """
    plain = _PLAIN_CN if default_region == _CN else _PLAIN_OTHER
    flags = [f'"x_{i}"' for i in range(len(columns))]
    flagged = ", ".join(
        f"regexp_full_match({raw}, '{plain}') AS {x}" for (raw, _, _), x in zip(columns, flags, strict=True)
    )
    cleaned = ", ".join(
        f"CASE WHEN {x} THEN {raw} ELSE {clean_sql(raw)} END AS {c}"
        for (raw, c, _), x in zip(columns, flags, strict=True)
    )
    keys = ", ".join(
        f"CASE WHEN {x} THEN ({_SHAPE_BY_LENGTH.format(v=raw)}) || {_national_prefix(raw)} "
        f"ELSE {class_key_sql(c, default_region)} END AS {k}"
        for (raw, c, k), x in zip(columns, flags, strict=True)
    )
    return (
        f"SELECT * EXCLUDE ({', '.join(flags)}), {keys} FROM ("
        f"SELECT *, {cleaned} FROM (SELECT *, {flagged} FROM ({source_sql})))"
    )


def lookup_key_sql(raw: str, key: str, found: NumberLookup) -> str:
    """SQL giving the :data:`LOOKUP_TABLE` key of a row's value (NULL when the value is)."""
    single = f"'{_VALUE_MARK}' || {raw}"
    if not found.fallback_classes:
        return f"coalesce({key}, {single})"
    listed = ", ".join(f"'{k}'" for k in found.fallback_classes)
    return f"CASE WHEN {key} IS NULL OR {key} IN ({listed}) THEN {single} ELSE {key} END"


def e164_sql(cleaned: str, alias: str) -> str:
    """SQL giving the E.164 form (or NULL) of a row joined to :data:`LOOKUP_TABLE` as ``alias``."""
    return (
        f"CASE WHEN {alias}.class_valid THEN '+86' || substr({cleaned}, length({cleaned}) - 10) "
        f"ELSE {alias}.e164 END"
    )


def _representative(key: str) -> tuple[str, str]:
    """A member of class ``key`` written in the class's shape, and the E.164 form it must get.

    Any member decides the class (validity rests on the first five national digits and the
    length), so the member is made up rather than looked for: no aggregate over the rows.
    """
    national = key[1:] + "000000"
    return {"p": "+86", "c": "86", "n": ""}[key[0]] + national, "+86" + national


_CLASS_SCHEMA = pa.schema([("k", pa.string()), ("class_valid", pa.bool_())])


def _shapes(default_region: str) -> str:
    return "cnp" if default_region == _CN else "p"


@functools.cache
def _decide_classes(default_region: str) -> pa.Table:
    """Every class key of the shapes ``default_region`` admits, decided by ``phonenumbers``.

    About 30,000 calls (two seconds) for CN: a file's rows then need no pass to find their
    classes first. ``class_valid`` is NULL for a class whose representative does not map as
    its shape says: its members are decided one by one, as odd values are.
    """
    keys: list[str] = []
    valid: list[bool | None] = []
    for shape in _shapes(default_region):
        for prefix in range(10_000, 20_000):  # national numbers of the shapes start with 1
            key = f"{shape}{prefix}"
            member, expected = _representative(key)
            got = normalise(member, default_region)
            keys.append(key)
            valid.append(None if got is not None and got != expected else got is not None)
    return pa.table({"k": keys, "class_valid": valid}, schema=_CLASS_SCHEMA)


def class_table(default_region: str, cache_dir: Path | None = None) -> pa.Table:
    """The decided classes (``k``, ``class_valid``) of ``default_region``, computed once.

    Kept per process and, when ``cache_dir`` is given, in a Parquet file there named for the
    ``phonenumbers`` version (a new version, with new number ranges, decides them afresh). A
    cache file that cannot be read is decided again and rewritten.
    """
    if cache_dir is None:
        return _decide_classes(default_region)
    path = cache_dir / f"phone-classes-{phonenumbers.__version__}-{default_region}.parquet"
    try:
        table = pq.read_table(path)
        if table.schema.equals(_CLASS_SCHEMA) and table.num_rows == 10_000 * len(_shapes(default_region)):
            return table
    except (OSError, pa.ArrowException):
        pass
    table = _decide_classes(default_region)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(path, buf.getvalue())
    return table


def load_classes(con: duckdb.DuckDBPyConnection, classes: pa.Table) -> NumberLookup:
    """(Re)create :data:`LOOKUP_TABLE` with the decided classes of :func:`class_table`."""
    view = f"{LOOKUP_TABLE}_arrow"
    con.register(view, classes)
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {LOOKUP_TABLE} AS "
            f"SELECT k, class_valid, NULL::VARCHAR AS e164 FROM {view} WHERE class_valid IS NOT NULL"
        )
    finally:
        con.unregister(view)
    fallback = tuple(
        k
        for k, v in zip(
            classes.column("k").to_pylist(), classes.column("class_valid").to_pylist(), strict=True
        )
        if v is None
    )
    return NumberLookup(classes=classes.num_rows - len(fallback), singles=0, fallback_classes=fallback)


def add_singles(
    con: duckdb.DuckDBPyConnection,
    source: str,
    columns: Sequence[tuple[str, str, str]],
    found: NumberLookup,
    default_region: str,
) -> NumberLookup:
    """Decide the odd values of ``source`` one by one and add them to :data:`LOOKUP_TABLE`.

    Odd values are those without a class key and the members of fallback classes; values
    already in the table (from an earlier call on another part of the file) are skipped.
    ``source`` is a table name or a parenthesised SELECT (e.g. of :func:`number_columns_sql`)
    and ``columns`` its (raw, cleaned, key) column names holding numbers.
    """
    listed = ", ".join(f"'{k}'" for k in found.fallback_classes)
    odd = [f"{key} IS NULL" + (f" OR {key} IN ({listed})" if listed else "") for _, _, key in columns]
    union = " UNION ".join(
        f"SELECT {raw} AS v FROM {source} WHERE {raw} IS NOT NULL AND ({cond})"
        for (raw, _, _), cond in zip(columns, odd, strict=True)
    )
    values = [
        v
        for (v,) in con.execute(
            f"SELECT v FROM ({union}) WHERE '{_VALUE_MARK}' || v NOT IN (SELECT k FROM {LOOKUP_TABLE}) ORDER BY v"
        ).fetchall()
    ]
    if values:
        view = f"{LOOKUP_TABLE}_arrow"
        con.register(
            view,
            pa.table(
                {
                    "k": pa.array([_VALUE_MARK + v for v in values], pa.string()),
                    "e164": pa.array([normalise(v, default_region) for v in values], pa.string()),
                }
            ),
        )
        try:
            con.execute(f"INSERT INTO {LOOKUP_TABLE} SELECT k, NULL, e164 FROM {view}")
        finally:
            con.unregister(view)
    return NumberLookup(
        classes=found.classes, singles=found.singles + len(values), fallback_classes=found.fallback_classes
    )


def resolve_numbers(
    con: duckdb.DuckDBPyConnection,
    source: str,
    columns: Sequence[tuple[str, str, str]],
    default_region: str,
) -> NumberLookup:
    """:func:`load_classes` and :func:`add_singles` in one go (no cache file)."""
    found = load_classes(con, class_table(default_region))
    return add_singles(con, source, columns, found, default_region)


def drop_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"DROP TABLE IF EXISTS {LOOKUP_TABLE}")


def normalise_many(
    values: Sequence[str | None],
    default_region: str = _CN,
    con: duckdb.DuckDBPyConnection | None = None,
) -> list[str | None]:
    """E.164 forms of ``values`` (None where invalid) by the same class path ingest uses.

    Equal to ``[normalise(v, default_region) for v in values]`` (empty and None give None);
    the tests hold it to that.
    """
    own = con is None
    db = duckdb.connect() if con is None else con
    src = "_ingest_num_input"
    columns = [('"v"', '"c"', '"k"')]
    try:
        db.register(
            f"{src}_arrow",
            pa.table(
                {
                    "i": pa.array(range(len(values)), pa.int64()),
                    "v": pa.array(list(values), pa.string()),
                }
            ),
        )
        db.execute(
            f"CREATE OR REPLACE TEMP TABLE {src} AS "
            + number_columns_sql(
                f"SELECT i, nullif(trim(v), '') AS v FROM {src}_arrow", columns, default_region
            )
        )
        db.unregister(f"{src}_arrow")
        found = resolve_numbers(db, src, columns, default_region)
        rows = db.execute(
            f"SELECT {e164_sql('s.c', 'lk')} FROM {src} s "
            f"LEFT JOIN {LOOKUP_TABLE} lk ON lk.k = {lookup_key_sql('s.v', 's.k', found)} ORDER BY s.i"
        ).fetchall()
        return [r[0] for r in rows]
    finally:
        db.execute(f"DROP TABLE IF EXISTS {src}")
        drop_tables(db)
        if own:
            db.close()
