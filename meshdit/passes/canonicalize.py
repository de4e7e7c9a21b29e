"""Rewrite the many ATen spellings of one operation into one canonical op, so later stages see a small vocabulary.

    views (view, unflatten, flatten, squeeze, unsqueeze, ...)   -> aten.reshape
    transpose, t                                               -> aten.permute
    select, chunk, split, split_with_sizes, unbind            -> aten.slice (+ reshape)
    stack                                                      -> reshape + aten.cat (cat of one tensor: dropped)
    pow(x, 2), outer, repeat_interleave(int), rsub, pad        -> mul / reshape+mul / reshape+expand / neg+add /
                                                                  constant_pad_nd
    single-operand einsum that only permutes                   -> aten.permute
    casts (to.dtype_layout, to.device, _to_copy, type_as)      -> aten.to.dtype (where values live on the mesh is
                                                                  the lowering's business, not the model's)
    index, index_select with a constant 1-d index              -> aten.slice (a contiguous range), else a one-hot
                                                                  aten.matmul over that dim
    index_put with a constant 1-d index (or boolean mask)      -> a one-hot aten.matmul placing the values, added
                                                                  to x with those positions zeroed
    embedding (a table lookup)                                 -> one-hot (eq against arange) + aten.matmul
    conv2d with stride == kernel, no padding (patchify)        -> reshape/permute + aten.linear
Every rule keeps the value of the graph exactly (verified by tests that run the graph before and after).
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx

from .fold import fold_constants
from ..ir.graph import ModelGraph, emit, finalize, is_const, replace_node, shape_of

aten = torch.ops.aten


def _reshape(graph, x, shape, like):
    if shape_of(x) == list(shape):
        return x
    return emit(graph, aten.reshape.default, (x, list(shape)), like=like)


def _permute(graph, x, perm, like):
    perm = [p % len(perm) for p in perm]
    if perm == list(range(len(perm))):
        return x
    return emit(graph, aten.permute.default, (x, perm), like=like)


def _slice(graph, x, dim, start, end, like):
    size = shape_of(x)[dim]
    if start == 0 and end >= size:
        return x
    return emit(graph, aten.slice.Tensor, (x, dim, start, end), like=like)


def _as_reshape(graph, node):
    return _reshape(graph, node.args[0], shape_of(node), node)


def _transpose(graph, node):
    rank = len(shape_of(node))
    perm = list(range(rank))
    if node.target is aten.t.default:
        perm = perm[::-1]
    else:
        a, b = node.args[1] % rank, node.args[2] % rank
        perm[a], perm[b] = perm[b], perm[a]
    return _permute(graph, node.args[0], perm, node)


def _permute_rule(graph, node):
    return _permute(graph, node.args[0], list(node.args[1]), node)


def _select(graph, node):
    x, dim, index = node.args
    dim %= len(shape_of(x))
    index %= shape_of(x)[dim]
    sliced = _slice(graph, x, dim, index, index + 1, node)
    return _reshape(graph, sliced, shape_of(node), node)


def _slice_rule(graph, node):
    x = node.args[0]
    shape = shape_of(x)
    dim = (node.args[1] if len(node.args) > 1 else 0) % len(shape)
    start = node.args[2] if len(node.args) > 2 and node.args[2] is not None else 0
    end = node.args[3] if len(node.args) > 3 and node.args[3] is not None else shape[dim]
    step = node.args[4] if len(node.args) > 4 else 1
    start = max(0, start + shape[dim] if start < 0 else start)
    end = min(shape[dim], end + shape[dim] if end < 0 else end)
    if step != 1:
        return None  # strided slices stay as they are (lowered as a strided ttnn.slice)
    if start == 0 and end == shape[dim]:
        return x
    if list(node.args[1:4]) == [dim, start, end] and len(node.args) == 4:
        return None
    return emit(graph, aten.slice.Tensor, (x, dim, start, end), like=node)


def _split_like(graph, node):
    """chunk / split / unbind: replace every getitem user by a slice of the input."""
    x = node.args[0]
    parts = node.meta["val"]
    if node.target is aten.unbind.int:
        dim = (node.args[1] if len(node.args) > 1 else 0) % len(shape_of(x))
    else:
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        dim %= len(shape_of(x))
    offsets, start = [], 0
    for part in parts:
        size = 1 if node.target is aten.unbind.int else part.shape[dim]
        offsets.append((start, start + size))
        start += size
    for user in list(node.users):
        if user.target is not operator.getitem:
            return None
    for user in list(node.users):
        lo, hi = offsets[user.args[1]]
        with graph.inserting_before(user):
            value = _slice(graph, x, dim, lo, hi, user)
            if node.target is aten.unbind.int:
                value = _reshape(graph, value, shape_of(user), user)
        replace_node(user, value)
    return "erase"


def _stack(graph, node):
    tensors, dim = node.args[0], (node.args[1] if len(node.args) > 1 else 0)
    rank = len(shape_of(node))
    dim %= rank
    pieces = []
    for t in tensors:
        shape = shape_of(t)
        pieces.append(_reshape(graph, t, shape[:dim] + [1] + shape[dim:], node))
    return emit(graph, aten.cat.default, (pieces, dim), like=node)


def _cat(graph, node):
    parts = node.args[0]
    kept = [p for p in parts if math.prod(shape_of(p))] or parts[:1]  # empty pieces add nothing
    if len(kept) == 1:
        return kept[0]  # cat of one tensor is that tensor
    if len(kept) < len(parts):
        return emit(graph, aten.cat.default, (kept,) + tuple(node.args[1:]), like=node)
    return None


def _pow(graph, node):
    x, exponent = node.args
    if exponent == 2:
        return emit(graph, aten.mul.Tensor, (x, x), like=node)
    if exponent == 1:
        return x
    if exponent == 0.5:
        return emit(graph, aten.sqrt.default, (x,), like=node)
    if exponent == -0.5:
        return emit(graph, aten.rsqrt.default, (x,), like=node)
    return None


def _outer(graph, node):
    a, b = node.args
    left = _reshape(graph, a, [shape_of(a)[0], 1], node)
    right = _reshape(graph, b, [1, shape_of(b)[0]], node)
    return emit(graph, aten.mul.Tensor, (left, right), like=node)


def _repeat_interleave(graph, node):
    x = node.args[0]
    repeats = node.args[1]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim")
    if dim is None or not isinstance(repeats, int):
        return None
    shape = shape_of(x)
    dim %= len(shape)
    expanded_shape = shape[: dim + 1] + [repeats] + shape[dim + 1:]
    unsq = _reshape(graph, x, shape[: dim + 1] + [1] + shape[dim + 1:], node)
    expanded = emit(graph, aten.expand.default, (unsq, expanded_shape), like=node)
    return _reshape(graph, expanded, shape_of(node), node)


def _one_hot(graph, positions, size: int, like):
    """[*positions.shape, size] booleans: (positions[..., None] == arange(size)), the selection every one-hot matmul
    here is made of (folded to a constant when the positions are)."""
    rows = emit(graph, aten.arange.default, (size,), {"dtype": positions.meta["val"].dtype}, like=like)
    return emit(graph, aten.eq.Tensor, (_reshape(graph, positions, shape_of(positions) + [1], like), rows), like=like)


def _embedding(graph, node):
    """A table lookup as a one-hot matmul: (indices[..., None] == arange(rows)) @ table, exact (one product per
    output) and on device (the comparison and the matmul have lowerings; ttnn.embedding takes bfloat16 tables
    only). A DiT looks up a class label or a few ids in a small table, so the one-hot stays small."""
    table, indices = node.args[0], node.args[1]
    hits = _one_hot(graph, indices, shape_of(table)[0], node)
    one_hot = emit(graph, aten.to.dtype, (hits, table.meta["val"].dtype), like=node)
    return emit(graph, aten.matmul.default, (one_hot, table), like=node)


def _rsub(graph, node):
    x, other = node.args[0], node.args[1]
    alpha = node.kwargs.get("alpha", 1)
    if alpha != 1:
        return None
    negated = emit(graph, aten.neg.default, (x,), like=node)
    return emit(graph, aten.add.Tensor, (negated, other), like=node)


def _pad(graph, node):
    x, pad = node.args[0], node.args[1]
    mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
    value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
    if mode != "constant":
        return None
    if all(p == 0 for p in pad):
        return x
    return emit(graph, aten.constant_pad_nd.default, (x, list(pad), value or 0.0), like=node)


def _einsum(graph, node):
    """einsum as canonical ops: one operand -> permute; two -> an elementwise product of the operands laid out in the
    output's index order (no index summed), or a matmul over the summed indices (batch indices kept)."""
    equation, operands = node.args[0], node.args[1]
    if "->" not in equation or len(operands) not in (1, 2):
        return None
    inputs, rhs = equation.replace(" ", "").split("->")
    subscripts = inputs.split(",")
    if "..." in equation:  # name the ellipsis dims (right-aligned, as they broadcast)
        spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in equation]
        counts = [len(shape_of(x)) - (len(sub) - 3) if "..." in sub else 0 for sub, x in zip(subscripts, operands)]
        width = max(counts)
        names = "".join(spare[:width])
        subscripts = [sub.replace("...", names[width - n:]) for sub, n in zip(subscripts, counts)]
        rhs = rhs.replace("...", names)
    if any(len(set(s)) != len(s) for s in subscripts + [rhs]):
        return None  # a repeated index (a diagonal, a trace)
    if len(operands) == 1:
        if sorted(subscripts[0]) != sorted(rhs):
            return None
        return _permute(graph, operands[0], [subscripts[0].index(c) for c in rhs], node)
    (sa, sb), (a, b) = subscripts, operands
    summed = [c for c in sa if c in sb and c not in rhs]
    if any(c not in sa + sb for c in rhs) or any(c not in rhs and c not in summed for c in sa + sb):
        return None
    if not summed:  # an outer or broadcast product
        return emit(graph, aten.mul.Tensor, (_in_order(graph, a, sa, rhs, node), _in_order(graph, b, sb, rhs, node)),
                    like=node)
    size = {c: n for s, x in ((sa, a), (sb, b)) for c, n in zip(s, shape_of(x))}
    batch = [c for c in rhs if c in sa and c in sb]
    free_a = [c for c in rhs if c in sa and c not in sb]
    free_b = [c for c in rhs if c in sb and c not in sa]
    prod = lambda cs: math.prod(size[c] for c in cs)  # noqa: E731
    left = _permute(graph, a, [sa.index(c) for c in batch + free_a + summed], node)
    left = _reshape(graph, left, [size[c] for c in batch] + [prod(free_a), prod(summed)], node)
    right = _permute(graph, b, [sb.index(c) for c in batch + summed + free_b], node)
    right = _reshape(graph, right, [size[c] for c in batch] + [prod(summed), prod(free_b)], node)
    out = emit(graph, aten.matmul.default, (left, right), like=node)
    order = batch + free_a + free_b
    out = _reshape(graph, out, [size[c] for c in order], node)
    return _permute(graph, out, [order.index(c) for c in rhs], node)


