"""A complex product written on channel pairs becomes one rotation: x * C' + (x @ T) * S'.

RoPE written without complex numbers takes each channel pair (e, o) of x apart, multiplies it by (cos, sin) as a
complex product, and puts the two results back where the pair came from:

    e, o = pick(x)                           the even and odd channels (x[..., 0::2], x[..., 1::2]), or the halves
    a = e * C - o * S,  b = e * S + o * C    (either operand order in each product and in the sum)
    y = place(a, b)                          back to e's and o's positions: interleaved (stack(-1) + flatten) after
                                             even/odd, concatenated after halves

Every output channel is then its own input channel times C, plus its partner's times -S or +S:

    y = x * place(C, C) + (x @ T) * place(S, S),     T = place(-pick_odd(I), pick_even(I)), the pair rotation

four ops on full-width tensors instead of nine (two strided slices, four products, a sum, a difference, and the
interleave); place(C, C) and T are constants when C is (folded to the host recipe). With interleaved pairs T is
block-diagonal in 32 x 32 tiles, so lowering/rules/rotary.py makes the whole rotation one ttnn
rotary_embedding_llama, as TT-DiT runs Mochi's RoPE. Nothing here knows about RoPE or any model: every such
product is rewritten, and any other use of its intermediates leaves it as it is.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from ..ir.graph import ModelGraph, emit, finalize, replace_node, shape_of
from .fold import fold_constants

aten = torch.ops.aten


def _slice_args(node: fx.Node):
    """(input, dim, start, end, step) of a slice, normalised to the input's size; None for anything else."""
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target is aten.slice.Tensor):
        return None
    x = node.args[0]
    rank, args = len(shape_of(x)), list(node.args) + [None] * (5 - len(node.args))
    size = shape_of(x)[args[1] % rank]
    start = args[2] or 0
    end = size if args[3] is None else min(args[3], size)
    return x, args[1] % rank, start + size if start < 0 else start, end + size if end < 0 else end, args[4] or 1


