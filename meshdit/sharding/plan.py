"""Sharding, stage 3: give every value a placement per mesh axis and insert collectives where a consumer needs
another placement.

    plan = shard_graph(model_graph, mesh_config)      # also kept as model_graph.sharding

Runs on the graph of one cfg submesh (cfg is data parallelism over submeshes, handled by the runtime). Steps, one
module each:
  1. tensor parallelism (tp.py, heads.py, widths.py): heads padded to a multiple of tp; linears split where local
     slicing needs it; each linear's role (column- or row-parallel) from the recognised patterns; linear widths
     that tp does not divide zero-padded; row-parallel biases shared over tp (or added after the reduction).
  2. sequence parallelism (sequence.py): where the main stream's token dim first appears, to be partitioned there.
  3. propagation (propagate.py, rules/): per-op rules per mesh axis, collectives on every edge whose placement
     changes; the decision for each node recorded in the plan (decisions.py), which lowering reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError, node_location
from ..ir.graph import ModelGraph, finalize, shape_of
from ..ir.ops import ATTENTION
from ..passes.fold import fold_constants
from ..passes.patterns import annotate
from .decisions import AttentionStrategy, NodeSharding
from .heads import pad_heads
from .mesh_config import MeshConfig
from .placement import MeshAxes, Shard
from .propagate import Propagator
from .sequence import sequence_origins
from .tp import choose_roles, share_row_bias, split_concat_linears, split_sliced_linears
from .widths import pad_linear_widths


@dataclass
class ShardingPlan:
    """What sharding decided for one cfg submesh: its axes, the per-node decisions, and what the plan reports."""

    mesh: MeshConfig
    mesh_axes: MeshAxes  # the submesh's shape and its sequence axes (outermost first)
    sp_axis: int | None
    tp_axis: int | None
    ulysses_axis: int | None = None  # the all-to-all's axis: the sp axis itself, or its own axis in the hybrid
    residual: str = "replicated"  # tp layout of the residual stream: replicated | sharded (hidden dim, as TT-DiT)
    linear_roles: dict = field(default_factory=dict)  # linear node name -> col | row
    sp_origins: list = field(default_factory=list)  # (node name, token dim)
    decisions: dict = field(default_factory=dict)  # fx node -> NodeSharding
    unruled: dict = field(default_factory=dict)  # op -> source locations of nodes with no sharding rule

    @property
    def submesh(self) -> tuple:
        return self.mesh_axes.shape

    @property
    def seq_axes(self) -> tuple:
        return self.mesh_axes.seq_axes

    def decision(self, node) -> NodeSharding:
        return self.decisions.get(node) or NodeSharding.unsharded(node)

    def layout(self, node):
        decision = self.decisions.get(node)
        return decision.layout if decision is not None else None

    def attention_counts(self) -> dict:
        """Strategy -> how many attentions use it."""
        counts: dict = {}
        for decision in self.decisions.values():
            if decision.attention is not None:
                counts[decision.attention.strategy] = counts.get(decision.attention.strategy, 0) + 1
        return counts


def shard_graph(mg: ModelGraph, mesh: MeshConfig, residual: str = "replicated", strict: bool = False) -> ShardingPlan:
    """Place every value of `mg` on one cfg submesh of `mesh` and insert collectives; returns the plan.

    residual: "replicated" keeps the residual stream whole on every tp device (row-parallel results all-reduced,
    norms local); "sharded" is TT-DiT's layout: row-parallel results reduce-scattered into a hidden-dim-sharded
    residual, distributed norms, and an all-gather before each column-parallel linear.
    strict: an op with no sharding rule is an error instead of running on gathered inputs."""
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
    plan = ShardingPlan(mesh, MeshAxes(tuple(submesh), seq_axes), sp_axis, tp_axis, ulysses_axis, residual)
    if tp_axis is not None:
        _tensor_parallel(mg, plan, mesh.tp.factor)
    origins = sequence_origins(mg, mesh.sequence_group) if sp_axis is not None else {}
    if mesh.ulysses > 1:
        for node in [n for n in mg.op_nodes() if n.target in ATTENTION]:
            heads = shape_of(node.args[0])[1] // (mesh.tp.factor if tp_axis is not None else 1)
            if heads % mesh.ulysses:
                raise ConfigError(f"ulysses{mesh.ulysses}: attention at {node_location(node)} has {heads} heads per "
                                  f"device, which do not divide by {mesh.ulysses}; lower ulysses or use the ring")
    plan.sp_origins = [(n.name, t) for n, t in origins.items()]
    Propagator(mg, plan, origins, strict).run()
    finalize(mg)
    plan.decisions = {n: d for n, d in plan.decisions.items() if not getattr(n, "_erased", False)}
    _check_divisible(mg, plan)
    mg.sharding = plan
    return plan


def _tensor_parallel(mg: ModelGraph, plan: ShardingPlan, tp: int) -> None:
    pad_heads(mg, tp)
    gated = {p.nodes["up"] for p in mg.patterns if p.kind == "mlp" and p.info["act"] in ("swiglu", "geglu")}
    split_sliced_linears(mg, gated)
    modulation = {}
    if plan.residual == "sharded":
        # One column-parallel linear per adaLN chunk: each device then computes its own piece of every chunk, which
        # is the piece its shard of the residual reads. Kept whole, the linear's output is sharded across the
        # chunks: gathered, sliced, and each chunk cut again (TT-DiT permutes the weight rows to the same end).
        modulation = split_sliced_linears(mg, {p.nodes["linear"] for p in mg.patterns if p.kind == "adaln_modulation"})
    split_concat_linears(mg)
    finalize(mg)
    fold_constants(mg)
    annotate(mg)
    roles = choose_roles(mg, tp)
    for part in (name for names in modulation.values() for name in names):
        roles.setdefault(part, "col")
    pad_linear_widths(mg, roles, tp)
    annotate(mg)
    share_row_bias(mg, {n for n, r in roles.items() if r == "row"}, tp)
    finalize(mg)
    fold_constants(mg)
    plan.linear_roles = roles


def _check_divisible(mg: ModelGraph, plan: ShardingPlan) -> None:
    """tp shards must divide exactly; sequence (sp) shards are padded to whole tiles instead (placement.seq_local)."""
    for node in mg.gm.graph.nodes:
        layout = plan.layout(node)
        if node.op != "call_function" or layout is None or isinstance(node.meta["val"], (tuple, list)):
            continue
        for axis, (placement, size) in enumerate(zip(layout, plan.submesh)):
            if axis in plan.seq_axes:
                continue
            if isinstance(placement, Shard) and shape_of(node)[placement.dim] % size:
                raise ConfigError(
                    f"mesh {plan.mesh}: {node_location(node)} has shape {tuple(shape_of(node))}; dim "
                    f"{placement.dim} does not divide by {size}; choose factors that divide it"
                )


__all__ = ["shard_graph", "ShardingPlan", "AttentionStrategy"]
