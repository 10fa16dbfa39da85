"""Inference (the paper's Sec. 2.4): a trained network on whole volumes, datasets and a user's scans.

Whole-volume prediction (:mod:`~cmbstudy.inference.sliding_window`), the
candidates of the first look (:mod:`~cmbstudy.inference.candidates`) and the
second look at each (:mod:`~cmbstudy.inference.second_look`, with the one
lesion rule ``find_detections``; the features it looks at:
:mod:`~cmbstudy.inference.features`), the per-volume path that ``predict`` and
``detect`` share (:mod:`~cmbstudy.inference.pipeline`), ``cmbstudy
predict`` on a dataset (:mod:`~cmbstudy.inference.predict`), trained models as
files and the packaged model (:mod:`~cmbstudy.inference.model_store`), and
``cmbstudy detect`` on a user's scans (:mod:`~cmbstudy.inference.detect`, the
scans it reads: :mod:`~cmbstudy.inference.scan_inputs`, each CMB's MARS
location by registration to the ICBM152 template: :mod:`~cmbstudy.inference.location`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..namespaces import lazy_stage

if TYPE_CHECKING:  # the stage's public names, in its order; imported on first use (lazy_stage)
    from .sliding_window import *  # noqa: F403  (its __all__)
    from .candidates import *  # noqa: F403  (its __all__)
    from .second_look import *  # noqa: F403  (its __all__)
    from .pipeline import *  # noqa: F403  (its __all__)
    from .predict import *  # noqa: F403  (its __all__)
    from .model_store import *  # noqa: F403  (its __all__)
    from .scan_inputs import *  # noqa: F403  (its __all__)
    from .location import *  # noqa: F403  (its __all__)
    from .detect import *  # noqa: F403  (its __all__)

__getattr__, __dir__, _names = lazy_stage(__name__, __file__)
#: The stage's public names: those of its modules, in the order of the stage.
__all__ = _names
