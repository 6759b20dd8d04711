"""Drop-file contracts (``schemas/drops/*.json``) and the row rules they imply, as DuckDB SQL.

Each kind's JSON lists its columns with a type and flags; :func:`checks_sql` turns them into
one pass that gives every row the FIRST failing rule in the fixed order of
:data:`ROW_REASONS` (reason codes: ``docs/architecture.md``, "Ingest stage").
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pipelines.db import sql_str
from pipelines.errors import ConfigError
from pipelines.ingest.phone_classes import (
    LOOKUP_TABLE,
    NumberLookup,
    e164_sql,
    lookup_key_sql,
    number_columns_sql,
)

# The top-level schemas/ folder, shipped as the package ``pipelines.schemas`` (pyproject.toml):
# read through importlib.resources, so an installed wheel needs no checkout.
SCHEMA_PACKAGE = "pipelines.schemas"
KINDS: tuple[str, ...] = ("lifecycle", "reissue", "subscribers", "receipts")

# The order in which row rules are tried; a row carries the first one that fails.
ROW_REASONS: tuple[str, ...] = (
    "malformed_line",
    "missing_field",
    "bad_number",
    "bad_date",
    "future_date",
    "unknown_region",
    "unknown_event",
    "unknown_channel",
    "unknown_status",
    "bad_tenure",
    "duplicate_row",
)
GX_REASON = "gx_failed"
REASONS: tuple[str, ...] = (*ROW_REASONS, GX_REASON)

COLUMN_TYPES = frozenset(
    {"msisdn", "phone", "email", "date", "timestamp", "region", "enum", "text", "language"}
)
DEFAULT_LANGUAGE = "zh-CN"  # reminders fall back to the carrier's own language

_ISO_DATE = r"\d{4}-\d{2}-\d{2}"
_ISO_TS = r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)(Z|[+-]\d{2}:?\d{2})?$"
_EMAIL = r"[^@\s]+@[^@\s]+\.[^@\s]+"


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: str
    required: bool  # in the header and non-empty (missing_field); optional columns may be absent
    values: tuple[str, ...] = ()  # enum: allowed values (compared in lower case)
    reason: str | None = None  # enum: the reason code of a value outside ``values``
    not_after_logical_date: bool = False  # future_date when after the inbox's day
    not_after: str | None = None  # bad_tenure when after this (date) column


@dataclass(frozen=True)
class DropSpec:
    kind: str
    file_prefix: str
    table: str
    columns: tuple[ColumnSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def number_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.type in {"msisdn", "phone"})


def _column(doc: Mapping[str, Any], where: str) -> ColumnSpec:
    known = {"name", "type", "required", "values", "reason", "not_after_logical_date", "not_after"}
    if set(doc) - known or doc.get("type") not in COLUMN_TYPES:
        raise ConfigError(
            f"{where}: bad column spec {doc!r}; keys {sorted(known)}, types {sorted(COLUMN_TYPES)}"
        )
    spec = ColumnSpec(
        name=str(doc["name"]),
        type=str(doc["type"]),
        required=bool(doc.get("required", False)),
        values=tuple(str(v).lower() for v in doc.get("values", ())),
        reason=doc.get("reason"),
        not_after_logical_date=bool(doc.get("not_after_logical_date", False)),
        not_after=doc.get("not_after"),
    )
    if spec.type == "enum" and (not spec.values or spec.reason not in ROW_REASONS):
        raise ConfigError(f"{where}: enum column {spec.name} needs values and a reason code")
    return spec


def schema_file(folder: str, name: str) -> Traversable:
    """``schemas/<folder>/<name>``, from the wheel or the editable install alike."""
    try:
        root: Traversable = files(SCHEMA_PACKAGE)
    except ModuleNotFoundError:
        # A checkout put on sys.path by hand (PYTHONPATH) over an environment whose install
        # predates the mapping knows no such package: the checkout's own folder is the same data.
        root = Path(__file__).resolve().parents[2] / "schemas"
    return root / folder / name


@functools.cache
def drop_specs() -> Mapping[str, DropSpec]:
    """The contract of every drop kind, from ``schemas/drops/<kind>.json``."""
    specs = {}
    for kind in KINDS:
        path = schema_file("drops", f"{kind}.json")
        doc = json.loads(path.read_text(encoding="utf-8"))
        specs[kind] = DropSpec(
            kind=doc["kind"],
            file_prefix=doc["file_prefix"],
            table=doc["table"],
            columns=tuple(_column(c, str(path)) for c in doc["columns"]),
        )
    return specs


def spec_for_file(file_name: str) -> DropSpec | None:
    """The kind of a drop file, by its name prefix; None when no kind claims it."""
    for spec in drop_specs().values():
        if file_name.startswith(spec.file_prefix):
            return spec
    return None


@functools.cache
def province_codes() -> frozenset[str]:
    doc = json.loads(schema_file("drops", "regions.json").read_text(encoding="utf-8"))
    return frozenset(doc["provinces"])


def _in_list(values: Sequence[str]) -> str:
    return ", ".join(sql_str(v) for v in sorted(values))


def raw_col(name: str) -> str:
    """Column of the staged table with the trimmed text of field ``name`` (NULL when empty)."""
    return f'"v_{name}"'


def typed_col(name: str) -> str:
    return f'"t_{name}"'


def staged_select(spec: DropSpec, default_region: str, source_sql: str) -> str:
    """``source_sql`` (line_no, original_line, malformed, v_*) plus, per number column, the
    cleaned candidate ``c_*`` and its class key ``k_*`` (:mod:`pipelines.ingest.phone_classes`)."""
    if not spec.number_columns:
        return source_sql
    return number_columns_sql(source_sql, number_columns(spec), default_region)


def number_columns(spec: DropSpec) -> list[tuple[str, str, str]]:
    return [(raw_col(n), f'"c_{n}"', f'"k_{n}"') for n in spec.number_columns]


def _typed_expr(col: ColumnSpec, alias: int) -> str:
    v = f"r.{raw_col(col.name)}"
    if col.type in {"msisdn", "phone"}:
        return e164_sql(f'r."c_{col.name}"', f"lk{alias}")
    if col.type == "date":
        # The regex keeps the format strict (no 2026-1-5); the cast rejects 2026-02-30 and,
        # behind the regex, agrees with strptime('%Y-%m-%d') at a fraction of its cost.
        return f"CASE WHEN regexp_full_match({v}, '{_ISO_DATE}') THEN try_cast({v} AS DATE) END"
    if col.type == "timestamp":
        # Parse the local part without %z (DuckDB rolls 2026-02-30 over to March with %z) and
        # apply the offset by hand: no dependence on the session's TimeZone.
        m = f"regexp_extract({v}, '{_ISO_TS}', ['d', 't', 'z'])"
        z = f"({m}).z"
        offset = (
            f"CASE WHEN {z} IN ('', 'Z') THEN 0 ELSE (CASE WHEN {z}[1] = '-' THEN -1 ELSE 1 END)"
            f" * ({z}[2:3]::INTEGER * 60 + right({z}, 2)::INTEGER) END"
        )
        return (
            f"try_strptime(({m}).d || ' ' || ({m}).t, ['%Y-%m-%d %H:%M:%S', '%Y-%m-%d %H:%M:%S.%f'])"
            f" - to_minutes({offset})"
        )
    if col.type == "region":
        return f"upper({v})"
    if col.type == "enum":
        return f"lower({v})"
    if col.type == "email":
        return f"CASE WHEN regexp_full_match({v}, '{_EMAIL}') THEN {v} END"
    if col.type == "language":
        lang = f"lower(replace({v}, '_', '-'))"
        # The two values nearly every row has are settled before the string work.
        return (
            f"CASE WHEN {v} = 'zh-CN' THEN 'zh-CN' WHEN {v} = 'en' THEN 'en' "
            f"WHEN starts_with({lang}, 'zh') THEN 'zh-CN' "
            f"WHEN {lang} = 'en' OR starts_with({lang}, 'en-') THEN 'en' END"
        )
    return v


def _rules(spec: DropSpec, regions: Sequence[str], zone: str) -> list[tuple[str, str, str]]:
    """(reason, column, SQL condition over the typed subquery) in the order rows are judged.

    ``zone`` is the carrier's time zone (``Settings.timezone``): a timestamp is in the future
    from the instant the carrier's next day begins (DuckDB's ICU; timestamps are naive UTC).
    """
    by_reason: dict[str, list[tuple[str, str]]] = {r: [] for r in ROW_REASONS}
    by_reason["malformed_line"].append(("", "malformed IS NOT NULL"))
    for c in spec.columns:
        v, t = raw_col(c.name), typed_col(c.name)
        if c.required:
            by_reason["missing_field"].append((c.name, f"{v} IS NULL"))
        if c.type == "msisdn":
            by_reason["bad_number"].append((c.name, f"{v} IS NOT NULL AND {t} IS NULL"))
        if c.type in {"date", "timestamp"}:
            by_reason["bad_date"].append((c.name, f"{v} IS NOT NULL AND {t} IS NULL"))
        if c.not_after_logical_date:
            limit = (
                "$day::DATE"
                if c.type == "date"
                else f"timezone('UTC', timezone({sql_str(zone)}, CAST($day::DATE + 1 AS TIMESTAMP)))"
            )
            op = ">" if c.type == "date" else ">="
            by_reason["future_date"].append((c.name, f"{t} {op} {limit}"))
        if c.type == "region":
            by_reason["unknown_region"].append(
                (c.name, f"{v} IS NOT NULL AND {t} NOT IN ({_in_list(regions)})")
            )
        if c.type == "enum" and c.reason:
            by_reason[c.reason].append((c.name, f"{v} IS NOT NULL AND {t} NOT IN ({_in_list(c.values)})"))
        if c.not_after:
            by_reason["bad_tenure"].append((c.name, f"{t} > {typed_col(c.not_after)}"))
    by_reason["duplicate_row"].append(("", "first_line < line_no"))
    return [(reason, col, cond) for reason in ROW_REASONS for col, cond in by_reason[reason]]


CHECKED_TABLE = "_ingest_checked"
DUPLICATES_TABLE = "_ingest_duplicates"


def duplicates_sql(lines_sql: str) -> str:
    """CREATE the table (line_no, first_line) of every line that occurs more than once.

    ``lines_sql`` yields (line_no, original_line) of the data lines. ``first_line`` is the
    first line of the same text (its own line_no for the first one); the rules refuse the later
    ones, and the fast path (:func:`fast_insert_sql`) leaves them all to the full checks. Lines
    are grouped by a 64-bit hash first, so only the few lines sharing a hash are compared as text.
    """
    # No CTE for the lines: DuckDB would materialise one read twice; the lines scan cheaply.
    return f"""
        CREATE OR REPLACE TEMP TABLE {DUPLICATES_TABLE} AS
        SELECT line_no, min(line_no) OVER (PARTITION BY original_line) AS first_line
        FROM ({lines_sql})
        WHERE hash(original_line) IN (
            SELECT hash(original_line) FROM ({lines_sql}) GROUP BY 1 HAVING count(*) > 1
        )
    """


def checked_select(
    spec: DropSpec,
    staged_sql: str,
    regions: Sequence[str],
    default_region: str,
    numbers: NumberLookup,
    zone: str,
) -> str:
    """SELECT judging every row of ``staged_sql`` (:func:`staged_select`'s SELECT).

    Columns: line_no; ``reason_key`` ('reason:column', NULL when accepted); ``detail`` and
    ``original_line`` (refused rows only); ``t_<column>`` typed values; ``w_<warning>`` flags
    (see :func:`warnings_sql`). Parameter ``$day`` is the logical date, a day in the carrier's
    time zone ``zone``. Needs
    :data:`DUPLICATES_TABLE` and, for a kind with number columns, the lookup table of
    :mod:`pipelines.ingest.phone_classes`.
    """
    typed, joins = [], []
    for i, c in enumerate(spec.columns):
        typed.append(f"{_typed_expr(c, i)} AS {typed_col(c.name)}")
        if c.type in {"msisdn", "phone"}:
            key = lookup_key_sql(f"r.{raw_col(c.name)}", f'r."k_{c.name}"', numbers)
            joins.append(f"LEFT JOIN {LOOKUP_TABLE} lk{i} ON lk{i}.k = {key}")
    raws = ", ".join(f"r.{raw_col(c.name)}" for c in spec.columns)
    whens = " ".join(
        f"WHEN {cond} THEN {sql_str(reason + ':' + col)}" for reason, col, cond in _rules(spec, regions, zone)
    )
    typed_names = ", ".join(typed_col(c.name) for c in spec.columns)
    flags = "".join(f', ({cond}) AS "w_{name}"' for name, cond in warnings_sql(spec))
    return f"""
        SELECT line_no, reason_key,
               CASE WHEN reason_key IS NOT NULL THEN {_detail_sql(spec, default_region)} END AS detail,
               CASE WHEN reason_key IS NOT NULL THEN original_line END AS original_line,
               {typed_names}{flags}
        FROM (
            SELECT *, CASE {whens} END AS reason_key
            FROM (
                SELECT r.line_no, r.original_line, r.malformed, {raws}, {", ".join(typed)},
                       coalesce(d.first_line, r.line_no) AS first_line
                FROM ({staged_sql}) r {" ".join(joins)}
                LEFT JOIN {DUPLICATES_TABLE} d ON d.line_no = r.line_no
            )
        )
    """


def checks_sql(
    spec: DropSpec,
    staged_sql: str,
    regions: Sequence[str],
    default_region: str,
    numbers: NumberLookup,
    zone: str,
) -> str:
    """CREATE the checked table: :func:`checked_select` of every row of ``staged_sql``."""
    select = checked_select(spec, staged_sql, regions, default_region, numbers, zone)
    return f"CREATE OR REPLACE TEMP TABLE {CHECKED_TABLE} AS {select}"


def insert_accepted_sql(spec: DropSpec, sha256: str, checked: str, where: str) -> str:
    """INSERT into the kind's table the rows of ``checked`` (a checked table, or a parenthesised
    :func:`checked_select`) that meet ``where``. Parameter ``$day`` is the logical date."""
    cols = ", ".join(f'"{c}"' for c in spec.names)
    return f"""
        INSERT INTO {spec.table} (file_sha256, line_no, logical_date, {cols})
        SELECT {sql_str(sha256)}, line_no, $day::DATE, {accepted_select(spec)}
        FROM {checked} WHERE {where}
    """


def fast_insert_sql(
    spec: DropSpec,
    staged_sql: str,
    regions: Sequence[str],
    default_region: str,
    numbers: NumberLookup,
    sha256: str,
    zone: str,
) -> str:
    """INSERT into the kind's table the rows of ``staged_sql`` that pass every rule with no warning.

    The same judgement as :func:`checked_select`, written straight to the table: nothing is
    materialised on the way. Rows it does not take (refused, warned about, or holding a number
    that only a single-value lookup decides) are left for the full checks, which find them as
    the file's lines missing from the table.
    """
    clean = " AND ".join(
        ["reason_key IS NULL", *(f'NOT coalesce("w_{name}", false)' for name, _ in warnings_sql(spec))]
    )
    checked = f"({checked_select(spec, staged_sql, regions, default_region, numbers, zone)})"
    return insert_accepted_sql(spec, sha256, checked, clean)


def _detail_sql(spec: DropSpec, default_region: str) -> str:
    """SQL expression (over the rows being checked) saying why a quarantined row was refused.

    No phone number or contact appears in it: a raw field it quotes is masked
    (``contact_mask``: a shifted column puts a number or an e-mail where a date or a region
    belongs), because the detail stays readable in reports after the sealed original line,
    which keeps it whole, is erased with its key.
    """
    whens = [
        "WHEN 'malformed_line:' THEN malformed",
        "WHEN 'duplicate_row:' THEN 'exact duplicate of line ' || first_line",
    ]
    for c in spec.columns:
        v, t = raw_col(c.name), typed_col(c.name)
        shown = f"'''' || contact_mask(left({v}, 40)) || ''''"
        whens.append(f"WHEN 'missing_field:{c.name}' THEN '{c.name} is empty'")
        if c.type == "msisdn":
            whens.append(
                f"WHEN 'bad_number:{c.name}' THEN '{c.name} is not a valid phone number "
                f"(E.164 or national, default region {default_region})'"
            )
        if c.type == "date":
            whens.append(
                f"WHEN 'bad_date:{c.name}' THEN '{c.name} ' || {shown} || ' is not a real YYYY-MM-DD date'"
            )
        if c.type == "timestamp":
            whens.append(
                f"WHEN 'bad_date:{c.name}' THEN '{c.name} ' || {shown} || "
                "' is not an ISO 8601 time (YYYY-MM-DDTHH:MM:SS, optional fraction and Z or offset)'"
            )
        if c.not_after_logical_date:
            whens.append(
                f"WHEN 'future_date:{c.name}' THEN '{c.name} ' || contact_mask({v}) || ' is after the logical date ' || $day::DATE"
            )
        if c.type == "region":
            whens.append(
                f"WHEN 'unknown_region:{c.name}' THEN 'region ' || {shown} || "
                "' is neither a province code nor a configured policy region'"
            )
        if c.type == "enum" and c.reason:
            allowed = ", ".join(c.values)
            whens.append(
                f"WHEN '{c.reason}:{c.name}' THEN '{c.name} ' || {shown} || ' is not one of {allowed}'"
            )
        if c.not_after:
            whens.append(
                f"WHEN 'bad_tenure:{c.name}' THEN '{c.name} ' || {t} || ' is after {c.not_after} ' || {typed_col(c.not_after)}"
            )
    return f"CASE reason_key {' '.join(whens)} END"


def accepted_select(spec: DropSpec) -> str:
    """SELECT items (over the checked table) of an accepted row, named like the target table."""
    items = []
    for c in spec.columns:
        t = typed_col(c.name)
        if c.type == "language":
            t = f"coalesce({t}, {sql_str(DEFAULT_LANGUAGE)})"
        elif c.type in {"email", "phone"}:
            t = f"contact_seal({t})"  # a contact reaches the state file only sealed
        items.append(f'{t} AS "{c.name}"')
    return ", ".join(items)


def warnings_sql(spec: DropSpec) -> list[tuple[str, str]]:
    """(warning name, condition over the typed row): contacts dropped, languages defaulted.

    The row is real even when its contact is not, so these are counted, not quarantined.
    """
    out = []
    for c in spec.columns:
        v, t = raw_col(c.name), typed_col(c.name)
        if c.type in {"phone", "email"}:
            out.append((f"{c.name}_dropped", f"{v} IS NOT NULL AND {t} IS NULL"))
        if c.type == "language":
            out.append((f"{c.name}_defaulted", f"{t} IS NULL"))
    return out


def day_param(day: dt.date) -> dict[str, Any]:
    return {"day": day.isoformat()}
