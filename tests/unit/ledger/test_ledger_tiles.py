"""tlog-tiles paths, partial-tile rules and entry bundles."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from number_recycling_client.ledger.tiles import (
    ENTRIES,
    Tile,
    decode_bundle,
    encode_bundle,
    encode_index,
    tile_for,
    tiles_for_size,
)

from pipelines.errors import FormatError


@pytest.mark.parametrize(
    ("index", "path"),
    [
        (0, "000"),
        (5, "005"),
        (999, "999"),
        (1000, "x001/000"),
        (1234067, "x001/x234/067"),
        (10**9, "x001/x000/x000/000"),
    ],
)
def test_index_paths(index: int, path: str) -> None:
    assert encode_index(index) == path


def test_tile_paths_and_strict_parsing() -> None:
    assert Tile(0, 1234067).path == "tile/0/x001/x234/067"
    assert Tile(2, 5, 17).path == "tile/2/005.p/17"
    assert Tile(ENTRIES, 1234067, 5).path == "tile/entries/x001/x234/067.p/5"
    for tile in [Tile(0, 0), Tile(63, 1234067, 255), Tile(ENTRIES, 7, 1), Tile(1, 1000)]:
        assert Tile.parse(tile.path) == tile
    for bad in [
        "tile/0/67",
        "tile/00/000",
        "tile/64/000",
        "tile/0/x000/067",
        "tile/0/001/067",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/05",
        "tile/0/000.p/",
        "tiles/0/000",
        "tile/entries/000.p/x1",
        "tile/-1/000",
        "tile/0/x1234/567",
    ]:
        with pytest.raises(FormatError):
            Tile.parse(bad)


def test_size_70000_is_the_c2sp_example() -> None:
    tiles = tiles_for_size(70000)
    level0 = [t for t in tiles if t.level == 0]
    assert sum(not t.is_partial for t in level0) == 273
    assert [t for t in level0 if t.is_partial] == [Tile(0, 273, 112)]
    assert [t for t in tiles if t.level == 1] == [Tile(1, 0), Tile(1, 1, 17)]
    assert [t for t in tiles if t.level == 2] == [Tile(2, 0, 1)]
    assert max(t.level for t in tiles) == 2


def test_size_256_has_a_full_tile_and_a_level_1_partial() -> None:
    assert tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles_for_size(256, entries=True)[-1] == Tile(ENTRIES, 0)
    assert tiles_for_size(0) == []
    assert tiles_for_size(1, entries=True) == [Tile(0, 0, 1), Tile(ENTRIES, 0, 1)]


def test_tile_for_picks_full_or_the_sizes_partial() -> None:
    assert tile_for(70000, 0, 5) == Tile(0, 5)
    assert tile_for(70000, 0, 273) == Tile(0, 273, 112)
    assert tile_for(70000, 1, 1) == Tile(1, 1, 17)
    with pytest.raises(Exception, match="not part of a tree"):
        tile_for(70000, 0, 274)


def test_bundles_round_trip_and_reject_damage() -> None:
    entries = [b"", b"a", bytes(range(256)) * 3]
    data = encode_bundle(entries)
    assert data[:2] == b"\x00\x00" and data[2:5] == b"\x00\x01a"
    assert decode_bundle(data, 3) == entries
    for bad, count in [(data[:-1], 3), (data + b"\x00", 3), (data, 2), (data + b"\x00\x05ab", 4)]:
        with pytest.raises(FormatError):
            decode_bundle(bad, count)


@given(st.integers(-1, 63), st.integers(0, 10**12), st.integers(1, 256))
def test_tile_paths_round_trip(level: int, index: int, width: int) -> None:
    tile = Tile(level, index, width)
    assert Tile.parse(tile.path) == tile
