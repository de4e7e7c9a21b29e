"""Lower a ModelGraph to a ProgramIR: one rule per canonical op, each emitting ttnn calls.

Rules see FX nodes and emit ops through the Builder, which owns naming, dtypes and weights. An op without a rule
runs on host (torch) when host fallback is allowed: it is emitted as `host_call("aten....", ...)` and counted in
the coverage report; otherwise lowering stops with UnsupportedOpError naming the node and its source line.

Dtypes: every floating activation has the program's activation dtype (float32 or bfloat16); matmul weights have
the weight dtype (bfloat16 or bfloat8_b); other constants (norm weights, biases, tables) the activation dtype.
float64 computations in the model (rotary tables) run in the activation dtype: the device has no float64.
Precision-sensitive subgraphs stay float32 whatever the activation dtype: the arguments of sin/cos (timestep and
position embeddings, where t * 1000 * freq reaches 1e6 and bfloat16 keeps 3 significant digits) are computed in
float32 back to the program inputs and constants they come from; sin/cos results are cast to the activation dtype.
"""

from __future__ import annotations

import operator
import struct
import warnings

import torch
import torch.fx as fx

from ..errors import UnsupportedOpError, node_location
from ..ir import ops as mdops
from ..ir.graph import ModelGraph, is_const
from ..sharding.placement import R, Shard, local_shape
from .buffers import assign_gather_buffers
from ..ir.tiles import TILE
from .program_ir import Code, InputSpec, Op, ProgramIR, Ref, TensorSpec, WeightRef, WeightSpec

aten = torch.ops.aten

TTNN_DTYPE = {"float32": "ttnn.float32", "bfloat16": "ttnn.bfloat16", "bfloat8_b": "ttnn.bfloat8_b",
              "int32": "ttnn.int32", "uint32": "ttnn.uint32"}

# Compute kernel configs as TT-DiT sets them: matmuls HiFi2 with fp32 accumulation, norms HiFi4.
CONFIGS = {
    "MATMUL_CONFIG": "ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.HiFi2, "
                     "math_approx_mode=False, fp32_dest_acc_en=True, packer_l1_acc=True)",
    "NORM_CONFIG": "ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.HiFi4, "
                   "math_approx_mode=False, fp32_dest_acc_en=True, packer_l1_acc=False)",
    "SDPA_CONFIG": "ttnn.WormholeComputeKernelConfig(math_fidelity=ttnn.MathFidelity.HiFi2, "
                   "math_approx_mode=False, fp32_dest_acc_en=False, packer_l1_acc=False)",
}


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return path.replace("L['self'].", "").replace("L__self__.", "")


# Elementwise and data-movement ops a float32 region extends back through.
FP32_REGION_OPS = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.neg.default,
                   aten.exp.default, aten.reshape.default, aten.permute.default, aten.slice.Tensor,
                   aten.cat.default, aten.to.dtype, aten.expand.default}
TRIG = {aten.sin.default, aten.cos.default}


def float32_region(mg: ModelGraph) -> set:
    """Nodes (including placeholders) whose values feed a sin/cos argument through elementwise ops only."""
    region, stack = set(), []
    for node in mg.gm.graph.nodes:
        if node.op == "call_function" and node.target in TRIG:
            stack.append(node.args[0])
    while stack:
        node = stack.pop()
        if not isinstance(node, fx.Node) or node in region:
            continue
        if node.op == "placeholder" or (node.op == "call_function" and node.target in FP32_REGION_OPS):
            region.add(node)
            stack.extend(node.all_input_nodes)
    return region


