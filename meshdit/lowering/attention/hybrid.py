"""Hybrid ulysses x ring (USP): the ulysses all-to-all on one mesh axis around ring attention on the other.

    q, k, v  [B, H, N/(r*u), D] -> all_to_all on the ulysses axis -> [B, H/u, N/r, D]
             ring attention on the ring axis over H/u heads: K/V [B, H/u, N/r, D] rotate, buffers [B, H/u, N, D]
    output   [B, H/u, N/r, D] -> all_to_all back -> [B, H, N/(r*u), D]
Tokens nest ring-outer: device (ring r, ulysses u) holds chunk r * ulysses + u, so after the all-to-all each
device holds its ring position's tokens. The padded tokens stay: the ring masks keys past logical_n, and the
output keeps whole-tile shards.
"""

from __future__ import annotations

from ..builder import Builder
from . import ring, ulysses
from .common import AttentionCall


def lower(b: Builder, call: AttentionCall, plan):
    shards = ulysses.scatter_heads(b, call, plan.ulysses_axis)
    out, joint_out, _lse = ring.ring_attention(b, call, plan.ring_axis, shards.values, shards.scale, shards.shapes)
    return ulysses.gather_heads(b, call, shards, out, joint_out)
