"""Tiles: ttnn's TILE layout stores the last two dims of a tensor in 32 x 32 tiles.

One home for that fact. Lowering sizes tensors and sequence shards with it, the simulated mesh refuses what ttnn
refuses with it (a TILE tensor cut between tile rows), and reports count the padding it costs.
"""

from __future__ import annotations

TILE = 32


def tile_up(size: int) -> int:
    """`size` rounded up to whole tiles."""
    return -(-size // TILE) * TILE


def tile_padded(shape) -> tuple:
    """The shape a TILE-layout tensor occupies on device: its last two dims rounded up to whole tiles (a vector
    takes one tile row)."""
    shape = tuple(shape)
    if not shape:
        return (TILE, TILE)
    if len(shape) == 1:
        return (TILE, tile_up(shape[0]))
    return shape[:-2] + tuple(tile_up(d) for d in shape[-2:])
