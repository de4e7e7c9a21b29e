"""Sharding rules, one registry: for each canonical op, on one mesh axis, which placement it needs of each input
and which placement its output gets.

    @sharding_rule(aten.permute.default)
    def permute(op: OpOnAxis):
        x = op.args["input"]
        ...
        return {x: placement it must have}, output placement

Rules are grouped by op family, one file each (pointwise, views, reductions, linear, attention), as
torch.distributed.tensor groups its op strategies. Propagation (sharding/propagate.py) calls the rule of every
node on every mesh axis of size > 1 and inserts a collective wherever an input's placement is not what the rule
needs. An op without a rule is never replicated silently: its inputs are gathered, and the op is counted and named
in the plan (`ShardingPlan.unruled`); `strict=True` makes it an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from ...ir.graph import normalized_args, shape_of
from ...ir.registry import Registry
from ..placement import R

RULES = Registry("sharding rule")
sharding_rule = RULES.register  # @sharding_rule(*canonical ops)


def rule_for(target):
    return RULES.get(target)


@dataclass
class OpOnAxis:
    """What a rule sees: one node, its arguments by name, and its inputs' placements on one mesh axis."""

    node: fx.Node
    args: dict  # normalised arguments (parameter name -> node or literal)
    axis: int
    have: dict  # input node -> its placement on this axis
    plan: object  # the ShardingPlan being made: tp/sequence axes, linear roles, residual layout, layouts so far
    decision: object  # the node's NodeSharding: a rule records the attention strategy or norm axis it chose

    @classmethod
    def of(cls, node, axis, have, plan, decision):
        return cls(node, normalized_args(node), axis, have, plan, decision)

    def placement(self, x):
        return self.have.get(x, R) if isinstance(x, fx.Node) else R

    @property
    def shape(self) -> list:
        return shape_of(self.node)

    @property
    def axis_size(self) -> int:
        return self.plan.mesh_axes.shape[self.axis]

    @property
    def on_sequence_axis(self) -> bool:
        return self.axis in self.plan.seq_axes


def replicated(op: OpOnAxis):
    """Every input whole, the output whole: the rule of ops that need whole tensors."""
    return {n: R for n in op.have}, R


from . import attention, linear, pointwise, reductions, views  # noqa: E402,F401  (registers every family's rules)
