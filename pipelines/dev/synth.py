"""Synthetic nightly drops (``recycle gen``): realistic lives, realistic defects, exact truth.

A small deterministic simulator plays out the lives of a province-weighted population of
Chinese mobile numbers from a go-live snapshot: cancel → freeze → reissue to a new
subscriber, 双停 suspend → restore or stay suspended, port out, port in. Every clean row is
consistent with its number's life so far, so a correct lifecycle engine accepts all of them.

Defect model (documented here because the ingest tests rely on it):

* Each clean row independently carries a defect with probability ``defect_rate``; a row
  carries at most one defect, and a defective row carries exactly one.
* *Fixable* defects (full-width digits, ``+86``/``0086``/``86`` prefixes, spaces or dashes
  inside the number) are written **in place of** the clean row: a good ingest normalises
  the number and accepts the row, so the event is not lost.
* Every other defect is an **extra** row next to the clean row, which is still written
  correctly (a duplicate, or a mutated copy). Quarantining the extra row loses nothing, so
  defects never break the lives of the clean rows. The truncated last line is such an
  extra copy, cut before its last fields, at the end of the file without a newline.
* Expected ingest reasons (``docs/architecture.md``): bad_length → ``bad_number``,
  bad_date → ``bad_date``, unknown_region → ``unknown_region``, unknown_event →
  ``unknown_event``, missing_field (a required field left empty, never anything else wrong)
  → ``missing_field``, duplicate_row → ``duplicate_row``, wrong_field_count and
  truncated_line → ``malformed_line``.
* Some days' lifecycle export is GBK, ``|``-delimited or UTF-8 with a BOM (a weekly
  rhythm). A GBK file with defects on always carries at least one full-width-digit row, so
  it is not pure ASCII and a reader has to detect the encoding.

Ground truth per day goes to ``<out>/truth/<YYYY-MM-DD>.json`` (outside the inbox): per
file its encoding, delimiter, data rows, accepted/quarantined counts, quarantine reasons
with their physical line numbers (header = line 1), defect counts; and the reissues that
came before the freeze was over (``early_reissues``), which the pipeline must flag.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import itertools
import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import phonenumbers

from pipelines.errors import ConfigError
from pipelines.layout import Layout, atomic_write_bytes
from pipelines.numbers import normalise

LIFECYCLE_COLUMNS: tuple[str, ...] = (
    "msisdn",
    "event",
    "effective_date",
    "region",
    "subscriber_ref",
    "tenure_start",
    "contact_email",
    "contact_phone",
    "language",
)
REISSUE_COLUMNS: tuple[str, ...] = ("msisdn", "reissue_date", "region", "subscriber_ref")
SUBSCRIBER_COLUMNS: tuple[str, ...] = (
    "msisdn",
    "tenure_start",
    "region",
    "subscriber_ref",
    "contact_email",
    "contact_phone",
    "language",
)
EVENTS: tuple[str, ...] = ("cancel", "suspend", "restore", "port_out", "port_in")

# Mainland provinces (ISO 3166-2:CN suffixes) weighted by 2020 census population, millions.
REGION_WEIGHTS: Mapping[str, int] = {
    "GD": 126,
    "SD": 101,
    "HA": 99,
    "JS": 85,
    "SC": 84,
    "HE": 75,
    "HN": 66,
    "ZJ": 65,
    "AH": 61,
    "HB": 58,
    "GX": 50,
    "YN": 47,
    "JX": 45,
    "LN": 43,
    "FJ": 41,
    "SN": 40,
    "GZ": 39,
    "SX": 35,
    "CQ": 32,
    "HL": 32,
    "XJ": 26,
    "GS": 25,
    "SH": 25,
    "NM": 24,
    "JL": 24,
    "BJ": 22,
    "TJ": 14,
    "HI": 10,
    "NX": 7,
    "QH": 6,
    "XZ": 4,
}

# Defect kind -> the quarantine reason a correct ingest gives it (None: fixable, accepted).
DEFECT_REASONS: Mapping[str, str | None] = {
    "bad_length": "bad_number",
    "fullwidth_digits": None,
    "country_prefix": None,
    "separators": None,
    "bad_date": "bad_date",
    "unknown_region": "unknown_region",
    "unknown_event": "unknown_event",
    "missing_field": "missing_field",
    "duplicate_row": "duplicate_row",
    "wrong_field_count": "malformed_line",
    "truncated_line": "malformed_line",
}

# The mobile prefixes the brief names; valid_mobile_prefixes() keeps those phonenumbers
# accepts in full (146 and 174 are not, or only in part, valid CN mobile ranges).
_CANDIDATE_PREFIXES: tuple[str, ...] = tuple(
    [str(p) for p in range(130, 140)]
    + ["145", "146", "147"]
    + [str(p) for p in (150, 151, 152, 153, 155, 156, 157, 158, 159, 166)]
    + [str(p) for p in range(170, 179)]
    + [str(p) for p in range(180, 190)]
    + ["191", "193"]
    + [str(p) for p in range(195, 200)]
)

_EVENT_CUM = tuple(itertools.accumulate((45, 25, 10, 10, 10)))
_LATE_RATE = 0.04  # share of BSS rows exported one or two days after they took effect
_EARLY_REISSUE_RATE = 0.01  # share of cancellations whose number is sold before the freeze ends
_ZH_RATE, _EMAIL_RATE, _PHONE_RATE = 0.92, 0.70, 0.60

_SURNAMES = (
    "wang",
    "li",
    "zhang",
    "liu",
    "chen",
    "yang",
    "huang",
    "zhao",
    "wu",
    "zhou",
    "xu",
    "sun",
    "ma",
    "zhu",
    "hu",
    "guo",
    "he",
    "lin",
    "gao",
    "luo",
)
_GIVEN = (
    "wei",
    "fang",
    "na",
    "min",
    "jing",
    "li",
    "qiang",
    "lei",
    "jun",
    "yang",
    "yong",
    "yan",
    "jie",
    "tao",
    "ming",
    "chao",
    "xiu",
    "xia",
    "ping",
    "gang",
    "hua",
    "xin",
)
_DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com", "corp.example.net")

_TO_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
_BAD_REGIONS = ("XX", "ZZ", "QQ", "AA", "99")
_BAD_EVENTS = ("terminate", "reactivate", "transfer", "deactivate", "销户", "停机")


@dataclass(frozen=True)
class _Spec:
    kind: str
    columns: tuple[str, ...]
    date_idx: int
    region_idx: int
    event_idx: int | None
    required: tuple[int, ...]
    defect_kinds: tuple[str, ...]
    defect_cum: tuple[int, ...]


def _spec(kind: str, columns: tuple[str, ...], date_col: str, required: Sequence[str]) -> _Spec:
    weights = {
        "bad_length": 10,
        "fullwidth_digits": 8,
        "country_prefix": 12,
        "separators": 10,
        "bad_date": 10,
        "unknown_region": 8,
        "unknown_event": 8,
        "missing_field": 10,
        "duplicate_row": 12,
        "wrong_field_count": 8,
    }
    if "event" not in columns:
        del weights["unknown_event"]
    return _Spec(
        kind=kind,
        columns=columns,
        date_idx=columns.index(date_col),
        region_idx=columns.index("region"),
        event_idx=columns.index("event") if "event" in columns else None,
        required=tuple(columns.index(c) for c in required),
        defect_kinds=tuple(weights),
        defect_cum=tuple(itertools.accumulate(weights.values())),
    )


# tenure_start, contacts and language are not required: the ingest table allows NULL there
# or may default them, so emptying them would not give a predictable reason.
_LIFECYCLE = _spec(
    "lifecycle",
    LIFECYCLE_COLUMNS,
    "effective_date",
    ("msisdn", "event", "effective_date", "region", "subscriber_ref"),
)
_REISSUE = _spec("reissue", REISSUE_COLUMNS, "reissue_date", REISSUE_COLUMNS)
_SUBSCRIBERS = _spec(
    "subscribers", SUBSCRIBER_COLUMNS, "tenure_start", ("msisdn", "tenure_start", "region", "subscriber_ref")
)


@dataclass(frozen=True)
class FileTruth:
    """What one generated drop file holds and what a correct ingest must make of it."""

    name: str
    kind: str  # lifecycle | reissue | subscribers
    encoding: str  # utf-8 | utf-8-sig (UTF-8 with BOM) | gbk
    delimiter: str  # , or |
    rows: int  # data rows, header excluded, truncated last line included
    accepted: int
    quarantined: int
    reasons: Mapping[str, int]  # expected quarantine reason -> rows
    defects: Mapping[str, int]  # injected defect kind -> rows
    fixable: int  # rows accepted only after number normalisation
    truncated_last_line: bool
    quarantine_lines: tuple[tuple[int, str], ...]  # (physical line, header = 1; reason)
    events: Mapping[str, int]  # accepted rows per lifecycle event (lifecycle files only)
    late_rows: int  # accepted lifecycle rows whose effective_date is before the file's day

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "rows": self.rows,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "reasons": dict(self.reasons),
            "defects": dict(self.defects),
            "fixable": self.fixable,
            "truncated_last_line": self.truncated_last_line,
            "events": dict(self.events),
            "late_rows": self.late_rows,
            "quarantine_lines": [list(q) for q in self.quarantine_lines],
        }


@dataclass(frozen=True)
class GenSummary:
    """What :func:`generate` wrote."""

    days: int
    files: tuple[str, ...]  # drop files, relative to ``out``, sorted
    rows: Mapping[str, int]  # data rows written per file kind
    events: Mapping[str, int]  # accepted lifecycle events per event, plus ``reissue``
    defects: Mapping[str, int]  # injected defects per defect kind
    early_reissues: int  # reissues before the freeze was over (the pipeline must flag them)

    def __str__(self) -> str:
        rows = ", ".join(f"{k} {v:,}" for k, v in sorted(self.rows.items()))
        defects = sum(self.defects.values())
        return (
            f"{self.days} day(s), {len(self.files)} drop files ({rows} rows); "
            f"{defects:,} injected defects; {self.early_reissues} early reissue(s)"
        )


@functools.cache
def valid_mobile_prefixes() -> tuple[str, ...]:
    """Three-digit CN mobile prefixes for which phonenumbers accepts every 11-digit number.

    Validity depends on the 4th and (for 1610/1740) 5th digit, so both ends of each
    4th-digit block are checked.
    """
    keep = []
    for prefix in _CANDIDATE_PREFIXES:
        if all(
            phonenumbers.is_valid_number(phonenumbers.parse(f"{prefix}{d}{tail}", "CN"))
            for d in "0123456789"
            for tail in ("0000000", "9999999")
        ):
            keep.append(prefix)
    return tuple(keep)


@functools.cache
def _iso(ordinal: int) -> str:
    return dt.date.fromordinal(ordinal).isoformat()


# Hot paths draw with ``int(random() * n)``: several times faster than randrange/choice and
# just as deterministic; the bias (n << 2**53) is far below anything a test could see.


def _random_number(rng: random.Random, prefixes: tuple[str, ...]) -> str:
    p, rest = divmod(int(rng.random() * (len(prefixes) * 100_000_000)), 100_000_000)
    return f"{prefixes[p]}{rest:08d}"


def _random_email(rng: random.Random) -> str:
    r = rng.random
    surname = _SURNAMES[int(r() * len(_SURNAMES))]
    given = _GIVEN[int(r() * len(_GIVEN))]
    domain = _DOMAINS[int(r() * len(_DOMAINS))]
    style = int(r() * 4)
    if style == 0:
        return f"{given}.{surname}@{domain}"
    if style == 1:
        return f"{surname}{given}{1 + int(r() * 99)}@{domain}"
    if style == 2:
        return f"{surname}.{given}{1960 + int(r() * 46)}@{domain}"
    return f"{given}{surname[0]}{100 + int(r() * 900)}@{domain}"


def _contacts(rng: random.Random, msisdn: str, prefixes: tuple[str, ...]) -> tuple[str, str, str]:
    email = _random_email(rng) if rng.random() < _EMAIL_RATE else ""
    phone = ""
    if rng.random() < _PHONE_RATE:
        phone = _random_number(rng, prefixes)
        while phone == msisdn:
            phone = _random_number(rng, prefixes)
    lang = "zh-CN" if rng.random() < _ZH_RATE else "en"
    return email, phone, lang


# --------------------------------------------------------------------------- defects


def _fixable_number(kind: str, number: str, rng: random.Random) -> str:
    e164 = "+86" + number
    if kind == "fullwidth_digits":
        candidates = [number.translate(_TO_FULLWIDTH)]
    elif kind == "country_prefix":
        candidates = [rng.choice(("+86", "0086", "86", "+86 ", "+86-")) + number]
    else:
        sep = rng.choice((" ", "-"))
        candidates = [f"{number[:3]}{sep}{number[3:7]}{sep}{number[7:]}"]
    candidates += [f"{number[:3]} {number[3:7]} {number[7:]}", "+86" + number]
    for text in candidates:
        # The shared normaliser is the oracle: a row counted as fixable must be fixable.
        if normalise(text) == e164:
            return text
    return number  # unreachable for valid numbers: "+86<number>" always normalises


def _bad_length_number(number: str, rng: random.Random) -> str:
    cut = rng.randrange(1, 3)
    candidates = [number[:-cut], number + str(rng.randrange(10)), number[:-3], "1" * 5]
    if rng.random() < 0.5:
        candidates[0], candidates[1] = candidates[1], candidates[0]
    for text in candidates:
        if normalise(text) is None:
            return text
    return "1" * 5


def _bad_date(iso: str, rng: random.Random) -> str:
    year = iso[:4] if iso[:4].isdigit() else "2026"
    return rng.choice(
        (
            f"{year}-02-30",
            f"{year}-13-01",
            f"{year}-04-31",
            f"{year}-00-12",
            f"{year}-{iso[5:7] if iso[5:7].isdigit() else '01'}-32",
            "0000-00-00",
            "not-a-date",
            "二月三十日",
        )
    )


def _broken_line(kind: str, row: list[str], spec: _Spec, rng: random.Random, delim: str) -> str:
    bad = list(row)
    if kind == "bad_length":
        bad[0] = _bad_length_number(row[0], rng)
    elif kind == "bad_date":
        bad[spec.date_idx] = _bad_date(row[spec.date_idx], rng)
    elif kind == "unknown_region":
        bad[spec.region_idx] = rng.choice(_BAD_REGIONS)
    elif kind == "unknown_event" and spec.event_idx is not None:
        bad[spec.event_idx] = rng.choice(_BAD_EVENTS)
    elif kind == "missing_field":
        bad[rng.choice(spec.required)] = ""
    elif kind == "wrong_field_count":
        if rng.random() < 0.5:
            bad.append(rng.choice(("", "x", row[-1])))
        else:
            del bad[rng.randrange(len(bad))]
    return delim.join(bad)


def _truncated_line(row: list[str], rng: random.Random, delim: str) -> str:
    # Cut inside a field well before the end so the line always has too few fields.
    keep = rng.randint(1, len(row) - 2)
    partial = row[keep][: rng.randrange(len(row[keep]))] if row[keep] else ""
    return delim.join(row[:keep]) + delim + partial


def _render(
    name: str,
    spec: _Spec,
    rows: list[list[str]],
    rng: random.Random,
    defect_rate: float,
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
    truncate: bool = False,
    day: str = "",
) -> tuple[bytes, FileTruth]:
    """Write ``rows`` (clean, in order) with defects injected; return the bytes and the truth."""
    n = len(rows)
    plan: dict[int, str] = {}
    if defect_rate > 0:
        hits = [i for i in range(n) if rng.random() < defect_rate]
        kinds = rng.choices(spec.defect_kinds, cum_weights=spec.defect_cum, k=len(hits))
        plan = dict(zip(hits, kinds, strict=True))
        # A GBK export that is pure ASCII cannot tell a reader it is GBK; real ones carry
        # full-width digits typed on Chinese IMEs, so make sure one row does.
        if encoding == "gbk" and n and "fullwidth_digits" not in plan.values():
            first_clean = next((i for i in range(n) if i not in plan), None)
            if first_clean is not None:
                plan[first_clean] = "fullwidth_digits"
    join = delimiter.join
    lines = [join(spec.columns)]
    quarantine: list[tuple[int, str]] = []
    defects: Counter[str] = Counter()
    for i, row in enumerate(rows):
        kind = plan.get(i)
        if kind is None:
            lines.append(join(row))
            continue
        defects[kind] += 1
        reason = DEFECT_REASONS[kind]
        if reason is None:
            lines.append(join([_fixable_number(kind, row[0], rng), *row[1:]]))
            continue
        lines.append(join(row))
        lines.append(join(row) if kind == "duplicate_row" else _broken_line(kind, row, spec, rng, delimiter))
        quarantine.append((len(lines), reason))
    truncated = truncate and defect_rate > 0 and n > 0
    if truncated:
        lines.append(_truncated_line(rows[rng.randrange(n)], rng, delimiter))
        quarantine.append((len(lines), "malformed_line"))
        defects["truncated_line"] += 1
    text = "\n".join(lines) + ("" if truncated else "\n")
    events: dict[str, int] = {}
    late = 0
    if spec.event_idx is not None:
        events = dict(sorted(Counter(r[spec.event_idx] for r in rows).items()))
        late = sum(1 for r in rows if r[spec.date_idx] < day) if day else 0
    reasons = Counter(reason for _, reason in quarantine)
    truth = FileTruth(
        name=name,
        kind=spec.kind,
        encoding=encoding,
        delimiter=delimiter,
        rows=len(lines) - 1,
        accepted=n,
        quarantined=len(quarantine),
        reasons=dict(sorted(reasons.items())),
        defects=dict(sorted(defects.items())),
        fixable=sum(v for k, v in defects.items() if DEFECT_REASONS[k] is None),
        truncated_last_line=truncated,
        quarantine_lines=tuple(quarantine),
        events=events,
        late_rows=late,
    )
    return text.encode(encoding), truth


# --------------------------------------------------------------------------- lives

_ACTIVE, _SUSPENDED, _CANCELLED, _PORTED_OUT = "active", "suspended", "cancelled", "ported_out"


class _Life:
    """One number: its current tenure and where it stands."""

    __slots__ = (
        "email",
        "episode",
        "lang",
        "last",
        "msisdn",
        "phone",
        "ref",
        "region",
        "since",
        "start",
        "state",
    )

    def __init__(self, msisdn: str, region: str) -> None:
        self.msisdn = msisdn
        self.region = region
        self.state = _ACTIVE
        self.ref = ""
        self.start = 0  # tenure_start, date ordinal
        self.email = self.phone = ""
        self.lang = "zh-CN"
        self.since = 0  # effective date of the cancel/suspend that ended the tenure
        self.last = 0  # effective date of the number's latest event (strictly increasing)
        self.episode = 0  # bumped by every event: stale schedule entries are ignored

    def row(self, event: str, effective: int) -> list[str]:
        return [
            self.msisdn,
            event,
            _iso(effective),
            self.region,
            self.ref,
            _iso(self.start),
            self.email,
            self.phone,
            self.lang,
        ]


class _Pool:
    """A set with O(1) add, discard and uniform random pick, in deterministic order."""

    __slots__ = ("items", "pos")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.pos: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: str) -> None:
        if item not in self.pos:
            self.pos[item] = len(self.items)
            self.items.append(item)

    def discard(self, item: str) -> None:
        i = self.pos.pop(item, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last] = i

    def pop_random(self, rng: random.Random) -> str:
        item = self.items[rng.randrange(len(self.items))]
        self.discard(item)
        return item


@dataclass
class _Day:
    lifecycle: list[list[str]]
    reissues: list[list[str]]
    early: list[dict[str, str]]


class _Simulator:
    def __init__(
        self,
        rng: random.Random,
        start: int,
        regions: tuple[str, ...],
        weights: tuple[int, ...],
        freeze_days: int,
        suspend_days: int,
    ) -> None:
        self.rng = rng
        self.start = start
        self.regions = regions
        self.region_cum = tuple(itertools.accumulate(weights))
        self.freeze = freeze_days
        self.suspend = suspend_days
        self.prefixes = valid_mobile_prefixes()
        self.lives: dict[str, _Life] = {}
        self.refs: set[str] = set()
        self.active = _Pool()
        self.restorable = _Pool()
        self.reissue_at: dict[int, list[tuple[str, int, bool]]] = {}
        self.expire_at: dict[int, list[tuple[str, int]]] = {}

    def _region(self) -> str:
        return self.regions[bisect.bisect_right(self.region_cum, self.rng.randrange(self.region_cum[-1]))]

    def _new_ref(self) -> str:
        while True:
            ref = f"S{self.rng.randrange(10**10):010d}"
            if ref not in self.refs:
                self.refs.add(ref)
                return ref

    def _new_number(self) -> _Life:
        while True:
            msisdn = _random_number(self.rng, self.prefixes)
            if msisdn not in self.lives:
                life = _Life(msisdn, self._region())
                self.lives[msisdn] = life
                return life

    def _new_tenure(self, life: _Life, start: int) -> None:
        life.ref = self._new_ref()
        life.start = start
        life.email, life.phone, life.lang = _contacts(self.rng, life.msisdn, self.prefixes)
        life.state = _ACTIVE
        life.last = start
        life.episode += 1

    def snapshot(self, size: int) -> list[list[str]]:
        rows = []
        for _ in range(size):
            life = self._new_number()
            self._new_tenure(life, self.start - self.rng.randint(60, 12 * 365))
            self.active.add(life.msisdn)
            rows.append(
                [life.msisdn, _iso(life.start), life.region, life.ref, life.email, life.phone, life.lang]
            )
        rows.sort()
        return rows

    def _effective(self, life: _Life | None, today: int) -> int:
        if self.rng.random() >= _LATE_RATE:
            return today
        eff = today - self.rng.randint(1, 2)
        # A late row must still come after the number's previous event and not before go-live.
        if eff < self.start or (life is not None and eff <= life.last):
            return today
        return eff

    def _schedule(self, table: dict[int, list[Any]], day: int, entry: Any) -> None:
        table.setdefault(day, []).append(entry)

    def _disconnect(self, life: _Life, state: str, eff: int, today: int) -> None:
        life.state, life.since, life.last = state, eff, eff
        life.episode += 1
        rng = self.rng
        if state == _CANCELLED:
            window = self.freeze - 2
            reissue, is_early = eff + self.freeze + rng.randint(1, 10), False
            if self.freeze >= 2 and rng.random() < _EARLY_REISSUE_RATE:
                early = max(today + 1, eff + rng.randint(max(1, self.freeze // 2), self.freeze - 1))
                if early < eff + self.freeze:
                    reissue, is_early = early, True
        else:
            # Restore while still suspended and before any reading of the freeze could be over.
            window = min(self.suspend, self.freeze) - 2
            reissue, is_early = eff + self.suspend + self.freeze + rng.randint(1, 10), False
        self._schedule(self.reissue_at, reissue, (life.msisdn, life.episode, is_early))
        if eff + window >= today + 1:
            self.restorable.add(life.msisdn)
            self._schedule(self.expire_at, eff + window + 1, (life.msisdn, life.episode))

    def day(self, today: int, rows_per_day: int) -> _Day:
        rng = self.rng
        lifecycle: list[list[str]] = []
        reissues: list[list[str]] = []
        early: list[dict[str, str]] = []
        back: list[str] = []  # numbers that become active today, pickable from tomorrow on

        for msisdn, episode in self.expire_at.pop(today, []):
            if self.lives[msisdn].episode == episode:
                self.restorable.discard(msisdn)

        for msisdn, episode, is_early in self.reissue_at.pop(today, []):
            life = self.lives[msisdn]
            if life.episode != episode:
                continue  # restored since, or reissued early already
            self.restorable.discard(msisdn)
            if is_early:
                early.append(
                    {
                        "msisdn": "+86" + msisdn,
                        "disconnected_on": _iso(life.since),
                        "reissue_date": _iso(today),
                    }
                )
            self._new_tenure(life, today)
            reissues.append([msisdn, _iso(today), life.region, life.ref])
            back.append(msisdn)

        kinds = Counter(rng.choices(EVENTS, cum_weights=_EVENT_CUM, k=rows_per_day))
        n_restore = min(kinds["restore"], len(self.restorable))
        n_cancel = kinds["cancel"] + kinds["restore"] - n_restore
        n_suspend, n_port_out = kinds["suspend"], kinds["port_out"]
        # Never drain more than 10% of the active base a day: the rest arrive as port-ins, so
        # a small go-live snapshot is not used up before the first reissues come back.
        cap = len(self.active) // 10
        while n_cancel + n_suspend + n_port_out > cap:
            if n_cancel >= max(n_suspend, n_port_out):
                n_cancel -= 1
            elif n_suspend >= n_port_out:
                n_suspend -= 1
            else:
                n_port_out -= 1
        n_port_in = rows_per_day - n_restore - n_cancel - n_suspend - n_port_out

        for _ in range(n_restore):
            life = self.lives[self.restorable.pop_random(rng)]
            life.state, life.last = _ACTIVE, today
            life.episode += 1
            lifecycle.append(life.row("restore", today))
            back.append(life.msisdn)

        for event, count in (("cancel", n_cancel), ("suspend", n_suspend), ("port_out", n_port_out)):
            for _ in range(count):
                life = self.lives[self.active.pop_random(rng)]
                eff = self._effective(life, today)
                lifecycle.append(life.row(event, eff))
                if event == "port_out":
                    life.state, life.last = _PORTED_OUT, eff
                    life.episode += 1
                else:
                    self._disconnect(life, _CANCELLED if event == "cancel" else _SUSPENDED, eff, today)

        for _ in range(n_port_in):
            life = self._new_number()
            eff = self._effective(None, today)
            self._new_tenure(life, eff)
            lifecycle.append(life.row("port_in", eff))
            back.append(life.msisdn)

        for msisdn in back:
            self.active.add(msisdn)
        lifecycle.sort(key=lambda r: (r[2], r[0]))
        reissues.sort()
        return _Day(lifecycle, reissues, early)


# --------------------------------------------------------------------------- public API


def _lifecycle_format(index: int) -> tuple[str, str]:
    """(encoding, delimiter) of day ``index``'s lifecycle export: a weekly rhythm of BSS quirks."""
    return {1: ("gbk", ","), 3: ("utf-8", "|"), 5: ("utf-8-sig", ",")}.get(index % 7, ("utf-8", ","))


