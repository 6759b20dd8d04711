"""A night's status tables fit 80 columns: long file names fold instead of two of them both
being cut to ``lifecycl…``, and a failed file's error is printed in full."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from pipelines.nightly.status import render_files

ERROR = "a different file of this name was already ingested; rename it and rerun the day"


def _file(name: str, status: str = "ingested", error: str | None = None) -> dict[str, Any]:
    return {
        "file_name": name,
        "kind": "lifecycle",
        "sha256": "0" * 64,
        "status": status,
        "rows_in": 1_234_567,
        "accepted": 1_234_000,
        "quarantined": 567,
        "quarantined_by_reason": {"bad_number": 500, "malformed_line": 67} if status == "ingested" else {},
        "error": error,
    }


def test_files_fit_80_columns_fold_long_names_and_show_errors() -> None:
    names = [
        "lifecycle_2026-09-02_from_the_bss_export_v1.csv",
        "lifecycle_2026-09-02_from_the_bss_export_v2.csv",
    ]
    report = {"date": "2026-09-02", "files": [_file(names[0]), _file(names[1], "failed", ERROR)]}
    console = Console(width=80, record=True, color_system=None)
    render_files(report, console)
    text = console.export_text()
    table = text.split("└")[0] + "└"
    assert max(len(line) for line in table.splitlines()) <= 80
    assert "…" not in text
    for name in names:  # each whole name is in the table, folded over lines of its cell
        cell = "".join(line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│"))
        assert name in cell
    # Sentences are soft-wrapped (the terminal wraps them), whole on one line here.
    assert f"{names[1]} failed: {ERROR}" in text.splitlines()
    assert f"{names[0]} quarantined: bad_number=500, malformed_line=67" in text.splitlines()
