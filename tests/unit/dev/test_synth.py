"""The synthetic generator: determinism, formats, exact defect truth and consistent lives.

The drop files are read back here with a small, independent tolerant reader (not the
project's ingest), so the truth files are checked against what is really in the bytes.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import phonenumbers
import pytest

from pipelines.dev.synth import (
    LIFECYCLE_COLUMNS,
    REISSUE_COLUMNS,
    SUBSCRIBER_COLUMNS,
    GenSummary,
    generate,
    generate_lifecycle_day,
    valid_mobile_prefixes,
)
from pipelines.errors import ConfigError
from pipelines.numbers import normalise

START = dt.date(2026, 3, 1)
DAYS = 14
ROWS = 150
FREEZE = 4
SUSPEND = 3
PROVINCES = {
    "BJ",
    "TJ",
    "HE",
    "SX",
    "NM",
    "LN",
    "JL",
    "HL",
    "SH",
    "JS",
    "ZJ",
    "AH",
    "FJ",
    "JX",
    "SD",
    "HA",
    "HB",
    "HN",
    "GD",
    "GX",
    "HI",
    "CQ",
    "SC",
    "GZ",
    "YN",
    "XZ",
    "SN",
    "GS",
    "QH",
    "NX",
    "XJ",
}
EVENTS = {"cancel", "suspend", "restore", "port_out", "port_in"}

# kind -> (columns, date column, required columns)
KINDS = {
    "lifecycle": (
        LIFECYCLE_COLUMNS,
        "effective_date",
        ("msisdn", "event", "effective_date", "region", "subscriber_ref"),
    ),
    "reissue": (REISSUE_COLUMNS, "reissue_date", REISSUE_COLUMNS),
    "subscribers": (
        SUBSCRIBER_COLUMNS,
        "tenure_start",
        ("msisdn", "tenure_start", "region", "subscriber_ref"),
    ),
}


def run(out: Path, seed: int = 7, defect_rate: float = 0.05) -> GenSummary:
    return generate(out, START, DAYS, ROWS, seed, defect_rate, freeze_days=FREEZE, suspend_days=SUSPEND)


@pytest.fixture(scope="module")
def drops(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenSummary]:
    out = tmp_path_factory.mktemp("synth")
    return out, run(out)


@dataclass
class Parsed:
    encoding: str
    delimiter: str
    header: list[str]
    rows: int
    reasons: list[tuple[int, str]]  # (line_no, reason) of quarantined lines
    accepted: list[dict[str, str]]  # accepted rows, msisdn normalised to E.164
    fixable: int
    ends_with_newline: bool


def kind_of(name: str) -> str:
    return name.split("_", 1)[0]


def read_drop(path: Path) -> Parsed:
    """Tolerant reader: BOM / UTF-8 / GBK, comma or pipe, classify every data line."""
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        text, encoding = raw[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8-sig"
    else:
        try:
            text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = raw.decode("gbk"), "gbk"
    ends = text.endswith("\n")
    lines = text.split("\n")
    if ends:
        lines.pop()
    delimiter = "|" if "|" in lines[0] else ","
    header = lines[0].split(delimiter)
    columns, date_col, required = KINDS[kind_of(path.name)]
    assert tuple(header) == columns
    idx = {c: i for i, c in enumerate(columns)}
    seen: set[str] = set()
    reasons: list[tuple[int, str]] = []
    accepted: list[dict[str, str]] = []
    fixable = 0
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split(delimiter)
        reason = None
        if len(fields) != len(columns):
            reason = "malformed_line"
        elif line in seen:
            reason = "duplicate_row"
        elif any(fields[idx[c]] == "" for c in required):
            reason = "missing_field"
        elif normalise(fields[0]) is None:
            reason = "bad_number"
        elif not _is_date(fields[idx[date_col]]):
            reason = "bad_date"
        elif fields[idx["region"]] not in PROVINCES:
            reason = "unknown_region"
        elif "event" in idx and fields[idx["event"]] not in EVENTS:
            reason = "unknown_event"
        seen.add(line)
        if reason:
            reasons.append((line_no, reason))
            continue
        row = dict(zip(columns, fields, strict=True))
        e164 = normalise(row["msisdn"])
        assert e164 is not None
        if row["msisdn"] != e164[3:]:
            fixable += 1
        row["raw_msisdn"], row["msisdn"] = row["msisdn"], e164
        accepted.append(row)
    return Parsed(encoding, delimiter, header, len(lines) - 1, reasons, accepted, fixable, ends)


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def truth_of(out: Path, day: dt.date) -> dict[str, object]:
    doc: dict[str, object] = json.loads((out / "truth" / f"{day.isoformat()}.json").read_text("utf-8"))
    return doc


def days() -> list[dt.date]:
    return [START + dt.timedelta(days=i) for i in range(DAYS)]


# --------------------------------------------------------------------------- tests


def test_same_arguments_give_the_same_bytes_and_another_seed_does_not(
    drops: tuple[Path, GenSummary], tmp_path: Path
) -> None:
    out, summary = drops
    again = run(tmp_path / "again")
    assert again == summary
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(
        p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file()
    )
    for rel in files:
        assert (out / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel

    other = run(tmp_path / "other", seed=8)
    name = Path("inbox") / START.isoformat() / f"lifecycle_{START.isoformat()}.csv"
    assert (out / name).read_bytes() != (tmp_path / "other" / name).read_bytes()
    assert other.files != () and other != summary


def test_every_day_has_its_drop_files_with_the_contract_columns(drops: tuple[Path, GenSummary]) -> None:
    out, summary = drops
    for i, day in enumerate(days()):
        names = sorted(p.name for p in (out / "inbox" / day.isoformat()).iterdir())
        kinds = Counter(kind_of(n) for n in names)
        assert kinds["subscribers"] == (1 if i == 0 else 0)
        assert kinds["reissue"] == 1
        assert kinds["lifecycle"] in (1, 2)
        assert all(n.endswith(".csv") and day.isoformat() in n for n in names)
        for name in names:
            parsed = read_drop(out / "inbox" / day.isoformat() / name)
            assert tuple(parsed.header) == KINDS[kind_of(name)][0]
    assert summary.days == DAYS
    assert len(summary.files) == sum(1 for _ in (out / "inbox").rglob("*.csv"))
    snapshot = read_drop(out / "inbox" / START.isoformat() / f"subscribers_{START.isoformat()}.csv")
    assert len(snapshot.accepted) == ROWS * 20


def test_encodings_and_delimiters_vary_as_the_truth_says(drops: tuple[Path, GenSummary]) -> None:
    out, _ = drops
    formats = Counter()
    for day in days():
        truth = truth_of(out, day)
        for name, ft in truth["files"].items():  # type: ignore[attr-defined]
            parsed = read_drop(out / "inbox" / day.isoformat() / name)
            assert (parsed.encoding, parsed.delimiter) == (ft["encoding"], ft["delimiter"]), name
            formats[(ft["kind"], ft["encoding"], ft["delimiter"])] += 1
    assert formats[("lifecycle", "gbk", ",")] >= 2
    assert formats[("lifecycle", "utf-8-sig", ",")] >= 2
    assert formats[("lifecycle", "utf-8", "|")] >= 2
    plain = sum(v for (_, enc, delim), v in formats.items() if (enc, delim) == ("utf-8", ","))
    assert plain > sum(formats.values()) / 2  # most files are plain UTF-8 comma CSV


def test_truth_matches_what_is_in_the_files_line_by_line(drops: tuple[Path, GenSummary]) -> None:
    out, summary = drops
    totals: Counter[str] = Counter()
    defects: Counter[str] = Counter()
    truncated = 0
    for day in days():
        for name, ft in truth_of(out, day)["files"].items():  # type: ignore[attr-defined]
            parsed = read_drop(out / "inbox" / day.isoformat() / name)
            assert parsed.rows == ft["rows"], name
            assert [tuple(q) for q in ft["quarantine_lines"]] == parsed.reasons, name
            assert dict(Counter(r for _, r in parsed.reasons)) == ft["reasons"], name
            assert len(parsed.accepted) == ft["accepted"], name
            assert ft["accepted"] + ft["quarantined"] == ft["rows"], name
            assert parsed.fixable == ft["fixable"], name
            assert ft["fixable"] == sum(
                ft["defects"].get(k, 0) for k in ("fullwidth_digits", "country_prefix", "separators")
            )
            assert (not parsed.ends_with_newline) == ft["truncated_last_line"], name
            truncated += ft["truncated_last_line"]
            totals[ft["kind"]] += ft["rows"]
            defects.update(ft["defects"])
            if ft["kind"] == "lifecycle":
                assert dict(Counter(r["event"] for r in parsed.accepted)) == ft["events"]
    assert dict(totals) == dict(summary.rows)
    assert dict(defects) == dict(summary.defects)
    # Every defect kind shows up in a two-week run at 5%.
    assert set(defects) == {
        "bad_length",
        "fullwidth_digits",
        "country_prefix",
        "separators",
        "bad_date",
        "unknown_region",
        "unknown_event",
        "missing_field",
        "duplicate_row",
        "wrong_field_count",
        "truncated_line",
    }
    assert truncated >= 3
    rows = sum(totals.values())
    injected = sum(defects.values())
    assert 0.03 < injected / rows < 0.07


def test_clean_rows_play_out_consistent_lives(drops: tuple[Path, GenSummary]) -> None:
    """Replay every accepted row through the lifecycle rules a correct engine applies."""
    out, summary = drops
    lives: dict[str, dict[str, object]] = {}
    refs: set[str] = set()
    early_seen = 0
    restores = reissues = late = 0
    for day in days():
        truth = truth_of(out, day)
        early = {e["msisdn"]: e for e in truth["early_reissues"]}  # type: ignore[attr-defined]
        by_kind: dict[str, list[dict[str, str]]] = {"subscribers": [], "reissue": [], "lifecycle": []}
        for name in sorted(truth["files"]):  # type: ignore[call-overload]
            by_kind[kind_of(name)] += read_drop(out / "inbox" / day.isoformat() / name).accepted
        touched = [r["msisdn"] for k in ("reissue", "lifecycle") for r in by_kind[k]]
        assert len(touched) == len(set(touched)), "a number has two events on one day"

        for r in by_kind["subscribers"]:
            assert r["msisdn"] not in lives and r["subscriber_ref"] not in refs
            assert dt.date.fromisoformat(r["tenure_start"]) < START
            refs.add(r["subscriber_ref"])
            lives[r["msisdn"]] = {
                "state": "active",
                "ref": r["subscriber_ref"],
                "start": dt.date.fromisoformat(r["tenure_start"]),
                "last": dt.date.fromisoformat(r["tenure_start"]),
            }

        for r in by_kind["reissue"]:
            life = lives[r["msisdn"]]
            when = dt.date.fromisoformat(r["reissue_date"])
            assert when == day
            since = life["since"]
            assert isinstance(since, dt.date)
            if life["state"] == "cancelled":
                if r["msisdn"] in early:
                    assert when < since + dt.timedelta(days=FREEZE)
                    assert early[r["msisdn"]]["disconnected_on"] == since.isoformat()
                    early_seen += 1
                else:
                    assert when >= since + dt.timedelta(days=FREEZE + 1)
            else:
                assert life["state"] == "suspended"
                assert when >= since + dt.timedelta(days=SUSPEND + FREEZE + 1)
            assert r["subscriber_ref"] not in refs
            refs.add(r["subscriber_ref"])
            life.update(state="active", ref=r["subscriber_ref"], start=when, last=when)
            reissues += 1

        for r in by_kind["lifecycle"]:
            eff = dt.date.fromisoformat(r["effective_date"])
            start = dt.date.fromisoformat(r["tenure_start"])
            assert day - dt.timedelta(days=2) <= eff <= day and start <= eff
            late += eff < day
            event, msisdn = r["event"], r["msisdn"]
            if event == "port_in":
                assert msisdn not in lives and start == eff and r["subscriber_ref"] not in refs
                refs.add(r["subscriber_ref"])
                lives[msisdn] = {"state": "active", "ref": r["subscriber_ref"], "start": start, "last": eff}
                continue
            life = lives[msisdn]
            last = life["last"]
            assert isinstance(last, dt.date) and eff > last, "events of a number go forward in time"
            assert (life["ref"], life["start"]) == (r["subscriber_ref"], start), "same tenure"
            if event == "restore":
                since = life["since"]
                assert isinstance(since, dt.date) and eff > since
                limit = FREEZE if life["state"] == "cancelled" else min(SUSPEND, FREEZE)
                assert life["state"] in ("cancelled", "suspended")
                assert eff < since + dt.timedelta(days=limit), "restore after the freeze/suspension"
                life.update(state="active", last=eff)
                restores += 1
            else:
                assert life["state"] == "active", f"{event} of a number that is {life['state']}"
                state = {"cancel": "cancelled", "suspend": "suspended", "port_out": "ported_out"}[event]
                life.update(state=state, since=eff, last=eff)
    assert early_seen == summary.early_reissues >= 1
    assert reissues == summary.events["reissue"] > 0
    assert restores > 0 and late > 0


def test_numbers_are_valid_cn_mobiles_written_as_national_numbers(drops: tuple[Path, GenSummary]) -> None:
    out, _ = drops
    prefixes = valid_mobile_prefixes()
    assert "138" in prefixes and "199" in prefixes
    assert "146" not in prefixes and "174" not in prefixes  # not (wholly) valid CN mobile ranges
    checked = 0
    lang: Counter[str] = Counter()
    emails = phones = 0
    regions: Counter[str] = Counter()
    for day in days()[:3]:
        for path in sorted((out / "inbox" / day.isoformat()).iterdir()):
            for row in read_drop(path).accepted:
                numbers = [row["raw_msisdn"], row.get("contact_phone", "")]
                if row["raw_msisdn"] != row["msisdn"].removeprefix("+86"):
                    numbers = numbers[1:]  # written in a fixable form on purpose
                for number in filter(None, numbers):
                    parsed = phonenumbers.parse(number, "CN")
                    assert number.isascii() and len(number) == 11 and number[:3] in prefixes
                    assert phonenumbers.is_valid_number(parsed)
                    assert phonenumbers.number_type(parsed) == phonenumbers.PhoneNumberType.MOBILE
                    checked += 1
                if path.name.startswith("subscribers"):
                    lang[row["language"]] += 1
                    emails += "@" in row["contact_email"]
                    phones += row["contact_phone"] != ""
                    regions[row["region"]] += 1
    assert checked > ROWS * 20
    n = sum(lang.values())
    assert set(lang) == {"zh-CN", "en"} and 0.85 < lang["zh-CN"] / n < 0.97
    assert 0.6 < emails / n < 0.8 and 0.5 < phones / n < 0.7
    assert set(regions) <= PROVINCES and len(regions) >= 25
    assert regions["GD"] > 5 * regions["XZ"]


def test_event_mix_is_plausible(drops: tuple[Path, GenSummary]) -> None:
    _, summary = drops
    events = summary.events
    total = sum(v for k, v in events.items() if k != "reissue")
    assert total == DAYS * ROWS
    share = {k: events[k] / total for k in EVENTS}
    assert 0.35 < share["cancel"] < 0.6 and 0.18 < share["suspend"] < 0.32
    assert 0.03 < share["restore"] < 0.15
    assert 0.05 < share["port_out"] < 0.15 and 0.05 < share["port_in"] < 0.2


def test_defects_do_not_change_the_clean_lives(drops: tuple[Path, GenSummary], tmp_path: Path) -> None:
    out, _ = drops
    clean = run(tmp_path, defect_rate=0.0)
    assert clean.defects == {}
    for day in days():
        truth = truth_of(tmp_path, day)
        for name, ft in truth["files"].items():  # type: ignore[attr-defined]
            assert ft["quarantined"] == 0 and ft["fixable"] == 0 and not ft["truncated_last_line"]
            a = read_drop(tmp_path / "inbox" / day.isoformat() / name).accepted
            b = read_drop(out / "inbox" / day.isoformat() / name).accepted
            for row in a + b:
                del row["raw_msisdn"]
            assert a == b, name


def test_big_lifecycle_file_for_the_benchmark(tmp_path: Path) -> None:
    day = dt.date(2026, 5, 4)
    path = tmp_path / f"lifecycle_{day.isoformat()}.csv"
    truth = generate_lifecycle_day(
        path, day, 20_000, 3, 0.03, encoding="gbk", delimiter="|", truncated_last_line=True
    )
    parsed = read_drop(path)
    assert (parsed.encoding, parsed.delimiter) == ("gbk", "|")
    assert parsed.rows == truth.rows and len(parsed.accepted) == truth.accepted == 20_000
    assert parsed.reasons == list(truth.quarantine_lines)
    assert parsed.fixable == truth.fixable > 0 and truth.truncated_last_line
    assert len({r["msisdn"] for r in parsed.accepted}) == 20_000
    assert all(r["effective_date"] <= day.isoformat() for r in parsed.accepted)
    again = tmp_path / "again.csv"
    generate_lifecycle_day(
        again, day, 20_000, 3, 0.03, encoding="gbk", delimiter="|", truncated_last_line=True
    )
    assert again.read_bytes() == path.read_bytes()


def test_a_gbk_export_with_defects_on_is_never_pure_ascii(tmp_path: Path) -> None:
    path = tmp_path / "lifecycle_2026-05-04.csv"
    truth = generate_lifecycle_day(path, dt.date(2026, 5, 4), 50, 1, 1e-9, encoding="gbk")
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")
    assert truth.defects == {"fullwidth_digits": 1} and truth.accepted == truth.rows == 50


def test_regions_can_be_restricted_and_bad_arguments_are_refused(tmp_path: Path) -> None:
    summary = generate(tmp_path, START, 2, 20, 1, 0.0, regions=["NX", "QH"])
    regions = {
        line.split(",")[3]
        for f in summary.files
        if "lifecycle" in f
        for line in (tmp_path / f).read_bytes().decode("gbk").splitlines()[1:]
    }
    assert regions == {"NX", "QH"}
    with pytest.raises(ConfigError, match="unknown region"):
        generate(tmp_path, START, 1, 10, 1, 0.0, regions=["GD", "HK"])
    with pytest.raises(ConfigError, match="defect-rate"):
        generate(tmp_path, START, 1, 10, 1, 1.5)
    with pytest.raises(ConfigError, match="at least 1"):
        generate(tmp_path, START, 0, 10, 1, 0.0)
