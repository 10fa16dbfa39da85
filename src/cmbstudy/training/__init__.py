"""Training (the paper's Sec. 2.3): samples, augmentation, schedule, the loop, and one fold's run.

2.5D slice samples (:mod:`~cmbstudy.training.sampling_2p5d`) and 3D patches
(:mod:`~cmbstudy.training.sampling_3d`) drawn by one epoch plan
(:mod:`~cmbstudy.training.plan`); the Bezier intensity augmentation
(:mod:`~cmbstudy.training.augment`); the warm-up and cosine-restart schedule
(:mod:`~cmbstudy.training.schedule`); the loop with validation
(:mod:`~cmbstudy.training.loop`), its checkpoints (:mod:`~cmbstudy.training.checkpoints`)
and its processes under torchrun (:mod:`~cmbstudy.training.distributed`); one fold of a dataset
(:mod:`~cmbstudy.training.run`); its calibration on validation subjects
(:mod:`~cmbstudy.training.calibrate`) with the second look's training
(:mod:`~cmbstudy.training.second_look`, its patch CNN :mod:`~cmbstudy.training.patch_model`,
its image model shared by runs on the same subjects :mod:`~cmbstudy.training.fit_cache`); and the tuning of the classical LoG floor
(:mod:`~cmbstudy.training.classical`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..namespaces import lazy_stage

if TYPE_CHECKING:  # the stage's public names, in its order; imported on first use (lazy_stage)
    from .plan import *  # noqa: F403  (its __all__)
    from .augment import *  # noqa: F403  (its __all__)
    from .sampling_2p5d import *  # noqa: F403  (its __all__)
    from .sampling_3d import *  # noqa: F403  (its __all__)
    from .schedule import *  # noqa: F403  (its __all__)
    from .loop import *  # noqa: F403  (its __all__)
    from .run import *  # noqa: F403  (its __all__)
    from .calibrate import *  # noqa: F403  (its __all__)
    from .second_look import *  # noqa: F403  (its __all__)
    from .patch_model import *  # noqa: F403  (its __all__)
    from .fit_cache import *  # noqa: F403  (its __all__)
    from .classical import *  # noqa: F403  (its __all__)

__getattr__, __dir__, _names = lazy_stage(__name__, __file__)
#: The stage's public names: those of its modules, in the order of the stage.
__all__ = _names
