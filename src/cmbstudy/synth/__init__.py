"""Physics-based synthetic CMB cohort (anatomy, susceptibility, dipole field, GRE/SWI acquisition).

``make_cohort`` writes a BIDS-like dataset that :mod:`cmbstudy.data.datasets` reads
exactly like real data; ``make_test_cohort`` the study's separate test cohort.
"""

from __future__ import annotations

from .cohort import CohortSummary, make_cohort, make_test_cohort

__all__ = ["CohortSummary", "make_cohort", "make_test_cohort"]
