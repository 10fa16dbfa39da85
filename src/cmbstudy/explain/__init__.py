"""Explanations (the paper's Figs. 5-6): Grad-CAM of the final decoder block and CBAM attention maps.

Grad-CAM per lesion and its focus on the lesions (:mod:`~cmbstudy.explain.gradcam`);
CBAM spatial attention read with forward hooks (:mod:`~cmbstudy.explain.cbam_maps`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..namespaces import lazy_stage

if TYPE_CHECKING:  # the stage's public names, in its order; imported on first use (lazy_stage)
    from .cbam_maps import *  # noqa: F403  (its __all__)
    from .gradcam import *  # noqa: F403  (its __all__)

__getattr__, __dir__, _names = lazy_stage(__name__, __file__)
#: The stage's public names: those of its modules, in the order of the stage.
__all__ = _names
