"""Classes of canonical ops by how they treat values, shared by the passes, sharding and lowering.

A pass that keeps token streams apart, a sharding rule that lets a shard pass through, and a lowering that keeps a
region in float32 all ask the same question of an op ("does it mix values across elements, tokens, channels?").
The answer lives here, once, so a new op is classified in one place.
"""

from __future__ import annotations

import torch

aten = torch.ops.aten

# Elementwise over one tensor: every output value depends on the input value at the same position only, so the op
# commutes with any cut of the tensor (token streams, shards).
UNARY = frozenset({aten.neg.default, aten.exp.default, aten.silu.default, aten.gelu.default, aten.sin.default,
                   aten.cos.default, aten.tanh.default, aten.rsqrt.default, aten.sqrt.default, aten.sigmoid.default,
                   aten.relu.default, aten.to.dtype, aten.abs.default, aten.reciprocal.default,
                   aten.leaky_relu.default, aten.clamp.default, aten.logical_not.default})
# Elementwise over two broadcast operands.
BINARY = frozenset({aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor})
# Elementwise selection between two broadcast operands by a broadcast 0/1 condition (where(cond, a, b)).
TERNARY = frozenset({aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar})
# Elementwise comparisons and logical ops of two broadcast operands: a boolean result.
COMPARISON = frozenset({aten.gt.Scalar, aten.gt.Tensor, aten.ge.Scalar, aten.ge.Tensor, aten.lt.Scalar,
                        aten.lt.Tensor, aten.le.Scalar, aten.le.Tensor, aten.eq.Scalar, aten.eq.Tensor,
                        aten.ne.Scalar, aten.ne.Tensor, aten.logical_and.default, aten.logical_or.default})
# Unary ops that commute with a sum, f(a + b) = f(a) + f(b): a pending (partial) sum may pass through them.
SUM_PRESERVING = frozenset({aten.neg.default, aten.to.dtype})
# Activation functions, by the name the patterns report.
ACTIVATIONS = {aten.gelu.default: "gelu", aten.silu.default: "silu", aten.relu.default: "relu",
               aten.tanh.default: "tanh"}
TRIG = frozenset({aten.sin.default, aten.cos.default})
NORMS = frozenset({aten.rms_norm.default, aten.layer_norm.default})
# Mix values along the last (channel) dim only: each token is computed on its own.
ROW_WISE = frozenset({aten.linear.default}) | NORMS
# Move or re-view values without computing new ones.
LAYOUT = frozenset({aten.reshape.default, aten.permute.default, aten.to.dtype})
# Data movement that selects, joins or pads values (no arithmetic).
SELECT = frozenset({aten.slice.Tensor, aten.cat.default, aten.constant_pad_nd.default, aten.expand.default})
# Work attention does on each head's values between the head split and attention (norms, RoPE: elementwise ops with
# tables, slices and concatenations of the head dim; also x @ M with a constant M, which is a matmul): the head
# split can precede it (passes/heads_first.py moves it so, lowering/rules/heads.py fuses QKV across it)
PER_HEAD = UNARY | BINARY | NORMS | frozenset({aten.slice.Tensor, aten.cat.default})
