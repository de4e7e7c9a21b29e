"""Keep concatenated token streams apart: push `cat` nodes down through ops that treat tokens independently.

DiTs concatenate image and prompt tokens for joint attention and split them again afterwards (SD3, Mochi), apply
rotary embeddings to the concatenation (Flux), or run whole blocks on it (Flux single blocks). Under sequence
parallelism the two streams need different placements (image tokens sharded, prompt tokens replicated), so this
pass rewrites  op(cat([a, b], d))  into  cat([op(a), op(b)], d')  for every op that does not mix values along d,
and cancels  slice(cat(...))  against the part it selects. What is left concatenated is what really mixes the
streams: attention, which `fuse_joint_attention` then turns into joint attention over the separate streams.
Prompt-side parts (none of their tokens from the latent input: a prompt and a time token appended to it) stay
joined where no other cat is cut like them (group_same_streams): splitting them would only run every op once per
part, each padded to whole tiles. Every rewrite keeps the graph's value.
"""

from __future__ import annotations

import collections

import torch
import torch.fx as fx

from .fold import fold_constants
from ..errors import UnsupportedOpError, node_location
from ..ir.graph import ModelGraph, calls, emit, finalize, is_row_wise, replace_node, reshape_dim_map, shape_of
from ..ir.op_classes import BINARY, UNARY
from ..ir.tokens import StreamOracle

aten = torch.ops.aten
KEEP = "one_stream"  # node meta: a cat of one stream's parts, which sink_concats leaves in place



def _parts(cat: fx.Node):
    parts, dim = cat.args[0], cat.args[1] if len(cat.args) > 1 else 0
    return list(parts), dim % len(shape_of(cat))


def _bounds(parts, dim):
    out, start = [], 0
    for p in parts:
        size = shape_of(p)[dim]
        out.append((start, start + size))
        start += size
    return out


def _split_operand(graph, other, dim_in_other, bounds, like):
    """An operand broadcast against a cat: the same object per part, or its slices along the cat dim."""
    if not isinstance(other, fx.Node):
        return [other] * len(bounds)
    size = shape_of(other)[dim_in_other] if dim_in_other is not None else 1
    if dim_in_other is None or size == 1:
        return [other] * len(bounds)
    return [emit(graph, aten.slice.Tensor, (other, dim_in_other, lo, hi), like=like) for lo, hi in bounds]


