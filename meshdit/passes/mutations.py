"""In-place updates into out-of-place values: the device program is a dataflow graph, and a graph pass that drops a
node nothing reads (dead-code elimination) would silently drop an in-place write, which has no readers.

Models write into tensors in place: RoPE applied to the image part of a query (`query[:, :, n:] = rope(...)`, a
`copy_` into a slice), a table filled by strided assignment (`out[..., 0::2] = a; out[..., 1::2] = b` into an
`empty_like`), masked updates (`x[mask] = 0`, `x[mask] *= s`), `masked_fill_`, `add_`. Each becomes the value of the
mutated tensor after the write, and every later reader of that tensor (or of a view of it) reads the new value:

    copy_(view, src)               region = src (cast, broadcast to the view)
    add_/mul_/... (view, other)    region = add/mul/...(view, other)
    masked_fill_ / fill_           region = masked_fill / full
    index_put_(view, idx, v)       region = index_put(view, idx, v)   (a bool mask: where(mask, v, view))

and the region is written back through the chain of views to its base (scatter), as ops the device has:

    slice (step 1)        cat(before, region, after)
    slice (step k)        the dim split into (n/k, k), then a cat over the k-axis (interleaved writes)
    select                cat(before, region[None], after)
    view / reshape / squeeze / unsqueeze / flatten   reshape back;  transpose / permute   the inverse
A write through a view this pass cannot invert (expand, as_strided, diagonal) is an error naming the node.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from ..errors import UnsupportedOpError, node_location
from ..ir.graph import ModelGraph, emit, finalize, shape_of
from .fold import fold_constants

aten = torch.ops.aten

RESHAPES = {aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.unflatten.int,
            aten.flatten.using_ints, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default,
            aten.unsqueeze.default, aten.alias.default, aten.detach.default, aten.view_as.default}
VIEWS = RESHAPES | {aten.slice.Tensor, aten.select.int, aten.transpose.int, aten.permute.default, aten.t.default}


def _mutates_first_argument(target) -> bool:
    if not isinstance(target, torch._ops.OpOverload):
        return False
    arguments = target._schema.arguments
    return bool(arguments) and arguments[0].alias_info is not None and arguments[0].alias_info.is_write


def _out_of_place(target):
    """add_.Tensor -> add.Tensor: the same op, returning a new tensor."""
    name = target._schema.name.split("::")[1].rstrip("_")
    packet = getattr(aten, name, None)
    overload = target._overloadname
    return getattr(packet, overload, None) if packet is not None else None


def written_in_place(graph: fx.Graph, runtime: set) -> set:
    """Nodes written in place by a write of a run-time value (`runtime`: the nodes that depend on run-time inputs):
    the tensor each such write changes, the views it writes through, and their base (unless a placeholder). A
    write of constants only is folded as it runs."""
    written = set()
    for node in graph.nodes:
        if node.op == "call_function" and _mutates_first_argument(node.target) and node in runtime:
            n = node.args[0]
            while isinstance(n, fx.Node) and n.op == "call_function":
                written.add(n)
                if n.target not in VIEWS:
                    break
                n = n.args[0]
    return written


def functionalize_mutations(mg: ModelGraph) -> int:
    """Rewrite every in-place write into out-of-place ops; returns how many were rewritten."""
    graph = mg.gm.graph
    count = 0
    for node in list(graph.nodes):
        if node.op == "call_function" and _mutates_first_argument(node.target):
            _rewrite(graph, node)
            count += 1
    if count:
        finalize(mg)
        fold_constants(mg)  # writes into constant tables (a zero table filled in place) fold on host
    return count


def _rewrite(graph: fx.Graph, node: fx.Node) -> None:
    target_view = node.args[0]
    chain, base = [], target_view
    while isinstance(base, fx.Node) and base.op == "call_function" and base.target in VIEWS:
        chain.append(base)
        base = base.args[0]
    with graph.inserting_before(node.next):  # (inserting_after would put each new node right after `node`: reversed)
        region = _region(graph, node, target_view)
        value = region
        for view in chain:  # innermost view first: write `value` into the tensor the view was taken of
            value = _scatter(graph, view, value, node)
        new_base = value
    # every later reader of the base, or of a view of it, reads the written value
    order = {n: i for i, n in enumerate(graph.nodes)}
    after = order[node]
    rebuilt = {base: new_base}

    def rebuild(n):
        if n not in rebuilt:
            source = rebuild(n.args[0])
            with graph.inserting_before(source.next):
                rebuilt[n] = emit(graph, n.target, (source,) + tuple(n.args[1:]), dict(n.kwargs), like=n)
        return rebuilt[n]

    family = set(_views_of(base))
    created = set(rebuilt.values()) | _between(graph, node, new_base)
    for member in family:
        for user in list(member.users):
            if user is node or user in created or order.get(user, -1) <= after:
                continue
            if user in family:
                continue  # a view: its own readers are rerouted (to the same view of the written value)
            user.replace_input_with(member, rebuild(member))
    node.replace_all_uses_with(region)
    graph.erase_node(node)


def _views_of(base: fx.Node) -> list:
    """The base and every view taken of it (transitively)."""
    found, stack = [], [base]
    while stack:
        n = stack.pop()
        found.append(n)
        stack += [u for u in n.users if u.op == "call_function" and u.target in VIEWS and u.args[0] is n]
    return found


def _between(graph: fx.Graph, start: fx.Node, end: fx.Node) -> set:
    nodes, inside = set(), False
    for n in graph.nodes:
        if n is start:
            inside = True
            continue
        if inside:
            nodes.add(n)
        if n is end:
            break
    return nodes


def _region(graph: fx.Graph, node: fx.Node, view: fx.Node) -> fx.Node:
    """The value of the written view after the write."""
    meta = view.meta["val"]
    target = node.target
    if target is aten.copy_.default:
        src = node.args[1]
        if not isinstance(src, fx.Node):
            return emit(graph, aten.full.default, (list(meta.shape), src), {"dtype": meta.dtype}, like=node)
        if src.meta["val"].dtype != meta.dtype:
            src = emit(graph, aten._to_copy.default, (src,), {"dtype": meta.dtype}, like=node)
        if tuple(src.meta["val"].shape) != tuple(meta.shape):
            src = emit(graph, aten.expand.default, (src, list(meta.shape)), like=node)
        return src
    if target in (aten.fill_.Scalar, aten.fill_.Tensor):
        fill = node.args[1]
        if isinstance(fill, fx.Node):
            return emit(graph, aten.expand.default, (fill, list(meta.shape)), like=node)
        return emit(graph, aten.full.default, (list(meta.shape), fill), {"dtype": meta.dtype}, like=node)
    if target is aten.index_put_.default:
        values, indices = node.args[2], node.args[1]
        accumulate = node.args[3] if len(node.args) > 3 else node.kwargs.get("accumulate", False)
        if (not accumulate and len(indices) == 1 and isinstance(indices[0], fx.Node)
                and indices[0].meta["val"].dtype == torch.bool and isinstance(values, fx.Node)
                and values.meta["val"].numel() == 1):
            # x[mask] = v (one value): where(mask, v, x), mask broadcast over the trailing dims
            mask = indices[0]
            extra = meta.dim() - mask.meta["val"].dim()
            if extra:
                mask = emit(graph, aten.reshape.default, (mask, list(shape_of(mask)) + [1] * extra), like=node)
            v = values
            if v.meta["val"].dtype != meta.dtype:
                v = emit(graph, aten._to_copy.default, (v,), {"dtype": meta.dtype}, like=node)
            return emit(graph, aten.where.self, (mask, v, view), like=node)
        return emit(graph, aten.index_put.default, (view, indices, values, accumulate), like=node)
    functional = _out_of_place(target)
    if functional is None:
        raise UnsupportedOpError(f"in-place op {target} at {node_location(node)} has no out-of-place form meshdit "
                                 "knows; write the update out of place in the model")
    value = emit(graph, functional, (view,) + tuple(node.args[1:]), dict(node.kwargs), like=node)
    if value.meta["val"].dtype != meta.dtype:  # an in-place op keeps its tensor's dtype
        value = emit(graph, aten._to_copy.default, (value,), {"dtype": meta.dtype}, like=node)
    return value


def _slice(graph, x, dim, start, end, like):
    """x[start:end] along dim; a slice that is exactly one operand of a cat along dim is that operand."""
    if x.op == "call_function" and x.target is aten.cat.default:
        cat_dim = x.args[1] if len(x.args) > 1 else x.kwargs.get("dim", 0)
        if cat_dim % len(shape_of(x)) == dim:
            offset = 0
            for part in x.args[0]:
                size = shape_of(part)[dim]
                if (offset, offset + size) == (start, end):
                    return part
                offset += size
    return emit(graph, aten.slice.Tensor, (x, dim, start, end), like=like)


def _cat(graph, source, dim, start, end, region, like):
    """`source` with [start:end) along dim replaced by `region`."""
    n = shape_of(source)[dim]
    parts = ([_slice(graph, source, dim, 0, start, like)] if start > 0 else []) + [region] + \
        ([_slice(graph, source, dim, end, n, like)] if end < n else [])
    return parts[0] if len(parts) == 1 else emit(graph, aten.cat.default, (parts, dim), like=like)


def _scatter(graph: fx.Graph, view: fx.Node, value: fx.Node, like: fx.Node) -> fx.Node:
    """The tensor `view` was taken of, with the view's elements replaced by `value`."""
    source = view.args[0]
    shape = shape_of(source)
    target = view.target
    if target in RESHAPES:
        return emit(graph, aten.reshape.default, (value, list(shape)), like=like)
    if target is aten.transpose.int:
        return emit(graph, aten.transpose.int, (value, view.args[1], view.args[2]), like=like)
    if target is aten.t.default:
        return emit(graph, aten.t.default, (value,), like=like)
    if target is aten.permute.default:
        dims = [d % len(shape) for d in view.args[1]]
        inverse = [dims.index(i) for i in range(len(dims))]
        return emit(graph, aten.permute.default, (value, inverse), like=like)
    if target is aten.select.int:
        dim, index = view.args[1] % len(shape), view.args[2] % shape[view.args[1] % len(shape)]
        region = emit(graph, aten.unsqueeze.default, (value, dim), like=like)
        return _cat(graph, source, dim, index, index + 1, region, like)
    if target is aten.slice.Tensor:
        args = list(view.args) + [None] * (5 - len(view.args))
        dim = (args[1] if args[1] is not None else 0) % len(shape)
        n = shape[dim]
        start, end, step = args[2], args[3], args[4] or 1
        start = 0 if start is None else (start + n if start < 0 else start)
        end = n if end is None else (end + n if end < 0 else end)
        start, end = max(0, min(start, n)), max(0, min(end, n))
        count = len(range(start, end, step))
        if step == 1:
            return _cat(graph, source, dim, start, start + count, value, like)
        if count == 0:
            return source
        # every step-th element from `start`: the groups of `step` elements it touches, split into (groups, step),
        # with one column replaced (the source zero-padded at its end when the last group runs past it)
        first = start - start % step
        last = first + count * step
        padded = source
        if last > n:
            pad = [0, 0] * (len(shape) - 1 - dim) + [0, last - n]
            padded = emit(graph, aten.constant_pad_nd.default, (source, pad, 0.0), like=like)
        region = padded if (first, last) == (0, shape_of(padded)[dim]) else \
            emit(graph, aten.slice.Tensor, (padded, dim, first, last), like=like)
        split = list(shape[:dim]) + [count, step] + list(shape[dim + 1:])
        grid = emit(graph, aten.reshape.default, (region, split), like=like)
        column = emit(graph, aten.unsqueeze.default, (value, dim + 1), like=like)
        written = _cat(graph, grid, dim + 1, start % step, start % step + 1, column, like)
        written = emit(graph, aten.reshape.default, (written, list(shape_of(region))), like=like)
        whole = _cat(graph, padded, dim, first, last, written, like)
        return whole if last <= n else emit(graph, aten.slice.Tensor, (whole, dim, 0, n), like=like)
    raise UnsupportedOpError(f"an in-place write at {node_location(like)} goes through {target} "
                             f"({node_location(view)}), which meshdit cannot write back through; write the update "
                             "out of place in the model")
