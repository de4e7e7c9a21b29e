"""Linears, matmuls and norms (a distributed norm where sharding sharded the hidden dim)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...cost.calibration import FITTED
from ...cost.ops import MATMUL_ADDCMUL, addcmul_choice, fidelity_of, linear_choice
from ...ir import matmul as matmul_facts
from ...ir.graph import is_const, normalized_args
from ...ir.tiles import TILE
from ..builder import TTNN_DTYPE, Builder
from ..ccl import all_gather_async
from ..program_ir import Code, WeightRef
from ..registry import lowering
from . import heads
from ..weights import ROW, TRANSPOSE

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
    if bias is not None:
        kwargs["bias"] = b.weight(bias, ROW) if is_const(bias) else b.arg(bias)
    act, activation = fused_activation(b, b.node)
    if act is not None:
        kwargs["activation"] = activation
    kwargs.update(compute_kernel_config=b.config("MATMUL_CONFIG"), dtype=Code(TTNN_DTYPE[b.act_dtype]))
    config = _minimal_config(b, input, weight, weight_value, kwargs)
    if config is not None:
        out = _minimal_matmul(b, input, weight_value, kwargs, config)
    else:
        out = b.call("ttnn.linear", (b.arg(input), weight_value), kwargs)
    if act is not None:
        b.absorbed[act] = out
        b.fusions[f"activation in linear ({activation})"] += 1
    return out


# minimal_matmul's fused activations for ttnn.linear's strings (ir/matmul.py): GELU's parameter is its
# fast-approximation flag, off for torch's erf GELU
MINIMAL_ACTIVATIONS = {"gelu": "ttnn.UnaryWithParam(ttnn.UnaryOpType.GELU, 0.0)",
                       "gelu_tanh": "ttnn.UnaryWithParam(ttnn.UnaryOpType.GELU_TANH)",
                       "silu": "ttnn.UnaryWithParam(ttnn.UnaryOpType.SILU)",
                       "relu": "ttnn.UnaryWithParam(ttnn.UnaryOpType.RELU)"}


@dataclass(frozen=True)
class _Shape:
    """What choosing between the matmul ops needs of one linear: [batch, Mt, Kt] x [Kt, Nt] in tiles, the bytes A,
    the weight and the output move, and the matmul kernel config's fidelity and accumulation."""

    batch: int
    mt: int
    kt: int
    nt: int
    io_bytes: float  # A, the weight and the output
    out_bytes: float
    fidelity: str
    fp32_acc: bool


def _shape(b: Builder, input, n: int, weight_dtype: str) -> _Shape:
    a_shape = b.local(input)
    mt, kt, nt = (math.ceil(d / TILE) for d in (a_shape[-2], a_shape[-1], n))
    batch, act_tile = math.prod(a_shape[:-2]), matmul_facts.TILE_BYTES[b.act_dtype]
    out_bytes = batch * mt * nt * act_tile
    io_bytes = batch * mt * kt * act_tile + kt * nt * matmul_facts.TILE_BYTES[weight_dtype] + out_bytes
    text = b.configs.get("MATMUL_CONFIG") or b.config_texts["MATMUL_CONFIG"]
    return _Shape(batch, mt, kt, nt, io_bytes, out_bytes, fidelity_of(text), "fp32_dest_acc_en=True" in text)


def _config_ref(b: Builder, config: matmul_facts.MinimalConfig) -> Code:
    """The program's MinimalMatmulConfig for `config`, made once per distinct blocking."""
    name = (f"MINIMAL_MATMUL_{config.m_block}_{config.k_block}_{config.n_block}_"
            f"{config.subblock_h}X{config.subblock_w}")
    return b.config(name, config.code())


def _minimal_config(b: Builder, input, weight, weight_value, kwargs) -> matmul_facts.MinimalConfig | None:
    """A minimal_matmul config when TT-DiT's linear (ttnn.experimental.minimal_matmul) is modelled faster than
    ttnn.linear for this linear's shapes on the system's grid (cost/ops.py linear_choice: it folds A's leading dims
    into M and fuses the activation, where ttnn.linear runs the activation as a second op; ttnn.linear's 1-D layout
    keeps more cores busy when M is a few rows); None to keep ttnn.linear. bfloat16 activations with a constant
    weight and bias only: the op's L1 model (ir/matmul.py) was fitted on those."""
    bias = kwargs.get("bias")
    if b.act_dtype != "bfloat16" or b.dtype_of(b.node.meta["val"].dtype) != "bfloat16" or \
            b.dtype_of(input.meta["val"].dtype, input) != "bfloat16" or not is_const(weight) or \
            (bias is not None and not isinstance(bias, WeightRef)):
        return None
    weight_spec = b.weights[weight_value.name].spec
    if len(weight_spec.shape) != 2 or weight_spec.dtype not in matmul_facts.TILE_BYTES:
        return None
    sh = _shape(b, input, weight_spec.shape[-1], weight_spec.dtype)
    config = matmul_facts.minimal_config(sh.mt, sh.kt, sh.nt, weight_spec.dtype,
                                         b.weights[bias.name].spec.dtype if bias is not None else None, sh.fp32_acc)
    faster = linear_choice(b.system, FITTED, sh.fidelity, sh.batch, sh.mt, sh.kt, sh.nt, config.k_block,
                           kwargs.get("activation") is not None, sh.io_bytes, sh.out_bytes)
    return config if faster == "minimal" else None


