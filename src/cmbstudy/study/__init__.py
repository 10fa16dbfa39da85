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

from . import (
    book,
    claims,
    dependencies,
    examples,
    explanations,
    paper,
    runner,
    runs,
    settings_table,
    state,
    tables,
    training_runs,
    verdicts,
)
from .book import *  # noqa: F403  (its __all__)
from .claims import *  # noqa: F403  (its __all__)
from .dependencies import *  # noqa: F403  (its __all__)
from .examples import *  # noqa: F403  (its __all__)
from .explanations import *  # noqa: F403  (its __all__)
from .paper import *  # noqa: F403  (its __all__)
from .runner import *  # noqa: F403  (its __all__)
from .runs import *  # noqa: F403  (its __all__)
from .settings_table import *  # noqa: F403  (its __all__)
from .state import *  # noqa: F403  (its __all__)
from .training_runs import *  # noqa: F403  (its __all__)
from .verdicts import *  # noqa: F403  (its __all__)

#: The stage's public names: those of its modules, in the order of the stage.
__all__ = [
    *paper.__all__,
    *runs.__all__,
    *training_runs.__all__,
    *examples.__all__,
    *explanations.__all__,
    *verdicts.__all__,
    *claims.__all__,
    *settings_table.__all__,
    *runner.__all__,
    *dependencies.__all__,
    *state.__all__,
    *(name for name in book.__all__ if name not in runner.__all__),
    "tables",
]