def _resolve_regions(regions: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if regions is None:
        codes = sorted(REGION_WEIGHTS)
    else:
        codes = sorted(set(regions))
        unknown = [c for c in codes if c not in REGION_WEIGHTS]
        if unknown or not codes:
            raise ConfigError(
                f"synthetic data: unknown region code(s) {', '.join(unknown) or '(none given)'}; "
                f"use mainland province codes such as {', '.join(sorted(REGION_WEIGHTS)[:6])}, ..."
            )
    return tuple(codes), tuple(REGION_WEIGHTS[c] for c in codes)


def generate(
    out: Path,
    start: dt.date,
    days: int,
    rows_per_day: int,
    seed: int,
    defect_rate: float,
    *,
    regions: Sequence[str] | None = None,
    freeze_days: int = 90,
    suspend_days: int = 60,
) -> GenSummary:
    """Write ``days`` nightly drops from ``start`` on into ``out/inbox/<date>/`` and truth into ``out/truth/``.

    CLI: ``recycle gen --out DIR --start YYYY-MM-DD --days N --rows-per-day R --seed S
    --defect-rate P --freeze-days F``.

    Day 1 carries ``subscribers_<date>.csv`` (go-live snapshot of max(200, 20 * R) active
    tenures); every day carries ``lifecycle_<date>.csv`` (R clean events, split into
    ``_1``/``_2`` parts on some days) and ``reissue_<date>.csv``. Reissues come
    freeze_days + 1..10 days after a cancel (suspend_days + freeze_days + 1..10 after a
    suspension), except about 1% of cancels whose number is reissued early. Restores come
    within freeze_days - 2 days of a cancel and min(suspend_days, freeze_days) - 2 of a
    suspension, so they are legal under any reading of when a suspension's freeze starts.
    ``defect_rate`` is the chance per clean row of one injected defect (see the module doc).
    ``regions`` restricts the province codes (default: all 31, population-weighted).
    ``suspend_days`` should match the policy the run uses (the demo's is 5).
    Same arguments, same bytes. Write into an empty directory: files an earlier run with
    other arguments left behind are not removed.
    """
    _check_arguments(days, rows_per_day, defect_rate, freeze_days, suspend_days)
    codes, weights = _resolve_regions(regions)
    sim = _Simulator(random.Random(seed), start.toordinal(), codes, weights, freeze_days, suspend_days)
    writer = _DropWriter(out, seed, defect_rate)
    events: Counter[str] = Counter()
    early_total = 0
    for index in range(days):
        day = start + dt.timedelta(days=index)
        truths, simulated = _write_day(writer, sim, index, day, rows_per_day)
        for truth in truths:
            events.update(truth.events)
        events["reissue"] += len(simulated.reissues)
        early_total += len(simulated.early)
        _write_truth(out, day, freeze_days, suspend_days, truths, simulated)

    return GenSummary(
        days=days,
        files=tuple(sorted(writer.files)),
        rows=dict(sorted(writer.rows.items())),
        events=dict(sorted(events.items())),
        defects=dict(sorted(writer.defects.items())),
        early_reissues=early_total,
    )


def _check_arguments(
    days: int, rows_per_day: int, defect_rate: float, freeze_days: int, suspend_days: int
) -> None:
    if days < 1 or rows_per_day < 1:
        raise ConfigError("synthetic data: --days and --rows-per-day must be at least 1")
    if not 0.0 <= defect_rate <= 1.0:
        raise ConfigError(f"synthetic data: --defect-rate {defect_rate} must lie in [0, 1]")
    if freeze_days < 1 or suspend_days < 1:
        raise ConfigError("synthetic data: --freeze-days and suspend_days must be at least 1")


@dataclass
class _DropWriter:
    """Writes the drop files of one :func:`generate` run and tallies them for its summary."""

    out: Path
    seed: int
    defect_rate: float
    files: list[str] = field(default_factory=list)
    rows: Counter[str] = field(default_factory=Counter)
    defects: Counter[str] = field(default_factory=Counter)

    def emit(self, day: dt.date, name: str, spec: _Spec, data: list[list[str]], **fmt: Any) -> FileTruth:
        # Defects draw from their own stream so the clean lives do not depend on defect_rate.
        drng = random.Random(f"{self.seed}/defects/{name}")
        payload, truth = _render(name, spec, data, drng, self.defect_rate, day=day.isoformat(), **fmt)
        path = Layout(self.out).inbox(day) / name
        atomic_write_bytes(path, payload)
        self.files.append(path.relative_to(self.out).as_posix())
        self.rows[spec.kind] += truth.rows
        self.defects.update(truth.defects)
        return truth


def _write_day(
    writer: _DropWriter, sim: _Simulator, index: int, day: dt.date, rows_per_day: int
) -> tuple[list[FileTruth], _Day]:
    """Simulate day ``index`` and write its drops (the go-live snapshot on the first day)."""
    iso = day.isoformat()
    truths: list[FileTruth] = []
    if index == 0:
        snapshot = sim.snapshot(max(200, rows_per_day * 20))
        truths.append(writer.emit(day, f"subscribers_{iso}.csv", _SUBSCRIBERS, snapshot))
    simulated = sim.day(day.toordinal(), rows_per_day)
    encoding, delimiter = _lifecycle_format(index)
    parts = (
        [simulated.lifecycle[0::2], simulated.lifecycle[1::2]]
        if index % 4 == 2 and len(simulated.lifecycle) >= 2
        else [simulated.lifecycle]
    )
    for n, part in enumerate(parts, start=1):
        name = f"lifecycle_{iso}_{n}.csv" if len(parts) > 1 else f"lifecycle_{iso}.csv"
        truths.append(
            writer.emit(
                day,
                name,
                _LIFECYCLE,
                part,
                encoding=encoding,
                delimiter=delimiter,
                truncate=index % 3 == 2 and n == len(parts),
            )
        )
    truths.append(
        writer.emit(day, f"reissue_{iso}.csv", _REISSUE, simulated.reissues, truncate=index % 4 == 3)
    )
    return truths, simulated


def _write_truth(
    out: Path, day: dt.date, freeze_days: int, suspend_days: int, truths: list[FileTruth], simulated: _Day
) -> None:
    """The day's ground truth, ``<out>/truth/<YYYY-MM-DD>.json`` (outside the inbox)."""
    iso = day.isoformat()
    doc = {
        "date": iso,
        "freeze_days": freeze_days,
        "suspend_days": suspend_days,
        "files": {t.name: t.as_dict() for t in truths},
        "reissues": len(simulated.reissues),
        "early_reissues": simulated.early,
    }
    atomic_write_bytes(
        out / "truth" / f"{iso}.json",
        (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"),
    )


def generate_lifecycle_day(
    path: Path,
    day: dt.date,
    rows: int,
    seed: int,
    defect_rate: float,
    *,
    encoding: str = "utf-8",
    delimiter: str = ",",
    truncated_last_line: bool = False,
) -> FileTruth:
    """Write one big ``lifecycle_*`` file quickly (ingest benchmark); return its truth.

    Every row is a different number with a plausible tenure, so no two clean rows collide,
    but the rows do not play out lives: a lifecycle engine will reject many restores and
    reissue-less histories. ``encoding`` is utf-8, utf-8-sig (BOM) or gbk.
    """
    if rows < 1:
        raise ConfigError("synthetic data: rows must be at least 1")
    if encoding not in {"utf-8", "utf-8-sig", "gbk"} or delimiter not in {",", "|"}:
        raise ConfigError("synthetic data: encoding must be utf-8, utf-8-sig or gbk; delimiter , or |")
    rng = random.Random(f"{seed}/lifecycle-day/{day.isoformat()}")
    prefixes = valid_mobile_prefixes()
    codes, weights = _resolve_regions(None)
    region_cum = tuple(itertools.accumulate(weights))
    today = day.toordinal()
    r = rng.random
    block = 100_000_000
    space = len(prefixes) * block
    # Distinct numbers, so no two clean rows collide; a dict keeps first-drawn order.
    drawn: dict[int, None] = {}
    while len(drawn) < rows:
        drawn.update(dict.fromkeys(int(r() * space) for _ in range(rows - len(drawn))))
    numbers = [f"{prefixes[i // block]}{i % block:08d}" for i in drawn]
    events = rng.choices(EVENTS, cum_weights=_EVENT_CUM, k=rows)
    regions = rng.choices(codes, cum_weights=region_cum, k=rows)
    out: list[list[str]] = []
    for msisdn, event, region in zip(numbers, events, regions, strict=True):
        eff = today - 1 - int(r() * 2) if r() < _LATE_RATE else today
        start = eff if event == "port_in" else eff - 60 - int(r() * (12 * 365 - 60))
        email = _random_email(rng) if r() < _EMAIL_RATE else ""
        phone = _random_number(rng, prefixes) if r() < _PHONE_RATE else ""
        out.append(
            [
                msisdn,
                event,
                _iso(eff),
                region,
                f"S{int(r() * 1e10):010d}",
                _iso(start),
                email,
                phone if phone != msisdn else "",
                "zh-CN" if r() < _ZH_RATE else "en",
            ]
        )
    payload, truth = _render(
        path.name,
        _LIFECYCLE,
        out,
        random.Random(f"{seed}/lifecycle-day-defects/{day.isoformat()}"),
        defect_rate,
        encoding=encoding,
        delimiter=delimiter,
        truncate=truncated_last_line,
        day=day.isoformat(),
    )
    atomic_write_bytes(path, payload)
    return truth
