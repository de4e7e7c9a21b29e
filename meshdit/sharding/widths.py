"""Zero-pad linear widths that tp does not divide (SwiGLU widths such as int(8 * d / 3), a prompt-stream FFN).

An MLP's hidden width W becomes W' = tp * (W / tp rounded up to whole tiles): the up-projections (and a gated
MLP's gate projection) get W' - W zero rows and zero bias, so the extra hidden units see act(0) (or act(0) * 0),
and the down-projection gets zero columns for them, so whatever they hold adds nothing. The value is exact.
A column-parallel linear outside an MLP (adaLN modulation) gets zero rows, and its users read the first W
columns. Weight padding folds into the constant recipe: it is done once on host. Heads are padded separately
(sharding/heads.py), since their width is heads x head dim.
"""

from __future__ import annotations

import torch
import torch.fx as fx

from ..errors import ConfigError, node_location
from ..ir.graph import ModelGraph, emit, finalize, meta_of, shape_of
from ..ir.tiles import tile_up
from ..passes.fold import fold_constants

aten = torch.ops.aten


def padded_width(width: int, tp: int) -> int:
    """The width tp devices hold: whole tiles on every device."""
    return tp * tile_up(-(-width // tp))


def pad_linear_widths(mg: ModelGraph, roles: dict, tp: int) -> int:
    """Pad every tp-sharded linear width that does not divide by `tp`; returns how many linears were padded."""
    nodes = {n.name: n for n in mg.op_nodes()}
    done: set = set()
    padded = 0
    for pattern in [p for p in mg.patterns if p.kind == "mlp"]:
        ups = [nodes[pattern.nodes[r]] for r in ("up", "up_gate") if r in pattern.nodes]
        down = nodes[pattern.nodes["down"]]
        width = shape_of(ups[0])[-1]
        if width % tp == 0 or any(roles.get(u.name) != "col" for u in ups) or roles.get(down.name) != "row":
            continue
        region = _hidden_region(ups, down)
        if region is None:
            continue  # the hidden activation is read outside the MLP: padding would show; refused below
        target = padded_width(width, tp)
        for up in ups:
            _pad_rows(mg, up, target - width)
        for node in [n for n in mg.gm.graph.nodes if n in region]:
            node.meta["val"] = node.target(*meta_of(node.args), **meta_of(node.kwargs))
        _pad_columns(mg, down, target - width)
        mg.notes.append(f"MLP at {node_location(down)}: hidden width {width} padded to {target} (zero units) for "
                        f"tp{tp}")
        done.update([*ups, down])
        padded += len(ups) + 1
    for name, role in roles.items():
        lin = nodes[name]
        w = shape_of(lin.args[1])
        if lin in done or (role == "col" and w[0] % tp == 0) or (role == "row" and w[1] % tp == 0):
            continue
        if role == "row":
            raise ConfigError(f"tp{tp}: row-parallel linear {node_location(lin)} has input width {w[1]}, which does "
                              f"not divide by tp {tp}, and it is not the down-projection of an MLP whose hidden "
                              "width could be padded; choose a tp factor that divides it")
        _pad_rows(mg, lin, padded_width(w[0], tp) - w[0], keep_width=w[0])
        mg.notes.append(f"linear {node_location(lin)}: output width {w[0]} padded to {padded_width(w[0], tp)} "
                        f"(zero features, not read) for tp{tp}")
        padded += 1
    if padded:
        finalize(mg)
        fold_constants(mg)
    return padded


def _hidden_region(ups: list, down: fx.Node) -> set | None:
    """The nodes between the up-projections and the down-projection (activation, gate product), or None when any
    of them is read by something else."""
    region, stack = set(), list(ups)
    while stack:
        node = stack.pop()
        for user in node.users:
            if user is down or user in region:
                continue
            if user.op != "call_function" or user.target is aten.linear.default:
                return None
            region.add(user)
            stack.append(user)
    return region


def _pad_rows(mg: ModelGraph, lin: fx.Node, extra: int, keep_width: int | None = None) -> None:
    """Give a linear `extra` zero output features (weight rows, bias entries). With keep_width, its users read the
    first keep_width features, as before."""
    graph = mg.gm.graph
    users = list(lin.users)
    with graph.inserting_before(lin):
        args = [lin.args[0], emit(graph, aten.constant_pad_nd.default, (lin.args[1], [0, 0, 0, extra], 0.0),
                                  like=lin)]
        if len(lin.args) > 2 and lin.args[2] is not None:
            args.append(emit(graph, aten.constant_pad_nd.default, (lin.args[2], [0, extra], 0.0), like=lin))
    lin.args = tuple(args)
    lin.meta["val"] = lin.target(*meta_of(lin.args))
    if keep_width is not None:
        rank = len(shape_of(lin))
        with graph.inserting_after(lin):
            kept = emit(graph, aten.slice.Tensor, (lin, rank - 1, 0, keep_width), like=lin)
        for user in users:
            user.replace_input_with(lin, kept)


def _pad_columns(mg: ModelGraph, lin: fx.Node, extra: int) -> None:
    """Give a linear `extra` zero input features (weight columns): whatever its padded input holds there adds 0."""
    graph = mg.gm.graph
    with graph.inserting_before(lin):
        weight = emit(graph, aten.constant_pad_nd.default, (lin.args[1], [0, extra], 0.0), like=lin)
    lin.args = (lin.args[0], weight) + tuple(lin.args[2:])
    lin.meta["val"] = lin.target(*meta_of(lin.args))
