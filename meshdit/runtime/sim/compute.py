"""Compute ops: linear / matmul, layer and RMS norm (whole, and the distributed pre/post all-gather halves),
unary and binary eltwise ops, reductions, softmax, typecast, the rotary embedding.

Each runs per device on that device's shard in float32 and rounds its output to the output data format (tensor._map),
so a bfloat16 program loses what the hardware loses at each op's output; a matmul's bfloat16 / bfloat8_b operands
are first truncated to the mantissa bits its math fidelity reads (numerics.fidelity_operands). Keyword names follow
ttnn's; configs are accepted, and otherwise ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ir import matmul as matmul_facts
from .registry import public_op, sim_op
from ..numerics import fidelity_operands, round_to
from .tensor import TILE, TILE_LAYOUT, _check_device, _f, _map, float32


# ttnn.linear's `activation=` strings (ttnn 0.81.1 string_to_unary_with_param), as the kernel computes them: "gelu"
# is GELU's accurate (erf) kernel, "gelu_tanh" GELU_TANH, "gelu_approx" the fast GELU kernel, which the simulated
# ttnn.gelu(fast_and_approximate_mode=True) also computes in its tanh form.
LINEAR_ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": lambda y: F.gelu(y, approximate="tanh"),
                      "gelu_approx": lambda y: F.gelu(y, approximate="tanh"), "silu": F.silu, "relu": F.relu}


@sim_op("linear")
def linear(input_tensor_a, input_tensor_b, *, bias=None, transpose_a=False, transpose_b=False, memory_config=None,
           dtype=None, program_config=None, activation=None, compute_kernel_config=None, core_grid=None, **_):
    if activation is not None and activation not in LINEAR_ACTIVATIONS:
        raise RuntimeError(f"TT_THROW (simulated) @ unary_op_utils.cpp: unknown activation {activation!r} for "
                           f"ttnn.linear (string_to_unary_with_param); this simulation knows "
                           f"{sorted(LINEAR_ACTIVATIONS)}")

    # ttnn's default compute kernel config on Wormhole is LoFi (init_device_compute_kernel_config)
    fidelity = compute_kernel_config.math_fidelity if compute_kernel_config is not None else "LoFi"
    formats = (input_tensor_a.dtype.name, input_tensor_b.dtype.name)

    out_format = (dtype or input_tensor_a.dtype).name

    def fn(a, b, c=None):
        a = a.transpose(-1, -2) if transpose_a else a
        b = b.transpose(-1, -2) if transpose_b else b
        a, b = fidelity_operands(_f(a), _f(b), fidelity, *formats)  # what the multiplier phases read
        y = torch.matmul(a, b)
        if c is not None:
            y = y + _f(c)
        if activation is not None:
            # without a program config ttnn runs the activation as its own unary op on the rounded output
            # (ir/matmul.py); with one it is applied in the matmul's packer
            y = LINEAR_ACTIVATIONS[activation](y if program_config is not None else round_to(y, out_format))
        return y

    inputs = (input_tensor_a, input_tensor_b) + ((bias,) if bias is not None else ())
    return _map(fn, *inputs, dtype=dtype)


# minimal_matmul's fused activations (UnaryWithParam): GELU's parameter is its fast-approximation flag
MINIMAL_ACTIVATIONS = {("GELU", False): F.gelu, ("GELU", True): lambda y: F.gelu(y, approximate="tanh"),
                       ("GELU_TANH", None): lambda y: F.gelu(y, approximate="tanh"), ("SILU", None): F.silu,
                       ("RELU", None): F.relu}


@sim_op("experimental.minimal_matmul")
def minimal_matmul(input_tensor, weight_tensor, bias_tensor=None, *, fused_activation=None, config=None,
                   memory_config=None, dtype=None, compute_kernel_config=None, fuse_swiglu=False):
    """A @ W (+ bias, + activation in the packer), A's leading dims folded into M. Refuses what ttnn 0.81.1's
    minimal_matmul_device_operation.cpp refuses (ir/matmul.py minimal_refusal, checked on the mock), and float32
    activations, whose circular buffers the L1 model was not fitted on."""
    return _minimal("minimal_matmul", input_tensor, weight_tensor, bias_tensor, fused_activation, config, dtype,
                    compute_kernel_config)


@sim_op("experimental.dit_minimal_matmul_addcmul_fused")
def dit_minimal_matmul_addcmul_fused(matmul_input_tensor, matmul_weight_tensor, scalar, addcmul_input_tensor1,
                                     addcmul_input_tensor2, bias_tensor=None, *, config=None, memory_config=None,
                                     dtype=None, compute_kernel_config=None):
    """residual + scalar * (A @ W + bias) * gate in minimal_matmul's kernels, rounded once at the output. The gate
    is one row for every output row (the kernel broadcasts it like the bias); the residual has the output's shape
    and the weight's tile size (ir/matmul.py)."""
    where = "TT_FATAL (simulated) @ minimal_matmul_device_operation"
    residual, gate = addcmul_input_tensor1, addcmul_input_tensor2
    n = matmul_weight_tensor.shape[-1]
    if list(residual.shape) != list(matmul_input_tensor.shape[:-1]) + [n]:
        raise RuntimeError(f"{where}: addcmul_input_tensor1 {list(residual.shape)} must have the output's shape "
                           f"{list(matmul_input_tensor.shape[:-1]) + [n]}")
    if gate.shape[-1] != n or any(d != 1 for d in gate.shape[:-1]):
        raise RuntimeError(f"{where} (meshdit): addcmul_input_tensor2 {list(gate.shape)} must be one row [.., 1, {n}] "
                           "(the kernel broadcasts it like the bias)")
    return _minimal("dit_minimal_matmul_addcmul_fused", matmul_input_tensor, matmul_weight_tensor, bias_tensor, None,
                    config, dtype, compute_kernel_config, (float(scalar), residual, gate))


