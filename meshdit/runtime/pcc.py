"""Pearson correlation (PCC), the figure TT model tests gate on."""

from __future__ import annotations

import torch


def pcc(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """PCC of two tensors of the same shape, in float64. Two identical constant tensors give 1.0."""
    if tuple(expected.shape) != tuple(actual.shape):
        raise ValueError(f"PCC of tensors of different shapes: {tuple(expected.shape)} vs {tuple(actual.shape)}")
    a = expected.detach().to(torch.float64).flatten()
    b = actual.detach().to(torch.float64).flatten()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("nan")
    if torch.equal(a, b):
        return 1.0
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    if denom == 0:
        return 0.0
    return float((a @ b) / denom)
