"""Evaluation (the paper's "Evaluation metrics"): lesions, matching rules, scores and statistics.

Connected components (:mod:`~cmbstudy.evaluation.lesions`); the paper's 4-voxel
rule and the VALDO rule (:mod:`~cmbstudy.evaluation.matching`); P/R/F1/FP per
subject, FROC and ARIA-H confusion (:mod:`~cmbstudy.evaluation.scores`); the
<= 3 mm subset and recall by size (:mod:`~cmbstudy.evaluation.subsets`);
bootstrap, Spearman and regression statistics (:mod:`~cmbstudy.evaluation.stats`);
and ``cmbstudy evaluate`` on a prediction folder (:mod:`~cmbstudy.evaluation.evaluate`,
:mod:`~cmbstudy.evaluation.report`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..namespaces import lazy_stage

if TYPE_CHECKING:  # the stage's public names, in its order; imported on first use (lazy_stage)
    from .lesions import *  # noqa: F403  (its __all__)
    from .matching import *  # noqa: F403  (its __all__)
    from .scores import *  # noqa: F403  (its __all__)
    from .subsets import *  # noqa: F403  (its __all__)
    from .operating_point import *  # noqa: F403  (its __all__)
    from .stats import *  # noqa: F403  (its __all__)
    from .report import *  # noqa: F403  (its __all__)
    from .evaluate import *  # noqa: F403  (its __all__)

__getattr__, __dir__, _names = lazy_stage(__name__, __file__)
#: The stage's public names: those of its modules, in the order of the stage.
__all__ = _names
