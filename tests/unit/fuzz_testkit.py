"""What the fuzz tests share (``tests/unit/<pkg>/test_fuzz_*.py``): byte mutations of a valid
input, hostile JSON, the rule every parser is held to, and the hostile corpus replay.

The rule: a parser a stranger can feed answers with a verdict or a package error
(:class:`~pipelines.errors.RecycleError`); any other exception escapes the ``try`` below and
hypothesis reports it with the smallest input that raises it. Examples worth keeping are saved
in ``<pkg>/vectors/hostile/`` and replayed as plain tests (:func:`corpus`), so they keep
failing loudly if a fix is undone even when hypothesis would not find them again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from pipelines.errors import RecycleError

# Each fuzz test is cheap (microseconds to a few ms an example); these budgets keep the whole
# fuzz set under a minute on two shared cores. ``deadline=None``: a shared CI core stalls.
FAST = {"max_examples": 300, "deadline": None}
MEDIUM = {"max_examples": 100, "deadline": None}

_OPS = ("flip", "insert", "delete", "truncate", "repeat")


def _apply(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for op, at, chunk in ops:
        at = at % (len(out) + 1)
        if op == "flip" and out:
            out[at % len(out)] ^= chunk[0] or 1
        elif op == "insert":
            out[at:at] = chunk
        elif op == "delete":
            del out[at : at + len(chunk)]
        elif op == "truncate":
            del out[at:]
        elif op == "repeat":
            out[at:at] = out[at : at + len(chunk)] * 3
    return bytes(out)


def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` with one to four byte-level edits: flips, insertions, deletions, cuts, repeats."""
    op = st.tuples(
        st.sampled_from(_OPS), st.integers(0, max(len(data), 1)), st.binary(min_size=1, max_size=8)
    )
    return st.lists(op, min_size=1, max_size=4).map(lambda ops: _apply(data, ops))


# JSON values of every kind, nested a few levels; strings include lone surrogates and NULs
# (``st.text`` draws them), integers run past 64 bits.
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def refuses_cleanly(parse: Callable[[], Any]) -> Any:
    """Run ``parse``: its result, or None when it raised a package error (a clean refusal)."""
    try:
        return parse()
    except RecycleError as exc:
        assert str(exc), "a refusal must say why"
        return None


def corpus(folder: Path, prefix: str) -> list[Any]:
    """The saved hostile examples ``<prefix>--<what>.*`` of a package, as pytest params."""
    import pytest

    files = sorted(folder.glob(f"{prefix}--*"))
    assert files, f"no hostile examples {prefix}--* in {folder}"
    return [pytest.param(f.read_bytes(), id=f.name) for f in files]
