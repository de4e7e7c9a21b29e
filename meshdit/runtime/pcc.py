"""Pearson correlation (PCC), the figure TT model tests gate on.

One implementation, in the torch-free device runtime (saved programs use it where torch is not installed); it takes
numpy arrays and torch tensors alike. Re-exported here so `from meshdit.runtime.pcc import pcc` keeps working."""

from __future__ import annotations

from .device import pcc

__all__ = ["pcc"]
