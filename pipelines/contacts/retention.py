"""Retention by crypto-shredding: contacts erased ``contact_retention_days`` after release.

At release (:func:`reseal_released`, called by the release gate) a tenure's contacts and its
reminders' addresses move to the key of the release day. Each night (:func:`retire_contacts`,
the nightly step ``contacts``) deletes the keys of release days ``contact_retention_days`` old,
and retires the live generation once it is that old: live values are resealed under a new
generation, committed, and only then the old key deleted. So every key that ever sealed a
released contact is gone within ``contact_retention_days`` (+1 night) of its release, including
the copies a DuckDB UPDATE leaves in freed pages; a quarantined line (sealed under the live
generation of its night) within ``contact_retention_days`` (+1 night) of its night. Every retirement and erasure is a row of
``contact_keys`` (the audit record) and a log line.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipelines.contacts.vault import ContactVault, epoch_header, released_epoch
from pipelines.db import Con, transaction
from pipelines.layout import Layout

log = logging.getLogger(__name__)

# The values sealed under a live generation: (table, column, which rows). Drop rows of earlier
# nights are left under the old key on purpose: they were needed for their own night only, so
# the generation's end shreds them too. Quarantined lines likewise: tonight's move with the
# live values (the operator has not seen them yet: the morning's `recycle quarantine list`
# must open them), earlier nights' go with the old key - a quarantined line is readable from
# its night until its generation retires, at most contact_retention_days (+1 night), which is
# the promise "nothing in clear outlives the retention" (docs/drops.md, "Quarantine at rest").
# Moving them too would keep a line up to twice the retention; `recycle quarantine list`
# says how many of a night's lines went with a key, and when (contact_keys).
_LIVE_VALUES = (
    ("tenures", "contact_email", "true"),
    ("tenures", "contact_phone", "true"),
    ("reminders", "address", "true"),
    ("outbox", "address", "true"),
    ("lifecycle_events", "contact_email", "logical_date = $d"),
    ("lifecycle_events", "contact_phone", "logical_date = $d"),
    ("subscriber_rows", "contact_email", "logical_date = $d"),
    ("subscriber_rows", "contact_phone", "logical_date = $d"),
    ("quarantine", "original_line", "logical_date = $d"),
)


@dataclass(frozen=True)
class ContactRetention:
    erased: tuple[str, ...]  # epochs whose key was deleted tonight
    erased_tenures: int  # tenures whose contacts those release-day keys sealed
    retired: str | None  # the live generation moved to the next tonight, if any


def reseal_released(con: Con, day: dt.date, tenure_ids_sql: str) -> None:
    """Move the contacts of the tenures in ``tenure_ids_sql``, released on ``day``, and their
    reminders' addresses under the key of ``day`` (which the retention step erases later)."""
    p = {"e": released_epoch(day)}
    con.execute(
        f"""
        UPDATE tenures SET contact_email = contact_reseal(contact_email, $e),
                           contact_phone = contact_reseal(contact_phone, $e)
        WHERE tenure_id IN ({tenure_ids_sql})
        """,
        p,
    )
    con.execute(
        f"UPDATE reminders SET address = contact_reseal(address, $e) WHERE tenure_id IN ({tenure_ids_sql})", p
    )
    con.execute(
        f"""
        UPDATE outbox SET address = contact_reseal(address, $e) WHERE reminder_id IN (
            SELECT reminder_id FROM reminders WHERE tenure_id IN ({tenure_ids_sql}))
        """,
        p,
    )


def retire_contacts(con: Con, vault: ContactVault, day: dt.date, retention_days: int) -> ContactRetention:
    """The nightly retention step for ``day`` (idempotent: a key erased stays erased)."""
    cutoff = day - dt.timedelta(days=retention_days)
    erased: list[str] = []
    tenures = 0
    with transaction(con):
        live = vault.live_epoch()
        con.execute(
            "INSERT INTO contact_keys SELECT $e, $d, NULL, NULL, NULL "
            "WHERE NOT EXISTS (SELECT 1 FROM contact_keys WHERE epoch = $e)",
            {"e": live, "d": day},
        )
        for epoch in vault.epochs():
            if epoch.startswith("released-") and dt.date.fromisoformat(epoch[9:]) <= cutoff:
                tenures += _erase_released(con, vault, epoch, day)
                erased.append(epoch)
        began = con.execute("SELECT began_logical FROM contact_keys WHERE epoch = $e", {"e": live}).fetchone()
        retired = _rotate(con, vault, live, day) if began and began[0] <= cutoff else None
    # After the commit: a generation's key goes only once its values are sealed under the next.
    for (epoch,) in con.execute(
        "SELECT epoch FROM contact_keys WHERE retired_logical IS NOT NULL AND erased_logical IS NULL"
    ).fetchall():
        vault.erase(epoch)
        con.execute("UPDATE contact_keys SET erased_logical = $d WHERE epoch = $e", {"d": day, "e": epoch})
        log.info("contacts: erased key %s (live generation retired)", epoch)
        erased.append(epoch)
    return ContactRetention(tuple(erased), tenures, retired)