def _in_order(graph, x, subscript, rhs, like):
    """x (indexed by `subscript`) permuted to the order its indices have in `rhs`, with size-1 dims for the rest."""
    present = [c for c in rhs if c in subscript]
    x = _permute(graph, x, [subscript.index(c) for c in present], like)
    sizes = dict(zip(present, [shape_of(x)[i] for i in range(len(present))]))
    return _reshape(graph, x, [sizes.get(c, 1) for c in rhs], like)


def _cast(graph, node):
    x = node.args[0]
    dtype = node.meta["val"].dtype
    if x.meta["val"].dtype == dtype:
        return x
    if node.target is aten.to.dtype and len(node.args) == 2 and not node.kwargs:
        return None
    return emit(graph, aten.to.dtype, (x, dtype), like=node)


def _index(graph, node, constants):
    """x[..., idx, ...] with one constant 1-d index tensor: a contiguous ascending range -> slice; other positions
    (a reordering, repeats) -> a one-hot matmul over that dim."""
    x, indices = node.args
    live = [(d, i) for d, i in enumerate(indices) if i is not None]
    if len(live) != 1:
        return None
    return _gather(graph, x, live[0][0], live[0][1], constants, node)


def _index_select(graph, node, constants):
    x, dim, idx = node.args
    return _gather(graph, x, dim % len(shape_of(x)), idx, constants, node)


