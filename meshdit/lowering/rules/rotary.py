"""RoPE as ttnn's rotary op: x * cos + (x @ M) * sin -> ttnn.experimental.rotary_embedding_llama(x, cos, sin, T).

passes/pairs.py turns the pair rotation of diffusers' apply_rotary_emb (channel pairs (x0, x1) -> (-x1, x0)) into
x @ M with a constant [D, D] matrix M. When M is block-diagonal with one 32 x 32 block T repeated along the diagonal
(interleaved pairs never cross a tile), the whole rotation is what ttnn's rotary op computes: it multiplies every
32-wide tile of x by its transformation matrix T, then x * cos + that * sin, in one op instead of four (TT-DiT runs
Mochi's RoPE so). Recognised per device after sharding, from graph structure only:

    add(mul(x, cos), mul(matmul(x, M), sin))          (either operand order, each intermediate read only here)

and emitted when ttnn takes it (rotary_embedding_llama_device_operation.cpp, prefill mode, checked on the real
ttnn 0.81.1 mock): x, cos, sin and T all bfloat16 tiles; x rank 4 [B, H, N, D] with D a multiple of 32 up to 256;
cos and sin [1, 1 or H, N, D]; T [1, 1, 32, 32]. Otherwise (a float32 program, rotate-half RoPE whose M pairs channels
half a head apart) the four ops stay, and the plan's "fused at lowering" line says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from ...ir.graph import is_const
from ...ir.tiles import TILE
from ..builder import Builder
from ..registry import fused_pattern, read_only_by
from ..weights import WeightTransform

aten = torch.ops.aten
MAX_HEAD_DIM = 256  # "Head dim must be less than 256" (the check is <=)
FP32_ACCUMULATION_MAX = 128  # "If head_dim is > 128, fp32_dest_acc_en must be False"


class _TileBlock(WeightTransform):
    """[D, D] block-diagonal matrix -> its first 32 x 32 block as [1, 1, 32, 32]: ttnn's rotary transformation
    matrix, applied to every tile of the head dim."""

    def shape(self, shape):
        return (1, 1, TILE, TILE)

    def values(self, value):
        return value[:TILE, :TILE].reshape(1, 1, TILE, TILE)


TILE_BLOCK = _TileBlock("rotary_tile")


@dataclass
class Rotary:
    x: fx.Node
    cos: fx.Node
    sin: fx.Node
    matrix: fx.Node
    cos_mul: fx.Node  # mul(x, cos): whose decision holds a constant cos table's upload layout
    sin_mul: fx.Node  # mul(x @ M, sin)
    rotation: fx.Node  # matmul(x, M)


def _factors(mul, x_candidate=None):
    """(tensor, table) of a two-tensor mul, in either order; with x_candidate, the one that is it first."""
    if mul.op != "call_function" or mul.target is not aten.mul.Tensor or len(mul.args) != 2 or \
            not all(isinstance(a, fx.Node) for a in mul.args):
        return None
    a, b = mul.args
    if x_candidate is not None:
        return (a, b) if a is x_candidate else (b, a) if b is x_candidate else None
    return a, b


def _match(add) -> Rotary | None:
    """The rotary pattern `add` completes, by structure alone (shapes and dtypes are checked per device later)."""
    if add.target is not aten.add.Tensor or len(add.args) != 2 or add.kwargs.get("alpha", 1) != 1 or \
            not all(isinstance(a, fx.Node) and a.op == "call_function" for a in add.args):
        return None
    for cos_mul, sin_mul in (add.args, add.args[::-1]):
        inner = _factors(sin_mul)
        if inner is None:
            continue
        for rotation, sin in (inner, inner[::-1]):
            if rotation.op != "call_function" or rotation.target is not aten.matmul.default or \
                    not is_const(rotation.args[1]):
                continue
            x = rotation.args[0]
            outer = _factors(cos_mul, x)
            if outer is None or not all(read_only_by(n, r) for n, r in
                                        ((cos_mul, add), (sin_mul, add), (rotation, sin_mul))):
                continue
            return Rotary(x, outer[1], sin, rotation.args[1], cos_mul, sin_mul, rotation)
    return None


def _tile_block_diagonal(b: Builder, matrix: fx.Node) -> str:
    """'' when the constant M is one 32 x 32 block repeated along its diagonal, else why not."""
    value = b.mg.constants[matrix.meta["key"]].value
    d = matrix.meta["val"].shape[-1]
    if value is None:
        return "its rotation matrix has no value at lowering (computed from weights on meta)"
    if tuple(value.shape) != (d, d) or d % TILE:
        return f"its rotation matrix {list(value.shape)} is not square in whole {TILE}-wide tiles"
    block = value[:TILE, :TILE]
    if not torch.equal(value, torch.block_diag(*[block] * (d // TILE))):
        return "its rotation pairs channels across a 32-wide tile (rotate-half RoPE)"
    return ""


def _table_shape(b: Builder, table: fx.Node, reader: fx.Node) -> list:
    """A cos/sin table's per-device shape as `reader` reads it, as rank 4 (leading 1s)."""
    shape = b.arg_local(table, reader)
    return [1] * (4 - len(shape)) + list(shape)


