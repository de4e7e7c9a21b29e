"""What sharding decides for each node, as one typed record lowering reads (never loose node.meta strings).

    plan.decision(node) -> NodeSharding(layout, arg_layouts, attention, norm_axis, collective)

The record is made by propagation (sharding/propagate.py): the op's rule sets the attention strategy or the norm
axis it chose, propagation the layouts. A graph lowered without sharding (one device) has no records, and
`NodeSharding.unsharded(node)` stands in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..ir.ops import ATTENTION, joint_sdpa


class AttentionStrategy(enum.Enum):
    """How an attention runs on the mesh; lowering has one module per strategy (lowering/attention/)."""

    PLAIN = "plain"  # one stream, whole sequence on every device (heads may be split by tp)
    JOINT = "joint"  # two streams (image + prompt) in one softmax, whole sequences on every device
    RING = "ring"  # main stream sequence-sharded on a mesh axis; K/V rotate around it, prompt K/V joined once
    ULYSSES = "ulysses"  # sequence shards turned into head shards by an all-to-all, local attention, and back
    HYBRID = "hybrid"  # ulysses all-to-all on one mesh axis around ring attention on the other (USP)


@dataclass(frozen=True)
class AttentionPlan:
    strategy: AttentionStrategy
    ring_axis: int | None = None  # the mesh axis K/V rotate around (ring, hybrid)
    ulysses_axis: int | None = None  # the mesh axis of the heads all-to-all (ulysses, hybrid)

    @classmethod
    def local(cls, node) -> "AttentionPlan":
        """An attention that needs no communication for its sequence (the default, and on one device)."""
        return cls(AttentionStrategy.JOINT if node.target is joint_sdpa else AttentionStrategy.PLAIN)


@dataclass
class NodeSharding:
    """Sharding's decision for one node."""

    layout: tuple  # output placement per mesh axis; a tuple of layouts for an op with several outputs
    arg_layouts: dict = field(default_factory=dict)  # constant input name -> the layout it is uploaded in for this op
    attention: AttentionPlan | None = None  # attention nodes: the strategy and its mesh axes
    norm_axis: int | None = None  # norms: the mesh axis their hidden dim is sharded over (a distributed norm)
    collective: bool = False  # a collective sharding inserted (its layout is set when it is made)

    @classmethod
    def unsharded(cls, node) -> "NodeSharding":
        return cls(layout=None, attention=AttentionPlan.local(node) if node.target in ATTENTION else None)

