"""The residual large-kernel (RLK) block of RLK-UNet (Cho et al. 2026, section 2.2.1).

Written here because no library ships it (Son et al. 2023, RLK-Unet, after
RepLKNet, Ding et al. 2022). GroupNorm, GELU and the convolutions come from
torch; stochastic depth is MONAI's :class:`monai.networks.layers.DropPath`.
Tensors are 2D feature maps ``(B, C, H, W)``.
"""

from __future__ import annotations

import copy
import weakref

import torch
import torch.nn as nn
from monai.networks.layers import DropPath

from ..errors import ConfigError
from .layers import group_norm

__all__ = ["RLKBlock", "has_rlk_blocks", "inference_copy"]


class RLKBlock(nn.Module):
    """Residual large-kernel (RLK) block; shape-preserving ``(B, C, H, W) -> (B, C, H, W)``.

    Two pre-activation residual sub-blocks, as in the RLK-Unet of Son et al.
    (2023, Front. Oncol. 13:1273013), which follows RepLKNet (Ding et al., CVPR
    2022), with the GroupNorm + GELU of Cho et al. (2026, section 2.2.1)::

        y = PW_out(GELU(GN(DW_k(z) + DW_s(z)))),  z = PW_in(GELU(GN(x)))
        x = x + DropPath(y)                                   # large-kernel mixer
        x = x + DropPath(PW_2(GELU(PW_1(GN(x)))))             # 1x1 feed-forward

    ``DW_k`` is a depthwise ``kernel_size x kernel_size`` convolution (13 x 13
    in the paper: about the extent of a 2-10 mm CMB plus its context at the
    paper's 512 x 512 resampling). Depthwise large kernels keep the block
    affordable on a CPU (a dense 13 x 13 convolution has ``C`` times the
    weights). ``DW_s`` is a parallel small depthwise kernel (``small_kernel``,
    5 in Son et al.'s public code; 0 disables it) that keeps fine detail, as
    RepLKNet recommends for large kernels. The large-kernel branch always
    reaches the output here; in the public RLK-Unet code its result is
    overwritten before use.

    Args:
        channels: feature channels ``C``.
        kernel_size: odd large-kernel size in pixels.
        small_kernel: odd small parallel kernel size, or 0 for none.
        mlp_ratio: hidden width of the feed-forward sub-block as a multiple of
            ``C``; 0 drops that sub-block.
        drop_path: stochastic-depth probability of both residual branches.
        norm_groups: upper bound on GroupNorm groups (see :func:`group_norm`).

    Raises:
        ConfigError: an even or non-positive kernel size, a negative MLP ratio
            or a drop-path rate outside [0, 1).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 13,
        small_kernel: int = 5,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"model.kernel_size must be odd and positive, got {kernel_size}")
        if small_kernel < 0 or (small_kernel > 0 and small_kernel % 2 == 0):
            raise ConfigError(f"model.small_kernel must be 0 or odd, got {small_kernel}")
        if mlp_ratio < 0:
            raise ConfigError(f"model.mlp_ratio must be >= 0, got {mlp_ratio}")
        if not 0.0 <= drop_path < 1.0:
            raise ConfigError(f"model.drop_path must lie in [0, 1), got {drop_path}")
        self.norm_in = group_norm(channels, norm_groups)
        self.pw_in = nn.Conv2d(channels, channels, 1)
        self.dw_large = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels
        )
        self.dw_small: nn.Conv2d | None = None
        if small_kernel > 0:
            self.dw_small = nn.Conv2d(
                channels, channels, small_kernel, padding=small_kernel // 2, groups=channels
            )
        self.norm_mid = group_norm(channels, norm_groups)
        self.pw_out = nn.Conv2d(channels, channels, 1)
        self.mlp: nn.Sequential | None = None
        hidden = int(round(channels * mlp_ratio))
        if hidden > 0:
            self.mlp = nn.Sequential(
                group_norm(channels, norm_groups),
                nn.Conv2d(channels, hidden, 1),
                nn.GELU(),
                nn.Conv2d(hidden, channels, 1),
            )
        self.drop_path = DropPath(drop_path)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        z = self.pw_in(self.act(self.norm_in(x)))
        y = self.dw_large(z)
        if self.dw_small is not None:
            y = y + self.dw_small(z)
        y = self.pw_out(self.act(self.norm_mid(y)))
        x = x + self.drop_path(y)
        if self.mlp is not None:
            if self.band_elements is None or self.training or torch.is_grad_enabled():
                x = x + self.drop_path(self.mlp(x))
            else:
                x = self._banded_feed_forward(x)
        return x

    #: At inference, the most hidden activations (batch x hidden channels x pixels) the feed-forward sub-block
    #: holds at once: it then runs on bands of rows, each small enough to stay in a CPU's cache, and adds them
    #: to ``x`` in place. None: the whole map at once (training always does). Set on a copy by
    #: :func:`cmbstudy.inference.sliding_window.predict_logits`.
    band_elements: int | None = None

    def _banded_feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + MLP(x)`` a band of rows at a time: the same sums as the whole map (1 x 1 convolutions and GELU
        act on each pixel alone; the GroupNorm, which does not, runs on the whole map first).

        Measured at 128 x 128 on one CPU thread: the feed-forward of the full-resolution blocks spent most of its
        time moving its 4-times-wider hidden map through memory. Written here as torch runs a module whole.
        """
        norm, expand, act, project = self.mlp
        normed = norm(x)
        rows = max(1, self.band_elements // (x.shape[0] * expand.out_channels * x.shape[-1]))
        for start in range(0, x.shape[2], rows):
            x[:, :, start:start + rows] += project(act(expand(normed[:, :, start:start + rows])))
        return x

    @torch.no_grad()
    def fold_small_kernel(self) -> None:
        """Fold ``DW_s`` into ``DW_k`` in place: one convolution computing their sum (RepLKNet's re-parameterisation).

        Both are depthwise, stride 1 and centred on the same input, so the small kernel, zero-padded to the
        large one's size, adds to its weights and its bias to the bias; the outputs agree up to float rounding.
        For inference only: the block then trains as one large kernel.
        """
        if self.dw_small is None:
            return
        margin = (self.dw_large.kernel_size[0] - self.dw_small.kernel_size[0]) // 2
        size = self.dw_small.kernel_size[0]
        self.dw_large.weight[:, :, margin:margin + size, margin:margin + size] += self.dw_small.weight
        self.dw_large.bias += self.dw_small.bias
        self.dw_small = None


def has_rlk_blocks(model: nn.Module) -> bool:
    """Whether ``model`` holds an RLK block (whose small kernel :func:`inference_copy` folds)."""
    return any(isinstance(block, RLKBlock) for block in model.modules())


def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode for prediction, each RLK block's small kernel folded into its large one.

    The copy leaves ``model`` as it was (a run predicts its training subjects between epochs), and the folded
    network is about 9% faster on a CPU (one 13 x 13 depthwise convolution instead of a 13 x 13 and a 5 x 5).
    RepLKNet folds its kernels the same way (Ding et al. 2022); written here as no library folds these blocks.
    The copy is kept while the model's weights stay the same (copying the module tree costs about 50 ms, as much
    as the network on a slice), so a run's subjects are predicted by one copy.
    """
    state = list(model.state_dict().values())
    kept = _COPIES.get(model)
    if kept is not None and len(kept[0]) == len(state) and all(
            a.shape == b.shape and a.device == b.device and torch.equal(a, b) for a, b in zip(kept[0], state)):
        return kept[1]
    copied = copy.deepcopy(model).eval()
    for block in copied.modules():
        if isinstance(block, RLKBlock):
            block.fold_small_kernel()
    _COPIES[model] = ([tensor.detach().clone() for tensor in state], copied)
    return copied


#: Each model's folded copy and the weights it was folded from (dropped with the model).
_COPIES: "weakref.WeakKeyDictionary[nn.Module, tuple[list[torch.Tensor], nn.Module]]" = weakref.WeakKeyDictionary()