def _erase_released(con: Con, vault: ContactVault, epoch: str, day: dt.date) -> int:
    """Delete the key of one release day; record it with the number of tenures released that day."""
    released_on = dt.date.fromisoformat(epoch[9:])
    row = con.execute("SELECT count(*) FROM releases WHERE released_on = $r", {"r": released_on}).fetchone()
    n = int(row[0]) if row else 0
    vault.erase(epoch)
    con.execute(
        "INSERT INTO contact_keys VALUES ($e, $r, NULL, $d, $n)",
        {"e": epoch, "r": released_on, "d": day, "n": n},
    )
    log.info("contacts: erased key %s (contacts of %d released tenures, crypto-shredded)", epoch, n)
    return n


def _rotate(con: Con, vault: ContactVault, old: str, day: dt.date) -> str:
    """Reseal every live value of ``old`` under the next generation; record ``old`` retired."""
    new = f"live-{int.from_bytes(epoch_header(old)[2:], 'big') + 1}"
    for table, column, rows in _LIVE_VALUES:
        con.execute(
            f"""
            UPDATE {table} SET {column} = contact_reseal({column}, $new)
            WHERE {rows} AND contact_epoch({column}) = $old
            """,
            {"new": new, "old": old} | ({"d": day} if "$d" in rows else {}),
        )
    con.execute("UPDATE contact_keys SET retired_logical = $d WHERE epoch = $e", {"d": day, "e": old})
    con.execute("INSERT INTO contact_keys VALUES ($e, $d, NULL, NULL, NULL)", {"e": new, "d": day})
    log.info("contacts: live generation %s retired, values resealed under %s", old, new)
    return new


@dataclass(frozen=True)
class ClearCopies:
    """What :func:`purge_clear_copies` deleted (relative paths under the data directory)."""

    deleted: tuple[str, ...]


def purge_clear_copies(data_dir: Path, day: dt.date, retention_days: int) -> ClearCopies:
    """Delete the copies that hold contacts in clear once their night is ``retention_days`` old:
    the night's drops (``inbox/<D>/``), its Great Expectations results (``runs/<D>/gx/``, which
    quote refused values) and the print house's letters batch (``outbox/letters/letters_<D>.csv``).

    Sealing the state is worth nothing while the drop it was read from sits beside it: the
    retention promise covers every copy we keep. A night that old is complete (the preflight
    never lets a later night run otherwise); replaying it reads no drops, as a replay must not
    change it. The step's report (``runs/<day>/steps/contacts.json``) records what went."""
    layout = Layout(data_dir)
    cutoff = day - dt.timedelta(days=retention_days)
    paths: list[Path] = []
    for parent, pattern in ((data_dir / "inbox", "*"), (data_dir / "runs", "*/gx")):
        paths += [p for p in sorted(parent.glob(pattern)) if _night_of(p, parent) <= cutoff]
    letters = layout.outbox_dir / "letters"
    paths += [p for p in sorted(letters.glob("letters_*.csv")) if _night_of(p, letters) <= cutoff]
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        log.info(
            "contacts: deleted %s (clear copy older than %d days)", path.relative_to(data_dir), retention_days
        )
    return ClearCopies(tuple(str(p.relative_to(data_dir)) for p in paths))


def _night_of(path: Path, parent: Path) -> dt.date:
    """The night a dated path under ``parent`` belongs to; ``date.max`` (never old) if none."""
    name = path.relative_to(parent).parts[0].removeprefix("letters_").removesuffix(".csv")
    try:
        return dt.date.fromisoformat(name)
    except ValueError:
        return dt.date.max