def _push(graph, cat: fx.Node, user: fx.Node):
    """Rewrite one user of a cat; returns its replacement or None when the user mixes along the cat dim."""
    parts, d = _parts(cat)
    rank = len(shape_of(cat))
    bounds = _bounds(parts, d)
    target = user.target
    if target is aten.slice.Tensor and user.args[0] is cat:
        dim = user.args[1] % rank
        if dim == d:
            lo, hi = user.args[2], min(user.args[3], shape_of(cat)[d])
            covered = [i for i, (a, b) in enumerate(bounds) if a < hi and b > lo]
            if not covered:
                return None  # an empty slice: nothing of any stream
            if len(covered) == 1:
                i = covered[0]
                a, b = bounds[i]
                if (lo, hi) == (a, b):
                    return parts[i]
                return emit(graph, aten.slice.Tensor, (parts[i], d, lo - a, hi - a), like=user)
            if all(lo <= bounds[i][0] and bounds[i][1] <= hi for i in covered) and \
                    (lo, hi) == (bounds[covered[0]][0], bounds[covered[-1]][1]):
                return emit(graph, aten.cat.default, ([parts[i] for i in covered], d), like=user)
            return None
        new = [emit(graph, aten.slice.Tensor, (p,) + tuple(user.args[1:]), like=user) for p in parts]
    elif target is aten.permute.default:
        perm = list(user.args[1])
        new = [emit(graph, aten.permute.default, (p, perm), like=user) for p in parts]
        return emit(graph, aten.cat.default, (new, perm.index(d)), like=user)
    elif target is aten.reshape.default:
        e = reshape_dim_map(shape_of(cat), shape_of(user), d)
        if e is None:
            return None
        new = []
        for p in parts:
            shape = shape_of(user)
            shape[e] = shape_of(p)[d]
            new.append(emit(graph, aten.reshape.default, (p, shape), like=user))
        return emit(graph, aten.cat.default, (new, e), like=user)
    elif target in UNARY and user.args[0] is cat:
        new = [emit(graph, target, (p,) + tuple(user.args[1:]), dict(user.kwargs), like=user) for p in parts]
    elif is_row_wise(user) and user.args[0] is cat and d != rank - 1:
        new = [emit(graph, target, (p,) + tuple(user.args[1:]), dict(user.kwargs), like=user) for p in parts]
    elif target is aten.constant_pad_nd.default:
        pad = list(user.args[1])
        padded_dims = {rank - 1 - i for i in range(len(pad) // 2) if pad[2 * i] or pad[2 * i + 1]}
        if padded_dims - {d}:
            return None
        k = rank - 1 - d
        if 2 * k < len(pad) and pad[2 * k]:
            return None  # padding in front of the first stream
        new = list(parts[:-1]) + [emit(graph, target, (parts[-1],) + tuple(user.args[1:]), like=user)]
    elif target is aten.cat.default and user.args[0] and cat in user.args[0]:
        # cat along another dim of pieces that are all split the same way along d (a stack of rotated halves)
        outer_dim = (user.args[1] if len(user.args) > 1 else 0) % len(shape_of(user))
        pieces = user.args[0]
        if outer_dim == d or not all(isinstance(p, fx.Node) and p.target is aten.cat.default and
                                     _parts(p)[1] == d and _bounds(*_parts(p)) == bounds for p in pieces):
            return None
        columns = [_parts(p)[0] for p in pieces]
        new = [emit(graph, aten.cat.default, ([col[i] for col in columns], outer_dim), like=user)
               for i in range(len(parts))]
    elif target in BINARY:
        a, b = user.args[0], user.args[1]
        out_rank = len(shape_of(user))
        d_out = d + out_rank - rank  # broadcasting aligns dims from the right
        columns = []
        for operand in (a, b):
            if operand is cat:
                columns.append(parts)
                continue
            if isinstance(operand, fx.Node) and operand.target is aten.cat.default and \
                    _parts(operand)[1] + out_rank - len(shape_of(operand)) == d_out and \
                    _bounds(*_parts(operand)) == bounds:
                columns.append(_parts(operand)[0])
                continue
            if isinstance(operand, fx.Node):
                od = d_out - (out_rank - len(shape_of(operand)))
                columns.append(_split_operand(graph, operand, od if od >= 0 else None, bounds, user))
            else:
                columns.append([operand] * len(parts))
        new = [emit(graph, target, (x, y), dict(user.kwargs), like=user) for x, y in zip(*columns)]
        return emit(graph, aten.cat.default, (new, d_out), like=user)
    else:
        return None
    return emit(graph, aten.cat.default, (new, d), like=user)


def _token_cats(graph: fx.Graph) -> list:
    """The runtime cats along a token dim with a part computed at run time: token streams are concatenated along a
    token dim, never the last (channel) dim."""
    out = []
    for cat in calls(graph, aten.cat.default):
        parts, dim = _parts(cat)
        if any(p.op != "placeholder" for p in parts) and dim != len(shape_of(cat)) - 1:
            out.append(cat)
    return out


def group_same_streams(mg: ModelGraph) -> None:
    """Keep together the parts of a cat that are all prompt-side (none of their tokens from the latent input: a
    prompt and a time token appended to it): the cat stays one tensor, so ops on it run once, on one padded tile run,
    rather than once per part with each part padded to 32 rows. A cat mixing them with latent parts keeps each run
    of adjacent prompt-side parts in an inner cat of its own and is pushed down between the other parts only. Kept
    cats are marked for sink_concats. Latent parts are pushed apart as before: each may need its own sequence
    shard. Without a latent input to tell streams by, nothing is kept.

    Only a cat whose cut (its parts' sizes) no other cat shares is regrouped: cats cut alike are a stream and its
    tables (RoPE's cos/sin rows for the same tokens, made by a cat of their own), which meet in elementwise ops and
    must stay cut alike, or every such op would slice one of them to the other's cut (a RoPE table's prompt and
    image rows are both prompt-side; the single blocks' stream they rotate is not)."""
    graph = mg.gm.graph
    oracle = StreamOracle(mg)
    if oracle.latent is None:
        return
    plans, cuts = [], collections.Counter()
    for cat in _token_cats(graph):  # every answer first: the oracle needs the graph unchanged
        parts, dim = _parts(cat)
        plans.append((cat, [oracle.is_main(p, dim) for p in parts]))
        cuts[_cut(cat)] += 1
    for cat, kinds in plans:
        if cuts[_cut(cat)] > 1:
            continue
        parts, dim = _parts(cat)
        runs: list = []
        for part, kind in zip(parts, kinds):
            if runs and kind is False and runs[-1][0] is False:
                runs[-1][1].append(part)
            else:
                runs.append((kind, [part]))
        if len(runs) == 1 and len(parts) > 1:
            cat.meta[KEEP] = True
            continue
        if all(len(run) == 1 for _, run in runs):
            continue
        new_parts = []
        with graph.inserting_before(cat):
            for _, run in runs:
                if len(run) == 1:
                    new_parts.append(run[0])
                    continue
                inner = emit(graph, aten.cat.default, (run, dim), like=cat)
                inner.meta[KEEP] = True
                new_parts.append(inner)
        cat.args = (new_parts, dim)


def _slices_along(user: fx.Node, cat: fx.Node) -> bool:
    """Whether `user` slices `cat` along the dim it joins its parts on."""
    _, dim = _parts(cat)
    return user.target is aten.slice.Tensor and user.args[0] is cat and user.args[1] % len(shape_of(cat)) == dim


def _cut(cat: fx.Node) -> tuple:
    """Where a cat cuts: its parts' sizes along its dim (whichever dim that is: a [N, D] table and the [B, N, D]
    stream it is reshaped to meet are cut alike)."""
    parts, dim = _parts(cat)
    return tuple(shape_of(p)[dim] for p in parts)


def sink_concats(mg: ModelGraph) -> int:
    """Push every runtime cat down as far as token-wise ops allow, except one whose parts are one prompt-side stream
    (group_same_streams), which only a slice of its own dim may take apart; returns the number of rewrites."""
    graph = mg.gm.graph
    group_same_streams(mg)
    rewrites = 0
    # each rewrite moves a cat below one more op, so a bound on them is a bound on the graph's size; past it two
    # rewrites are undoing each other (a cat of cats swapped back and forth), which must stop with the place named
    limit = 16 * len(graph.nodes)
    changed = True
    while changed:
        changed = False
        erased: set = set()
        for cat in _token_cats(graph):
            if cat in erased:
                continue
            if rewrites > limit:
                raise UnsupportedOpError(
                    f"keeping token streams apart does not converge at the concatenation at {node_location(cat)} "
                    f"(over {limit} rewrites): a meshdit defect in passes/streams.py; please report it with this "
                    "model")
            keep = cat.meta.get(KEEP)
            for user in list(cat.users):
                if keep and not _slices_along(user, cat):
                    continue  # one stream: only a slice of its token dim may take its part
                with graph.inserting_before(user):
                    replacement = _push(graph, cat, user)
                if replacement is not None:
                    if keep and replacement.target is aten.cat.default:
                        replacement.meta[KEEP] = True  # some of the same stream's parts
                    erased.add(user)
                    replace_node(user, replacement)
                    rewrites += 1
                    changed = True
            if not cat.users:
                erased.add(cat)
                graph.erase_node(cat)
    finalize(mg)
    fold_constants(mg)
    return rewrites