def _minimal_matmul(b: Builder, input, weight_value, kwargs, config: matmul_facts.MinimalConfig):
    extra = {"bias_tensor": kwargs["bias"]} if "bias" in kwargs else {}
    if "activation" in kwargs:
        extra["fused_activation"] = Code(MINIMAL_ACTIVATIONS[kwargs["activation"]])
    extra.update(config=_config_ref(b, config), compute_kernel_config=kwargs["compute_kernel_config"],
                 dtype=kwargs["dtype"])
    b.fusions["linear as minimal_matmul (TT-DiT's blocking)"] += 1
    return b.call("ttnn.experimental.minimal_matmul", (b.arg(input), weight_value), extra)


def matmul_addcmul(b: Builder, add, lin, mul, residual, gate):
    """The rule emitting residual + gate * linear(x) (rules/modulation.py's gated residual, the linear read only by
    its product with the gate) as one ttnn.experimental.dit_minimal_matmul_addcmul_fused, when ttnn takes it and the
    cost model says it beats the linear and a ttnn.addcmul apart (cost/ops.py addcmul_choice); else None. ttnn takes
    it (ir/matmul.py): bfloat16 activations, residual and output; a constant 2-D weight of the residual's tile size
    (bfloat16: with bfloat8_b weights it stays apart, and the plan says why); a constant bias or none; the gate one
    row of the output's width; the whole sum on each device (not a row-parallel linear's partial sum)."""
    if lin.op != "call_function" or lin.target is not aten.linear.default or b.pending_sum(lin):
        return None
    args = normalized_args(lin)
    x, weight, bias = args["input"], args["weight"], args.get("bias")
    if not is_const(weight) or len(weight.meta["val"].shape) != 2 or (bias is not None and not is_const(bias)):
        return None
    nodes = (x, lin, mul, residual, add)
    if b.act_dtype != "bfloat16" or any(b.dtype_of(n.meta["val"].dtype, n) != "bfloat16" for n in nodes):
        return None
    out = list(b.local(lin))
    row = list(b.arg_local(gate, mul))
    if list(b.local(residual)) != out or not row or row[-1] != out[-1] or math.prod(row[:-1]) != 1:
        return None  # the linear's output broadcast to the residual's shape, or a gate that is not one row
    if b.weight_dtype != "bfloat16":
        b.fusions[f"gated residual kept as linear + addcmul ({b.weight_dtype} weights: ttnn's fused op needs the "
                  "residual's tile size)"] += 1
        return None
    sh = _shape(b, x, out[-1], "bfloat16")
    addcmul = ("bfloat16", b.dtype_of(gate.meta["val"].dtype, gate))  # residual, gate
    bias_dtype = b.act_dtype if bias is not None else None
    config = matmul_facts.minimal_config(sh.mt, sh.kt, sh.nt, "bfloat16", bias_dtype, sh.fp32_acc, addcmul=addcmul)
    grid = b.system.grid
    if matmul_facts.minimal_refusal(config, grid, grid, "bfloat16", bias_dtype, sh.fp32_acc, addcmul=addcmul):
        return None
    if not addcmul_choice(b.system, FITTED, sh.fidelity, sh.batch, sh.mt, sh.kt, sh.nt, config.k_block, sh.io_bytes,
                          sh.out_bytes):
        return None
    return lambda b: _emit_matmul_addcmul(b, lin, x, weight, bias, mul, residual, gate, config)


def _emit_matmul_addcmul(b: Builder, lin, x, weight, bias, mul, residual, gate, config):
    kwargs = {"bias_tensor": b.weight(bias, ROW, owner=lin)} if bias is not None else {}
    kwargs.update(config=_config_ref(b, config), compute_kernel_config=b.config("MATMUL_CONFIG"),
                  dtype=Code(TTNN_DTYPE[b.act_dtype]))
    b.fusions["linear + gated residual as one dit_minimal_matmul_addcmul_fused"] += 1
    weight_value = b.weight(weight, TRANSPOSE, dtype=b.weight_dtype, owner=lin)
    return b.call(MATMUL_ADDCMUL, (b.arg(x), weight_value, 1.0, b.arg(residual), b.value_or_weight(gate, mul)),
                  kwargs)


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
