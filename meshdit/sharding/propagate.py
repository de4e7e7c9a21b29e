"""Propagation: every value gets one placement per mesh axis, and a collective is inserted on every edge whose
producer placement is not what the consumer's rule needs.

Nodes are visited in graph order. For each node and each mesh axis of size > 1, the op's registered rule
(sharding/rules/) says what placement it needs of each input and what its output gets; the requirements of all
axes are then met together by inserting collectives (all_gather, reduce_scatter, all_reduce, mesh_partition),
each shared by every consumer that needs the same conversion. Constants are not converted: they are uploaded in
the layout their user needs. The decisions are recorded per node (NodeSharding) in the plan.

Sequence shards over two mesh axes (the hybrid) nest: the ring (sp) axis is outer, the ulysses axis inner, so
device (ring r, ulysses u) holds token chunk r * ulysses + u. Gathers run innermost first, partitions outermost
first, and a host upload shards a dim over one axis only (ttnn's mesh mapper refuses a dim twice): the inner axis
is cut on device by a mesh_partition.
"""

from __future__ import annotations

from ..errors import UnsupportedOpError, node_location
from ..ir.graph import emit, is_const
from ..ir.ops import all_gather, all_reduce, mesh_partition, reduce_scatter
from .decisions import NodeSharding
from .placement import R, Partial, Shard
from .rules import OpOnAxis, rule_for


