"""Sequence parallelism: where to shard the image/video tokens.

The main stream of each attention (the stream whose tokens come from the latent input, ir/tokens.py) is walked
back to where its token dim first appears (a graph input for Flux, the patch embedding for SD3 and Mochi); a
mesh_partition there shards it, and propagation carries the shard forward. Prompt tokens come from the prompt
embeddings and stay replicated, however many there are. Any token count works: each device holds ceil(N / sp)
tokens rounded up to whole tiles (placement.seq_local); the lowering pads at the partition, masks the padding in
attention and slices it off after a gather.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..ir.graph import ModelGraph, shape_of
from ..ir.ops import ATTENTION
from ..ir.tokens import StreamOracle, token_origins
from .placement import seq_local, seq_padded

aten = torch.ops.aten


def main_stream_attentions(mg: ModelGraph) -> list:
    """Attentions whose queries (args[0]; a joint attention's main stream) are latent tokens. Without a latent
    input to tell by, the attentions with the longest query sequence, as a fallback the plan notes."""
    attentions = [n for n in mg.op_nodes() if n.target in ATTENTION]
    if not attentions:
        raise ConfigError("sp: the model has no attention to shard the sequence of")
    oracle = StreamOracle(mg)
    main = [n for n in attentions if oracle.is_main(n.args[0], 2)]
    if main:
        return main
    longest = max(shape_of(n.args[0])[2] for n in attentions)
    mg.notes.append("sp: no attention's queries come from the latent input (the input shaped like the output); "
                    f"sharding the longest query sequence ({longest} tokens) instead")
    return [n for n in attentions if shape_of(n.args[0])[2] == longest]


def sequence_origins(mg: ModelGraph, ways: int) -> dict:
    """Node -> token dim, for every place the main stream's token dim first appears. ways: how many ways the tokens
    are sharded (ring x ulysses in the hybrid)."""
    origins: dict = {}
    seen: set = set()
    lengths = set()
    for node in main_stream_attentions(mg):
        lengths.add(shape_of(node.args[0])[2])
        for arg in node.args[:3]:
            token_origins(arg, 2, origins, seen)
    for n in sorted(lengths):
        if seq_padded(n, ways) != n:
            mg.notes.append(f"sequence sharded {ways} ways: {n} image/video tokens padded to {seq_padded(n, ways)} "
                            f"on device ({seq_local(n, ways)} per device, whole 32-row tiles); attention masks the "
                            "padding (logical_n) and gathers slice it off")
    # A partition along the last (tile-width) dim splits rows of tiles; where a permute next moves the token dim
    # off the end (SD3's [B, D, N] -> [B, N, D]), partition after it instead (same effect downstream).
    for node, t in list(origins.items()):
        users = list(node.users)
        if node.op == "call_function" and t == len(shape_of(node)) - 1 and len(users) == 1 and \
                users[0].target is aten.permute.default and list(users[0].args[1]).index(t) != t:
            del origins[node]
            origins[users[0]] = list(users[0].args[1]).index(t)
    return origins

