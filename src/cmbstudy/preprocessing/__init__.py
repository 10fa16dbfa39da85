"""Preprocessing (the paper's Methods, "Preprocessing"): every volume before the network sees it.

Canonical orientation, brain mask (:mod:`~cmbstudy.preprocessing.brain`), N4 bias
correction (:mod:`~cmbstudy.preprocessing.bias`), tight square crop and in-plane
resample with its exact inverse (:mod:`~cmbstudy.preprocessing.geometry`), z-score
(:mod:`~cmbstudy.preprocessing.preprocess`); the per-subject cache
(:mod:`~cmbstudy.preprocessing.cache`); the 2.5D input stacks
(:mod:`~cmbstudy.preprocessing.stacks`); and the QC of each stage
(:mod:`~cmbstudy.preprocessing.qc`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..namespaces import lazy_stage

if TYPE_CHECKING:  # the stage's public names, in its order; imported on first use (lazy_stage)
    from .stacks import *  # noqa: F403  (its __all__)
    from .geometry import *  # noqa: F403  (its __all__)
    from .brain import *  # noqa: F403  (its __all__)
    from .bias import *  # noqa: F403  (its __all__)
    from .preprocess import *  # noqa: F403  (its __all__)
    from .cache import *  # noqa: F403  (its __all__)
    from .qc import *  # noqa: F403  (its __all__)

__getattr__, __dir__, _names = lazy_stage(__name__, __file__)
#: The stage's public names: those of its modules, in the order of the stage.
__all__ = _names
