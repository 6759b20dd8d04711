"""Proofs computed from the tiles on disk, and the C2SP ``tlog-proof@v1`` file format.

:class:`TileReader` answers "hash of this complete subtree" by reading the tile that holds
it (a full tile, or the partial tile of the tree size the files were written for) and
hashing the needed slice, so proofs never need the whole tree in memory.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from number_recycling_client.errors import FormatError, LogIntegrityError, TerminalError
from number_recycling_client.ledger.merkle import HASH_SIZE, consistency_path, inclusion_path, perfect_root
from number_recycling_client.ledger.note import b64, b64decode_strict
from number_recycling_client.ledger.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    bundle_for,
    decode_bundle,
    split_hashes,
    tile_for,
)

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64
# The largest real proof: a 64 KiB canonical value in base64, 64 hashes and a checkpoint note
# with up to 100 signatures is under 100 KiB; a larger file is refused before it is parsed.
MAX_PROOF_BYTES = 1 << 20
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class TileReader:
    """Read-only access to the hashes and entries of a tree of ``size`` from its tile files.

    ``size`` must be a size whose partial tiles are on disk: a checkpointed size, or the
    writer's current size. Any smaller tree's nodes can be read through it.
    """

    def __init__(self, ledger_dir: Path, size: int, cache_tiles: int = 64) -> None:
        self.dir = ledger_dir
        self.size = size
        self._cache: OrderedDict[Tile, bytes] = OrderedDict()
        self._cache_tiles = cache_tiles
        self._bundle: tuple[Tile, list[bytes]] | None = None  # the last bundle, decoded

    def _read(self, tile: Tile) -> bytes:
        data = self._cache.get(tile)
        if data is None:
            try:
                data = (self.dir / tile.path).read_bytes()
            except FileNotFoundError as exc:
                raise LogIntegrityError(
                    f"{tile.path} is missing from {self.dir}, but the tree of size {self.size} needs "
                    "it; restore the ledger directory from backup or a mirror"
                ) from exc
            self._cache[tile] = data
            if len(self._cache) > self._cache_tiles:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(tile)
        return data

    def tile_hashes(self, level: int, index: int) -> list[bytes]:
        tile = tile_for(self.size, level, index)
        hashes = split_hashes(self._read(tile), tile.path)
        if len(hashes) != tile.width:
            raise LogIntegrityError(f"{tile.path}: holds {len(hashes)} hashes, expected {tile.width}")
        return hashes

    def node(self, height: int, index: int) -> bytes:
        """Root of the complete subtree ``index`` at ``height`` (see ``merkle.HashReader``)."""
        level, sub = divmod(height, TILE_HEIGHT)
        first = index << sub  # position among the hashes of ``level``
        count = 1 << sub
        if (first + count) << (TILE_HEIGHT * level) > self.size:
            raise TerminalError(f"subtree {index} at height {height} is not complete in size {self.size}")
        hashes = self.tile_hashes(level, first >> TILE_HEIGHT)
        offset = first % TILE_WIDTH
        return perfect_root(hashes[offset : offset + count])

    def entry(self, index: int) -> bytes:
        """The raw bytes of log entry ``index`` from its entry bundle."""
        if not 0 <= index < self.size:
            raise TerminalError(f"entry {index} is not in the ledger (size {self.size})")
        tile = bundle_for(self.size, index >> TILE_HEIGHT)
        if self._bundle is None or self._bundle[0] != tile:
            self._bundle = (tile, decode_bundle(self._read(tile), tile.width, tile.path))
        return self._bundle[1][index % TILE_WIDTH]


def inclusion_proof(reader: TileReader, index: int, size: int) -> list[bytes]:
    """Inclusion proof of entry ``index`` in the tree of ``size`` (<= the reader's size)."""
    if size > reader.size:
        raise TerminalError(f"tree size {size} is beyond the ledger's {reader.size} entries")
    return inclusion_path(reader, index, size)


def consistency_proof(reader: TileReader, old_size: int, new_size: int) -> list[bytes]:
    """Consistency proof from tree ``old_size`` to ``new_size`` (<= the reader's size)."""
    if new_size > reader.size:
        raise TerminalError(f"tree size {new_size} is beyond the ledger's {reader.size} entries")
    return consistency_path(reader, old_size, new_size)


@dataclass(frozen=True)
class TlogProof:
    """A ``c2sp.org/tlog-proof@v1`` file: optional extra data, index, inclusion proof, checkpoint.

    ``checkpoint`` is the signed checkpoint note, verbatim.
    """

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if self.index < 0 or any(len(h) != HASH_SIZE for h in self.hashes):
            raise FormatError("tlog-proof: negative index or a proof hash that is not 32 bytes")
        if len(self.hashes) > MAX_PROOF_HASHES:
            raise FormatError(f"tlog-proof: more than {MAX_PROOF_HASHES} proof hashes")
        if self.extra is not None and not self.extra:
            raise FormatError("tlog-proof: empty extra data must be left out")

    def to_bytes(self) -> bytes:
        lines = [PROOF_HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(b64(h) for h in self.hashes)
        return ("\n".join(lines) + "\n\n").encode("ascii") + self.checkpoint

    @classmethod
    def from_bytes(cls, data: bytes) -> TlogProof:
        """Parse strictly; the result re-serialises to exactly ``data``."""
        if len(data) > MAX_PROOF_BYTES:
            raise FormatError(f"tlog-proof: {len(data)} bytes is larger than any proof ({MAX_PROOF_BYTES})")
        head, sep, checkpoint = data.partition(b"\n\n")
        if not sep or not checkpoint:
            raise FormatError("tlog-proof: no blank line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError as exc:
            raise FormatError("tlog-proof: header lines must be ASCII") from exc
        if lines[0] != PROOF_HEADER:
            raise FormatError(f"tlog-proof: first line must be {PROOF_HEADER!r}")
        pos = 1
        extra: bytes | None = None
        if pos < len(lines) and lines[pos].startswith("extra "):
            extra = b64decode_strict(lines[pos][len("extra ") :], "tlog-proof extra")
            pos += 1
        if pos >= len(lines) or not lines[pos].startswith("index "):
            raise FormatError("tlog-proof: missing 'index <n>' line")
        index_text = lines[pos][len("index ") :]
        if not _DECIMAL.fullmatch(index_text) or len(index_text) > 20:
            raise FormatError("tlog-proof: index must be a decimal without leading zeros")
        hashes = []
        for i, line in enumerate(lines[pos + 1 :]):
            h = b64decode_strict(line, f"tlog-proof hash {i}")
            if len(h) != HASH_SIZE:
                raise FormatError(f"tlog-proof: proof hash {i} is {len(h)} bytes, expected {HASH_SIZE}")
            hashes.append(h)
        proof = cls(int(index_text), tuple(hashes), checkpoint, extra)
        if proof.to_bytes() != data:
            raise FormatError("tlog-proof: not in canonical form")
        return proof
