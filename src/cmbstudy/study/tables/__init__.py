"""The paper's tables, one module each, every one printed beside the paper's figures.

- Table 2 and Table 4 (methods, lesions <= 3 mm): :mod:`~cmbstudy.study.tables.methods`,
  the classical floor :mod:`~cmbstudy.study.tables.classical_floor`, and as the notebooks
  show them :mod:`~cmbstudy.study.tables.comparison`;
- Table 3 (cross-validation): :mod:`~cmbstudy.study.tables.folds`;
- Table 5 (cross-modality): :mod:`~cmbstudy.study.tables.modality`;
- Table 6 and Fig. 4 (burden, counts): :mod:`~cmbstudy.study.tables.burden`;
- Tables 7 and 8 (CBAM ablation): :mod:`~cmbstudy.study.tables.ablation`;
- beyond the paper, one look or two (each network single-stage and with the second look):
  :mod:`~cmbstudy.study.tables.looks`, with the LoG floor's second look and one slice of the two looks
  :mod:`~cmbstudy.study.tables.log_floor`; sites, VALDO rule, timing: :mod:`~cmbstudy.study.tables.beyond`, and what the
  remaining errors are (false positives by kind, missed CMBs by size): :mod:`~cmbstudy.study.tables.errors`;
- the one "paper beside ours" layout and the method labels: :mod:`~cmbstudy.study.tables.format`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...namespaces import lazy_stage

if TYPE_CHECKING:  # the stage's public names, in its order; imported on first use (lazy_stage)
    from .format import *  # noqa: F403  (its __all__)
    from .methods import *  # noqa: F403  (its __all__)
    from .classical_floor import *  # noqa: F403  (its __all__)
    from .comparison import *  # noqa: F403  (its __all__)
    from .folds import *  # noqa: F403  (its __all__)
    from .modality import *  # noqa: F403  (its __all__)
    from .burden import *  # noqa: F403  (its __all__)
    from .ablation import *  # noqa: F403  (its __all__)
    from .looks import *  # noqa: F403  (its __all__)
    from .log_floor import *  # noqa: F403  (its __all__)
    from .errors import *  # noqa: F403  (its __all__)
    from .beyond import *  # noqa: F403  (its __all__)

__getattr__, __dir__, _names = lazy_stage(__name__, __file__)
#: The stage's public names: those of its modules, in the order of the stage.
__all__ = _names
