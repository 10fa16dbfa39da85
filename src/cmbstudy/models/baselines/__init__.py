"""The published detectors of the paper's Table 2, reconstructed from their papers, and the classical floor.

Each network module registers its network(s) with
:func:`cmbstudy.models.registry.register_model` on import. What is reconstructed
and what is approximate is stated in each module's docstring and in the book's
methods chapter. :mod:`~cmbstudy.models.baselines.classical` is the weightless
LoG detector every network must beat.
"""

from __future__ import annotations

from . import classical, dou2016, dynunet, fan2022, tsuchida2024, wei2022

__all__ = ["classical", "dou2016", "dynunet", "fan2022", "tsuchida2024", "wei2022"]