class Builder:
    def __init__(self, mg: ModelGraph, act_dtype: str, weight_dtype: str, mesh_shape=(1, 1)):
        self.mg = mg
        self.mesh_shape = tuple(mesh_shape)
        # the sequence-parallel mesh axes (outermost first): dims sharded over them are token dims, padded to whole
        # tiles per device
        self.seq_axes = mg.sharding.seq_axes if mg.sharding is not None else ()
        self.buffers: dict = {}  # persistent device buffers (ring attention K/V), name -> TensorSpec
        self.fp32 = float32_region(mg) if act_dtype != "float32" else set()
        self.act_dtype = act_dtype
        self.weight_dtype = weight_dtype
        self.ops: list = []
        self.tensors: dict = {}
        self.weights: dict = {}
        self.values: dict = {}  # FX node -> Ref | tuple of Ref | literal
        self.configs: dict = {}
        self.ccl_calls: dict = {}  # mesh axis -> CCLs issued on it so far: picks the ping-pong semaphore set
        self.node: fx.Node | None = None
        self._count = 0

    # --- dtypes -----------------------------------------------------------------------------------------------
    def dtype_of(self, torch_dtype: torch.dtype, node: fx.Node | None = None) -> str:
        if torch_dtype.is_floating_point:
            return "float32" if (node if node is not None else self.node) in self.fp32 else self.act_dtype
        if torch_dtype == torch.bool or torch_dtype == torch.uint8:
            return "uint32"
        return "int32"

    # --- values -----------------------------------------------------------------------------------------------
    def arg(self, a):
        if isinstance(a, fx.Node):
            return self.values[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self.arg(x) for x in a)
        return a

    def config(self, name: str, expression: str | None = None) -> Code:
        self.configs[name] = expression or CONFIGS[name]
        return Code(name)

    def local(self, node: fx.Node, index: int | None = None) -> tuple:
        """Shape of one device's piece of a node's value (its global shape when unsharded)."""
        meta, layout = node.meta["val"], node.meta.get("layout")
        if index is not None:
            meta, layout = meta[index], (layout[index] if layout else None)
        if layout is None:
            return tuple(meta.shape)
        return local_shape(meta.shape, layout, self.mesh_shape, self.seq_axes)

    def arg_local(self, x: fx.Node) -> tuple:
        """Local shape of an input of the op being lowered; a constant's in the layout it is uploaded in for it."""
        layout = (self.node.meta.get("arg_layouts") or {}).get(x.name) if is_const(x) else None
        if layout is None:
            return self.local(x)
        return local_shape(x.meta["val"].shape, layout, self.mesh_shape, self.seq_axes)

    def weight(self, node: fx.Node, transform: str = "identity", dtype: str | None = None) -> WeightRef:
        """A program weight made from a constant placeholder, prepared on host by `transform`."""
        const = node.meta["key"]
        base = self.mg.constants[const].source or const  # parameters keep their state-dict name
        name = base if transform == "identity" else f"{base}:{transform}"
        shape = tuple(node.meta["val"].shape)
        layout = (self.node.meta.get("arg_layouts") or {}).get(node.name)
        dims = [p.dim if isinstance(p, Shard) else None for p in layout] if layout else [None] * len(self.mesh_shape)
        if transform == "transpose":
            shape = shape[:-2] + (shape[-1], shape[-2])
            swap = {len(shape) - 1: len(shape) - 2, len(shape) - 2: len(shape) - 1}
            dims = [swap.get(d, d) if d is not None else None for d in dims]
        elif transform == "row":
            shape = (1, shape[0])
            dims = [1 if d is not None else None for d in dims]
        if any(d is not None for d in dims):
            name += "@" + "".join("R" if d is None else f"S{d}" for d in dims)
        if name not in self.weights:
            tdtype = dtype or (self.dtype_of(node.meta["val"].dtype, node) if transform != "additive_mask"
                               else self.act_dtype)
            # one device's piece; a token dim (sp axis) is padded, the runtime zero-fills it
            local = local_shape(shape, [R if d is None else Shard(d) for d in dims], self.mesh_shape, self.seq_axes)
            self.weights[name] = WeightSpec(name, const, transform, TensorSpec(name, tuple(local), tdtype),
                                            tuple(shape), tuple(dims))
        return WeightRef(name)

    def value_or_weight(self, a):
        if is_const(a):
            return self.weight(a)
        return self.arg(a)

    # --- ops --------------------------------------------------------------------------------------------------
    def call(self, fn: str, args: tuple, kwargs: dict | None = None, shapes=None, dtype: str | None = None):
        """Append an op; returns a Ref, or a tuple of Refs for several outputs.

        shapes: [(local shape, torch dtype), ...] of the outputs; by default those of the node being lowered."""
        node = self.node
        multi = shapes is not None and isinstance(shapes, list) or \
            shapes is None and isinstance(node.meta["val"], (tuple, list))
        if shapes is None:
            metas = node.meta["val"] if multi else [node.meta["val"]]
            shapes = [(self.local(node, i if multi else None), m.dtype) for i, m in enumerate(metas)]
        elif not multi:
            shapes = [shapes]
        names = []
        for shape, torch_dtype in shapes:
            self._count += 1
            name = f"t{self._count}"
            self.tensors[name] = TensorSpec(name, tuple(shape), dtype or self.dtype_of(torch_dtype))
            names.append(name)
        self.ops.append(Op(fn, tuple(args), dict(kwargs or {}), names, node.name, node_location(node),
                           _module_path(node)))
        refs = tuple(Ref(n) for n in names)
        return refs if multi else refs[0]

    def buffer(self, name: str, shape, dtype: str) -> Code:
        self.buffers[name] = TensorSpec(name, tuple(shape), dtype)
        return Code(name)


# --- rules ----------------------------------------------------------------------------------------------------
def _linear(b: Builder, node):
    x, w = node.args[0], node.args[1]
    bias = node.args[2] if len(node.args) > 2 else None
    kwargs = {}
    if is_const(w):
        weight = b.weight(w, "transpose", dtype=b.weight_dtype)
    else:
        weight = b.arg(w)
        kwargs["transpose_b"] = True
    if bias is not None:
        kwargs["bias"] = b.weight(bias, "row") if bias.op == "placeholder" else b.arg(bias)
    kwargs.update(compute_kernel_config=b.config("MATMUL_CONFIG"), dtype=Code(TTNN_DTYPE[b.act_dtype]))
    return b.call("ttnn.linear", (b.arg(x), weight), kwargs)


def _matmul(b: Builder, node):
    return b.call("ttnn.matmul", (b.value_or_weight(node.args[0]), b.value_or_weight(node.args[1])),
                  {"compute_kernel_config": b.config("MATMUL_CONFIG")})