def _pick(e: fx.Node, o: fx.Node):
    """(x, layout) when e and o take x's last dim apart into pairs: "interleaved" (even and odd channels) or
    "halves"; None otherwise."""
    se, so = _slice_args(e), _slice_args(o)
    if se is None or so is None or se[0] is not so[0]:
        return None
    x = se[0]
    rank, width = len(shape_of(x)), shape_of(x)[-1]
    if se[1] != rank - 1 or so[1] != rank - 1 or width % 2:
        return None
    if (se[2:], so[2:]) == ((0, width, 2), (1, width, 2)):
        return x, "interleaved"
    if (se[2:], so[2:]) == ((0, width // 2, 1), (width // 2, width, 1)):
        return x, "halves"
    return None


def _factors(node: fx.Node) -> tuple | None:
    """The two operands of a product (a mul of two nodes); None for anything else."""
    if node.op != "call_function" or node.target is not aten.mul.Tensor:
        return None
    a, b = node.args[:2]
    return (a, b) if isinstance(a, fx.Node) and isinstance(b, fx.Node) else None


def _times(product: fx.Node, channel: fx.Node):
    """The factor multiplying `channel` in `product`, or None."""
    factors = _factors(product)
    if factors is None or channel not in factors:
        return None
    other = factors[1] if factors[0] is channel else factors[0]
    return None if other is channel else other


def _placed(a: fx.Node, b: fx.Node) -> tuple | None:
    """(y, layout) when the only reader of a and b puts them back as pairs: cat([a, b], -1) ("halves"), or
    reshape(cat([a[..., None], b[..., None]], -1), [..., 2 * width]) ("interleaved")."""
    if len(a.users) != 1 or len(b.users) != 1:
        return None
    ua, ub = next(iter(a.users)), next(iter(b.users))
    rank = len(shape_of(a))
    if ua is ub and ua.target is aten.cat.default and list(ua.args[0]) == [a, b] and \
            (ua.args[1] if len(ua.args) > 1 else 0) % rank == rank - 1:
        return ua, "halves"
    column = shape_of(a) + [1]
    if not all(u.target is aten.reshape.default and shape_of(u) == column and len(u.users) == 1 for u in (ua, ub)):
        return None
    cat, other = next(iter(ua.users)), next(iter(ub.users))
    if cat is not other or cat.target is not aten.cat.default or list(cat.args[0]) != [ua, ub] or \
            (cat.args[1] if len(cat.args) > 1 else 0) % (rank + 1) != rank or len(cat.users) != 1:
        return None
    flat = next(iter(cat.users))
    if flat.target is not aten.reshape.default or shape_of(flat) != shape_of(a)[:-1] + [2 * shape_of(a)[-1]]:
        return None
    return flat, "interleaved"


def _match(sub: fx.Node):
    """(x, C, S, y, layout) for the complex product whose real part is `sub` (see the module docstring)."""
    if sub.target is not aten.sub.Tensor or len(sub.args) > 2 or sub.kwargs:
        return None
    ec, os_ = sub.args
    if not (isinstance(ec, fx.Node) and isinstance(os_, fx.Node)) or _factors(ec) is None or _factors(os_) is None:
        return None
    if len(sub.users) != 1 or ec is os_:
        return None
    for e, cos in (_factors(ec), reversed(_factors(ec))):
        for o, sin in (_factors(os_), reversed(_factors(os_))):
            found = _pick(e, o)
            if found is None:
                continue
            x, layout = found
            placed = _placed_after(sub, e, o, cos, sin)
            if placed is not None and placed[1] == layout:
                return x, cos, sin, placed[0], layout
    return None


def _placed_after(sub: fx.Node, e: fx.Node, o: fx.Node, cos: fx.Node, sin: fx.Node):
    """The placement of (sub, its imaginary part e * sin + o * cos), when every intermediate is read only here."""
    products = {p for p in list(e.users) + list(o.users)}
    if len(products) != 4 or len(e.users) != 2 or len(o.users) != 2:
        return None
    rest = [p for p in products if p not in sub.args]
    if len(rest) != 2 or any(len(p.users) != 1 for p in products):
        return None
    imag = next(iter(rest[0].users))
    if imag is not next(iter(rest[1].users)) or imag.target is not aten.add.Tensor or len(imag.args) > 2 or \
            imag.kwargs or set(imag.args) != set(rest):
        return None
    if {(_times(p, e), _times(p, o)) for p in rest} != {(sin, None), (None, cos)}:
        return None
    if any(shape_of(p) != shape_of(e) for p in products) or shape_of(e) != shape_of(o):
        return None  # a table broadcasting the channels to a larger shape is not a per-channel factor
    return _placed(sub, imag)


def _place(graph, a: fx.Node, b: fx.Node, layout: str, like: fx.Node) -> fx.Node:
    """a and b put back as pairs along the last dim (a table with a last dim of 1 applies to both alike)."""
    if shape_of(a)[-1] == 1 and shape_of(b)[-1] == 1 and a is b:
        return a
    if layout == "halves":
        return emit(graph, aten.cat.default, ([a, b], -1), like=like)
    columns = [emit(graph, aten.reshape.default, (t, shape_of(t) + [1]), like=like) for t in (a, b)]
    pairs = emit(graph, aten.cat.default, (columns, -1), like=like)
    return emit(graph, aten.reshape.default, (pairs, shape_of(a)[:-1] + [2 * shape_of(a)[-1]]), like=like)


def _rotation(graph, width: int, layout: str, dtype, like: fx.Node) -> fx.Node:
    """T [width, width]: x @ T puts -odd where each even channel was and even where each odd one was."""
    eye = emit(graph, aten.eye.default, (width,), {"dtype": dtype}, like=like)
    if layout == "halves":
        even = emit(graph, aten.slice.Tensor, (eye, 1, 0, width // 2), like=like)
        odd = emit(graph, aten.slice.Tensor, (eye, 1, width // 2, width), like=like)
    else:
        even = emit(graph, aten.slice.Tensor, (eye, 1, 0, width, 2), like=like)
        odd = emit(graph, aten.slice.Tensor, (eye, 1, 1, width, 2), like=like)
    return _place(graph, emit(graph, aten.neg.default, (odd,), like=like), even, layout, like)


def pair_products_as_rotations(mg: ModelGraph) -> int:
    """Rewrite every complex product on channel pairs (see the module docstring); returns how many."""
    graph = mg.gm.graph
    rewritten = 0
    for sub in [n for n in graph.nodes if n.op == "call_function" and n.target is aten.sub.Tensor]:
        found = _match(sub)
        if found is None:
            continue
        x, cos, sin, y, layout = found
        with graph.inserting_before(y):
            cos_pairs = _place(graph, cos, cos, layout, y)
            sin_pairs = _place(graph, sin, sin, layout, y)
            rotation = _rotation(graph, shape_of(x)[-1], layout, x.meta["val"].dtype, y)
            rotated = emit(graph, aten.matmul.default, (x, rotation), like=y)
            out = emit(graph, aten.add.Tensor, (emit(graph, aten.mul.Tensor, (x, cos_pairs), like=y),
                                                emit(graph, aten.mul.Tensor, (rotated, sin_pairs), like=y)), like=y)
        replace_node(y, out)
        rewritten += 1
    if rewritten:
        finalize(mg)
        fold_constants(mg)
    return rewritten
