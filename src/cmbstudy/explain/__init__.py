"""Explanations (the paper's Figs. 5-6): Grad-CAM of the final decoder block and CBAM attention maps.

Grad-CAM per lesion and its focus on the lesions (:mod:`~cmbstudy.explain.gradcam`);
CBAM spatial attention read with forward hooks (:mod:`~cmbstudy.explain.cbam_maps`).
"""

from __future__ import annotations

from . import cbam_maps, gradcam
from .cbam_maps import *  # noqa: F403  (its __all__)
from .gradcam import *  # noqa: F403  (its __all__)

#: The stage's public names: those of its modules, in the order of the stage.
__all__ = [*cbam_maps.__all__, *gradcam.__all__]
