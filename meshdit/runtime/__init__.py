"""Stage 5, runtime: Program (call, save, PCC) and the simulated TT-NN backend (runtime.sim)."""

from .pcc import pcc
from .program import PCCResult, Program

__all__ = ["Program", "PCCResult", "pcc"]
