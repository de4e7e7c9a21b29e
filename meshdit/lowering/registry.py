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

A pattern of several nodes that one ttnn op computes (RoPE's four ops as ttnn's rotary op) is found before lowering
starts, once its operands' per-device shapes are known:

    @fused_pattern
    def rotary_embeddings(b: Builder, graph):
        ...  b.fused[last_node] = rule; b.absorbed[other_node] = None

the pattern's last node then lowers through `rule(b)` and its other nodes emit nothing. A finder decides for good:
the rule does not decline.
"""

from __future__ import annotations

from ..ir.graph import normalized_args
from ..ir.registry import Registry

LOWERINGS = Registry("lowering rule")
lowering = LOWERINGS.register  # @lowering(*ops)
FUSED_PATTERNS: list = []  # finders, run in registration order before lowering


def fused_pattern(finder):
    FUSED_PATTERNS.append(finder)
    return finder


def find_fused_patterns(b) -> None:
    for finder in FUSED_PATTERNS:
        finder(b, b.mg.gm.graph)


# what every finder asks of the nodes it would take
def claimed(b, *nodes) -> bool:
    """Whether a finder before this one took any of these nodes."""
    return any(n in b.fused or n in b.absorbed for n in nodes)


def read_only_by(node, reader) -> bool:
    """Whether `node` is a graph value that `reader` alone reads (so a pattern may absorb it)."""
    return hasattr(node, "users") and list(node.users) == [reader]


def lower_node(b, node):
    """The IR value of `node` from its rule (a fused pattern's, when it ends one), or None when it has no rule or the
    rule declines."""
    if node in b.fused:
        return b.fused.pop(node)(b)
    rule = LOWERINGS.get(node.target)
    if rule is None:
        return None
    return rule(b, **normalized_args(node))
