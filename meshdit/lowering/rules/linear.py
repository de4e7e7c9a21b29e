"""Linears, matmuls and norms (a distributed norm where sharding sharded the hidden dim)."""

from __future__ import annotations

import math

import torch

from ...ir.graph import is_const
from ...ir.tiles import TILE
from ..builder import TTNN_DTYPE, Builder
from ..ccl import all_gather_async
from ..program_ir import Code
from ..registry import lowering
from . import heads
from ..weights import ROW, TRANSPOSE, row_plus

aten = torch.ops.aten

# Activations ttnn.linear applies to its output in the matmul kernel (`activation=`), by what torch computes. The
# strings are ttnn 0.81.1's (unary_op_utils string_to_unary_with_param): "gelu" is GELU with the accurate (erf)
# kernel, "gelu_tanh" is GELU_TANH (torch's tanh form); "gelu_approx" (the fast kernel ttnn.gelu's
# fast_and_approximate_mode runs) is not used, so a fused linear computes what the model's activation does.
FUSED_ACTIVATIONS = {(aten.gelu.default, "none"): "gelu", (aten.gelu.default, "tanh"): "gelu_tanh",
                     (aten.silu.default, None): "silu", (aten.relu.default, None): "relu"}


def fused_activation(b: Builder, lin):
    """(activation node, ttnn activation string) when the linear's output goes only to an activation ttnn.linear
    can apply in its kernel, else (None, None). Not when the output is a partial sum (a row-parallel linear: the
    activation comes after the reduction, which is a graph node between them anyway) or when the two are computed
    in different dtypes (the float32 region)."""
    users = list(lin.users)
    if len(users) != 1 or users[0].args[0] is not lin:
        return None, None
    act = users[0]
    approximate = act.kwargs.get("approximate", act.args[1] if len(act.args) > 1 else "none") \
        if act.target is aten.gelu.default else None
    name = FUSED_ACTIVATIONS.get((act.target, approximate))
    if name is None or b.pending_sum(lin):
        return None, None
    if b.dtype_of(lin.meta["val"].dtype, lin) != b.dtype_of(act.meta["val"].dtype, act):
        return None, None
    return act, name


def scalar_after(b: Builder, lin, bias):
    """(add node, number, view) when the linear's only reader adds a number to its output, directly or through one
    reshape (adaLN's 1 + scale[:, None]), which its constant bias can hold instead; else (None, None, None). Not on a
    pending sum (row-parallel: no bias there anyway), across the float32 region's edge, or where another fused
    pattern claimed the add."""
    none = None, None, None
    if bias is None or not is_const(bias) or len(lin.users) != 1:
        return none
    add, view = next(iter(lin.users)), None
    if add.target is aten.reshape.default and len(add.users) == 1:
        add, view = next(iter(add.users)), add
    if add.target is not aten.add.Tensor or len(add.args) != 2 or add.kwargs.get("alpha", 1) != 1 or \
            add in b.fused or add in b.absorbed:
        return none
    number = add.args[1] if add.args[0] is (view or lin) else add.args[0]
    if not isinstance(number, (int, float)) or isinstance(number, bool):
        return none
    if b.pending_sum(lin) or b.dtype_of(lin.meta["val"].dtype, lin) != b.dtype_of(add.meta["val"].dtype, add):
        return none
    return add, float(number), view


def _holding(b: Builder, value, node):
    b.holds[value.name] = node.name  # the reshape's output holds the add's value (check.py compares it so)
    return value


