"""Lowering rules by op family; importing this package registers them all (see lowering/registry.py)."""

from . import linear, pointwise, reductions, views  # noqa: F401