def _minimal(op, input_tensor, weight_tensor, bias_tensor, fused_activation, config, dtype, compute_kernel_config,
             addcmul=None):
    where = f"TT_FATAL (simulated) @ {op} (minimal_matmul_device_operation)"
    extra = (bias_tensor,) if bias_tensor is not None else ()
    extra += tuple(addcmul[1:]) if addcmul is not None else ()
    _check_device(input_tensor, weight_tensor, *extra)
    for name, t in (("input", input_tensor), ("weight", weight_tensor), ("bias", bias_tensor)) + (
            (("residual", addcmul[1]), ("gate", addcmul[2])) if addcmul is not None else ()):
        if t is not None and t.layout != TILE_LAYOUT:
            raise RuntimeError(f"{where}: {name} must be in TILE layout")
    if input_tensor.dtype.name == "float32":
        raise RuntimeError(f"{where} (meshdit): float32 activations are not simulated (the L1 model covers "
                           "bfloat16 and bfloat8_b); use ttnn.linear")
    ws = list(weight_tensor.shape)
    if any(d != 1 for d in ws[:-2]) or ws[-2] != input_tensor.shape[-1]:
        raise RuntimeError(f"{where}: weight {ws} must be [..1, K, N] with K = {input_tensor.shape[-1]}")
    if bias_tensor is not None and (any(d != 1 for d in bias_tensor.shape[:-1]) or bias_tensor.shape[-1] != ws[-1]):
        raise RuntimeError(f"{where}: bias {list(bias_tensor.shape)} must be [..1, {ws[-1]}]")
    fp32_acc = compute_kernel_config.fp32_dest_acc_en if compute_kernel_config is not None else True
    dtypes = (addcmul[1].dtype.name, addcmul[2].dtype.name) if addcmul is not None else None
    why = matmul_facts.addcmul_refusal(dtypes, weight_tensor.dtype.name)
    if config is not None:  # without one ttnn picks its own blocks, which the simulation does not model
        grid = config.compute_with_storage_grid_size
        why = why or matmul_facts.minimal_refusal(
            matmul_facts.MinimalConfig(config.M_block_size, config.K_block_size, config.N_block_size,
                                       config.subblock_h, config.subblock_w), (grid.x, grid.y),
            (input_tensor.device().GRID.x, input_tensor.device().GRID.y), weight_tensor.dtype.name,
            bias_tensor.dtype.name if bias_tensor is not None else None, fp32_acc, input_tensor.dtype.name, dtypes)
    if why is not None:
        raise RuntimeError(f"{where}: {why}")
    act = None
    if fused_activation is not None:
        kind = fused_activation.op_type.name
        param = bool(fused_activation.param) if kind == "GELU" and fused_activation.param is not None else None
        act = MINIMAL_ACTIVATIONS.get((kind, param))
        if act is None:
            raise RuntimeError(f"{where} (simulated): activation {fused_activation} is not simulated (GELU takes "
                               "its approximation flag)")
    fidelity = compute_kernel_config.math_fidelity if compute_kernel_config is not None else "HiFi2"
    formats = (input_tensor.dtype.name, weight_tensor.dtype.name)

    def fn(a, w, *rest):
        a, w = fidelity_operands(_f(a), _f(w).reshape(ws[-2:]), fidelity, *formats)
        y = torch.matmul(a, w)
        rest = list(rest)
        if bias_tensor is not None:
            y = y + _f(rest.pop(0)).reshape(-1)
        if act is not None:
            y = act(y)
        if addcmul is not None:  # in the kernel, before the one rounding at the output
            residual, gate = rest
            y = _f(residual) + addcmul[0] * y * _f(gate).reshape(-1)
        return y

    return _map(fn, input_tensor, weight_tensor, *extra, dtype=dtype)