def _gather(graph, x, dim, idx, constants, like):
    if not is_const(idx):
        return None
    value = constants[idx.meta["key"]].value
    if value is None or value.dim() != 1 or value.dtype in (torch.bool,) or not len(value):
        return None
    values = value.tolist()
    if values == list(range(values[0], values[0] + len(values))):
        return _slice(graph, x, dim, values[0], values[0] + len(values), like)
    if not x.meta["val"].dtype.is_floating_point:
        return None
    # x with `dim` moved last, times a constant [N, M] selection (column j is one-hot at position idx[j]): each
    # output is one product with 1.0, so the gather is exact; the selection folds to a constant
    rank, size = len(shape_of(x)), shape_of(x)[dim]
    perm = [d for d in range(rank) if d != dim] + [dim]
    hits = _permute(graph, _one_hot(graph, idx, size, like), [1, 0], like)  # [N, M]: column j picks idx[j]
    selection = emit(graph, aten.to.dtype, (hits, x.meta["val"].dtype), like=like)
    gathered = emit(graph, aten.matmul.default, (_permute(graph, x, perm, like), selection), like=like)
    return _permute(graph, gathered, [perm.index(d) for d in range(rank)], like)


def _index_put(graph, node, constants):
    """x[..., idx, ...] = v (or += v) with one constant 1-d index (positions, or a boolean mask) -> a one-hot
    matmul that carries v to its positions, added to x with those positions zeroed (kept, for +=). Exact: each
    output is x, or one product of v with 1.0 (a sum of them where += repeats a position). The selection and the
    zeroing are constants (folded)."""
    x, indices, values = node.args[:3]
    accumulate = node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False)
    live = [(d, i) for d, i in enumerate(indices) if i is not None]
    if len(live) != 1 or not is_const(live[0][1]) or not x.meta["val"].dtype.is_floating_point:
        return None
    dim, idx = live[0]
    value = constants[idx.meta["key"]].value
    if value is None or value.dim() != 1:
        return None
    boolean = value.dtype == torch.bool
    positions = value.nonzero()[:, 0].tolist() if boolean else value.tolist()
    shape, rank = shape_of(x), len(shape_of(x))
    if not positions or min(positions) < 0 or (not accumulate and len(set(positions)) < len(positions)):
        return None  # a repeated position without += : torch leaves which write wins unspecified
    expected = shape[:dim] + [len(positions)] + shape[dim + 1:]
    if shape_of(values) != expected:  # values broadcast over the written positions (torch drops leading 1s)
        try:
            if list(torch.broadcast_shapes(tuple(shape_of(values)), tuple(expected))) != expected:
                return None
        except RuntimeError:
            return None
        values = emit(graph, aten.expand.default, (values, expected), like=node)
    count, size = len(positions), shape[dim]
    if boolean:  # value j goes to the j-th True position: where the running count of Trues is j + 1
        order = emit(graph, aten.cumsum.default, (idx, 0), {"dtype": torch.int64}, like=node)
        order = emit(graph, aten.add.Tensor, (order, -1), like=node)
        hits = _permute(graph, _one_hot(graph, order, count, node), [1, 0], node)
        hits = emit(graph, aten.logical_and.default, (hits, _reshape(graph, idx, [1, size], node)), like=node)
    else:
        hits = _one_hot(graph, idx, size, node)
    dtype = x.meta["val"].dtype
    selection = emit(graph, aten.to.dtype, (hits, dtype), like=node)  # [count, size]
    perm = [d for d in range(rank) if d != dim] + [dim]
    placed = emit(graph, aten.matmul.default, (_permute(graph, values, perm, node), selection), like=node)
    base = _permute(graph, x, perm, node)
    if not accumulate:
        written = emit(graph, aten.sum.dim_IntList, (selection, [0]), like=node)
        keep = emit(graph, aten.add.Tensor, (emit(graph, aten.neg.default, (written,), like=node), 1), like=node)
        base = emit(graph, aten.mul.Tensor, (base, keep), like=node)
    return _permute(graph, emit(graph, aten.add.Tensor, (base, placed), like=node), [perm.index(d) for d in
                                                                                     range(rank)], node)


