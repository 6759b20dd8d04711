"""``nrc``: the light client's command line (argparse: the stdlib, no extra dependency).

Errors print one line naming what failed and the next command, never a traceback; a number is
never printed in full (the user typed it; answers show the row's events and dates only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from number_recycling_client.check import check_local
from number_recycling_client.errors import RecycleError
from number_recycling_client.pull import pull
from number_recycling_client.subscriptions import EVENT_TYPES, Subscriptions

TOKEN_ENV = "NRC_TOKEN"  # noqa: S105 - the name of the variable, not a token


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nrc", description="Verify a carrier's recycled-number feed and check numbers."
    )
    sub = p.add_subparsers(dest="command", required=True)
    pl = sub.add_parser("pull", help="fetch the signed feed, verify all of it, then store it")
    pl.add_argument("--from", dest="url", required=True, help="server base URL")
    pl.add_argument("--state", type=Path, required=True, help="directory of the verified copy")
    pl.add_argument("--root", type=Path, help="the carrier's root.json, obtained out of band (first pull)")
    ck = sub.add_parser("check", help="was NUMBER recycled since DATE? (from the verified copy)")
    ck.add_argument("number", help="E.164, e.g. +8613812345678")
    ck.add_argument("--since", type=_date, required=True, help="date the account was bound, YYYY-MM-DD")
    ck.add_argument("--state", type=Path, required=True)
    ck.add_argument("--json", action="store_true")
    sb = sub.add_parser("subscriptions", help="manage event subscriptions (docs/events.md)")
    sb.add_argument("action", choices=("create", "list", "get", "delete"))
    sb.add_argument("--from", dest="url", required=True, help="server base URL")
    sb.add_argument("--sink", help="create: the https URL events are POSTed to")
    sb.add_argument(
        "--type", dest="types", action="append", choices=EVENT_TYPES, help="create: event type (repeat)"
    )
    sb.add_argument("--expires", help="create: RFC 3339 expiry")
    sb.add_argument("--id", help="get/delete: the subscription id")
    return p


def _token() -> str:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise RecycleError(f"set {TOKEN_ENV} to the platform token the carrier gave you")
    return token


def _pull(a: argparse.Namespace) -> None:
    r = pull(a.url, _token(), a.state, a.root)
    if r.up_to_date:
        print(f"up to date at seq {r.to_seq} (root v{r.root_version})", file=sys.stderr)
    else:
        print(
            f"verified and stored seq {r.from_seq + 1}..{r.to_seq}: {r.rows} row(s), "
            f"{r.notices} notice(s), root v{r.root_version}, ledger size {r.checkpoint_size}",
            file=sys.stderr,
        )


def _check(a: argparse.Namespace) -> None:
    got = check_local(a.state, a.number, a.since)
    row = None if got.row is None else {k: v for k, v in got.row.items() if k != "msisdn"}
    if a.json:
        print(
            json.dumps({"recycled": got.recycled, "row": row, "covered_from": got.covered_from}, default=str)
        )
    else:
        print("yes" if got.recycled else "no")
        if row is not None:
            print(
                f"  {row['event']} (seq {row['seq']}): disconnected_on {row['disconnected_on']}, "
                f"released_on {row['released_on']}, reissued_on {row['reissued_on']}"
            )
    if a.since < got.covered_from:
        print(
            f"note: the pulled feed starts on {got.covered_from}; earlier disconnections are not in it",
            file=sys.stderr,
        )


def _subscriptions(a: argparse.Namespace) -> None:
    with Subscriptions(a.url, _token()) as subs:
        if a.action == "create":
            if not a.sink:
                raise RecycleError("create needs --sink https://… (where events are POSTed)")
            out: object = subs.create(a.sink, tuple(a.types or EVENT_TYPES), a.expires)
        elif a.action == "list":
            out = subs.list()
        else:
            if not a.id:
                raise RecycleError(f"{a.action} needs --id; `nrc subscriptions list` shows them")
            out = subs.get(a.id) if a.action == "get" else {"deleted": a.id}
            if a.action == "delete":
                subs.delete(a.id)
    print(json.dumps(out, indent=2))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run = {"pull": _pull, "check": _check, "subscriptions": _subscriptions}[args.command]
    try:
        run(args)
    except RecycleError as exc:
        print(f"nrc {args.command}: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"nrc {args.command}: {exc.strerror or exc} ({exc.filename or ''})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