@sim_op("matmul")
def matmul(input_tensor_a, input_tensor_b, **kwargs):
    return public_op("linear")(input_tensor_a, input_tensor_b, **kwargs)


def _norm_row(param, x):
    """A norm's weight or bias: one row for every token. ttnn's norm kernels broadcast row 0 of a tiled weight
    (mul_tiles_bcast_rows), so a weight with several rows (one per batch entry, say) would silently apply the first
    to every token: refused here, where the simulation would otherwise apply each row to its own tokens."""
    if param.numel() != x.shape[-1]:
        raise RuntimeError(f"simulated norm: weight/bias {list(param.shape)} is not one row of {x.shape[-1]} "
                           "(ttnn broadcasts a norm's weight as a single row)")
    return _f(param).reshape(-1)


def _norm(kind):
    def op(input_tensor, *, epsilon=1e-12, weight=None, bias=None, residual_input_tensor=None, memory_config=None,
           program_config=None, compute_kernel_config=None, **_):
        def fn(x, w=None, b=None, r=None):
            x = _f(x) + (_f(r) if r is not None else 0)
            if kind == "layer":
                y = F.layer_norm(x, x.shape[-1:], eps=epsilon)
            else:
                y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + epsilon)
            if w is not None:
                y = y * _norm_row(w, x)
            if b is not None:
                y = y + _norm_row(b, x)
            return y

        extras = [t for t in (weight, bias, residual_input_tensor)]
        names = [t is not None for t in extras]
        inputs = [input_tensor] + [t for t in extras if t is not None]

        def call(x, *rest):
            it = iter(rest)
            w, b, r = (next(it) if present else None for present in names)
            return fn(x, w, b, r)

        return _map(call, *inputs)

    return op


layer_norm = sim_op("layer_norm")(_norm("layer"))
rms_norm = sim_op("rms_norm")(_norm("rms"))


def _rank4(name, tensor):
    """ttnn's distributed norm halves read padded_shape()[0..3]: other ranks throw (shape_base.cpp, index range)."""
    if len(tensor.shape) != 4:
        raise RuntimeError(f"TT_THROW (simulated) @ shape_base.cpp: {name} takes rank-4 tensors, got shape "
                           f"{list(tensor.shape)} (ShapeBase[] index out of range)")