def _norm(fn):
    def rule(b: Builder, node):
        x = node.args[0]
        if fn == "ttnn.layer_norm":  # layer_norm(x, shape, weight, bias, eps)
            weight, bias, eps = (list(node.args[2:5]) + [None, None, 1e-5][len(node.args[2:5]):])
        else:  # rms_norm(x, shape, weight, eps)
            weight = node.args[2] if len(node.args) > 2 else None
            bias = None
            eps = node.args[3] if len(node.args) > 3 and node.args[3] is not None else 1e-6
        if node.meta.get("distributed_norm_axis") is not None:
            return _distributed_norm(b, node, fn, weight, bias, float(eps))
        kwargs = {"epsilon": float(eps)}
        if weight is not None:
            kwargs["weight"] = b.weight(weight, "row") if weight.op == "placeholder" else b.arg(weight)
        if bias is not None:
            kwargs["bias"] = b.weight(bias, "row") if bias.op == "placeholder" else b.arg(bias)
        kwargs["compute_kernel_config"] = b.config("NORM_CONFIG")
        return b.call(fn, (b.arg(x),), kwargs)

    return rule


def _distributed_norm(b: Builder, node, fn, weight, bias, eps):
    """Norm over a sharded hidden dim: local statistics, all-gathered over the axis, then applied locally."""
    axis = node.meta["distributed_norm_axis"]
    x = node.args[0]
    local = list(b.local(x))
    stats_width = 64 if fn == "ttnn.layer_norm" else 32  # one tile per statistic: sum(x) and sum(x^2), or sum(x^2)
    stats_shape = local[:-1] + [stats_width]
    gathered_shape = local[:-1] + [stats_width * b.mesh_shape[axis]]
    stats = b.call(f"{fn}_pre_all_gather", (b.arg(x),), {"dtype": Code("ttnn.float32"),
                                                          "compute_kernel_config": b.config("NORM_CONFIG")},
                   shapes=(stats_shape, torch.float32), dtype="float32")
    stats = all_gather_async(b, stats, len(stats_shape) - 1, axis, shapes=(gathered_shape, torch.float32),
                             dtype="float32")
    kwargs = {"epsilon": eps}
    if weight is not None:
        kwargs["weight"] = b.weight(weight, "row")
    if bias is not None:
        kwargs["bias"] = b.weight(bias, "row")
    kwargs["compute_kernel_config"] = b.config("NORM_CONFIG")
    return b.call(f"{fn}_post_all_gather", (b.arg(x), stats), kwargs)


def _unary(fn, **fixed):
    def rule(b: Builder, node):
        return b.call(fn, (b.arg(node.args[0]),), dict(fixed))

    return rule


def _trig(fn):
    def rule(b: Builder, node):
        value = b.call(fn, (b.arg(node.args[0]),), dtype="float32")
        if b.act_dtype == "float32":
            return value
        return b.call("ttnn.typecast", (value, Code(TTNN_DTYPE[b.act_dtype])))

    return rule


def _gelu(b: Builder, node):
    approximate = node.kwargs.get("approximate", node.args[1] if len(node.args) > 1 else "none")
    return b.call("ttnn.gelu", (b.arg(node.args[0]),), {"fast_and_approximate_mode": approximate == "tanh"})


def _binary(fn):
    def rule(b: Builder, node):
        lhs, rhs = node.args[0], node.args[1]
        alpha = node.kwargs.get("alpha", 1)
        if not isinstance(lhs, fx.Node):  # scalar op tensor: only add/mul commute
            if fn in ("ttnn.add", "ttnn.multiply"):
                lhs, rhs = rhs, lhs
            else:
                return None
        right = b.value_or_weight(rhs)
        if alpha != 1:
            if isinstance(rhs, fx.Node):
                right = b.call("ttnn.multiply", (right, alpha), shapes=(b.local(rhs), rhs.meta["val"].dtype))
            else:
                right = right * alpha
        return b.call(fn, (b.value_or_weight(lhs), right))

    return rule


def _reduce(fn):
    def rule(b: Builder, node):
        dims = node.args[1] if len(node.args) > 1 else None
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        return b.call(fn, (b.arg(node.args[0]),), {"dim": list(dims) if dims is not None else None,
                                                   "keepdim": keepdim})

    return rule


def _softmax(b: Builder, node):
    return b.call("ttnn.softmax", (b.arg(node.args[0]), node.args[1]))


def _reshape(b: Builder, node):
    return b.call("ttnn.reshape", (b.arg(node.args[0]), list(b.local(node))))


def _permute(b: Builder, node):
    return b.call("ttnn.permute", (b.arg(node.args[0]), list(node.args[1])))


def _slice(b: Builder, node):
    x = node.args[0]
    shape = list(b.local(x))
    dim = node.args[1] % len(shape)
    start, end = node.args[2], min(node.args[3], shape[dim])
    step = node.args[4] if len(node.args) > 4 else 1
    starts = [0] * len(shape)
    ends = list(shape)
    starts[dim], ends[dim] = start, end
    args = (b.arg(x), starts, ends) + (([1] * dim + [step] + [1] * (len(shape) - dim - 1),) if step != 1 else ())
    return b.call("ttnn.slice", args)


def _cat(b: Builder, node):
    tensors = [b.value_or_weight(t) for t in node.args[0]]
    dim = node.args[1] if len(node.args) > 1 else 0
    return b.call("ttnn.concat", (tensors, dim % len(node.meta["val"].shape)))


