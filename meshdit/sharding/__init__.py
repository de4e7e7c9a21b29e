"""Stage 3, sharding: mesh configs, placements, and the per-node decisions lowering reads.

    plan = shard_graph(model_graph, MeshConfig.parse("2x4 cfg2@1 sp2@0 tp2@1"))
"""

from .decisions import AttentionPlan, AttentionStrategy, NodeSharding
from .mesh_config import MeshConfig, ParallelFactor

__all__ = ["MeshConfig", "ParallelFactor", "AttentionPlan", "AttentionStrategy", "NodeSharding"]
