"""Analytical cost model: the modelled time of a lowered program on a Wormhole system (figures are modelled, not
measured).

    from meshdit import cost
    est = cost.estimate(program.ir)            # or program.estimate(); system from the mesh shape, or named
    print(est)                                 # per-category totals and a per-block breakdown

systems.py holds the hardware constants (each with its source), ops.py the per-op rooflines, ccl.py collectives
and ring attention, estimate.py the walk over the program, calibration.py the three fitted efficiencies.
"""

from .calibration import FITTED, SOURCED, Efficiency
from .estimate import CATEGORIES, BlockCost, Estimate, estimate
from .systems import GALAXY, N150, N300, SYSTEMS, T3K, NoSystemError, System, system_for

__all__ = ["estimate", "Estimate", "BlockCost", "CATEGORIES", "Efficiency", "FITTED", "SOURCED", "System",
           "SYSTEMS", "N150", "N300", "T3K", "GALAXY", "system_for", "NoSystemError"]