def _pad(b: Builder, node):
    x, pad = node.args[0], list(node.args[1])
    value = node.args[2] if len(node.args) > 2 else 0.0
    rank = len(x.meta["val"].shape)
    padding = [[0, 0] for _ in range(rank)]
    for i in range(len(pad) // 2):  # torch pads from the last dim backwards
        padding[rank - 1 - i] = [pad[2 * i], pad[2 * i + 1]]
    if any(p < 0 for pair in padding for p in pair):
        return None
    return b.call("ttnn.pad", (b.arg(x), padding, float(value or 0.0)))


def _expand(b: Builder, node):
    x = node.args[0]
    in_shape = list(b.local(x))
    out_shape = list(b.local(node))
    src = b.arg(x)
    if len(in_shape) < len(out_shape):
        in_shape = [1] * (len(out_shape) - len(in_shape)) + in_shape
        src = b.call("ttnn.reshape", (src, in_shape), shapes=(in_shape, node.meta["val"].dtype))
    repeats = [o // i if i != o else 1 for i, o in zip(in_shape, out_shape)]
    if any(i not in (1, o) for i, o in zip(in_shape, out_shape)):
        return None
    return b.call("ttnn.repeat", (src, repeats))


def _cast(b: Builder, node):
    x = node.args[0]
    src, dst = b.dtype_of(x.meta["val"].dtype), b.dtype_of(node.meta["val"].dtype)
    if src == dst:
        return b.arg(x)  # float-to-float casts vanish: every float activation has the program dtype
    return b.call("ttnn.typecast", (b.arg(x), Code(TTNN_DTYPE[dst])))


def _pad_head_dim(b: Builder, node, tensors: list, scale):
    """ttnn's attention kernels refuse a head dim that is not whole tiles ("Padding is not supported on the head_dim
    dimension"). Zero-pad q, k, v (and the joint ones) to the next multiple of 32: the extra zeros add nothing to
    q.k, and give zero output columns, sliced off after. The scale is fixed to the logical head dim's.
    Returns (tensors, scale, logical head dim or None when no padding was needed)."""
    head_dim = node.args[0].meta["val"].shape[-1]
    padded = _tile_up(head_dim)
    if padded == head_dim:
        return tensors, scale, None
    out = [None if value is None else
           _pad_dim(b, value, list(b.local(arg)), -1, padded, arg.meta["val"].dtype)
           for value, arg in zip(tensors, node.args[:len(tensors)])]
    return out, (scale if scale is not None else head_dim ** -0.5), head_dim


def float32_scalar(value) -> float:
    """A Python float that a C++ `float` parameter accepts as it is. ttnn's nanobind bindings refuse a float that
    float32 cannot hold exactly (joint SDPA raised "incompatible function arguments" for scale=0.2 and took 0.25),
    so attention scales are rounded to float32 on the host, which is what the kernel uses anyway."""
    return struct.unpack("f", struct.pack("f", float(value)))[0]


def _tile_up(size: int) -> int:
    return -(-size // TILE) * TILE


def _head_padded(shape, head_dim) -> list:
    """A local attention operand shape with its head dim padded to whole tiles (unchanged when head_dim is None)."""
    shape = list(shape)
    return shape if head_dim is None else shape[:-1] + [_tile_up(head_dim)]


def _sdpa(b: Builder, node):
    q, k, v = node.args[:3]
    extra = dict(zip(["attn_mask", "dropout_p", "is_causal", "scale"], node.args[3:]))
    extra.update(node.kwargs)
    if extra.get("dropout_p", 0.0):
        return None
    if node.meta.get("ulysses_axis") is not None:
        if extra.get("attn_mask") is not None or extra.get("is_causal"):
            return None
        return _ulysses(b, node, extra.get("scale"))
    if node.meta.get("ring_axis") is not None:
        if extra.get("attn_mask") is not None or extra.get("is_causal"):
            return None
        out, _joint, _lse = _ring(b, node, [b.arg(t) for t in (q, k, v)] + [None, None, None], extra.get("scale"))
        return out
    kwargs = {"is_causal": bool(extra.get("is_causal", False))}
    mask = extra.get("attn_mask")
    if mask is not None:
        if not is_const(mask):
            return None
        transform = "additive_mask" if mask.meta["val"].dtype == torch.bool else "identity"
        kwargs["attn_mask"] = b.weight(mask, transform)
    tensors, scale, head_dim = _pad_head_dim(b, node, [b.arg(q), b.arg(k), b.arg(v)], extra.get("scale"))
    if scale is not None:
        kwargs["scale"] = float32_scalar(scale)
    kwargs["compute_kernel_config"] = b.config("SDPA_CONFIG")
    if head_dim is None:
        return b.call("ttnn.transformer.scaled_dot_product_attention", tuple(tensors), kwargs)
    shape = list(b.local(node))
    padded_shape = shape[:-1] + [_tile_up(head_dim)]
    dtype = node.meta["val"].dtype
    out = b.call("ttnn.transformer.scaled_dot_product_attention", tuple(tensors), kwargs,
                 shapes=(padded_shape, dtype))
    return _slice_dim(b, out, padded_shape, -1, head_dim, dtype)


def _sdpa_program(b: Builder, seq: int, ring: bool = False) -> Code:
    chunk = _chunk_size(seq)
    if ring:  # the ring's K/V transfer runs on the last core row: SDPA must leave it free
        return b.config(f"RING_SDPA_PROGRAM_{chunk}", (
            "ttnn.SDPAProgramConfig(compute_with_storage_grid_size=ttnn.CoreCoord(DEVICE_GRID.x, DEVICE_GRID.y - 1), "
            f"q_chunk_size={chunk}, k_chunk_size={chunk}, exp_approx_mode=False)"))
    return b.config(f"SDPA_PROGRAM_{chunk}", (
        "ttnn.SDPAProgramConfig(compute_with_storage_grid_size=DEVICE_GRID, "
        f"q_chunk_size={chunk}, k_chunk_size={chunk}, exp_approx_mode=False)"))


def _ring(b: Builder, node, tensors, scale, shapes=None):
    """Ring (joint) attention: K/V of the sequence-sharded main stream rotate around the sp ring.

    shapes: the local [q, k, v, joint q] shapes the ring sees when they are not the graph's (in the hybrid, q/k/v
    come out of the ulysses all-to-all with fewer heads and more tokens, their head dim already padded to tiles).
    Without them, the ring pads a head dim that is not whole tiles itself and slices its outputs back."""
    axis = node.meta["ring_axis"]
    ring = b.mesh_shape[axis]
    joint = tensors[3] is not None
    head_dim = None
    if shapes is None:
        tensors, scale, head_dim = _pad_head_dim(b, node, tensors, scale)
        shapes = [_head_padded(b.local(a), head_dim) for a in node.args[:4 if joint else 3]]
    q_local, k_local, v_local = shapes[:3]
    gathered = k_local[:2] + [k_local[2] * ring] + k_local[3:]
    key = "X".join(str(d) for d in gathered)
    kbuf = b.buffer(f"RING_K_{key}", gathered, b.act_dtype)
    vbuf = b.buffer(f"RING_V_{key}", gathered, b.act_dtype)
    b.config(f"RING_SEMAPHORES_AXIS{axis}", "[ttnn.create_global_semaphore(device, ALL_CORES, 0) for _ in range(2)]")
    b.config("RING_CCL_OFFSET", "ttnn.CoreCoord(0, DEVICE_GRID.y - 1)")
    # The gathered K/V (and the buffers) hold the padded sequence; logical_n (the graph's token count) makes the
    # op mask keys at positions >= N, so padding never enters a softmax. Chunks divide the per-device length.
    logical_n = node.args[1].meta["val"].shape[2]
    kwargs = {"persistent_output_buffer_k": kbuf, "persistent_output_buffer_v": vbuf, "joint_strategy": "rear",
              "logical_n": logical_n, "program_config": _sdpa_program(b, k_local[2], ring=True)}
    if scale is not None:
        kwargs["scale"] = float32_scalar(scale)
    kwargs.update(compute_kernel_config=b.config("SDPA_CONFIG"), dim=2,
                  multi_device_global_semaphore=Code(f"RING_SEMAPHORES_AXIS{axis}"), num_links=1,
                  cluster_axis=axis, mesh_device=Code("device"), topology=Code("ttnn.Topology.Linear"),
                  ccl_core_grid_offset=Code("RING_CCL_OFFSET"))
    out_shape = q_local[:-1] + [v_local[-1]]
    joint_len = shapes[3][2] if joint else 0
    joint_shape = q_local[:2] + [joint_len, out_shape[-1]]
    lse_shape = q_local[:2] + [q_local[2] + joint_len, 1]
    dtype = node.args[0].meta["val"].dtype
    out, joint_out, lse = b.call("ttnn.transformer.ring_joint_scaled_dot_product_attention", tuple(tensors), kwargs,
                                 shapes=[(out_shape, dtype), (joint_shape, dtype), (lse_shape, torch.float32)])
    if head_dim is not None:
        out = _slice_dim(b, out, out_shape, -1, head_dim, dtype)
        joint_out = _slice_dim(b, joint_out, joint_shape, -1, head_dim, dtype) if joint else joint_out
    return out, joint_out, lse


def _ulysses(b: Builder, node, scale):
    """Ulysses: sequence-sharded q/k/v -> head-sharded by all-to-all, attention over the whole sequence on local
    heads, then back to sequence-sharded; the replicated prompt stream is cut by heads and gathered after.

    In the hybrid (the node also has a ring axis) the all-to-all runs on the ulysses axis and gives each device the
    tokens of its ring position on 1/ulysses of the heads; ring attention over the sp axis then brings it the K/V of
    the other ring positions for those heads."""
    axis = node.meta["ulysses_axis"]
    degree = b.mesh_shape[axis]
    hybrid = node.meta.get("ring_axis") is not None
    joint = node.target is mdops.joint_sdpa
    dtype = node.args[0].meta["val"].dtype
    args = node.args[:6] if joint else node.args[:3]
    # a head dim that is not whole tiles is padded before the all-to-all and sliced off before the one back
    values, scale, head_dim = _pad_head_dim(b, node, [b.arg(a) for a in args], scale)
    local = {a: _head_padded(b.local(a), head_dim) for a in args}

    def by_heads(arg):
        shape = list(local[arg])
        shape[1], shape[2] = shape[1] // degree, shape[2] * degree
        return shape

    def to_heads(value, arg):
        # ttnn's all-to-all grows in_dim and splits out_dim: gather the tokens (dim 2), split the heads (dim 1)
        return b.call("ttnn.experimental.all_to_all_async_generic", (value,),
                      {"in_dim": 2, "out_dim": 1, "cluster_axis": axis, "topology": Code("ttnn.Topology.Linear")},
                      shapes=(by_heads(arg), dtype))

    def cut_heads(value, arg):
        shape = list(local[arg])
        shape[1] //= degree
        return b.call("ttnn.mesh_partition", (value, 1), {"cluster_axis": axis}, shapes=(shape, dtype))

    q, k, v = (to_heads(value, a) for value, a in zip(values[:3], args[:3]))
    joints = [cut_heads(value, a) for value, a in zip(values[3:], args[3:])] if joint else [None] * 3
    out_shape = by_heads(args[0])[:3] + [local[args[2]][-1]]
    joint_shape = [out_shape[0], out_shape[1], local[args[3]][2], out_shape[-1]] if joint else None
    if hybrid:
        # the padded tokens stay: ring attention masks keys past logical_n, and the output keeps whole-tile shards
        shapes = [by_heads(a) for a in args[:3]] + ([joint_shape[:3] + [local[args[3]][-1]]] if joint else [])
        out, joint_out, _lse = _ring(b, node, [q, k, v] + joints, scale, shapes)
    else:
        kwargs = {"scale": float32_scalar(scale)} if scale is not None else {}
        kwargs["compute_kernel_config"] = b.config("SDPA_CONFIG")
        # After the all-to-all each device holds whole sequences, zero-padded at the end for the sequence shards:
        # attention runs on the logical tokens only (padded keys would take softmax weight), and its output is
        # padded back so the all-to-all returns whole-tile shards.
        padded, logical = out_shape[2], node.args[0].meta["val"].shape[2]
        q, k, v = (_slice_dim(b, t, by_heads(a), 2, logical, dtype) for t, a in zip((q, k, v), args[:3]))
        sliced = out_shape[:2] + [logical, out_shape[3]]
        if joint:
            program = _sdpa_program(b, max(logical, joint_shape[2]))
            out, joint_out = b.call("ttnn.transformer.joint_scaled_dot_product_attention", (q, k, v, *joints),
                                    {"joint_strategy": "rear", "program_config": program, **kwargs},
                                    shapes=[(sliced, dtype), (joint_shape, dtype)])
        else:
            out = b.call("ttnn.transformer.scaled_dot_product_attention", (q, k, v), {"is_causal": False, **kwargs},
                         shapes=(sliced, dtype))
        out = _pad_dim(b, out, sliced, 2, padded, dtype)
    if head_dim is not None:
        out = _slice_dim(b, out, out_shape, -1, head_dim, dtype)
        joint_out = _slice_dim(b, joint_out, joint_shape, -1, head_dim, dtype) if joint else None
    back = b.call("ttnn.experimental.all_to_all_async_generic", (out,),  # heads gathered, tokens split again
                  {"in_dim": 1, "out_dim": 2, "cluster_axis": axis, "topology": Code("ttnn.Topology.Linear")},
                  shapes=(b.local(node, 0 if joint else None), dtype))
    if not joint:
        return back
    gathered = all_gather_async(b, joint_out, 1, axis, shapes=(b.local(node, 1), dtype))
    return back, gathered


def _joint_sdpa(b: Builder, node):
    tensors = [b.arg(a) for a in node.args[:6]]
    scale = node.kwargs.get("scale")
    if node.meta.get("ulysses_axis") is not None:
        return _ulysses(b, node, scale)
    if node.meta.get("ring_axis") is not None:
        out, joint_out, _lse = _ring(b, node, tensors, scale)
        return out, joint_out
    n, length = b.local(node.args[0])[-2], b.local(node.args[3])[-2]
    kwargs = {"joint_strategy": "rear", "program_config": _sdpa_program(b, max(n, length))}
    tensors, scale, head_dim = _pad_head_dim(b, node, tensors, scale)
    if scale is not None:
        kwargs["scale"] = float32_scalar(scale)
    kwargs["compute_kernel_config"] = b.config("SDPA_CONFIG")
    if head_dim is None:
        return b.call("ttnn.transformer.joint_scaled_dot_product_attention", tuple(tensors), kwargs)
    dtype = node.meta["val"][0].dtype
    shapes = [list(b.local(node, i)) for i in range(2)]
    padded = [shape[:-1] + [_tile_up(head_dim)] for shape in shapes]
    out, joint_out = b.call("ttnn.transformer.joint_scaled_dot_product_attention", tuple(tensors), kwargs,
                            shapes=[(padded[0], dtype), (padded[1], dtype)])
    return (_slice_dim(b, out, padded[0], -1, head_dim, dtype),
            _slice_dim(b, joint_out, padded[1], -1, head_dim, dtype))


# --- sequence padding: a token dim sharded over the sp axes is zero-padded at its end to whole tiles per device ---
def _pad_for_split(b: Builder, node, value, dim: int, axis: int):
    """The input of `node` (a collective that splits `dim` over `axis`) zero-padded along `dim` so it splits into
    the per-device pieces `node` holds. A no-op for an already padded piece (the inner cut of a nested shard)."""
    x = node.args[0]
    shape = list(b.arg_local(x))
    return _pad_dim(b, value, shape, dim, b.local(node)[dim] * b.mesh_shape[axis], x.meta["val"].dtype)


def _pad_dim(b: Builder, value, shape, dim: int, size: int, torch_dtype):
    """`value` of local `shape` zero-padded at the end of `dim` to `size` entries."""
    if shape[dim] == size:
        return value
    padding = [[0, 0] for _ in shape]
    padding[dim] = [0, size - shape[dim]]
    padded = list(shape)
    padded[dim] = size
    return b.call("ttnn.pad", (value, padding, 0.0), shapes=(padded, torch_dtype))


def _slice_dim(b: Builder, value, shape, dim: int, length: int, torch_dtype):
    """`value` of local `shape` cut to its first `length` entries along `dim` (logical tokens, a head dim)."""
    if shape[dim] == length:
        return value
    ends = list(shape)
    ends[dim] = length
    return b.call("ttnn.slice", (value, [0] * len(shape), ends), shapes=(ends, torch_dtype))


# --- collectives: ttnn's async CCLs, as TT-DiT issues them ---------------------------------------------------------
# Each async CCL synchronises through global semaphores (and a barrier semaphore) made once per mesh axis in
# make_configs. Consecutive CCLs on an axis alternate between two semaphore sets ("ping-pong", as TT-DiT's
# CCLManager does), so a CCL never waits on a semaphore the previous one may still be resetting.
def _ccl_slot(b: Builder, axis: int) -> int:
    b.ccl_calls[axis] = b.ccl_calls.get(axis, 0) + 1
    return b.ccl_calls[axis] % 2


def _semaphores(b: Builder, name: str, count: int) -> Code:
    return b.config(name, f"[ttnn.create_global_semaphore(device, ALL_CORES, 0) for _ in range({count})]")


def _barrier(b: Builder, axis: int, slot: int) -> Code:
    return b.config(f"CCL_BARRIER_AXIS{axis}_{slot}", "ttnn.create_global_semaphore(device, ALL_CORES, 0)")


def all_gather_async(b: Builder, value, dim: int, axis: int, shapes=None, dtype=None):
    slot = _ccl_slot(b, axis)
    kwargs = {"dim": dim, "cluster_axis": axis, "mesh_device": Code("device"),
              "topology": Code("ttnn.Topology.Linear"),
              "multi_device_global_semaphore": _semaphores(b, f"AG_SEMAPHORES_AXIS{axis}_{slot}", 2),
              "num_links": 1, "barrier_semaphore": _barrier(b, axis, slot)}
    return b.call("ttnn.experimental.all_gather_async", (value,), kwargs, shapes=shapes, dtype=dtype)


def reduce_scatter_async(b: Builder, value, dim: int, axis: int):
    slot = _ccl_slot(b, axis)
    kwargs = {"dim": dim, "multi_device_global_semaphore": _semaphores(b, f"RS_SEMAPHORES_AXIS{axis}_{slot}", 3),
              "barrier_semaphore": _barrier(b, axis, slot), "num_links": 1, "cluster_axis": axis,
              "topology": Code("ttnn.Topology.Linear")}
    return b.call("ttnn.experimental.reduce_scatter_minimal_async", (value,), kwargs)


def all_reduce_async(b: Builder, value, axis: int):
    slot = _ccl_slot(b, axis)
    kwargs = {"cluster_axis": axis, "mesh_device": Code("device"),
              "barrier_semaphores": _semaphores(b, f"AR_BARRIERS_AXIS{axis}_{slot}", 2),
              "rs_global_semaphores": _semaphores(b, f"RS_SEMAPHORES_AXIS{axis}_{slot}", 3),
              "ag_global_semaphores": _semaphores(b, f"AG_SEMAPHORES_AXIS{axis}_{slot}", 2),
              "math_op": Code("ttnn.ReduceType.Sum"), "topology": Code("ttnn.Topology.Linear"), "num_links": 1}
    return b.call("ttnn.experimental.all_reduce_async", (value,), kwargs)


def _all_gather(b: Builder, node):
    x, dim, axis = node.args
    dim %= len(b.local(x))
    if axis not in b.seq_axes:
        return all_gather_async(b, b.arg(x), dim, axis)
    # Sequence shards are pieces of the sequence zero-padded at its end (the partition pads before it splits), so
    # the last gather gives the padded sequence, whose first N tokens are the logical ones: slice them off. (An
    # inner-axis gather of a nested shard gives the outer axis's padded piece: nothing to slice.)
    logical = list(b.local(node))
    gathered = list(logical)
    gathered[dim] = b.local(x)[dim] * b.mesh_shape[axis]
    dtype = node.meta["val"].dtype
    out = all_gather_async(b, b.arg(x), dim, axis, shapes=(gathered, dtype))
    return _slice_dim(b, out, gathered, dim, logical[dim], dtype)


def _reduce_scatter(b: Builder, node):
    x, dim, axis = node.args
    dim %= len(b.local(x))
    value = _pad_for_split(b, node, b.arg(x), dim, axis) if axis in b.seq_axes else b.arg(x)
    return reduce_scatter_async(b, value, dim, axis)


def _all_reduce(b: Builder, node):
    x, axis = node.args
    return all_reduce_async(b, b.arg(x), axis)


def _mesh_partition(b: Builder, node):
    x, dim, axis = node.args
    dim %= len(b.local(x))
    # a sequence partition pads first, so every device's shard is whole tiles and starts on a tile boundary
    value = b.value_or_weight(x)
    if axis in b.seq_axes:
        value = _pad_for_split(b, node, value, dim, axis)
    return b.call("ttnn.mesh_partition", (value, dim), {"cluster_axis": axis})


def _chunk_size(seq: int) -> int:
    padded = -(-seq // 32) * 32
    for size in (256, 128, 64, 32):
        if padded % size == 0:
            return size
    return 32


RULES = {
    aten.linear.default: _linear,
    aten.matmul.default: _matmul,
    aten.mm.default: _matmul,
    aten.bmm.default: _matmul,
    aten.layer_norm.default: _norm("ttnn.layer_norm"),
    aten.rms_norm.default: _norm("ttnn.rms_norm"),
    aten.gelu.default: _gelu,
    aten.silu.default: _unary("ttnn.silu"),
    aten.relu.default: _unary("ttnn.relu"),
    aten.neg.default: _unary("ttnn.neg"),
    aten.exp.default: _unary("ttnn.exp"),
    aten.sin.default: _trig("ttnn.sin"),
    aten.cos.default: _trig("ttnn.cos"),
    aten.tanh.default: _unary("ttnn.tanh"),
    aten.sigmoid.default: _unary("ttnn.sigmoid"),
    aten.rsqrt.default: _unary("ttnn.rsqrt"),
    aten.sqrt.default: _unary("ttnn.sqrt"),
    aten.reciprocal.default: _unary("ttnn.reciprocal"),
    aten.abs.default: _unary("ttnn.abs"),
    aten.add.Tensor: _binary("ttnn.add"),
    aten.sub.Tensor: _binary("ttnn.subtract"),
    aten.mul.Tensor: _binary("ttnn.multiply"),
    aten.div.Tensor: _binary("ttnn.divide"),
    aten.mean.dim: _reduce("ttnn.mean"),
    aten.sum.dim_IntList: _reduce("ttnn.sum"),
    aten.softmax.int: _softmax,
    aten._softmax.default: _softmax,
    aten.reshape.default: _reshape,
    aten.permute.default: _permute,
    aten.slice.Tensor: _slice,
    aten.cat.default: _cat,
    aten.constant_pad_nd.default: _pad,
    aten.expand.default: _expand,
    aten.to.dtype: _cast,
    aten.scaled_dot_product_attention.default: _sdpa,
    mdops.joint_sdpa: _joint_sdpa,
    mdops.all_gather: _all_gather,
    mdops.reduce_scatter: _reduce_scatter,
    mdops.all_reduce: _all_reduce,
    mdops.mesh_partition: _mesh_partition,
}


def _host_fallback(b: Builder, node, allow: bool):
    name = str(node.target)
    if not allow:
        raise UnsupportedOpError(
            f"no TT-NN lowering for {name} at {node_location(node)}; "
            "allow host fallback (allow_host_fallback=True) or extend meshdit/lowering/lower.py RULES"
        )
    warnings.warn(f"meshdit: {name} at {node_location(node)} runs on host (no TT-NN lowering)", stacklevel=3)
    args = tuple(b.value_or_weight(a) if isinstance(a, fx.Node) else b.arg(a) for a in node.args)
    kwargs = {k: b.arg(v) for k, v in node.kwargs.items()}
    return b.call("host_call", (name, list(args), kwargs))


def lower_graph(mg: ModelGraph, mesh=None, act_dtype="float32", weight_dtype=None,
                allow_host_fallback=True, batched_inputs=()) -> ProgramIR:
    """mesh: the MeshConfig the graph was sharded for (shard_graph); None for one device."""
    from ..sharding.mesh_config import MeshConfig

    mesh = mesh or MeshConfig()
    submesh = mg.sharding.submesh if mg.sharding is not None else mesh.shape
    weight_dtype = weight_dtype or act_dtype
    b = Builder(mg, act_dtype, weight_dtype, submesh)
    inputs = []
    for node in mg.gm.graph.nodes:
        b.node = node
        if node.op == "placeholder":
            if node.meta["kind"] == "input":
                meta = node.meta["val"]
                spec = TensorSpec(node.name, b.local(node), b.dtype_of(meta.dtype, node))
                layout = node.meta.get("layout") or ()
                placements = tuple(p.dim if isinstance(p, Shard) else None for p in layout)
                inputs.append(InputSpec(node.name, spec, str(meta.dtype).replace("torch.", ""), tuple(meta.shape),
                                        placements or (None,) * len(submesh)))
                b.values[node] = Ref(node.name)
            else:
                b.values[node] = None  # constants become weights where a rule uses them
        elif node.op == "call_function":
            if node.target is operator.getitem:
                b.values[node] = b.values[node.args[0]][node.args[1]]
                continue
            rule = RULES.get(node.target)
            result = rule(b, node) if rule else None
            if result is None:
                result = _host_fallback(b, node, allow_host_fallback)
            b.values[node] = result
        elif node.op == "output":
            outputs = []
            for out in node.args[0]:
                value = b.value_or_weight(out) if isinstance(out, fx.Node) else out
                outputs.append(value)
    ir = ProgramIR(
        model_name=mg.model_name,
        mesh_shape=tuple(mesh.shape),
        act_dtype=act_dtype,
        weight_dtype=weight_dtype,
        inputs=inputs,
        weights=b.weights,
        ops=b.ops,
        outputs=outputs,
        tensors=b.tensors,
        configs=b.configs,
        static_inputs={k: f"{tuple(v.shape)} {str(v.dtype).replace('torch.', '')}"
                       for k, v in mg.static_inputs.items()},
        submesh_shape=tuple(submesh),
        cfg_factor=mesh.cfg.factor,
        batched_inputs=tuple(batched_inputs),
        buffers=b.buffers,
    )
    assign_gather_buffers(ir)
    return ir
