"""The study: the runs it trains, the paper's numbers, every table and the runner of the notebooks.

The training runs and their results (:mod:`~cmbstudy.study.runs`,
:mod:`~cmbstudy.study.training_runs`); the published numbers
(:mod:`~cmbstudy.study.paper`); one module per table of the paper
(:mod:`cmbstudy.study.tables`); the subjects and slices the figures show
(:mod:`~cmbstudy.study.examples`, :mod:`~cmbstudy.study.explanations`); and the
claims of the paper (:mod:`~cmbstudy.study.claims`) judged for the abstract
(:mod:`~cmbstudy.study.verdicts`); the
settings of a build beside the paper's (:mod:`~cmbstudy.study.settings_table`); and
the papermill runner that executes the notebooks (:mod:`~cmbstudy.study.runner`, with
:mod:`~cmbstudy.study.jobs` running training runs several at a time and
:mod:`~cmbstudy.study.dependencies` naming the package modules each notebook runs)
and builds the book (:mod:`~cmbstudy.study.book`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..namespaces import lazy_stage

if TYPE_CHECKING:  # the stage's public names, in its order; imported on first use (lazy_stage)
    from .paper import *  # noqa: F403  (its __all__)
    from .runs import *  # noqa: F403  (its __all__)
    from .training_runs import *  # noqa: F403  (its __all__)
    from .examples import *  # noqa: F403  (its __all__)
    from .explanations import *  # noqa: F403  (its __all__)
    from .verdicts import *  # noqa: F403  (its __all__)
    from .claims import *  # noqa: F403  (its __all__)
    from .settings_table import *  # noqa: F403  (its __all__)
    from .runner import *  # noqa: F403  (its __all__)
    from .dependencies import *  # noqa: F403  (its __all__)
    from .state import *  # noqa: F403  (its __all__)
    from .book import *  # noqa: F403  (its __all__)
    from . import tables

__getattr__, __dir__, _names = lazy_stage(__name__, __file__)
#: The stage's public names: those of its modules, in the order of the stage.
__all__ = _names
