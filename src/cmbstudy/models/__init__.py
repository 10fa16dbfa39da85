"""Networks (the paper's Sec. 2.2, Fig. 1): RLK-UNet with CBAM, its blocks, the baselines, the loss.

A registry of networks by name, as timm's (:mod:`~cmbstudy.models.registry`:
``get_model("rlk_unet_cbam", **cfg)``, :func:`model_from_config`). Registered:

- ``rlk_unet_cbam``: RLK-UNet with CBAM on the skips (Cho et al. 2026),
  :class:`~cmbstudy.models.rlk_unet.RLKUNet`, built from the RLK block
  (:mod:`~cmbstudy.models.rlk`), CBAM (:mod:`~cmbstudy.models.cbam`) and the
  attention-refined skip (:mod:`~cmbstudy.models.gate`); ``model.cbam_skips``
  is the one switch of the CBAM ablation (0: without CBAM);
- the Table 2 baselines (:mod:`cmbstudy.models.baselines`), and the classical
  LoG detector beside them.

The pieces every network shares are :mod:`~cmbstudy.models.layers`; the Dice +
Focal loss with deep supervision is :mod:`~cmbstudy.models.losses`. The second
look's patch CNN, which scores a candidate's patch rather than a scan, is
:mod:`~cmbstudy.models.patch_net`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..namespaces import lazy_stage

if TYPE_CHECKING:  # the stage's public names, in its order; imported on first use (lazy_stage)
    from .registry import *  # noqa: F403  (its __all__)
    from .layers import *  # noqa: F403  (its __all__)
    from .rlk import *  # noqa: F403  (its __all__)
    from .cbam import *  # noqa: F403  (its __all__)
    from .gate import *  # noqa: F403  (its __all__)
    from .rlk_unet import *  # noqa: F403  (its __all__)
    from .losses import *  # noqa: F403  (its __all__)
    from .patch_net import *  # noqa: F403  (its __all__)
    from . import baselines

__getattr__, __dir__, _names = lazy_stage(__name__, __file__)
#: The stage's public names: those of its modules, in the order of the stage.
__all__ = _names
