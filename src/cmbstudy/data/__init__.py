"""Data: every file layout the study reads or writes, and nothing that computes on images.

NIfTI input and output with validation and atomic writes (:mod:`~cmbstudy.data.io`);
the subjects of a dataset root in the synthetic, BIDS-like or VALDO layout
(:mod:`~cmbstudy.data.datasets`) and their check against ``data_manifest.yaml``
(:mod:`~cmbstudy.data.manifest`); cross-validation splits from a seed
(:mod:`~cmbstudy.data.splits`); the ARIA-H burden categories
(:mod:`~cmbstudy.data.aria_h`); the training run folder
(:mod:`~cmbstudy.data.run_folder`) and the prediction folder
(:mod:`~cmbstudy.data.prediction_folder`); the scan viewer's scripts
(:mod:`~cmbstudy.data.viewer_assets`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..namespaces import lazy_stage

if TYPE_CHECKING:  # the stage's public names, in its order; imported on first use (lazy_stage)
    from .io import *  # noqa: F403  (its __all__)
    from .aria_h import *  # noqa: F403  (its __all__)
    from .datasets import *  # noqa: F403  (its __all__)
    from .manifest import *  # noqa: F403  (its __all__)
    from .splits import *  # noqa: F403  (its __all__)
    from .run_folder import *  # noqa: F403  (its __all__)
    from .prediction_folder import *  # noqa: F403  (its __all__)
    from .viewer_assets import *  # noqa: F403  (its __all__)

__getattr__, __dir__, _names = lazy_stage(__name__, __file__)
#: The stage's public names: those of its modules, in the order of the stage.
__all__ = _names