def _pre_all_gather(kind):
    """Per-row partial statistics of this device's slice of the hidden dim, one tile (32 columns) per statistic:
    sum(x) at column 0 and sum(x^2) at column 32 (layer norm), or sum(x^2) at column 0 (RMS norm)."""
    def op(input_tensor, *, dtype=None, compute_kernel_config=None, memory_config=None, **_):
        _rank4(f"{kind}_norm_pre_all_gather", input_tensor)
        def fn(x):
            x = _f(x)
            stats = torch.zeros(x.shape[:-1] + (2 * TILE if kind == "layer" else TILE,))
            if kind == "layer":
                stats[..., 0], stats[..., TILE] = x.sum(-1), (x * x).sum(-1)
            else:
                stats[..., 0] = (x * x).sum(-1)
            return stats

        return _map(fn, input_tensor, dtype=dtype or float32)

    return op


def _post_all_gather(kind):
    """Normalise this device's slice with statistics gathered from every device on the axis."""
    def op(input_tensor, stats, *, epsilon=1e-12, weight=None, bias=None, memory_config=None,
           compute_kernel_config=None, program_config=None, dtype=None, **_):
        _rank4(f"{kind}_norm_post_all_gather", input_tensor)
        width = 2 * TILE if kind == "layer" else TILE  # one device's statistics, as _pre_all_gather lays them out

        def fn(x, st, w=None, b=None):
            x = _f(x)
            st = _f(st).reshape(st.shape[:-1] + (st.shape[-1] // width, width))
            count = x.shape[-1] * st.shape[-2]
            if kind == "layer":
                mean = st[..., 0].sum(-1, keepdim=True) / count
                var = st[..., TILE].sum(-1, keepdim=True) / count - mean * mean
                y = (x - mean) * torch.rsqrt(var + epsilon)
            else:
                y = x * torch.rsqrt(st[..., 0].sum(-1, keepdim=True) / count + epsilon)
            if w is not None:
                y = y * _norm_row(w, x)
            if b is not None:
                y = y + _norm_row(b, x)
            return y

        extras = [t for t in (weight, bias) if t is not None]

        def call(x, st, *rest):
            it = iter(rest)
            return fn(x, st, next(it) if weight is not None else None, next(it) if bias is not None else None)

        return _map(call, input_tensor, stats, *extras, dtype=dtype)

    return op


layer_norm_pre_all_gather = sim_op("layer_norm_pre_all_gather")(_pre_all_gather("layer"))
layer_norm_post_all_gather = sim_op("layer_norm_post_all_gather")(_post_all_gather("layer"))
rms_norm_pre_all_gather = sim_op("rms_norm_pre_all_gather")(_pre_all_gather("rms"))
rms_norm_post_all_gather = sim_op("rms_norm_post_all_gather")(_post_all_gather("rms"))


@sim_op("gelu")
def gelu(input_tensor, *, fast_and_approximate_mode=False, memory_config=None, **_):
    approximate = "tanh" if fast_and_approximate_mode else "none"
    return _map(lambda x: F.gelu(_f(x), approximate=approximate), input_tensor)


def _float_only(name, tensor):
    """ttnn's unary kernels refuse integer inputs (unary_device_operation.cpp, unary_op_supports_integer_dtype)."""
    if tensor.dtype.name in ("int32", "uint32"):
        raise RuntimeError(f"TT_FATAL (simulated) @ unary_device_operation.cpp: {name} does not support integer "
                           f"input dtype {tensor.dtype.name} (unary_op_supports_integer_dtype)")


def _unary(fn, name):
    def op(input_tensor, *, memory_config=None, **_):
        _float_only(name, input_tensor)
        return _map(lambda x: fn(_f(x)), input_tensor)

    return op


silu = sim_op("silu")(_unary(F.silu, "silu"))
relu = sim_op("relu")(_unary(F.relu, "relu"))
neg = sim_op("neg")(_unary(torch.neg, "neg"))
exp = sim_op("exp")(_unary(torch.exp, "exp"))
sin = sim_op("sin")(_unary(torch.sin, "sin"))
cos = sim_op("cos")(_unary(torch.cos, "cos"))
tanh = sim_op("tanh")(_unary(torch.tanh, "tanh"))
sigmoid = sim_op("sigmoid")(_unary(torch.sigmoid, "sigmoid"))
rsqrt = sim_op("rsqrt")(_unary(torch.rsqrt, "rsqrt"))
sqrt = sim_op("sqrt")(_unary(torch.sqrt, "sqrt"))
reciprocal = sim_op("reciprocal")(_unary(torch.reciprocal, "reciprocal"))
abs = sim_op("abs")(_unary(torch.abs, "abs"))  # noqa: A001 - ttnn's name


@sim_op("leaky_relu")
def leaky_relu(input_tensor, negative_slope=0.01, *, memory_config=None, **_):
    _float_only("leaky_relu", input_tensor)
    return _map(lambda x: F.leaky_relu(_f(x), negative_slope), input_tensor)


@sim_op("clamp")
def clamp(input_tensor, min=None, max=None, *, memory_config=None, **_):  # noqa: A002 - ttnn's names
    _float_only("clamp", input_tensor)
    return _map(lambda x: torch.clamp(_f(x), min, max), input_tensor)


def _binary(fn):
    def op(input_tensor_a, input_tensor_b, *, dtype=None, memory_config=None, **_):
        return _map(lambda a, b: fn(_f(a), _f(b)), input_tensor_a, input_tensor_b, dtype=dtype)

    return op


# ttnn's short spellings are the same op; a trace names the op as the program called it
add = sim_op("add")(_binary(torch.add))
subtract = sim_op("subtract", "sub")(_binary(torch.sub))
multiply = sim_op("multiply", "mul")(_binary(torch.mul))
divide = sim_op("divide", "div")(_binary(torch.div))


@sim_op("addcmul")
def addcmul(input_a, input_b, input_c, *, value=1.0, memory_config=None, output_tensor=None):
    """input_a + value * input_b * input_c, broadcast as numpy does (ttnn's ternary ops,
    ternary_device_operation.cpp compute_broadcasted_output_ternary); the product is rounded to the output format
    first, as the separate multiply it replaces would have been."""
    def fn(a, b, c):
        product = round_to(value * _f(b) * _f(c), input_a.dtype.name)
        if product.shape != a.shape and torch.broadcast_shapes(product.shape, a.shape) != a.shape:
            raise RuntimeError(f"TT_FATAL (simulated) @ ternary_device_operation.cpp: addcmul output "
                               f"{list(torch.broadcast_shapes(product.shape, a.shape))} is wider than input_a "
                               f"{list(a.shape)} (meshdit emits the residual as input_a)")
        return _f(a) + product

    return _map(fn, input_a, input_b, input_c)


def _comparison(fn):
    """A comparison or logical op: 1/0 in its operands' format, as ttnn gives them."""
    return _binary(lambda a, b: fn(a, b).to(torch.float32))


gt = sim_op("gt")(_comparison(torch.gt))
ge = sim_op("ge")(_comparison(torch.ge))
lt = sim_op("lt")(_comparison(torch.lt))
le = sim_op("le")(_comparison(torch.le))
eq = sim_op("eq")(_comparison(torch.eq))
ne = sim_op("ne")(_comparison(torch.ne))
logical_and = sim_op("logical_and")(_comparison(lambda a, b: (a != 0) & (b != 0)))
logical_or = sim_op("logical_or")(_comparison(lambda a, b: (a != 0) | (b != 0)))


@sim_op("where")
def where(predicate, true_value, false_value, *, memory_config=None, output_tensor=None, sub_core_grids=None):
    """predicate 1 -> true_value, 0 -> false_value (tensors or numbers); ttnn's where takes TILE tensors only."""
    for t in (predicate, true_value, false_value):
        if hasattr(t, "layout") and t.layout.name != "TILE":
            raise RuntimeError("TT_FATAL (simulated): where takes TILE layout tensors only")
    values = next((t for t in (true_value, false_value) if hasattr(t, "shards")), predicate)
    return _map(lambda p, t, f: torch.where(_f(p) != 0, _f(t) if isinstance(t, torch.Tensor) else t,
                                            _f(f) if isinstance(f, torch.Tensor) else f).to(torch.float32),
                predicate, true_value, false_value, dtype=values.dtype)


def _reduction(fn):
    def op(input_tensor, dim=None, keepdim=False, *, memory_config=None, **_):
        dims = dim if dim is not None else list(range(len(input_tensor.shape)))
        return _map(lambda x: fn(_f(x), dim=dims, keepdim=keepdim), input_tensor)

    return op


mean = sim_op("mean")(_reduction(torch.mean))
sum = sim_op("sum")(_reduction(torch.sum))  # noqa: A001 - ttnn's name


@sim_op("softmax")
def softmax(input_tensor, dim=-1, *, memory_config=None, compute_kernel_config=None, numeric_stable=True):
    return _map(lambda x: torch.softmax(_f(x), dim=dim), input_tensor)


@sim_op("typecast")
def typecast(input_tensor, dtype, *, memory_config=None, **_):
    if dtype.name in ("int32", "uint32"):
        return _map(lambda x: x.to(torch.int64), input_tensor, dtype=dtype)
    return _map(lambda x: x.to(torch.float32), input_tensor, dtype=dtype)


@sim_op("experimental.rotary_embedding_llama")
def rotary_embedding_llama(input_tensor, cos_cache, sin_cache, trans_mat, *, is_decode_mode=False, memory_config=None,
                           compute_kernel_config=None):
    """x * cos + (x @ T per 32-wide tile) * sin, prefill mode, refusing what ttnn 0.81.1 refuses (its
    rotary_embedding_llama_device_operation.cpp checks, confirmed on the mock): every operand a bfloat16 tile, x rank
    4 with a head dim that is whole tiles up to 256 (over 128 only without fp32 accumulation), cos and sin alike as
    [1, 1 or heads, .., head dim], T [1, 1, 32, 32]. The kernel's intermediates (x @ T, each product) go through
    bfloat16 circular buffers, so they are rounded as the four separate ops would be."""
    where = "TT_FATAL (simulated) @ rotary_embedding_llama_device_operation.cpp"
    if is_decode_mode:
        raise NotImplementedError("simulated rotary_embedding_llama: decode mode (height-sharded L1) is not simulated")
    operands = (input_tensor, cos_cache, sin_cache, trans_mat)
    if any(t.dtype.name != "bfloat16" for t in operands):
        raise RuntimeError(f"{where}: All input tensors must have dtype = bfloat16 (got "
                           f"{[t.dtype.name for t in operands]})")
    if any(t.layout is not TILE_LAYOUT for t in operands):
        raise RuntimeError(f"{where}: Inputs to rotary embedding must be tilized")
    shape = list(input_tensor.shape)
    if len(shape) != 4:
        raise RuntimeError(f"TT_THROW (simulated) @ shape_base.cpp: rotary_embedding_llama takes a rank-4 input, got "
                           f"{shape}")
    head_dim = shape[-1]
    if head_dim % TILE or head_dim > 256:
        raise RuntimeError(f"{where}: head dim {head_dim} must be a multiple of {TILE} and at most 256")
    if head_dim > 128 and compute_kernel_config is not None and compute_kernel_config.fp32_dest_acc_en:
        raise RuntimeError(f"{where}: If head_dim is > 128, fp32_dest_acc_en must be False")
    table = list(cos_cache.shape)
    if table != list(sin_cache.shape) or len(table) != 4 or table[0] != 1 or table[-1] != head_dim:
        raise RuntimeError(f"{where}: cos {table} and sin {list(sin_cache.shape)} must match each other and be "
                           f"[1, .., .., {head_dim}]")
    if table[1] not in (1, shape[1]) or table[2] != shape[2]:
        raise NotImplementedError(f"simulated rotary_embedding_llama: tables {table} for input {shape} (one row per "
                                  "token, shared by every head or one per head, is what is simulated)")
    if list(trans_mat.shape) != [1, 1, TILE, TILE]:
        raise RuntimeError(f"{where}: Transformation matrix must be [1, 1, {TILE}, {TILE}], got "
                           f"{list(trans_mat.shape)}")

    def fn(x, c, s, t):
        x = _f(x)
        rotated = round_to((x.reshape(*x.shape[:-1], -1, TILE) @ _f(t)[0, 0]).reshape(x.shape), "bfloat16")
        return round_to(x * _f(c), "bfloat16") + round_to(rotated * _f(s), "bfloat16")

    return _map(fn, *operands)
