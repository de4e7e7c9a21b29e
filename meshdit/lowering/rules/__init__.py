"""Lowering rules by op family; importing this package registers them all (see lowering/registry.py).

Fused patterns are found in import order: RoPE's (rotary) before adaLN's (modulation), whose gated-residual form
would otherwise claim RoPE's final add."""

from . import linear, pointwise, reductions, rotary, modulation, views  # noqa: F401