def _refusal(b: Builder, r: Rotary, add: fx.Node) -> str:
    """'' when ttnn's rotary op takes this instance on every device, else why it stays four ops."""
    nodes = (r.x, r.rotation, r.cos_mul, r.sin_mul, add, r.cos, r.sin)
    if any(b.dtype_of(n.meta["val"].dtype, n) != "bfloat16" for n in nodes):
        return "float32 (ttnn's rotary op takes bfloat16 only)"
    if any(b.pending_sum(n) for n in nodes if not is_const(n)):
        return "a pending sum"
    why = _tile_block_diagonal(b, r.matrix)
    if why:
        return why
    x = list(b.local(r.x))
    if len(x) != 4 or x[-1] > MAX_HEAD_DIM:
        return f"its input {x} is not [B, H, N, D] with D <= {MAX_HEAD_DIM}"
    for table, reader in ((r.cos, r.cos_mul), (r.sin, r.sin_mul)):
        shape = _table_shape(b, table, reader)
        if len(shape) != 4 or shape[0] != 1 or shape[1] not in (1, x[1]) or shape[2:] != x[2:]:
            return f"its table {shape} is not [1, 1 or {x[1]}, {x[2]}, {x[3]}] per device"
    if list(b.local(add)) != x:
        return "it broadcasts x"
    return ""


@fused_pattern
def rotary_embeddings(b: Builder, graph: fx.Graph) -> None:
    """Mark every RoPE instance ttnn's rotary op takes: its add lowers to the op, its other nodes emit nothing."""
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        found = _match(node)
        if found is None:
            continue
        why = _refusal(b, found, node)
        if why:
            b.fusions[f"RoPE kept as matmul + elementwise ({why})"] += 1
            continue
        for inner in (found.rotation, found.cos_mul, found.sin_mul):
            b.absorbed[inner] = None  # read only by the pattern's next node, which is absorbed or the add itself
        b.fused[node] = lambda b, r=found: _emit(b, r)


def _table(b: Builder, table: fx.Node, reader: fx.Node):
    value = b.value_or_weight(table, reader)
    shape = _table_shape(b, table, reader)
    if len(table.meta["val"].shape) == 4:
        return value
    # rank 4 by leading 1s: the last two (tiled) dims are unchanged, so ttnn returns a view
    return b.call("ttnn.reshape", (value, shape), shapes=(shape, table.meta["val"].dtype))


def _emit(b: Builder, r: Rotary):
    head_dim = b.local(r.x)[-1]
    accumulate = head_dim <= FP32_ACCUMULATION_MAX
    config = "ROTARY_CONFIG" if accumulate else "ROTARY_CONFIG_WIDE"
    config = b.config(config, "ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.HiFi4, "
                              f"math_approx_mode=False, fp32_dest_acc_en={accumulate}, packer_l1_acc=False)")
    transform = b.weight(r.matrix, TILE_BLOCK, dtype="bfloat16", owner=r.rotation)
    b.fusions["RoPE as ttnn rotary_embedding_llama"] += 1
    return b.call("ttnn.experimental.rotary_embedding_llama",
                  (b.arg(r.x), _table(b, r.cos, r.cos_mul), _table(b, r.sin, r.sin_mul), transform),
                  {"compute_kernel_config": config})
