"""Give every value a placement per mesh axis and insert collectives where a consumer needs another placement.

    summary = shard_graph(model_graph, mesh_config)

Runs on the graph of one cfg submesh (cfg is data parallelism over submeshes, handled by the runtime). Steps:
  1. tp rewrites: attention heads padded to a multiple of tp (sharding/heads.py); so that local slicing stays
     correct, a linear whose output is cut into gated-MLP halves becomes
     one linear per half; a linear over a channel concat becomes a sum of linears; a row-parallel bias is added
     after the reduction.
  2. tp roles from the recognised patterns: attention q/k/v and MLP up-projections are column-parallel (heads and
     FFN width sharded), attention output and MLP down-projections row-parallel (a Partial result, all-reduced),
     adaLN modulation linears column-parallel (their small output is gathered); other linears are replicated.
  3. sp origins: walking back from the main token stream of attention (the longest query sequence) to where the
     token dim first appears; a mesh_partition there shards it (an input is uploaded sharded instead). Any token
     count works: each device holds ceil(N / sp) tokens rounded up to whole 32-row tiles (placement.seq_local).
     The graph keeps logical shapes; the lowering pads at the partition, masks the padding in attention and slices
     it off after a gather, and ops that the padded rows would corrupt (reductions over tokens, reshapes that split
     or merge the token dim) take their input gathered.
  4. propagation: per-op rules, per mesh axis, in graph order; a collective is inserted on every edge whose
     producer placement is not what the consumer accepts. Attention whose main stream is sequence-sharded becomes
     ring (joint) attention, or with ulysses, an all-to-all from sequence to heads around local attention, or in
     the hybrid (ulysses on its own mesh axis) an all-to-all on that axis around ring attention on the sp axis.

Sequence shards over two mesh axes (the hybrid) nest: the ring (sp) axis is outer, the ulysses axis inner, so
device (ring r, ulysses u) holds token chunk r * ulysses + u. Gathers run innermost first, partitions outermost
first, and a host upload shards a dim over one axis only (ttnn's mesh mapper refuses a dim twice): the inner
axis is cut on device by a mesh_partition.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from ..errors import ConfigError, node_location
from ..ir import ops as mdops
from ..passes.fold import fold_constants
from ..ir.graph import ModelGraph, calls, emit, finalize, is_const, reshape_dim_map, shape_of
from ..passes.patterns import annotate
from .heads import pad_heads
from .mesh_config import MeshConfig
from .trace import ATTENTION, linears_back, linears_forward
from ..ir.ops import all_gather, all_reduce, mesh_partition, reduce_scatter
from .placement import P, R, Partial, Shard, seq_local, seq_padded

aten = torch.ops.aten

TOKENWISE_UNARY = {aten.neg.default, aten.exp.default, aten.silu.default, aten.gelu.default, aten.sin.default,
                   aten.cos.default, aten.tanh.default, aten.rsqrt.default, aten.sqrt.default,
                   aten.sigmoid.default, aten.relu.default, aten.to.dtype, aten.abs.default,
                   aten.reciprocal.default}
LINEAR_IN_PARTIAL = {aten.neg.default, aten.to.dtype}  # unary ops that commute with a pending sum
BINARY = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor}


@dataclass
class ShardingSummary:
    mesh: MeshConfig
    submesh: tuple
    sp_axis: int | None
    tp_axis: int | None
    linear_roles: dict = field(default_factory=dict)  # linear node name -> col | row | rep
    sp_origins: list = field(default_factory=list)  # (node name, token dim)
    ring_attention: int = 0
    ulysses: int = 1  # heads all-to-all degree (on the sp axis it equals sp; on its own axis it is the hybrid's)
    residual: str = "replicated"  # tp layout of the residual stream: replicated | sharded (hidden dim, as TT-DiT)
    ulysses_attention: int = 0
    hybrid_attention: int = 0  # all-to-all on the ulysses axis around ring attention on the sp axis
    ulysses_axis: int | None = None
    seq_axes: tuple = ()  # mesh axes the tokens are sharded over, outermost first (ring axis, then ulysses axis)


# --- step 1: rewrites for tensor parallelism ---------------------------------------------------------------------
def _split_sliced_linears(mg: ModelGraph, linears: set) -> int:
    """linear(x, W, b) whose users all slice the last dim -> one linear per slice with sliced W and b."""
    graph = mg.gm.graph
    count = 0
    for lin in calls(graph, aten.linear.default):
        if lin.name not in linears:
            continue
        users = list(lin.users)
        rank = len(shape_of(lin))
        if not users or not all(u.target is aten.slice.Tensor and u.args[1] % rank == rank - 1 for u in users):
            continue
        x, w = lin.args[0], lin.args[1]
        bias = lin.args[2] if len(lin.args) > 2 else None
        for user in users:
            lo, hi = user.args[2], user.args[3]
            with graph.inserting_before(user):
                w_part = emit(graph, aten.slice.Tensor, (w, 0, lo, hi), like=lin)
                b_part = emit(graph, aten.slice.Tensor, (bias, 0, lo, hi), like=lin) if bias is not None else None
                part = emit(graph, aten.linear.default, (x, w_part, b_part), like=lin)
            user.replace_all_uses_with(part)
            graph.erase_node(user)
        graph.erase_node(lin)
        count += 1
    return count


def _split_concat_linears(mg: ModelGraph) -> int:
    """linear(cat([a, b], -1), W, bias) -> linear(a, W[:, :n]) + linear(b, W[:, n:]) (+ bias)."""
    graph = mg.gm.graph
    count = 0
    for lin in calls(graph, aten.linear.default):
        cat = lin.args[0]
        if not (isinstance(cat, fx.Node) and cat.target is aten.cat.default):
            continue
        parts, dim = cat.args[0], cat.args[1] if len(cat.args) > 1 else 0
        if dim % len(shape_of(cat)) != len(shape_of(cat)) - 1 or not is_const(lin.args[1]):
            continue
        w = lin.args[1]
        bias = lin.args[2] if len(lin.args) > 2 else None
        with graph.inserting_before(lin):
            total, start = None, 0
            for part in parts:
                width = shape_of(part)[-1]
                w_part = emit(graph, aten.slice.Tensor, (w, 1, start, start + width), like=lin)
                y = emit(graph, aten.linear.default, (part, w_part, None), like=lin)
                total = y if total is None else emit(graph, aten.add.Tensor, (total, y), like=lin)
                start += width
            if bias is not None:
                total = emit(graph, aten.add.Tensor, (total, bias), like=lin)
        lin.replace_all_uses_with(total)
        graph.erase_node(lin)
        count += 1
    return count


def _detach_row_bias(mg: ModelGraph, rows: set) -> None:
    """Row-parallel linear: every device would add the bias once more; add it after the reduction instead."""
    graph = mg.gm.graph
    for lin in [n for n in graph.nodes if n.op == "call_function" and n.name in rows]:
        if len(lin.args) < 3 or lin.args[2] is None:
            continue
        bias = lin.args[2]
        lin.args = (lin.args[0], lin.args[1], None)
        users = list(lin.users)
        with graph.inserting_after(lin):
            added = emit(graph, aten.add.Tensor, (lin, bias), like=lin)
        for user in users:
            user.replace_input_with(lin, added)


# --- step 2: tp roles ----------------------------------------------------------------------------------------------
def _choose_roles(mg: ModelGraph, tp: int) -> dict:
    nodes = {n.name: n for n in mg.op_nodes()}
    roles: dict = {}
    for node in mg.op_nodes():
        if node.target not in ATTENTION:
            continue
        heads = shape_of(node.args[0])[1]
        if heads % tp:
            raise ConfigError(
                f"tp{tp}: attention at {node_location(node)} has {heads} heads, which do not divide by tp {tp}; "
                "choose a tp factor that divides the head count"
            )
        inputs = node.args[:6] if node.target is mdops.joint_sdpa else node.args[:3]
        for arg in inputs:
            for lin in linears_back(arg):
                roles[lin.name] = "col"
        for lin in linears_forward(node):
            roles.setdefault(lin.name, "row")
    for pattern in mg.patterns:
        if pattern.kind == "mlp":
            roles.setdefault(pattern.nodes["up"], "col")
            if "up_gate" in pattern.nodes:
                roles.setdefault(pattern.nodes["up_gate"], "col")
            roles[pattern.nodes["down"]] = "row"
        elif pattern.kind == "adaln_modulation":
            roles.setdefault(pattern.nodes["linear"], "col")
    for name, role in list(roles.items()):
        w = shape_of(nodes[name].args[1])
        if (role == "col" and w[0] % tp) or (role == "row" and w[1] % tp):
            dim = "output" if role == "col" else "input"
            raise ConfigError(f"tp{tp}: linear {node_location(nodes[name])} has {dim} width {w[0 if role == 'col' else 1]}, "
                              f"which does not divide by tp {tp}; choose a tp factor that divides it")
    return roles


# --- step 3: sequence-parallel origins ---------------------------------------------------------------------------
def _sp_origins(mg: ModelGraph, sp: int) -> dict:
    """Where the image/video token dim first appears upstream of attention's main stream: node -> token dim.
    sp: how many ways the tokens are sharded (ring x ulysses in the hybrid)."""
    attentions = [n for n in mg.op_nodes() if n.target in ATTENTION]
    if not attentions:
        raise ConfigError("sp: the model has no attention to shard the sequence of")
    longest = max(shape_of(n.args[0])[2] for n in attentions)
    # Any token count works: the lowering pads the sequence to whole tiles per device (placement.seq_local) and
    # masks by the logical length; the graph keeps logical shapes.
    if seq_padded(longest, sp) != longest:
        mg.notes.append(f"sequence sharded {sp} ways: {longest} image/video tokens padded to "
                        f"{seq_padded(longest, sp)} on device ({seq_local(longest, sp)} per device, whole 32-row "
                        "tiles); attention masks the padding (logical_n) and gathers slice it off")
    origins: dict = {}
    seen: set = set()

    def walk(node, t):
        if (node, t) in seen or is_const(node):
            return
        seen.add((node, t))
        shape = shape_of(node)
        if node.op == "placeholder":
            origins[node] = t
            return
        target = node.target
        last = len(shape) - 1
        if target is aten.permute.default:
            return walk(node.args[0], list(node.args[1])[t])
        if target is aten.reshape.default:
            d = reshape_dim_map(shape, shape_of(node.args[0]), t)
            return walk(node.args[0], d) if d is not None else origins.setdefault(node, t)
        if (target in TOKENWISE_UNARY or target in (aten.linear.default, aten.rms_norm.default,
                                                    aten.layer_norm.default)) and t != last:
            return walk(node.args[0], t)
        if target in BINARY:
            for operand in node.args[:2]:
                if isinstance(operand, fx.Node):
                    od = t - (len(shape) - len(shape_of(operand)))
                    if od >= 0 and shape_of(operand)[od] == shape[t]:
                        walk(operand, od)
            return None
        if target is aten.slice.Tensor and node.args[1] % len(shape) != t:
            return walk(node.args[0], t)
        if target is aten.cat.default and node.args[1] % len(shape) != t:
            for part in node.args[0]:
                walk(part, t)
            return None
        if target is operator.getitem and node.args[0].target in ATTENTION and node.args[1] == 0:
            return walk(node.args[0].args[0], t)
        if target is aten.scaled_dot_product_attention.default:
            return walk(node.args[0], t)
        origins.setdefault(node, t)
        return None

    for node in attentions:
        if shape_of(node.args[0])[2] == longest:
            for arg in node.args[:3]:
                walk(arg, 2)
    # A partition along the last (tile-width) dim splits rows of tiles; where a permute next moves the token dim
    # off the end (SD3's [B, D, N] -> [B, N, D]), partition after it instead (same effect downstream).
    for node, t in list(origins.items()):
        users = list(node.users)
        if node.op == "call_function" and t == len(shape_of(node)) - 1 and len(users) == 1 and \
                users[0].target is aten.permute.default and list(users[0].args[1]).index(t) != t:
            del origins[node]
            origins[users[0]] = list(users[0].args[1]).index(t)
    return origins


# --- step 4: propagation ---------------------------------------------------------------------------------------------
class _Propagator:
    def __init__(self, mg: ModelGraph, summary: ShardingSummary, roles: dict, origins: dict):
        self.mg = mg
        self.graph = mg.gm.graph
        self.summary = summary
        self.roles = roles
        self.origins = origins
        self.axes = [a for a, size in enumerate(summary.submesh) if size > 1]
        self.converted: dict = {}  # (node, axis, placement) -> node holding that value in that placement

    def layout(self, node):
        if not isinstance(node, fx.Node):
            return None
        return node.meta.get("layout")

    def run(self):
        default = tuple(R for _ in self.summary.submesh)
        seq_axes = self.summary.seq_axes
        for node in list(self.graph.nodes):
            if node.op == "placeholder":
                layout = list(default)
                if node in self.origins and seq_axes:
                    # uploaded sharded over the outer sequence axis; partition_origin cuts the inner one on device
                    layout[seq_axes[0]] = Shard(self.origins[node])
                node.meta["layout"] = tuple(layout)
                if node in self.origins and seq_axes:
                    self.partition_origin(node, self.origins[node])
            elif node.op == "call_function":
                if node.meta.get("collective"):
                    continue
                self.visit(node)
                if node in self.origins and seq_axes:  # consumers visited later see the sharded value
                    self.partition_origin(node, self.origins[node])
            elif node.op == "output":
                for out in node.all_input_nodes:
                    self.require(node, out, default)

    def partition_origin(self, node, t):
        """Shard the token dim `t` of `node` over every sequence axis it is still whole on, outermost first."""
        users = list(node.users)
        current = node
        first_op = next(n for n in self.graph.nodes if n.op != "placeholder")
        for axis in self.summary.seq_axes:
            if current.meta["layout"][axis] != R:
                continue
            # after the producer; a graph input's cut goes after all the inputs (placeholders stay in front)
            where = self.graph.inserting_before(first_op) if current.op == "placeholder" else \
                self.graph.inserting_after(current)
            with where:
                current = self.collective(mesh_partition, (current, t, axis), current, axis, Shard(t))
        if current is not node:
            for user in users:
                user.replace_input_with(node, current)

    def collective(self, fn, args, like, axis, placement, layout=None):
        new = emit(self.graph, fn, args, like=like)
        layout = list(layout if layout is not None else args[0].meta["layout"])
        layout[axis] = placement
        new.meta["layout"] = tuple(layout)
        new.meta["collective"] = True
        return new

    def require(self, user, node, layout):
        """Make `node` reach `user` with `layout`, inserting collectives (consts: choose the upload layout)."""
        layout = tuple(layout)
        if is_const(node):
            self.require_const(user, node, layout)
            return
        current = node
        changing = [a for a in self.axes if current.meta["layout"][a] != layout[a]]
        seq = self.summary.seq_axes
        # Release (gather, reduce) before acquiring (partition): sequence shards nest, so the innermost sequence axis
        # is gathered first and partitioned last.
        for axis in sorted(changing, key=lambda a: -seq.index(a) if a in seq else 1):
            have, want = current.meta["layout"][axis], layout[axis]
            if isinstance(have, Partial) and isinstance(want, Shard):
                current = self.step(current, axis, want)  # one reduce-scatter
            elif have != R:
                current = self.step(current, axis, R)
        for axis in sorted(changing, key=lambda a: seq.index(a) if a in seq else -1):
            if current.meta["layout"][axis] != layout[axis]:
                current = self.step(current, axis, layout[axis])
        if current is not node:
            user.replace_input_with(node, current)

    def require_const(self, user, node, layout):
        """A constant is uploaded in the layout its user needs. ttnn's mesh mapper shards a dim over one mesh axis
        only, so a token dim nested over two sequence axes is uploaded over the outer one and cut on device."""
        seq = [a for a in self.summary.seq_axes if isinstance(layout[a], Shard)]
        if len(seq) < 2:
            user.meta.setdefault("arg_layouts", {})[node.name] = layout
            return
        key = (node, "upload", layout)
        if key not in self.converted:  # the first user is the earliest: later users reuse the cut
            upload = tuple(R if a in seq[1:] else p for a, p in enumerate(layout))
            current, base = node, upload
            with self.graph.inserting_before(user):
                for axis in seq[1:]:
                    current = self.collective(mesh_partition, (current, layout[axis].dim, axis), user, axis,
                                              layout[axis], layout=base)
                    current.meta.setdefault("arg_layouts", {})[node.name] = upload
                    base = current.meta["layout"]
            self.converted[key] = current
        user.replace_input_with(node, self.converted[key])

    def step(self, node, axis, want):
        """The collective that turns `node`'s placement on one mesh axis into `want`, inserted after the producer
        and shared by every consumer that needs the same."""
        key = (node, axis, want)
        if key not in self.converted:
            have = node.meta["layout"][axis]
            if isinstance(have, Partial):
                fn, extra = (reduce_scatter, (want.dim, axis)) if isinstance(want, Shard) else (all_reduce, (axis,))
            elif isinstance(have, Shard):
                fn, extra = all_gather, (have.dim, axis)
            else:
                fn, extra = mesh_partition, (want.dim, axis)
            with self.graph.inserting_after(node):
                self.converted[key] = self.collective(fn, (node,) + extra, node, axis, want)
        return self.converted[key]

    def visit(self, node):
        inputs = list(node.all_input_nodes)
        per_axis_reqs = {n: list(self.layout(n) or ()) for n in inputs}
        out_layout = []
        multi = isinstance(node.meta.get("val"), (tuple, list))
        outs = [[] for _ in node.meta["val"]] if multi else None
        for axis, size in enumerate(self.summary.submesh):
            if size == 1:
                for n in inputs:
                    per_axis_reqs[n][axis] = R
                if multi:
                    for o in outs:
                        o.append(R)
                else:
                    out_layout.append(R)
                continue
            reqs, out = self.rule(node, axis, {n: (self.layout(n) or (R,) * len(self.summary.submesh))[axis]
                                               for n in inputs})
            for n in inputs:
                per_axis_reqs[n][axis] = reqs.get(n, R)
            if multi:
                for o, placement in zip(outs, out):
                    o.append(placement)
            else:
                out_layout.append(out)
        for n in inputs:
            self.require(node, n, tuple(per_axis_reqs[n]))
        node.meta["layout"] = tuple(tuple(o) for o in outs) if multi else tuple(out_layout)

    # --- rules: (requirements per input node, output placement) for one mesh axis ---------------------------------
    def rule(self, node, axis, have: dict):
        target = node.target
        shape = shape_of(node) if not isinstance(node.meta["val"], (tuple, list)) else None
        x = node.args[0] if node.args else None
        hx = have.get(x, R) if isinstance(x, fx.Node) else R
        if target is operator.getitem:
            return {x: hx}, x.meta["layout"][node.args[1]][axis]
        if target in TOKENWISE_UNARY:
            if isinstance(hx, Partial) and target not in LINEAR_IN_PARTIAL:
                return {x: R}, R
            return {x: hx}, hx
        if target in BINARY:
            return self.binary(node, axis, have)
        if target is aten.linear.default:
            return self.linear(node, axis, hx)
        if target in (aten.rms_norm.default, aten.layer_norm.default):
            if isinstance(hx, Shard) and hx.dim != len(shape) - 1:
                return {x: hx}, hx
            # hidden dim sharded: distributed norm (local stats, gathered, applied). Not over a sequence shard:
            # its padded rows would enter the statistics.
            if isinstance(hx, Shard) and axis not in self.summary.seq_axes:
                node.meta["distributed_norm_axis"] = axis
                params = [a for a in node.args[2:4] if isinstance(a, fx.Node)]
                return {x: hx, **{p: Shard(0) for p in params}}, hx
            return {x: R}, R
        if target is aten.reshape.default:
            if isinstance(hx, Partial):
                return {x: hx}, P
            if isinstance(hx, Shard):
                if axis in self.summary.seq_axes:
                    # A sequence shard holds whole tiles of a zero-padded sequence, not an even cut of the
                    # logical one: it stays sharded only while the token dim stays whole (other dims split or
                    # merged, unit dims added or dropped); a reshape that splits or merges the token dim itself
                    # (unpatchify) gathers first.
                    e = reshape_dim_map(shape_of(x), shape, hx.dim)
                else:
                    e = self.reshape_shard(shape_of(x), shape, hx.dim, self.summary.submesh[axis])
                if e is not None:
                    return {x: hx}, Shard(e)
            return {x: R}, R
        if target is aten.permute.default:
            perm = list(node.args[1])
            if isinstance(hx, Shard):
                return {x: hx}, Shard(perm.index(hx.dim))
            return {x: hx}, hx
        if target is aten.slice.Tensor:
            dim = node.args[1] % len(shape)
            if isinstance(hx, Shard) and hx.dim == dim:
                return {x: R}, R
            return {x: hx}, hx
        if target is aten.cat.default:
            dim = node.args[1] % len(shape) if len(node.args) > 1 else 0
            sharded = [h for h in have.values() if isinstance(h, Shard) and h.dim != dim]
            if sharded and all(h == sharded[0] or h == R for h in have.values()):
                return {n: sharded[0] for n in have}, sharded[0]
            return {n: R for n in have}, R
        if target is aten.constant_pad_nd.default:
            pad = list(node.args[1])
            padded = {len(shape) - 1 - i for i in range(len(pad) // 2) if pad[2 * i] or pad[2 * i + 1]}
            if isinstance(hx, Shard) and hx.dim not in padded:
                return {x: hx}, hx
            return {x: R}, R
        if target is aten.expand.default:
            if isinstance(hx, Shard) and shape_of(x)[hx.dim] == shape[hx.dim + len(shape) - len(shape_of(x))]:
                return {x: hx}, Shard(hx.dim + len(shape) - len(shape_of(x)))
            return {x: R}, R
        if target in (aten.mean.dim, aten.sum.dim_IntList, aten.softmax.int, aten._softmax.default):
            rank = len(shape_of(x))
            dims = node.args[1] if len(node.args) > 1 else list(range(rank))
            dims = [dims] if isinstance(dims, int) else list(dims)
            dims = {d % rank for d in dims}
            keepdim = target in (aten.softmax.int, aten._softmax.default) or \
                (len(node.args) > 2 and node.args[2]) or node.kwargs.get("keepdim", False)
            if isinstance(hx, Shard) and hx.dim not in dims:
                out_dim = hx.dim if keepdim else hx.dim - sum(d < hx.dim for d in dims)
                return {x: hx}, Shard(out_dim)
            return {x: R}, R
        if target in ATTENTION:
            return self.attention(node, axis, have)
        return {n: R for n in have}, R  # anything else runs on whole tensors

    @staticmethod
    def reshape_shard(src, dst, d, factor):
        """Output dim holding a shard of input dim d after a reshape, when d is the leading factor of it."""
        before = math.prod(src[:d])
        prefix = 1
        for e, size in enumerate(dst):
            if prefix == before:
                if size == 1 and src[d] != 1:
                    continue  # a unit dim in front of d's data (batch 1) carries none of it
                if size % src[d] == 0 and size >= src[d]:  # d merged with the dims after it
                    merged = src[d]
                    k = d + 1
                    while merged < size and k < len(src):
                        merged *= src[k]
                        k += 1
                    return e if merged == size else None
                if src[d] % size == 0 and size % factor == 0:  # d split; its leading part carries the shard
                    return e
                return None
            prefix *= size
            if prefix > before:
                return None
        return None

    def binary(self, node, axis, have):
        out_rank = len(shape_of(node))
        operands = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        placements = [have[a] for a in operands]
        partial = [isinstance(p, Partial) for p in placements]
        if any(partial):
            if node.target in (aten.mul.Tensor, aten.div.Tensor) and sum(partial) == 1 and \
                    (node.target is aten.mul.Tensor or partial[0]):
                return {a: (P if p else R) for a, p in zip(operands, partial)}, P  # scaling a pending sum
            if node.target in (aten.add.Tensor, aten.sub.Tensor) and all(partial):
                return {a: P for a in operands}, P  # sum of pending sums: still one reduction later
            if self.summary.residual == "sharded" and axis == self.summary.tp_axis and \
                    node.target in (aten.add.Tensor, aten.sub.Tensor):
                # TT-DiT layout: a row-parallel result is reduce-scattered into a hidden-dim-sharded residual
                placements = [Shard(len(shape_of(a)) - 1) if p else h for a, p, h in zip(operands, partial, placements)]
            else:
                placements = [R if p else h for p, h in zip(partial, placements)]
        out = R
        for a, p in zip(operands, placements):
            if isinstance(p, Shard):
                out = Shard(p.dim + out_rank - len(shape_of(a)))
                break
        reqs = {}
        for a in operands:
            if isinstance(out, Shard):
                od = out.dim - (out_rank - len(shape_of(a)))
                reqs[a] = Shard(od) if od >= 0 and shape_of(a)[od] == shape_of(node)[out.dim] else R
            else:
                reqs[a] = R
        return reqs, out

    def linear(self, node, axis, hx):
        x, w = node.args[0], node.args[1]
        bias = node.args[2] if len(node.args) > 2 else None
        last = len(shape_of(x)) - 1
        reqs = {}
        if axis == self.summary.tp_axis:
            role = self.roles.get(node.name, "rep")
            if role == "col":  # whole input on every device, each computes its slice of the output features
                reqs = {x: R, w: Shard(0)}
                if bias is not None:
                    reqs[bias] = Shard(0)
                return reqs, Shard(len(shape_of(node)) - 1)
            if role == "row":
                reqs = {x: Shard(last), w: Shard(1)}
                return reqs, P
        keep = hx if isinstance(hx, Shard) and hx.dim != last else R
        reqs = {x: keep, w: R}
        if bias is not None:
            reqs[bias] = R
        return reqs, keep

    def attention(self, node, axis, have):
        joint = node.target is mdops.joint_sdpa
        tensors = list(node.args[:6] if joint else node.args[:3])
        main, joint_part = tensors[:3], tensors[3:]
        mask = node.args[3] if not joint and len(node.args) > 3 and isinstance(node.args[3], fx.Node) else None
        if mask is None and not joint:
            mask = node.kwargs.get("attn_mask")
        main_have = [have.get(t, R) for t in main]
        heads = Shard(1)
        if all(h == heads for h in main_have) or (axis == self.summary.tp_axis and any(h == heads
                                                                                      for h in main_have)):
            reqs = {t: heads for t in tensors}
            if mask is not None:
                reqs[mask] = R
            return reqs, ((heads, heads) if joint else heads)
        seq = Shard(2)
        if axis in self.summary.seq_axes and main_have[0] == seq:
            # Sequence-sharded main stream: ring attention (K/V rotate) on the sp axis, an all-to-all from sequence
            # to heads on the ulysses axis, or both (the hybrid); the lowering emits whichever the axes ask for.
            if axis == self.summary.ulysses_axis:
                node.meta["ulysses_axis"] = axis
            else:
                node.meta["ring_axis"] = axis
            reqs = {t: seq for t in main}
            reqs.update({t: R for t in joint_part})
            if mask is not None:
                reqs[mask] = R
            return reqs, ((seq, R) if joint else seq)
        reqs = {t: R for t in tensors}
        if mask is not None:
            reqs[mask] = R
        return reqs, ((R, R) if joint else R)


def shard_graph(mg: ModelGraph, mesh: MeshConfig, residual: str = "replicated") -> ShardingSummary:
    """Annotate every node with node.meta['layout'] and insert collectives, for one cfg submesh of `mesh`.

    residual: "replicated" keeps the residual stream whole on every tp device (row-parallel results all-reduced,
    norms local); "sharded" is TT-DiT's layout: row-parallel results reduce-scattered into a hidden-dim-sharded
    residual, distributed norms, and an all-gather before each column-parallel linear."""
    if residual not in ("replicated", "sharded"):
        raise ConfigError(f"residual={residual!r}: use 'replicated' or 'sharded'")
    submesh = list(mesh.shape)
    submesh[mesh.cfg.axis] //= mesh.cfg.factor
    sp_axis = mesh.sp.axis if mesh.sp.factor > 1 else None
    tp_axis = mesh.tp.axis if mesh.tp.factor > 1 else None
    if sp_axis is not None and sp_axis == tp_axis:
        raise ConfigError(f"mesh {mesh}: sp and tp are both on axis {sp_axis}; put them on different mesh axes")
    ulysses_axis = (mesh.ulysses_axis if mesh.hybrid else sp_axis) if mesh.ulysses > 1 else None
    seq_axes = (sp_axis, mesh.ulysses_axis) if mesh.hybrid else ((sp_axis,) if sp_axis is not None else ())
    summary = ShardingSummary(mesh, tuple(submesh), sp_axis, tp_axis, ulysses=mesh.ulysses, residual=residual,
                              ulysses_axis=ulysses_axis, seq_axes=seq_axes)
    roles: dict = {}
    if tp_axis is not None:
        pad_heads(mg, mesh.tp.factor)
        gated = {p.nodes["up"] for p in mg.patterns if p.kind == "mlp" and p.info["act"] in ("swiglu", "geglu")}
        _split_sliced_linears(mg, gated)
        _split_concat_linears(mg)
        finalize(mg)
        fold_constants(mg)
        annotate(mg)
        roles = _choose_roles(mg, mesh.tp.factor)
        _detach_row_bias(mg, {n for n, r in roles.items() if r == "row"})
        finalize(mg)
        fold_constants(mg)
    origins = _sp_origins(mg, mesh.sequence_group) if sp_axis is not None else {}
    if mesh.ulysses > 1:
        for node in [n for n in mg.op_nodes() if n.target in ATTENTION]:
            heads = shape_of(node.args[0])[1] // (mesh.tp.factor if tp_axis is not None else 1)
            if heads % mesh.ulysses:
                raise ConfigError(f"ulysses{mesh.ulysses}: attention at {node_location(node)} has {heads} heads per "
                                  f"device, which do not divide by {mesh.ulysses}; lower ulysses or use the ring")
    summary.linear_roles = roles
    summary.sp_origins = [(n.name, t) for n, t in origins.items()]
    _Propagator(mg, summary, roles, origins).run()
    for node in mg.op_nodes():
        ring, ulysses = node.meta.get("ring_axis") is not None, node.meta.get("ulysses_axis") is not None
        summary.hybrid_attention += ring and ulysses
        summary.ring_attention += ring and not ulysses
        summary.ulysses_attention += ulysses and not ring
    finalize(mg)
    _check_divisible(mg, summary)
    mg.sharding = summary
    return summary


def _check_divisible(mg: ModelGraph, summary: ShardingSummary) -> None:
    """tp shards must divide exactly; sequence (sp) shards are padded to whole tiles instead (placement.seq_local)."""
    for node in mg.gm.graph.nodes:
        layout = node.meta.get("layout")
        if node.op != "call_function" or layout is None or isinstance(node.meta["val"], (tuple, list)):
            continue
        for axis, (placement, size) in enumerate(zip(layout, summary.submesh)):
            if axis in summary.seq_axes:
                continue
            if isinstance(placement, Shard) and shape_of(node)[placement.dim] % size:
                raise ConfigError(
                    f"mesh {summary.mesh}: {node_location(node)} has shape {tuple(shape_of(node))}; dim "
                    f"{placement.dim} does not divide by {size}; choose factors that divide it"
                )
