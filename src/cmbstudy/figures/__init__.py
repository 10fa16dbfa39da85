"""Figures: every plot of the study, drawn from numbers the compute code hands over.

No module here imports a compute module (types only), and no compute module
draws. Axes helpers (:mod:`~cmbstudy.figures.axes`); detection overlays, TP blue,
FP yellow, FN red (:mod:`~cmbstudy.figures.overlays`); the candidates of the first look
and the second look's verdict (:mod:`~cmbstudy.figures.candidates`); burden and counts
(:mod:`~cmbstudy.figures.burden`); FROC (:mod:`~cmbstudy.figures.froc`); training
curves and the ablation (:mod:`~cmbstudy.figures.curves`); false positives by
mimic (:mod:`~cmbstudy.figures.false_positives`); Grad-CAM and CBAM maps
(:mod:`~cmbstudy.figures.explain`); preprocessing QC (:mod:`~cmbstudy.figures.qc`);
the synthetic cohort (:mod:`~cmbstudy.figures.synth`); where the time of a build
goes (:mod:`~cmbstudy.figures.timing`); and the report page of ``cmbstudy detect``
(:mod:`~cmbstudy.figures.report`); interactive scan viewers that work offline
(:mod:`~cmbstudy.figures.viewer`, their marks :mod:`~cmbstudy.figures.viewer_marks`, and
``detect``'s ``index.html``, :mod:`~cmbstudy.figures.detect_viewer`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..namespaces import lazy_stage

if TYPE_CHECKING:  # the stage's public names, in its order; imported on first use (lazy_stage)
    from .axes import *  # noqa: F403  (its __all__)
    from .overlays import *  # noqa: F403  (its __all__)
    from .candidates import *  # noqa: F403  (its __all__)
    from .burden import *  # noqa: F403  (its __all__)
    from .froc import *  # noqa: F403  (its __all__)
    from .curves import *  # noqa: F403  (its __all__)
    from .false_positives import *  # noqa: F403  (its __all__)
    from .explain import *  # noqa: F403  (its __all__)
    from .qc import *  # noqa: F403  (its __all__)
    from .synth import *  # noqa: F403  (its __all__)
    from .timing import *  # noqa: F403  (its __all__)
    from .report import *  # noqa: F403  (its __all__)
    from .viewer import *  # noqa: F403  (its __all__)
    from .viewer_marks import *  # noqa: F403  (its __all__)
    from .detect_viewer import *  # noqa: F403  (its __all__)

__getattr__, __dir__, _names = lazy_stage(__name__, __file__)
#: The stage's public names: those of its modules, in the order of the stage.
__all__ = _names
