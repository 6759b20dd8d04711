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

Shapes (``k_*`` column, first letter): ``p`` = ``+861`` + 10 digits (any default region);
``c`` = ``861`` + 10 digits and ``n`` = ``1`` + 10 digits (only when the default region is CN,
because they are read in the default region's national plan).
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

from pipelines.numbers import normalise

_CN = "CN"

# Per shape: the length and prefix an all-digit candidate (``+`` first for "p") must have, the
# slice of it that names the class (SQL 1-based, inclusive), and how a member's E.164 form is
# built from the candidate.
_SHAPES: dict[str, tuple[int, str, int, int, str]] = {
    "p": (14, "+861", 2, 8, "{c}"),
    "c": (13, "861", 1, 7, "'+' || {c}"),
    "n": (11, "1", 1, 5, "'+86' || {c}"),
}

CLASS_TABLE = "_ingest_num_class"
FALLBACK_TABLE = "_ingest_num_value"


def clean_sql(expr: str) -> str:
    """SQL cleaning ``expr`` the way ``normalise`` does before it parses.

    ``normalise`` translates full-width digits, strips, and turns a leading ``00`` into ``+``
    before anything else, so the ``00`` test happens on the trimmed text, not after removing
    inner separators. ``phonenumbers`` ignores spaces, dashes and parentheses in a number.
    Values of plain ASCII digits and ``+`` (nearly all) take a cheap branch with the same result.
    """
    text = f"trim(translate({expr}, '０１２３４５６７８９＋', '0123456789+'))"
    plus = f"CASE WHEN starts_with({text}, '00') THEN '+' || {text}[3:] ELSE {text} END"
    full = f"regexp_replace({plus}, '[ ()\\-]', '', 'g')"
    simple = f"CASE WHEN starts_with({expr}, '00') THEN '+' || {expr}[3:] ELSE {expr} END"
    return f"CASE WHEN NOT regexp_matches({expr}, '[^0-9+]') THEN {simple} ELSE {full} END"


def class_key_sql(cleaned: str, default_region: str) -> str:
    """SQL giving the class key of a cleaned candidate, or NULL when it has no proven shape."""
    whens = []
    for shape, (length, prefix, start, end, _) in _SHAPES.items():
        if shape != "p" and default_region != _CN:
            continue
        whens.append(
            f"WHEN length({cleaned}) = {length} AND starts_with({cleaned}, '{prefix}') "
            f"THEN '{shape}' || {cleaned}[{start}:{end}]"
        )
    # One regex per value: the shapes differ only in length and prefix once all are digits.
    return f"CASE WHEN regexp_full_match({cleaned}, '\\+?\\d{{11,13}}') THEN (CASE {' '.join(whens)} END) END"


def e164_sql(raw: str, cleaned: str, key: str, cls_alias: str, fb_alias: str) -> str:
    """SQL giving the E.164 form (or NULL) of one row, after :func:`resolve_numbers` ran.

    ``cls_alias``/``fb_alias`` are the joined :data:`CLASS_TABLE` (on ``k = key``) and
    :data:`FALLBACK_TABLE` (on ``raw = raw``).
    """
    build = " ".join(
        f"WHEN '{shape}' THEN {template.format(c=cleaned)}"
        for shape, (_, _, _, _, template) in _SHAPES.items()
    )
    return (
        f"CASE WHEN {raw} IS NULL THEN NULL "
        f"WHEN {cls_alias}.status = 'valid' THEN (CASE left({key}, 1) {build} END) "
        f"WHEN {cls_alias}.status = 'invalid' THEN NULL "
        f"ELSE {fb_alias}.e164 END"
    )


def _expected(shape: str, candidate: str) -> str:
    if shape == "p":
        return candidate
    if shape == "c":
        return "+" + candidate
    return "+86" + candidate


def resolve_numbers(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: Sequence[tuple[str, str, str]],
    default_region: str,
) -> tuple[int, int]:
    """Build :data:`CLASS_TABLE` and :data:`FALLBACK_TABLE` for ``table``.

    ``columns`` are (raw, cleaned, key) column names of ``table`` holding numbers. Returns
    (classes decided, distinct values sent to the per-value fallback) for the logs.
    """
    union_ck = " UNION ALL ".join(f"SELECT {k} AS k, {c} AS c FROM {table}" for _, c, k in columns)
    reps = con.execute(
        f"SELECT k, min(c) FROM ({union_ck}) WHERE k IS NOT NULL GROUP BY k ORDER BY k"
    ).fetchall()
    keys: list[str] = []
    status: list[str] = []
    for key, rep in reps:
        got = normalise(rep, default_region)
        keys.append(key)
        if got is None:
            status.append("invalid")
        elif got == _expected(key[0], rep):
            status.append("valid")
        else:  # a class that does not map like its shape says: decide its members one by one
            status.append("fallback")
    _replace_temp_table(
        con, CLASS_TABLE,
        pa.table({"k": pa.array(keys, pa.string()), "status": pa.array(status, pa.string())}),
    )

    union_vk = " UNION ALL ".join(f"SELECT {r} AS v, {k} AS k FROM {table}" for r, _, k in columns)
    values = con.execute(
        f"SELECT DISTINCT x.v FROM ({union_vk}) x LEFT JOIN {CLASS_TABLE} c ON c.k = x.k "
        "WHERE x.v IS NOT NULL AND (c.status IS NULL OR c.status = 'fallback') ORDER BY x.v"
    ).fetchall()
    raws = [v for (v,) in values]
    e164 = [normalise(v, default_region) for v in raws]
    _replace_temp_table(
        con, FALLBACK_TABLE,
        pa.table({"raw": pa.array(raws, pa.string()), "e164": pa.array(e164, pa.string())}),
    )
    return len(keys), len(raws)


def _replace_temp_table(con: duckdb.DuckDBPyConnection, name: str, data: pa.Table) -> None:
    view = f"{name}_arrow"
    con.register(view, data)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {view}")
    finally:
        con.unregister(view)


def drop_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"DROP TABLE IF EXISTS {CLASS_TABLE}")
    con.execute(f"DROP TABLE IF EXISTS {FALLBACK_TABLE}")


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
    try:
        db.register(
            f"{src}_arrow",
            pa.table({
                "i": pa.array(range(len(values)), pa.int64()),
                "v": pa.array(list(values), pa.string()),
            }),
        )
        db.execute(
            f"CREATE OR REPLACE TEMP TABLE {src} AS SELECT i, v, c, {class_key_sql('c', default_region)} AS k "
            f"FROM (SELECT i, v, {clean_sql('v')} AS c FROM (SELECT i, nullif(trim(v), '') AS v FROM {src}_arrow))"
        )
        db.unregister(f"{src}_arrow")
        resolve_numbers(db, src, [("v", "c", "k")], default_region)
        rows = db.execute(
            f"SELECT {e164_sql('s.v', 's.c', 's.k', 'cls', 'fb')} FROM {src} s "
            f"LEFT JOIN {CLASS_TABLE} cls ON cls.k = s.k LEFT JOIN {FALLBACK_TABLE} fb ON fb.raw = s.v "
            "ORDER BY s.i"
        ).fetchall()
        return [r[0] for r in rows]
    finally:
        db.execute(f"DROP TABLE IF EXISTS {src}")
        drop_tables(db)
        if own:
            db.close()
