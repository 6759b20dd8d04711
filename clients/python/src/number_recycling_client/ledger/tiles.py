"""C2SP tlog-tiles layout: tile coordinates, their paths, and entry bundles.

A tile holds up to 256 consecutive hashes of one level (tile height 8). At level 0 they
are leaf hashes; at level ``l`` each hash is the root of a full tile of level ``l - 1``. The
right-most tiles of a tree are *partial* (``.p/<W>``) and a partial tile exists for every
tree size that got a checkpoint. Entry bundles (``tile/entries/...``) carry the entries of
the matching level-0 tile, each as a big-endian uint16 length and the entry bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from number_recycling_client.errors import FormatError, TerminalError
from number_recycling_client.ledger.merkle import HASH_SIZE

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # hashes in a full tile
ENTRIES = -1  # the pseudo-level of entry bundles
MAX_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF  # a uint16 length prefix

_INDEX_PART = re.compile(r"x\d{3}")
_LAST_PART = re.compile(r"\d{3}")
_DECIMAL = re.compile(r"0|[1-9]\d*")


def encode_index(index: int) -> str:
    """Tile index as zero-padded 3-digit path elements: 1234067 -> ``x001/x234/067``."""
    if index < 0:
        raise TerminalError(f"tile index must be >= 0, got {index}")
    parts = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        parts.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(parts))


@dataclass(frozen=True, order=True)
class Tile:
    """One tile (``level`` 0..63) or entry bundle (``level == ENTRIES``) of width 1..256."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not (self.level == ENTRIES or 0 <= self.level <= MAX_LEVEL):
            raise TerminalError(f"tile level must be 0..{MAX_LEVEL} or ENTRIES, got {self.level}")
        if self.index < 0 or not 1 <= self.width <= TILE_WIDTH:
            raise TerminalError(f"bad tile index {self.index} or width {self.width}")

    @property
    def is_partial(self) -> bool:
        return self.width < TILE_WIDTH

    @property
    def path(self) -> str:
        """The path under the log prefix, e.g. ``tile/0/x001/x234/067.p/5``."""
        level = "entries" if self.level == ENTRIES else str(self.level)
        suffix = f".p/{self.width}" if self.is_partial else ""
        return f"tile/{level}/{encode_index(self.index)}{suffix}"

    @property
    def first_leaf(self) -> int:
        """Index of the first log entry this tile covers."""
        return self.index << (TILE_HEIGHT * (max(self.level, 0) + 1))

    @classmethod
    def parse(cls, path: str) -> Tile:
        """Parse a tile path strictly (no leading zeros, 3-digit groups, ``x`` prefixes)."""
        parts = path.split("/")
        if len(parts) < 3 or parts[0] != "tile":
            raise FormatError(f"{path!r} is not a tile path")
        if parts[1] == "entries":
            level = ENTRIES
        elif _DECIMAL.fullmatch(parts[1]) and int(parts[1]) <= MAX_LEVEL:
            level = int(parts[1])
        else:
            raise FormatError(f"{path!r}: bad tile level {parts[1]!r}")
        rest = parts[2:]
        width = TILE_WIDTH
        if len(rest) >= 2 and rest[-2].endswith(".p"):
            w = rest[-1]
            if not _DECIMAL.fullmatch(w) or not 1 <= int(w) < TILE_WIDTH:
                raise FormatError(f"{path!r}: partial width must be 1..255, got {w!r}")
            width = int(w)
            rest = [*rest[:-2], rest[-2][:-2]]
        if not _LAST_PART.fullmatch(rest[-1]) or not all(_INDEX_PART.fullmatch(p) for p in rest[:-1]):
            raise FormatError(f"{path!r}: bad tile index path")
        index = 0
        for part in rest:
            index = index * 1000 + int(part.lstrip("x"))
        tile = cls(level, index, width)
        if tile.path != path:  # e.g. x000 leading groups
            raise FormatError(f"{path!r} is not in canonical form ({tile.path!r})")
        return tile


def max_tile_bytes(tile: Tile) -> int:
    """The most bytes ``tile``'s file can hold: ``width`` hashes, or ``width`` entries of at most
    ``MAX_ENTRY_SIZE`` each. A reader refuses a larger file before reading it (a hostile mirror)."""
    return tile.width * (2 + MAX_ENTRY_SIZE if tile.level == ENTRIES else 32)


def partial_width(size: int, level: int) -> int:
    """Width of the partial tile at ``level`` for a tree of ``size`` (0: there is none)."""
    return (size >> (TILE_HEIGHT * level)) % TILE_WIDTH


def tile_for(size: int, level: int, index: int) -> Tile:
    """The tile file holding tile ``index`` of ``level`` in a tree of ``size``: full or partial."""
    shift = TILE_HEIGHT * (level + 1)
    if (index + 1) << shift <= size:
        return Tile(level, index)
    width = partial_width(size, level)
    if index != size >> shift or width == 0:
        raise TerminalError(f"tile {index} of level {level} is not part of a tree of size {size}")
    return Tile(level, index, width)


def bundle_for(size: int, index: int) -> Tile:
    """The entry bundle ``index`` (full or partial) of a tree of ``size``."""
    tile = tile_for(size, 0, index)
    return Tile(ENTRIES, tile.index, tile.width)


def tiles_for_size(size: int, *, entries: bool = False) -> list[Tile]:
    """Every tile (and with ``entries``, every bundle) a tree of ``size`` is served as."""
    out: list[Tile] = []
    level = 0
    while level <= MAX_LEVEL and size >> (TILE_HEIGHT * level):
        full = size >> (TILE_HEIGHT * (level + 1))
        out.extend(Tile(level, i) for i in range(full))
        width = partial_width(size, level)
        if width:
            out.append(Tile(level, full, width))
        level += 1
    if entries:
        full = size >> TILE_HEIGHT
        out.extend(Tile(ENTRIES, i) for i in range(full))
        if size % TILE_WIDTH:
            out.append(Tile(ENTRIES, full, size % TILE_WIDTH))
    return out


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """Entry bundle bytes: each entry as uint16 big-endian length then the entry."""
    return b"".join([len(e).to_bytes(2, "big") + e for e in entries])


def decode_bundle(data: bytes, count: int, where: str = "entry bundle") -> list[bytes]:
    """Split a bundle into exactly ``count`` entries; raise :class:`FormatError` otherwise."""
    if count and len(data) >= 2:
        # Fast path for the common case of equal-sized entries (every ledger entry is 50 bytes):
        # compare all length prefixes at once with strided slices instead of a Python loop.
        n = int.from_bytes(data[:2], "big")
        stride = n + 2
        if (
            len(data) == count * stride
            and data[0::stride] == data[0:1] * count
            and data[1::stride] == data[1:2] * count
        ):
            return [data[i + 2 : i + stride] for i in range(0, len(data), stride)]
    out: list[bytes] = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + 2 > end:
            raise FormatError(f"{where}: truncated length prefix of entry {len(out)}")
        n = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + n > end:
            raise FormatError(f"{where}: entry {len(out)} runs past the end of the bundle")
        out.append(data[pos : pos + n])
        pos += n
    if len(out) != count:
        raise FormatError(f"{where}: holds {len(out)} entries, expected {count}")
    return out


def split_hashes(data: bytes, where: str) -> list[bytes]:
    if len(data) % HASH_SIZE:
        raise FormatError(f"{where}: {len(data)} bytes is not a whole number of hashes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
