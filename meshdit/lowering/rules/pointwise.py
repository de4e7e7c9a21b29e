"""Elementwise ops: ttnn's unary and binary eltwise ops, casts."""

from __future__ import annotations

import torch
import torch.fx as fx

from ..builder import TTNN_DTYPE, Builder
from ..program_ir import Code
from ..registry import lowering
from ...ir.op_classes import COMPARISON, TERNARY

aten = torch.ops.aten

UNARY = {aten.silu.default: "ttnn.silu", aten.relu.default: "ttnn.relu", aten.neg.default: "ttnn.neg",
         aten.exp.default: "ttnn.exp", aten.tanh.default: "ttnn.tanh", aten.sigmoid.default: "ttnn.sigmoid",
         aten.rsqrt.default: "ttnn.rsqrt", aten.sqrt.default: "ttnn.sqrt", aten.reciprocal.default: "ttnn.reciprocal",
         aten.abs.default: "ttnn.abs"}
BINARY = {aten.add.Tensor: "ttnn.add", aten.sub.Tensor: "ttnn.subtract", aten.mul.Tensor: "ttnn.multiply",
          aten.div.Tensor: "ttnn.divide"}
TRIG = {aten.sin.default: "ttnn.sin", aten.cos.default: "ttnn.cos"}


def _float_unary(b: Builder, input, fn: str, kwargs: dict | None = None, args: tuple = ()):
    """A unary op; on an integer tensor (a token count, an id) computed in float32 and cast back, since ttnn's unary
    kernels refuse integer inputs (unary_op_supports_integer_dtype); integers are exact in float32 up to 2**24."""
    dtype = input.meta["val"].dtype
    if dtype.is_floating_point:
        return b.call(fn, (b.arg(input),) + args, kwargs)
    value = b.call("ttnn.typecast", (b.arg(input), Code("ttnn.float32")), shapes=(b.local(input), torch.float32),
                   dtype="float32")
    value = b.call(fn, (value,) + args, kwargs, shapes=(b.local(b.node), torch.float32), dtype="float32")
    return b.call("ttnn.typecast", (value, Code(TTNN_DTYPE[b.dtype_of(b.node.meta["val"].dtype)])))


def _unary(fn: str):
    def rule(b: Builder, input):
        return _float_unary(b, input, fn)

    rule.__name__ = fn.split(".")[-1]
    return rule


for _target, _fn in UNARY.items():
    lowering(_target)(_unary(_fn))


def _trig(fn: str):
    def rule(b: Builder, input):
        # computed in float32 (its argument is in the float32 region: t * 1000 * freq does not fit bfloat16),
        # then cast to the activation dtype
        value = b.arg(input)
        if not input.meta["val"].dtype.is_floating_point:  # unary kernels refuse integers (_float_unary)
            value = b.call("ttnn.typecast", (value, Code("ttnn.float32")), shapes=(b.local(input), torch.float32),
                           dtype="float32")
        value = b.call(fn, (value,), dtype="float32")
        if b.act_dtype == "float32":
            return value
        return b.call("ttnn.typecast", (value, Code(TTNN_DTYPE[b.act_dtype])))

    rule.__name__ = fn.split(".")[-1]
    return rule


for _target, _fn in TRIG.items():
    lowering(_target)(_trig(_fn))


@lowering(aten.leaky_relu.default)
def leaky_relu(b: Builder, input, negative_slope=0.01):
    return _float_unary(b, input, "ttnn.leaky_relu", args=(float(negative_slope),))


@lowering(aten.clamp.default)
def clamp(b: Builder, input, min=None, max=None):
    return _float_unary(b, input, "ttnn.clamp", {"min": None if min is None else float(min),
                                                 "max": None if max is None else float(max)})


@lowering(aten.logical_not.default)
def logical_not(b: Builder, input):
    # a boolean is 1/0 (uint32) on device: compared with 0 in float32, then cast back
    value = b.call("ttnn.typecast", (b.arg(input), Code("ttnn.float32")), shapes=(b.local(input), torch.float32),
                   dtype="float32")
    result = b.call("ttnn.eq", (value, 0.0), shapes=(b.local(b.node), torch.float32), dtype="float32")
    return b.call("ttnn.typecast", (result, Code("ttnn.uint32")))


@lowering(aten.gelu.default)
def gelu(b: Builder, input, approximate):
    return b.call("ttnn.gelu", (b.arg(input),), {"fast_and_approximate_mode": approximate == "tanh"})


def _binary(fn: str):
    def rule(b: Builder, input, other, alpha=1):
        lhs, rhs = input, other
        if not isinstance(lhs, fx.Node):  # scalar op tensor: only add and multiply commute
            if fn not in ("ttnn.add", "ttnn.multiply"):
                return None
            lhs, rhs = rhs, lhs
        right = b.value_or_weight(rhs)
        if alpha != 1:
            if isinstance(rhs, fx.Node):
                right = b.call("ttnn.multiply", (right, alpha), shapes=(b.local(rhs), rhs.meta["val"].dtype))
            else:
                right = right * alpha
        return b.call(fn, (b.value_or_weight(lhs), right))

    rule.__name__ = fn.split(".")[-1]
    return rule


for _target, _fn in BINARY.items():
    lowering(_target)(_binary(_fn))


@lowering(*TERNARY)
def where(b: Builder, condition, input, other):
    # ttnn.where reads a 0/1 predicate of the values' format: a boolean mask (uint32 on device) is cast first
    predicate = b.value_or_weight(condition)
    if isinstance(condition, fx.Node) and condition.meta["val"].dtype in (torch.bool, torch.uint8):
        dtype = b.dtype_of(b.node.meta["val"].dtype)
        predicate = b.call("ttnn.typecast", (predicate, Code(TTNN_DTYPE[dtype])),
                           shapes=(b.local(condition), b.node.meta["val"].dtype))
    return b.call("ttnn.where", (predicate, b.value_or_weight(input), b.value_or_weight(other)))


COMPARE = {"gt": "ttnn.gt", "ge": "ttnn.ge", "lt": "ttnn.lt", "le": "ttnn.le", "eq": "ttnn.eq", "ne": "ttnn.ne",
           "logical_and": "ttnn.logical_and", "logical_or": "ttnn.logical_or"}


@lowering(*COMPARISON)
def compare(b: Builder, input, other):
    """A comparison gives 1/0 in its operands' format, cast to the device's boolean (uint32). Operands are compared
    in float32: integers (ids, mask values) are exact there up to 2**24, and bfloat16 holds them only up to 256."""
    def operand(a):
        if not isinstance(a, fx.Node):
            return float(a)
        value = b.value_or_weight(a)
        if b.dtype_of(a.meta["val"].dtype, a) != "float32":
            value = b.call("ttnn.typecast", (value, Code("ttnn.float32")), shapes=(b.local(a), torch.float32),
                           dtype="float32")
        return value

    fn = COMPARE[b.node.target._schema.name.split("::")[1]]
    result = b.call(fn, (operand(input), operand(other)), shapes=(b.local(b.node), torch.float32), dtype="float32")
    return b.call("ttnn.typecast", (result, Code("ttnn.uint32")))


@lowering(aten.to.dtype)
def cast(b: Builder, input, dtype, **_):
    src, dst = b.dtype_of(input.meta["val"].dtype, input), b.dtype_of(b.node.meta["val"].dtype)
    if src == dst:
        return b.arg(input)  # float-to-float casts vanish: every float activation has the program dtype
    return b.call("ttnn.typecast", (b.arg(input), Code(TTNN_DTYPE[dst])))
