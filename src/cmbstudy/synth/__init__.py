"""Physics-based synthetic CMB cohort (anatomy, susceptibility, dipole field, GRE/SWI acquisition).

``make_cohort`` writes a BIDS-like dataset that :mod:`cmbstudy.data.datasets` reads
exactly like real data.
"""

from __future__ import annotations

from .cohort import CohortSummary, make_cohort

__all__ = ["CohortSummary", "make_cohort"]
