"""Lowering rules, one registry: canonical op -> a function that emits its ttnn calls.

    @lowering(aten.linear.default)
    def linear(b: Builder, input, weight, bias):
        ...
        return b.call("ttnn.linear", (b.arg(input), ...), {...})

A rule takes the node's arguments by their schema names, defaults filled in (ir.graph.normalized_args), so no rule
decodes node.args positions; graph values arrive as FX nodes (for shapes and placements: b.local(x), b.arg(x)).
It returns the IR value(s) of the node, or None when this instance has no device lowering (the node then runs on
host, counted in the coverage report, or is refused with allow_host_fallback=False). Rules live by op family in
lowering/rules/, attention in lowering/attention/ (one module per strategy), collectives in lowering/ccl.py.
"""

from __future__ import annotations

from ..ir.graph import normalized_args
from ..ir.registry import Registry

LOWERINGS = Registry("lowering rule")
lowering = LOWERINGS.register  # @lowering(*ops)


def lower_node(b, node):
    """The IR value of `node` from its rule, or None when it has no rule or the rule declines."""
    rule = LOWERINGS.get(node.target)
    if rule is None:
        return None
    return rule(b, **normalized_args(node))