class Propagator:
    def __init__(self, mg, plan, origins: dict, strict: bool = False, input_layouts: dict | None = None):
        self.mg = mg
        self.graph = mg.gm.graph
        self.plan = plan
        self.origins = origins  # node -> token dim to shard over the sequence axes
        self.strict = strict
        self.input_layouts = input_layouts or {}  # graph input name -> the layout it is uploaded in
        self.axes = [a for a, size in enumerate(plan.mesh_axes.shape) if size > 1]
        self.converted: dict = {}  # (node, axis, placement) -> node holding that value in that placement

    def layout(self, node):
        return self.plan.layout(node)

    def run(self):
        default = tuple(R for _ in self.plan.mesh_axes.shape)
        seq_axes = self.plan.seq_axes
        for node in list(self.graph.nodes):
            if node.op == "placeholder":
                layout = list(self.input_layouts.get(node.name, default))
                if node in self.origins and seq_axes:
                    # uploaded sharded over the outer sequence axis; partition_origin cuts the inner one on device
                    layout[seq_axes[0]] = Shard(self.origins[node])
                self.plan.decisions[node] = NodeSharding(tuple(layout))
                if node in self.origins and seq_axes:
                    self.partition_origin(node, self.origins[node])
            elif node.op == "call_function":
                if node in self.plan.decisions and self.plan.decisions[node].collective:
                    continue
                self.visit(node)
                if node in self.origins and seq_axes:  # consumers visited later see the sharded value
                    self.partition_origin(node, self.origins[node])
            elif node.op == "output":
                for out in node.all_input_nodes:
                    self.require(node, out, default)

    def visit(self, node):
        decision = NodeSharding(None)
        self.plan.decisions[node] = decision
        rule = rule_for(node.target)
        if rule is None and self.axes:
            self.unruled(node)
        inputs = list(node.all_input_nodes)
        size = len(self.plan.mesh_axes.shape)
        per_axis_reqs = {n: [R] * size for n in inputs}
        multi = isinstance(node.meta.get("val"), (tuple, list))
        outs = [[R] * size for _ in node.meta["val"]] if multi else [R] * size
        # Sequence axes first: a dim sharded over a sequence axis holds whole tiles of a padded sequence, which no
        # other axis may cut again; where a rule would, that axis runs the op on its inputs gathered instead.
        for axis in sorted(self.axes, key=lambda a: a not in self.plan.seq_axes):
            if rule is None:  # no rule: whole inputs, whole output
                continue
            have = {n: (self.layout(n) or (R,) * size)[axis] for n in inputs}
            before = (decision.attention, decision.norm_axis)
            reqs, out = rule(OpOnAxis.of(node, axis, have, self.plan, decision))
            if axis not in self.plan.seq_axes and _cuts_a_token_dim(out, outs, self.plan.seq_axes, multi):
                decision.attention, decision.norm_axis = before  # what the rule chose for this axis no longer holds
                have = {n: (R if isinstance(h, Shard) else h) for n, h in have.items()}
                reqs, out = rule(OpOnAxis.of(node, axis, have, self.plan, decision))
            for n in inputs:
                per_axis_reqs[n][axis] = reqs.get(n, R)
            if multi:
                for o, placement in zip(outs, out):
                    o[axis] = placement
            else:
                outs[axis] = out
        for n in inputs:
            self.require(node, n, tuple(per_axis_reqs[n]))
        decision.layout = tuple(tuple(o) for o in outs) if multi else tuple(outs)

    def unruled(self, node):
        """An op with no sharding rule runs on whole tensors: named in the plan, or an error with strict=True."""
        if self.strict:
            raise UnsupportedOpError(
                f"no sharding rule for {node.target} at {node_location(node)} (strict=True); add one in "
                "meshdit/sharding/rules/, or lower with strict=False to run it on gathered inputs")
        self.plan.unruled.setdefault(str(node.target), []).append(node_location(node))

    def partition_origin(self, node, t):
        """Shard the token dim `t` of `node` over every sequence axis it is still whole on, outermost first."""
        users = list(node.users)
        current = node
        first_op = next(n for n in self.graph.nodes if n.op != "placeholder")
        for axis in self.plan.seq_axes:
            if self.layout(current)[axis] != R:
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
        layout = list(layout if layout is not None else self.layout(args[0]))
        layout[axis] = placement
        self.plan.decisions[new] = NodeSharding(tuple(layout), collective=True)
        return new

    def require(self, user, node, layout):
        """Make `node` reach `user` with `layout`, inserting collectives (constants: choose the upload layout)."""
        layout = tuple(layout)
        if is_const(node):
            self.require_const(user, node, layout)
            return
        current = node
        changing = [a for a in self.axes if self.layout(current)[a] != layout[a]]
        seq = self.plan.seq_axes
        # Release (gather, reduce) before acquiring (partition): sequence shards nest, so the innermost sequence axis
        # is gathered first and partitioned last.
        for axis in sorted(changing, key=lambda a: -seq.index(a) if a in seq else 1):
            have, want = self.layout(current)[axis], layout[axis]
            if isinstance(have, Partial) and isinstance(want, Shard):
                current = self.step(current, axis, want)  # one reduce-scatter
            elif have != R:
                current = self.step(current, axis, R)
        for axis in sorted(changing, key=lambda a: seq.index(a) if a in seq else -1):
            if self.layout(current)[axis] != layout[axis]:
                current = self.step(current, axis, layout[axis])
        if current is not node:
            user.replace_input_with(node, current)

    def require_const(self, user, node, layout):
        """A constant is uploaded in the layout its user needs. ttnn's mesh mapper shards a dim over one mesh axis
        only, so a token dim nested over two sequence axes is uploaded over the outer one and cut on device."""
        seq = [a for a in self.plan.seq_axes if isinstance(layout[a], Shard)]
        if len(seq) < 2:
            self.plan.decisions.setdefault(user, NodeSharding(None)).arg_layouts[node.name] = layout
            return
        key = (node, "upload", layout)
        if key not in self.converted:  # the first user is the earliest: later users reuse the cut
            upload = tuple(R if a in seq[1:] else p for a, p in enumerate(layout))
            current, base = node, upload
            with self.graph.inserting_before(user):
                for axis in seq[1:]:
                    current = self.collective(mesh_partition, (current, layout[axis].dim, axis), user, axis,
                                              layout[axis], layout=base)
                    self.plan.decisions[current].arg_layouts[node.name] = upload
                    base = self.layout(current)
            self.converted[key] = current
        user.replace_input_with(node, self.converted[key])

    def step(self, node, axis, want):
        """The collective that turns `node`'s placement on one mesh axis into `want`, inserted after the producer
        and shared by every consumer that needs the same."""
        key = (node, axis, want)
        if key not in self.converted:
            have = self.layout(node)[axis]
            if isinstance(have, Partial):
                fn, extra = (reduce_scatter, (want.dim, axis)) if isinstance(want, Shard) else (all_reduce, (axis,))
            elif isinstance(have, Shard):
                fn, extra = all_gather, (have.dim, axis)
            else:
                fn, extra = mesh_partition, (want.dim, axis)
            with self.graph.inserting_after(node):
                self.converted[key] = self.collective(fn, (node,) + extra, node, axis, want)
        return self.converted[key]



def _cuts_a_token_dim(out, outs, seq_axes, multi) -> bool:
    """Whether an output placement shards a dim that a sequence axis already shards."""
    pairs = zip(out, outs) if multi else [(out, outs)]
    for placement, layout in pairs:
        if isinstance(placement, Shard) and any(layout[a] == placement for a in seq_axes):
            return True
    return False