@lowering(aten.linear.default)
def linear(b: Builder, input, weight, bias):
    fused = heads.fused_qkv(b, input, weight, bias)
    if fused is not None:
        return fused
    kwargs = {}
    if is_const(weight):
        weight_value = b.weight(weight, TRANSPOSE, dtype=b.weight_dtype)
    else:
        weight_value = b.arg(weight)
        kwargs["transpose_b"] = True
    add, number, view = scalar_after(b, b.node, bias)
    if add is not None:
        kwargs["bias"] = b.weight(bias, row_plus(number))
    elif bias is not None:
        kwargs["bias"] = b.weight(bias, ROW) if is_const(bias) else b.arg(bias)
    act, activation = fused_activation(b, b.node)
    if act is not None:
        kwargs["activation"] = activation
    kwargs.update(compute_kernel_config=b.config("MATMUL_CONFIG"), dtype=Code(TTNN_DTYPE[b.act_dtype]))
    out = b.call("ttnn.linear", (b.arg(input), weight_value), kwargs)
    if add is not None:
        if view is None:
            b.absorbed[add] = out
        else:  # the add is the reshape's value: lowered after it, it emits nothing
            b.holds[out.name] = None  # the linear plus the number: no graph node's value
            b.fused[add] = lambda b, view=view, add=add: _holding(b, b.arg(view), add)
        b.fusions["number added into the linear's bias"] += 1
    if act is not None:
        b.absorbed[act] = out
        b.fusions[f"activation in linear ({activation})"] += 1
    return out


@lowering(aten.matmul.default, aten.mm.default, aten.bmm.default)
def matmul(b: Builder, input, other=None, mat2=None):
    second = mat2 if other is None else other  # matmul names it `other`, mm and bmm `mat2`
    return b.call("ttnn.matmul", (b.value_or_weight(input), b.value_or_weight(second)),
                  {"compute_kernel_config": b.config("MATMUL_CONFIG")})


@lowering(aten.layer_norm.default)
def layer_norm(b: Builder, input, normalized_shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
    return norm(b, "ttnn.layer_norm", input, weight, bias, eps)


@lowering(aten.rms_norm.default)
def rms_norm(b: Builder, input, normalized_shape, weight=None, eps=None):
    eps = torch.finfo(input.meta["val"].dtype).eps if eps is None else eps  # torch's default
    return norm(b, "ttnn.rms_norm", input, weight, None, eps)


def norm(b: Builder, fn: str, x, weight, bias, eps, node=None):
    """`fn` (ttnn.layer_norm or ttnn.rms_norm) of x; distributed where sharding sharded the norm `node`'s hidden dim
    (by default the node being lowered). weight and bias: constants, or computed rows (adaLN's modulation, folded
    in by rules/modulation.py)."""
    kwargs = {"epsilon": float(eps)}
    if weight is not None:
        kwargs["weight"] = b.weight(weight, ROW) if is_const(weight) else b.arg(weight)
    if bias is not None:
        kwargs["bias"] = b.weight(bias, ROW) if is_const(bias) else b.arg(bias)
    kwargs["compute_kernel_config"] = b.config("NORM_CONFIG")
    axis = b.decision(node).norm_axis
    if axis is None:
        return b.call(fn, (b.arg(x),), kwargs)
    # Hidden dim sharded over `axis`: local statistics (one tile per statistic: sum(x) and sum(x^2) for a layer
    # norm, sum(x^2) for an RMS norm), all-gathered over the axis (the statistics only, not the tensor), applied.
    # ttnn's distributed norm halves index dims 0..3 of their input: they take rank-4 tensors only, so other ranks
    # go through a rank-4 view (leading dims merged or padded with 1s) and back.
    local = list(b.local(x))
    dtype = x.meta["val"].dtype
    value, shape = b.arg(x), local
    if len(local) != 4:
        lead = local[:-3] if len(local) > 4 else [1] * (4 - len(local))
        shape = [math.prod(lead)] + local[-3:] if len(local) > 4 else lead + local
        value = b.call("ttnn.reshape", (value, shape), shapes=(shape, dtype))
    width = (2 if fn == "ttnn.layer_norm" else 1) * TILE
    stats = b.call(f"{fn}_pre_all_gather", (value,), {"dtype": Code("ttnn.float32"),
                                                       "compute_kernel_config": b.config("NORM_CONFIG")},
                   shapes=(shape[:-1] + [width], torch.float32), dtype="float32")
    # [.., width] per device -> [.., width x devices]
    stats = all_gather_async(b, stats, 3, axis, shapes=(shape[:-1] + [width * b.mesh_shape[axis]], torch.float32),
                             dtype="float32")
    out = b.call(f"{fn}_post_all_gather", (value, stats), kwargs, shapes=(shape, dtype))
    return out if shape == local else b.call("ttnn.reshape", (out, local))
