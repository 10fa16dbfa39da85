"""The published detectors of the paper's Table 2, reconstructed from their papers, and the classical floor.

Each network module registers its network(s) with
:func:`cmbstudy.models.registry.register_model` on import. What is reconstructed
and what is approximate is stated in each module's docstring and in the book's
methods chapter. :mod:`~cmbstudy.models.baselines.classical` is the weightless
LoG detector every network must beat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...namespaces import lazy_stage

if TYPE_CHECKING:  # the stage's public names, in its order; imported on first use (lazy_stage)
    from . import classical, dou2016, dynunet, fan2022, tsuchida2024, wei2022

__getattr__, __dir__, _names = lazy_stage(__name__, __file__)
#: The stage's public names: those of its modules, in the order of the stage.
__all__ = _names
