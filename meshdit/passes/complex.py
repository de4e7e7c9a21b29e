"""Complex arithmetic into real pairs: the device has no complex dtype.

RoPE is often written with complex numbers (`torch.polar` tables, `view_as_complex(x.reshape(..., -1, 2)) *
freqs_cis`, `view_as_real(...)`). Every complex value becomes a pair of real values of the same shape, its real and
imaginary parts, and every op on complex values the same op on the pair:

    view_as_complex(x[..., 2])      -> (x[..., 0], x[..., 1])
    view_as_real(z)                 -> cat([re[..., None], im[..., None]], -1)
    a * b                           -> (ar*br - ai*bi, ar*bi + ai*br)      (a real factor scales both parts)
    a + b, a - b, -a                -> part by part
    polar(r, theta), complex(x, y)  -> (r cos theta, r sin theta), (x, y)
    conj(z), real(z), imag(z)       -> (re, -im), re, im
    reshape, permute, slice, cat, expand, casts  -> on both parts
A complex constant (a folded frequency table) is split into its two real parts by ops on constants, which constant
folding then moves to the host recipe. Every rewrite keeps the graph's value.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from ..errors import UnsupportedOpError, node_location
from ..ir.graph import ModelGraph, emit, finalize, shape_of
from .fold import fold_constants

aten = torch.ops.aten

# Ops that act on a complex value's two parts alike (the other arguments are shapes, dims, indices).
PART_WISE = {aten.reshape.default, aten.permute.default, aten.slice.Tensor, aten.expand.default,
             aten.clone.default, aten.contiguous.default, aten.alias.default, aten.gather.default,
             aten.index_select.default, aten.index.Tensor, aten.repeat.default}
CASTS = {aten.to.dtype, aten._to_copy.default, aten.to.dtype_layout}


def _is_complex(node) -> bool:
    return isinstance(node, fx.Node) and getattr(node.meta.get("val"), "dtype", torch.float32).is_complex


def _real_dtype(node) -> torch.dtype:
    return {torch.complex64: torch.float32, torch.complex128: torch.float64,
            torch.complex32: torch.float16}[node.meta["val"].dtype]


def decompose_complex(mg: ModelGraph) -> int:
    """Rewrite every complex value as a pair of real ones; returns how many complex nodes were rewritten."""
    graph = mg.gm.graph
    pairs: dict = {}  # complex node -> (real part, imaginary part)
    rewritten = 0
    for node in list(graph.nodes):
        if node.op == "output":
            if any(_is_complex(o) for o in node.all_input_nodes):
                raise UnsupportedOpError(f"the model returns a complex value: the device has no complex dtype "
                                         f"({[o.name for o in node.all_input_nodes if _is_complex(o)]})")
            continue
        consumes = [a for a in node.all_input_nodes if a in pairs or _is_complex(a)]
        if not _is_complex(node) and not consumes:
            continue
        if node.op == "placeholder" and node.meta.get("kind") == "input":
            raise UnsupportedOpError(f"input '{node.name}' is complex and the device has no complex dtype: pass it as "
                                     "its real pairs (torch.view_as_real), or list it in static_inputs")
        first_op = next(n for n in graph.nodes if n.op != "placeholder")
        with graph.inserting_before(node if node.op != "placeholder" else first_op):
            if _is_complex(node):
                pairs[node] = _pair_of(graph, node, pairs)
            else:
                node.replace_all_uses_with(_real_of(graph, node, pairs))
        rewritten += 1
    if rewritten:
        finalize(mg)
        fold_constants(mg)
    return rewritten


def _part(graph, z, index, like):
    """Real (0) or imaginary (1) part of a complex placeholder, by ops on it that folding moves to the host."""
    pairs = emit(graph, aten.view_as_real.default, (z,), like=like)
    part = emit(graph, aten.slice.Tensor, (pairs, -1, index, index + 1), like=like)
    return emit(graph, aten.reshape.default, (part, shape_of(z)), like=like)


def _where_for(a, b):
    """The where overload for tensor or scalar operands."""
    scalar_a, scalar_b = not isinstance(a, fx.Node), not isinstance(b, fx.Node)
    return {(False, False): aten.where.self, (True, False): aten.where.ScalarSelf,
            (False, True): aten.where.ScalarOther, (True, True): aten.where.Scalar}[(scalar_a, scalar_b)]


def _pair_of(graph, node, pairs):
    """The (real, imaginary) pair of a complex-valued node."""
    target, args = node.target, node.args
    if node.op == "placeholder":  # a complex constant
        return _part(graph, node, 0, node), _part(graph, node, 1, node)
    if target in (aten.full.default, aten.zeros.default):  # a complex table made in the forward (then filled)
        value = complex(args[1]) if target is aten.full.default else 0j
        real = _real_dtype(node)
        return tuple(emit(graph, aten.full.default, (list(shape_of(node)), part), {"dtype": real}, like=node)
                     for part in (value.real, value.imag))
    if target is aten.view_as_complex.default:
        x = args[0]
        shape = shape_of(x)[:-1]
        parts = [emit(graph, aten.slice.Tensor, (x, -1, i, i + 1), like=node) for i in (0, 1)]
        return tuple(emit(graph, aten.reshape.default, (p, shape), like=node) for p in parts)
    if target in (aten.polar.default, aten.complex.default):
        a, b = args[0], args[1]
        if target is aten.complex.default:
            return a, b
        return (emit(graph, aten.mul.Tensor, (a, emit(graph, aten.cos.default, (b,), like=node)), like=node),
                emit(graph, aten.mul.Tensor, (a, emit(graph, aten.sin.default, (b,), like=node)), like=node))
    if target in (aten.mul.Tensor, aten.add.Tensor, aten.sub.Tensor):
        a, b = (pairs.get(x, x) for x in args[:2])
        if node.kwargs.get("alpha", 1) != 1:
            raise UnsupportedOpError(f"complex {target} with alpha at {node_location(node)}")
        return _arith(graph, target, a, b, node)
    if target is aten.neg.default:
        re, im = pairs[args[0]]
        return emit(graph, aten.neg.default, (re,), like=node), emit(graph, aten.neg.default, (im,), like=node)
    if target in (aten.conj.default, aten._conj.default, aten.resolve_conj.default, aten.conj_physical.default):
        re, im = pairs[args[0]]
        if target is aten.resolve_conj.default:
            return re, im
        return re, emit(graph, aten.neg.default, (im,), like=node)
    if target in PART_WISE:
        re, im = pairs[args[0]]
        rest = tuple(args[1:])
        if target is aten.reshape.default or target is aten.expand.default:
            return tuple(emit(graph, target, (p,) + rest, like=node) for p in (re, im))
        return tuple(emit(graph, target, (p,) + rest, dict(node.kwargs), like=node) for p in (re, im))
    if target in (aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar):
        cond = args[0]

        def pair(v):  # a real operand has a zero imaginary part
            if v in pairs:
                return pairs[v]
            if not isinstance(v, fx.Node):
                return complex(v).real, complex(v).imag
            return v, emit(graph, aten.mul.Tensor, (v, 0.0), like=node)

        (ar, ai), (br, bi) = pair(args[1]), pair(args[2])
        return tuple(emit(graph, _where_for(a, b), (cond, a, b), like=node) for a, b in ((ar, br), (ai, bi)))
    if target is aten.cat.default:
        parts = [pairs[t] for t in args[0]]
        dim = args[1] if len(args) > 1 else 0
        return tuple(emit(graph, aten.cat.default, ([p[i] for p in parts], dim), like=node) for i in (0, 1))
    if target in CASTS:
        source = args[0]
        if source in pairs:
            re, im = pairs[source]
        else:  # a real value made complex: imaginary part zero
            re, im = source, emit(graph, aten.mul.Tensor, (source, 0.0), like=node)
        dtype = _real_dtype(node)
        return tuple(emit(graph, aten.to.dtype, (p, dtype), like=node) for p in (re, im))
    raise UnsupportedOpError(f"complex {target} at {node_location(node)} has no real-pair form; the device has no "
                             "complex dtype (add its rule to meshdit/passes/complex.py)")


def _arith(graph, target, a, b, like):
    """a op b where either may be a (re, im) pair, a real node or a scalar."""
    a_pair, b_pair = isinstance(a, tuple), isinstance(b, tuple)

    def op(fn, x, y):
        return emit(graph, fn, (x, y), like=like)

    if target is aten.mul.Tensor:
        if a_pair and b_pair:
            (ar, ai), (br, bi) = a, b
            return (op(aten.sub.Tensor, op(aten.mul.Tensor, ar, br), op(aten.mul.Tensor, ai, bi)),
                    op(aten.add.Tensor, op(aten.mul.Tensor, ar, bi), op(aten.mul.Tensor, ai, br)))
        (re, im), factor = (a, b) if a_pair else (b, a)
        return op(aten.mul.Tensor, re, factor), op(aten.mul.Tensor, im, factor)
    if a_pair and b_pair:
        return op(target, a[0], b[0]), op(target, a[1], b[1])
    if a_pair:  # complex +- real: the real part moves
        return op(target, a[0], b), a[1]
    # real +- complex
    return op(target, a, b[0]), (b[1] if target is aten.add.Tensor else emit(graph, aten.neg.default, (b[1],),
                                                                              like=like))


def _real_of(graph, node, pairs):
    """The replacement of a real-valued node that reads complex values."""
    target, args = node.target, node.args
    if target is aten.view_as_real.default:
        re, im = pairs[args[0]]
        shape = shape_of(re) + [1]
        parts = [emit(graph, aten.reshape.default, (p, shape), like=node) for p in (re, im)]
        return emit(graph, aten.cat.default, (parts, -1), like=node)
    if target in (aten.real.default, aten.imag.default):
        return pairs[args[0]][0 if target is aten.real.default else 1]
    if target is aten.abs.default:
        re, im = pairs[args[0]]
        squares = emit(graph, aten.add.Tensor, (emit(graph, aten.mul.Tensor, (re, re), like=node),
                                                emit(graph, aten.mul.Tensor, (im, im), like=node)), like=node)
        return emit(graph, aten.sqrt.default, (squares,), like=node)
    raise UnsupportedOpError(f"{target} at {node_location(node)} reads a complex value and has no real-pair form; "
                             "the device has no complex dtype (add its rule to meshdit/passes/complex.py)")
