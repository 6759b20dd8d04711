"""The compliance report renders in a real browser: headless Debian chromium takes a
screenshot (a PNG with real content, not a blank page) and dumps the DOM after the scripts
ran (plotly drew every chart: ``.main-svg`` elements; no full phone number anywhere).

The state is a synthetic month over five regions made with SQL (figures are checked in
tests/unit/test_report.py; here only the rendering is). Skipped only when chromium is
missing; CI installs it.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from pipelines import db
from pipelines.compliance.report import build_report
from pipelines.config import Settings

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt install chromium)")

D0 = dt.date(2026, 5, 1)
NUMBER = "'+86138' || lpad(CAST(i AS VARCHAR), 8, '0')"  # +8613800000000 .. +8613800000599
REGION = "(['GD', 'BJ', 'SH', 'ZJ', 'JS'])[1 + i % 5]"


def synthetic_month(path: Path) -> None:
    with db.open_state(path) as con:
        con.execute(f"""
            INSERT INTO tenures SELECT 'T' || i, {NUMBER}, DATE '2020-01-01',
                   DATE '{D0}' + CAST(i % 31 AS INTEGER),
                   (['cancel', 'cancel', 'suspend', 'port_out'])[1 + i % 4], 'S' || i, {REGION},
                   NULL, NULL, 'zh-CN', 'snapshot', DATE '{D0}'
            FROM range(600) t(i)""")
        con.execute(f"""
            INSERT INTO releases SELECT {NUMBER}, 'T' || i,
                   DATE '{D0}' + CAST(i % 20 AS INTEGER) - 10 - CAST(i % 4 AS INTEGER),
                   DATE '{D0}' + CAST(i % 20 AS INTEGER) + 10, 1 + i % 3 - (i % 11 = 0)::INTEGER,
                   i % 11 = 0, DATE '{D0}' + CAST(i % 20 AS INTEGER) + 10, {REGION}
            FROM range(400) t(i)""")
        con.execute(f"""
            INSERT INTO reissues SELECT {NUMBER}, 'T' || i, 'N' || i,
                   DATE '{D0}' + CAST(i % 30 AS INTEGER), DATE '{D0}', NULL, i % 25 = 0,
                   DATE '{D0}' + CAST(i % 30 AS INTEGER), {REGION}, 'sha', i
            FROM range(100) t(i)""")
        con.execute(f"""
            INSERT INTO state_history SELECT {NUMBER}, 'T' || i, 'frozen', 'held',
                   DATE '{D0}' + CAST(i % 30 AS INTEGER), DATE '{D0}' + CAST(i % 30 AS INTEGER),
                   'held', NULL, NULL
            FROM range(0, 600, 13) t(i)""")
        con.execute(f"""
            INSERT INTO reminders SELECT 'R' || i, 'T' || (i % 600), {NUMBER.replace("i", "(i % 600)")},
                   DATE '{D0}', 'offset:0', 1, false, (['sms', 'email', 'letter'])[1 + i % 3], 'a',
                   'zh-CN', DATE '{D0}' + CAST(i % 31 AS INTEGER),
                   (['delivered', 'delivered', 'acknowledged', 'failed', 'sent', 'cancelled'])[1 + i % 6],
                   1, NULL, DATE '{D0}', NULL, DATE '{D0}', NULL, false, NULL, DATE '{D0}', 'cancel'
            FROM range(1500) t(i)""")
        con.execute(f"""
            INSERT INTO quarantine SELECT 'f.csv', 'sha', 'lifecycle', DATE '{D0}' + CAST(i AS INTEGER),
                   i, 'ingest', (['bad_number', 'bad_date', 'malformed_line'])[1 + i % 3], NULL, NULL
            FROM range(20) t(i)""")


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[bytes]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        timeout=180,
        check=True,
    )


def _png_rows(data: bytes, max_rows: int) -> tuple[int, int, list[bytes]]:
    """Decode the first ``max_rows`` pixel rows of an 8-bit RGB/RGBA PNG: (width, bpp, rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, bpp = 8, bytearray(), 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, _, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), "expected 8-bit RGB(A)"
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    stride = width * bpp
    raw = zlib.decompressobj().decompress(bytes(idat), (stride + 1) * max_rows)
    rows, prev = [], bytearray(stride)
    for y in range(len(raw) // (stride + 1)):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], (prev[x - bpp] if x >= bpp else 0)
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + ((a + b) >> 1)) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    synthetic_month(tmp_path / "state.duckdb")
    with db.open_state(tmp_path / "state.duckdb", read_only=True) as con:
        summary = build_report(con, Settings(), D0, D0 + dt.timedelta(days=30), tmp_path / "report")
    assert summary.headline["released"] == 400
    url = summary.html.resolve().as_uri()

    shot = tmp_path / "shot.png"
    _chromium(f"--screenshot={shot}", "--window-size=1400,3000", url, profile=tmp_path / "profile1")
    data = shot.read_bytes()
    assert len(data) > 100_000, f"screenshot of {len(data)} bytes: the page did not render"
    width, bpp, rows = _png_rows(data, 900)  # headline cards and the first chart
    assert width == 1400 and len(rows) == 900
    colours = {row[x : x + 3] for row in rows[::3] for x in range(0, width * bpp, bpp * 3)}
    assert len(colours) > 40, f"only {len(colours)} colours: a blank or unstyled page"
    assert any(len(set(row)) > 3 for row in rows[600:900]), "no chart drawn below the cards"

    dom = _chromium(
        "--virtual-time-budget=10000", "--dump-dom", url, profile=tmp_path / "profile2"
    ).stdout.decode("utf-8")
    charts = re.findall(r'id="(chart-[a-z]+)"', dom)
    assert charts == ["chart-daily", "chart-funnel", "chart-days", "chart-effective"]
    for chart, body in zip(charts, re.split(r'id="chart-[a-z]+"', dom)[1:], strict=True):
        assert 'class="main-svg"' in body.split("</section>")[0], f"{chart} was not drawn"
    assert "Daily activity per region" in dom and "Reminder funnel" in dom
    assert re.findall(r"\+?(?:86)?1380000\d{4}", dom) == [], "a full phone number in the page"
    assert "138****0000" in dom or "138****0025" in dom  # violations are listed, masked
