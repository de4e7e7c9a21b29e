"""Stage 3, sharding: mesh configs and (with the sharding issue) placements and collectives."""

from .mesh_config import MeshConfig, ParallelFactor

__all__ = ["MeshConfig", "ParallelFactor"]
