"""Reductions and softmax."""

from __future__ import annotations

import torch

from ..builder import Builder
from ..registry import lowering

aten = torch.ops.aten


def _reduce(fn: str):
    def rule(b: Builder, input, dim=None, keepdim=False, dtype=None):
        return b.call(fn, (b.arg(input),), {"dim": list(dim) if dim is not None else None, "keepdim": keepdim})

    return rule


lowering(aten.mean.dim)(_reduce("ttnn.mean"))
lowering(aten.sum.dim_IntList)(_reduce("ttnn.sum"))


@lowering(aten.softmax.int, aten._softmax.default)
def softmax(b: Builder, input, dim, **_):
    return b.call("ttnn.softmax", (b.arg(input), dim))
