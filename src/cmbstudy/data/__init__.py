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

from . import aria_h, datasets, io, manifest, prediction_folder, run_folder, splits, viewer_assets
from .aria_h import *  # noqa: F403  (its __all__)
from .datasets import *  # noqa: F403  (its __all__)
from .io import *  # noqa: F403  (its __all__)
from .manifest import *  # noqa: F403  (its __all__)
from .prediction_folder import *  # noqa: F403  (its __all__)
from .run_folder import *  # noqa: F403  (its __all__)
from .splits import *  # noqa: F403  (its __all__)
from .viewer_assets import *  # noqa: F403  (its __all__)

#: The stage's public names: those of its modules, in the order of the stage.
__all__ = [
    *io.__all__,
    *aria_h.__all__,
    *datasets.__all__,
    *manifest.__all__,
    *splits.__all__,
    *run_folder.__all__,
    *prediction_folder.__all__,
    *viewer_assets.__all__,
]