def _patchify_conv(graph, node):
    """A conv (1d, 2d or 3d) whose stride equals its kernel, without padding, dilation or groups, is a linear over
    patches: a patchify embedding (DiT's 2d, a video model's 3d over frames and pixels)."""
    x, weight = node.args[0], node.args[1]
    bias = node.args[2] if len(node.args) > 2 else None
    kernel = shape_of(weight)[2:]
    n = len(kernel)
    stride = list(node.args[3]) if len(node.args) > 3 else [1] * n
    padding = node.args[4] if len(node.args) > 4 else [0] * n
    dilation = list(node.args[5]) if len(node.args) > 5 else [1] * n
    groups = node.args[6] if len(node.args) > 6 else 1
    stride = stride * n if len(stride) == 1 else stride
    if isinstance(padding, str) or list(kernel) != stride or any(padding) or any(d != 1 for d in dilation) or \
            groups != 1:
        return None
    out_ch, in_ch = shape_of(weight)[:2]
    b, c, *space = shape_of(x)
    if any(size % k for size, k in zip(space, kernel)):
        return None
    grid = [size // k for size, k in zip(space, kernel)]
    # [B, C, g1, k1, g2, k2, ...] -> [B, g1, g2, ..., C, k1, k2, ...]: each patch flattened in the weight's order
    split = [b, c] + [d for g, k in zip(grid, kernel) for d in (g, k)]
    patches = _reshape(graph, x, split, node)
    patches = _permute(graph, patches, [0] + [2 + 2 * i for i in range(n)] + [1] + [3 + 2 * i for i in range(n)],
                       node)
    patches = _reshape(graph, patches, [b, math.prod(grid), c * math.prod(kernel)], node)
    flat_weight = _reshape(graph, weight, [out_ch, in_ch * math.prod(kernel)], node)
    out = emit(graph, aten.linear.default, (patches, flat_weight, bias), like=node)
    out = _reshape(graph, out, [b] + grid + [out_ch], node)
    return _permute(graph, out, [0, n + 1] + list(range(1, n + 1)), node)


def _meshgrid(graph, node):
    """meshgrid(t1, ..., tn): output i is t_i laid along dim i and broadcast over the others ("xy" swaps the first
    two dims, as numpy does)."""
    tensors = list(node.args[0])
    indexing = node.args[1] if len(node.args) > 1 else node.kwargs.get("indexing", "ij")
    sizes = [shape_of(t)[0] if shape_of(t) else 1 for t in tensors]
    order = list(range(len(tensors)))
    if indexing == "xy" and len(tensors) > 1:
        order[0], order[1] = 1, 0
    shape = [sizes[i] for i in order]
    for user in list(node.users):
        if user.target is not operator.getitem:
            return None
    for user in list(node.users):
        i = user.args[1]
        dim = order.index(i)
        view = [1] * len(tensors)
        view[dim] = sizes[i]
        with graph.inserting_before(user):
            laid = _reshape(graph, tensors[i], view, node)
            replace_node(user, emit(graph, aten.expand.default, (laid, shape), like=node))
    return "erase"


def _group_norm(graph, node):
    """group_norm as the reductions it is: statistics over each group's channels and positions, then the affine per
    channel (exact; the device needs no group-norm kernel or its sharded-input masks)."""
    x, groups = node.args[0], node.args[1]
    weight = node.args[2] if len(node.args) > 2 else None
    bias = node.args[3] if len(node.args) > 3 else None
    eps = node.args[4] if len(node.args) > 4 else 1e-5
    shape = shape_of(x)
    n, c, space = shape[0], shape[1], shape[2:]
    grouped = _reshape(graph, x, [n, groups, (c // groups) * math.prod(space)], node)
    mean = emit(graph, aten.mean.dim, (grouped, [-1], True), like=node)
    centered = emit(graph, aten.sub.Tensor, (grouped, mean), like=node)
    var = emit(graph, aten.mean.dim, (emit(graph, aten.mul.Tensor, (centered, centered), like=node), [-1], True),
               like=node)
    scale = emit(graph, aten.rsqrt.default, (emit(graph, aten.add.Tensor, (var, eps), like=node),), like=node)
    y = _reshape(graph, emit(graph, aten.mul.Tensor, (centered, scale), like=node), shape, node)
    per_channel = [c] + [1] * len(space)
    if weight is not None:
        y = emit(graph, aten.mul.Tensor, (y, _reshape(graph, weight, per_channel, node)), like=node)
    if bias is not None:
        y = emit(graph, aten.add.Tensor, (y, _reshape(graph, bias, per_channel, node)), like=node)
    return y


def _narrow(graph, node):
    x, dim, start, length = node.args
    return emit(graph, aten.slice.Tensor, (x, dim, start, start + length), like=node)


def _renamed(target):
    """An op spelled another way (concat for cat, bitwise ops on booleans as logical ops)."""
    def rule(graph, node):
        if target in (aten.logical_and.default, aten.logical_or.default, aten.logical_not.default) and \
                any(isinstance(a, fx.Node) and a.meta["val"].dtype != torch.bool for a in node.args):
            return None  # bitwise on integers: not a logical op
        return emit(graph, target, tuple(node.args), dict(node.kwargs), like=node)
    return rule


def _masked_fill(graph, node):
    """x.masked_fill(mask, v) -> where(mask, v, x)."""
    x, mask, value = node.args[0], node.args[1], node.args[2]
    target = aten.where.self if isinstance(value, fx.Node) else aten.where.ScalarSelf
    return emit(graph, target, (mask, value, x), like=node)


RULES = {
    aten.view.default: _as_reshape,
    aten._unsafe_view.default: _as_reshape,
    aten.reshape.default: _as_reshape,
    aten.unflatten.int: _as_reshape,
    aten.flatten.using_ints: _as_reshape,
    aten.squeeze.dim: _as_reshape,
    aten.squeeze.dims: _as_reshape,
    aten.squeeze.default: _as_reshape,
    aten.unsqueeze.default: _as_reshape,
    aten.transpose.int: _transpose,
    aten.t.default: _transpose,
    aten.permute.default: _permute_rule,
    aten.select.int: _select,
    aten.slice.Tensor: _slice_rule,
    aten.chunk.default: _split_like,
    aten.split.Tensor: _split_like,
    aten.split_with_sizes.default: _split_like,
    aten.unbind.int: _split_like,
    aten.stack.default: _stack,
    aten.cat.default: _cat,
    aten.pow.Tensor_Scalar: _pow,
    aten.outer.default: _outer,
    aten.repeat_interleave.self_int: _repeat_interleave,
    aten.embedding.default: _embedding,
    aten.rsub.Scalar: _rsub,
    aten.pad.default: _pad,
    aten.einsum.default: _einsum,
    aten.to.dtype: _cast,
    aten.to.dtype_layout: _cast,
    aten.to.device: _cast,
    aten._to_copy.default: _cast,
    aten.type_as.default: _cast,
    aten.index.Tensor: _index,
    aten.index_select.default: _index_select,
    aten.index_put.default: _index_put,
    aten.conv1d.default: _patchify_conv,
    aten.conv2d.default: _patchify_conv,
    aten.conv3d.default: _patchify_conv,
    aten.masked_fill.Scalar: _masked_fill,
    aten.group_norm.default: _group_norm,
    aten.narrow.default: _narrow,
    aten.concat.default: _renamed(aten.cat.default),
    aten.__and__.Tensor: _renamed(aten.logical_and.default),
    aten.bitwise_and.Tensor: _renamed(aten.logical_and.default),
    aten.__or__.Tensor: _renamed(aten.logical_or.default),
    aten.bitwise_or.Tensor: _renamed(aten.logical_or.default),
    aten.bitwise_not.default: _renamed(aten.logical_not.default),
    aten.meshgrid.default: _meshgrid,
    aten.meshgrid.indexing: _meshgrid,
    aten.masked_fill.Tensor: _masked_fill,
}

def canonicalize(mg: ModelGraph) -> int:
    """Apply every rule once over the graph (rules emit canonical ops only); returns the number rewritten."""
    graph = mg.gm.graph
    rewritten = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in RULES:
            continue
        with graph.inserting_before(node):
            rule = RULES[node.target]
            result = rule(graph, node, mg.constants) if rule in (_index, _index_select, _index_put) else rule(graph, node)
        if result is None:
            continue
        if result == "erase":
            graph.erase_node(node)
        else:
            replace_node(node, result)
        rewritten += 1
    finalize(mg)
    fold_constants(mg)
    return rewritten
