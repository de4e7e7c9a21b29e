"""adaLN's elementwise work folded into the ops around it, as TT-DiT's blocks do:

    norm(x) * s + shift        (norm without its own weight and bias; s = 1 + scale)
        -> one norm with weight s and bias shift (ttnn's norms, whole or distributed, take computed weights)
    y + g * h                  (the gated residual)
        -> ttnn.addcmul(y, g, h)
        -> one ttnn.experimental.dit_minimal_matmul_addcmul_fused(x, W, 1, y, g, b) when h = linear(x, W, b) and
           ttnn takes it (rules/linear.py matmul_addcmul; TT-DiT's newer blocks do so)

(The 1 of 1 + scale is in its linear's bias already: passes/bias_numbers.py.) Recognised per device after
sharding, from graph structure only. A norm's weight is one row for every token: ttnn
broadcasts row 0 of a tiled weight (layernorm kernels, mul_tiles_bcast_rows), so the fold needs s and shift to
hold one row per device (batch 1 there: a cfg submesh's half, or a batch-1 forward); with several rows the three
ops stay. ttnn.addcmul broadcasts as numpy does (ternary_device_operation.cpp), so the gate may be a row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx

from ...ir.graph import is_const, normalized_args
from ..builder import Builder
from ..registry import claimed, fused_pattern, read_only_by
from . import linear as linear_rules

aten = torch.ops.aten


def _node_args(node):
    return len(node.args) == 2 and all(isinstance(a, fx.Node) for a in node.args)


def _whole(b: Builder, *nodes) -> bool:
    """No pending sum among them, and one dtype (not across the float32 region's edge)."""
    if any(b.pending_sum(n) for n in nodes):
        return False
    return len({b.dtype_of(n.meta["val"].dtype, n) for n in nodes}) == 1


@dataclass
class ModulatedNorm:
    norm: fx.Node
    mul: fx.Node
    scale: fx.Node  # 1 + scale
    shift: fx.Node


def _modulated_norm(b: Builder, add) -> ModulatedNorm | None:
    if add.target is not aten.add.Tensor or not _node_args(add) or add.kwargs.get("alpha", 1) != 1:
        return None
    for mul, shift in (add.args, add.args[::-1]):
        if mul.op != "call_function" or mul.target is not aten.mul.Tensor or not _node_args(mul):
            continue
        for norm, scale in (mul.args, mul.args[::-1]):
            if norm.op != "call_function" or norm.target not in (aten.layer_norm.default, aten.rms_norm.default):
                continue
            has_affine = any(a is not None for a in norm.args[2:4 if norm.target is aten.layer_norm.default else 3])
            if has_affine or any(k in norm.kwargs for k in ("weight", "bias")):
                continue
            if not (read_only_by(norm, mul) and read_only_by(mul, add) and not claimed(b, norm, mul, add)):
                continue
            if not _whole(b, norm, mul, add) or is_const(scale) or is_const(shift):
                continue
            width = b.local(add)
            rows = [list(b.arg_local(scale, mul)), list(b.arg_local(shift, add))]
            if b.local(norm) != width or any(r[-1] != width[-1] or math.prod(r[:-1]) != 1 for r in rows):
                continue  # not one row for every token (several batch rows per device, or a broadcast of x)
            return ModulatedNorm(norm, mul, scale, shift)
    return None


def _gated_residual(b: Builder, add):
    """(residual, gate, value) of add(residual, mul(gate, value)) that ttnn.addcmul computes; else None."""
    if add.target is not aten.add.Tensor or not _node_args(add) or add.kwargs.get("alpha", 1) != 1:
        return None
    out = list(b.local(add))
    for mul, residual in (add.args, add.args[::-1]):
        if mul.op != "call_function" or mul.target is not aten.mul.Tensor or not _node_args(mul):
            continue
        if not (read_only_by(mul, add) and not claimed(b, mul, add)) or is_const(residual):
            continue
        if not _whole(b, mul, add, residual, *(a for a in mul.args if not is_const(a))):
            continue
        shapes = [list(b.arg_local(a, mul)) for a in mul.args]
        if list(b.local(residual)) != out or any(len(s) > len(out) for s in shapes):
            continue
        if all(all(d in (1, o) for d, o in zip(s[::-1], out[::-1])) for s in shapes):
            return residual, mul
    return None


@fused_pattern
def modulation(b: Builder, graph: fx.Graph) -> None:
    """Fold each modulated norm into its norm, then each remaining gated residual into one ttnn.addcmul (a norm's
    fold saves two ops, addcmul one: where both match the same add, the norm's wins)."""
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        found = _modulated_norm(b, node)
        if found is not None:
            b.absorbed[found.norm] = None
            b.absorbed[found.mul] = None
            b.fused[node] = lambda b, m=found: _emit_norm(b, m)
    for node in graph.nodes:
        if node.op != "call_function" or node in b.fused:
            continue
        found = _gated_residual(b, node)
        if found is None:
            continue
        residual, mul = found
        b.absorbed[mul] = None
        b.fused[node] = _with_linear(b, node, residual, mul) or (lambda b, r=found: _emit_addcmul(b, *r))


def _with_linear(b: Builder, add, residual, mul):
    """The rule computing the gated residual together with the linear whose output the gate multiplies (one
    dit_minimal_matmul_addcmul_fused, rules/linear.py), the linear then emitting nothing; None to keep them apart."""
    for value, gate in (mul.args, mul.args[::-1]):
        if read_only_by(value, mul) and not claimed(b, value):
            rule = linear_rules.matmul_addcmul(b, add, value, mul, residual, gate)
            if rule is not None:
                b.absorbed[value] = None
                return rule
    return None


def _emit_norm(b: Builder, m: ModulatedNorm):
    args = normalized_args(m.norm)
    fn = "ttnn.layer_norm" if m.norm.target is aten.layer_norm.default else "ttnn.rms_norm"
    eps = args.get("eps")
    if eps is None:  # torch's default (rms_norm's None: the dtype's machine epsilon)
        eps = torch.finfo(m.norm.meta["val"].dtype).eps if fn == "ttnn.rms_norm" else 1e-5
    b.fusions["adaLN modulation in its norm"] += 1
    return linear_rules.norm(b, fn, args["input"], m.scale, m.shift, eps, node=m.norm)


def _emit_addcmul(b: Builder, residual, mul):
    b.fusions["gated residual as addcmul"] += 1
    gate, value = mul.args
    return b.call("ttnn.addcmul", (b.arg(residual), b.value_or_weight(gate, mul), b.value_or_weight(value, mul)))
