"""Subject anatomy from the ICBM152 2009a template bundled with nilearn (offline).

Tissue maps: nilearn's MNI152 GM and WM probability maps and brain mask; CSF is
``mask - GM - WM`` (clipped to [0, 1]; it includes the ventricles).  There is
no subcortical atlas offline, so the derived regions follow fixed rules in MNI
millimetres (documented in :func:`load_template_space`):

* deep grey matter (basal ganglia, thalamus): a smooth weight (``deep_weight``),
  the product of two logistic ramps: depth below the brain surface (half at
  18 mm, 2 mm wide) and an ellipsoid around the central nuclei (centre
  (0, -3, 5) mm, semi-axes 38 x 33 x 23 mm, half at its surface, 8% of its
  radius wide).  The nuclei's iron is this weight times the GM probability, so
  their edge is the GM's own edge, fading out over a few millimetres where the
  ellipsoid or the depth ramp ends (never a box-shaped cut).  ``deep_gm`` is
  where GM > 0.5 and the weight > 0.5;
* ventricles: CSF probability > 0.5, more than 12 mm deep and |x| < 32;
* infratentorial (brainstem, cerebellum): y < -22 and z < -18, or y < -48 and z < -6.

Each subject is the template seen through a random affine (rotation, scale,
shift), a smooth elastic displacement (cubic interpolation of a coarse random
grid) and atrophy (ventricles widened by a radial warp, cortical GM thinned).
Coordinates are mm, arrays (X, Y, Z) in RAS+ with Z inferior -> superior.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .grid import Grid

__all__ = ["TemplateSpace", "SubjectTransform", "load_template_space", "random_transform", "warp_maps"]

_VENTRICLE_CENTRE_MM = np.array([0.0, -15.0, 14.0])
_ELASTIC_BOX_MM = (np.array([-100.0, -135.0, -80.0]), np.array([100.0, 100.0, 100.0]))


@dataclass(frozen=True)
class TemplateSpace:
    """Template-space maps (X, Y, Z) on the template grid; ``affine`` maps voxels to MNI mm."""

    affine: np.ndarray  # (4, 4) voxel -> mm
    gm: np.ndarray  # grey-matter probability [0, 1]
    wm: np.ndarray  # white-matter probability [0, 1]
    csf: np.ndarray  # mask - GM - WM, clipped to [0, 1]
    brain: np.ndarray  # brain mask probability [0, 1]
    depth: np.ndarray  # distance to the brain surface in mm (0 outside)
    depth_grad: np.ndarray  # (3, X, Y, Z) gradient of depth (per mm), points inwards
    deep_gm: np.ndarray  # bool, deep grey nuclei (rule in the module docstring)
    deep_weight: np.ndarray  # [0, 1], smooth weight of the deep grey zone (module docstring)
    ventricles: np.ndarray  # bool
    infratentorial: np.ndarray  # bool

    @property
    def spacing(self) -> float:
        """Template voxel size in mm."""
        return float(abs(self.affine[0, 0]))

    def mm_to_voxel(self, points_mm: np.ndarray) -> np.ndarray:
        """(N, 3) mm -> (N, 3) fractional template voxel indices."""
        inv = np.linalg.inv(self.affine)
        return points_mm @ inv[:3, :3].T + inv[:3, 3]

    def sample(self, volume: np.ndarray, points_mm: np.ndarray, order: int = 1) -> np.ndarray:
        """Values of a template-grid ``volume`` at (N, 3) mm points (0 outside)."""
        idx = self.mm_to_voxel(np.asarray(points_mm, dtype=np.float64).reshape(-1, 3))
        return ndimage.map_coordinates(volume, idx.T, order=order, mode="constant", cval=0.0)


def _deep_weight(depth: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The deep grey zone's smooth weight in [0, 1] (the rule of the module docstring; mm arrays)."""
    radius = np.sqrt((x / 38.0) ** 2 + ((y + 3.0) / 33.0) ** 2 + ((z - 5.0) / 23.0) ** 2)
    inside = 1.0 / (1.0 + np.exp((radius - 1.0) / 0.08))
    deep = 1.0 / (1.0 + np.exp(-(depth - 18.0) / 2.0))
    return (inside * deep).astype(np.float32)


@functools.lru_cache(maxsize=2)
def load_template_space(resolution: int = 2) -> TemplateSpace:
    """Load nilearn's ICBM152 maps at ``resolution`` mm (1 or 2) and derive the regions.

    Raises:
        ValueError: resolution is not 1 or 2.
    """
    if resolution not in (1, 2):
        raise ValueError(f"template resolution {resolution!r} must be 1 or 2 (mm)")
    from nilearn import datasets

    mask_img = datasets.load_mni152_brain_mask(resolution=resolution)
    affine = np.asarray(mask_img.affine, dtype=np.float64)
    brain = np.asarray(mask_img.get_fdata(), dtype=np.float32)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=resolution).get_fdata(), dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=resolution).get_fdata(), dtype=np.float32)
    gm, wm = gm * brain, wm * brain
    csf = np.clip(brain - gm - wm, 0.0, 1.0).astype(np.float32)
    spacing = float(abs(affine[0, 0]))
    depth = ndimage.distance_transform_edt(brain > 0.5, sampling=spacing).astype(np.float32)
    depth_grad = np.stack(np.gradient(ndimage.gaussian_filter(depth, 1.0), spacing)).astype(np.float32)
    ijk = np.indices(brain.shape, dtype=np.float32)
    x, y, z = (affine[a, a] * ijk[a] + affine[a, 3] for a in range(3))
    deep_weight = _deep_weight(depth, x, y, z)
    deep_gm = (gm > 0.5) & (deep_weight > 0.5)
    ventricles = (csf > 0.5) & (depth > 12) & (np.abs(x) < 32)
    infra = (brain > 0.5) & (((y < -22) & (z < -18)) | ((y < -48) & (z < -6)))
    return TemplateSpace(affine, gm, wm, csf, brain, depth, depth_grad, deep_gm, deep_weight, ventricles, infra)


@dataclass(frozen=True)
class SubjectTransform:
    """Maps subject (scanner) mm to template mm: q = M p + t + u(p), then the atrophy warp."""

    matrix: np.ndarray  # (3, 3) rotation x scale
    shift: np.ndarray  # (3,) mm
    elastic: np.ndarray  # (3, n, n, n) B-spline coefficients of the displacement (mm) over _ELASTIC_BOX_MM
    atrophy: float  # 0 (none) .. ~0.15: ventricle widening and cortical thinning

    def elastic_at(self, points_mm: np.ndarray) -> np.ndarray:
        """(N, 3) elastic displacement in mm at subject points (cubic B-spline; ``elastic`` holds coefficients)."""
        lo, hi = _ELASTIC_BOX_MM
        n = self.elastic.shape[1]
        idx = (points_mm - lo) / (hi - lo) * (n - 1)
        return np.stack(
            [ndimage.map_coordinates(c, idx.T, order=3, mode="nearest", prefilter=False) for c in self.elastic],
            axis=1,
        )

    def __call__(self, points_mm: np.ndarray) -> np.ndarray:
        """Template mm of (N, 3) subject mm points."""
        p = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        q = p @ self.matrix.T + self.shift + self.elastic_at(p)
        d = q - _VENTRICLE_CENTRE_MM
        shrink = 1.0 - self.atrophy * np.exp(-np.einsum("ij,ij->i", d, d) / (2 * 28.0**2))
        return _VENTRICLE_CENTRE_MM + d * shrink[:, None]

    def inverse(self, points_mm: np.ndarray, iterations: int = 12) -> np.ndarray:
        """Subject mm of (N, 3) template mm points (fixed-point iteration with the affine Jacobian)."""
        q = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        m_inv = np.linalg.inv(self.matrix)
        p = (q - self.shift) @ m_inv.T
        for _ in range(iterations):
            p = p - (self(p) - q) @ m_inv.T
        return p


def random_transform(rng: np.random.Generator, atrophy_max: float = 0.15) -> SubjectTransform:
    """Draw rotation (+-4, +-4, +-6 deg), scale 0.95-1.05, shift +-3 mm, elastic ~2 mm, atrophy."""
    angles = np.deg2rad(rng.uniform(-1, 1, 3) * np.array([4.0, 4.0, 6.0]))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    scale = np.diag(1.0 / rng.uniform(0.95, 1.05, 3))  # subject larger -> template coords smaller
    elastic = np.stack([ndimage.spline_filter(c, order=3, mode="nearest") for c in rng.normal(0.0, 2.0, size=(3, 6, 6, 6))])
    return SubjectTransform(
        matrix=rz @ ry @ rx @ scale,
        shift=rng.uniform(-3.0, 3.0, 3),
        elastic=elastic,
        atrophy=float(rng.uniform(0.0, atrophy_max)),
    )


def warp_maps(template: TemplateSpace, transform: SubjectTransform, grid: Grid, step: int = 4) -> dict[str, np.ndarray]:
    """Tissue maps of the subject on ``grid`` (arrays of ``grid.shape``).

    The (smooth) transform is evaluated every ``step`` voxels and interpolated
    linearly; the maps are then resampled trilinearly in one pass with
    ``torch.nn.functional.grid_sample`` (much faster than scipy for millions of points).

    Returns:
        float32 "gm", "wm", "csf", "brain" (probabilities; GM thinned by atrophy, the
        removed GM becoming CSF), float32 "deep_weight" and bool "deep_gm" (GM > 0.5 where the
        weight > 0.5).
    """
    import torch
    import torch.nn.functional as F

    coarse_axes = [np.linspace(0, n - 1, max(2, int(np.ceil((n - 1) / step)) + 1)) for n in grid.shape]
    mesh = np.stack(np.meshgrid(*coarse_axes, indexing="ij"), axis=-1).reshape(-1, 3)
    vox = template.mm_to_voxel(transform(grid.to_mm(mesh)))
    norm = 2.0 * vox / (np.array(template.brain.shape) - 1) - 1.0  # align_corners=True
    coarse = torch.from_numpy(norm.reshape(*[len(a) for a in coarse_axes], 3).transpose(3, 0, 1, 2).copy()).float()
    full = F.interpolate(coarse[None], size=grid.shape, mode="trilinear", align_corners=True)[0]
    sample_grid = full.flip(0).permute(1, 2, 3, 0)[None]  # (1, X, Y, Z, 3) as (z, y, x) for grid_sample
    volumes = np.stack([template.gm, template.wm, template.brain, template.deep_weight])
    with torch.no_grad():
        out_t = F.grid_sample(torch.from_numpy(volumes)[None], sample_grid, mode="bilinear",
                              padding_mode="zeros", align_corners=True)[0].numpy()
    gm, wm, brain, deep = (np.ascontiguousarray(v, dtype=np.float32) for v in out_t)
    a = transform.atrophy
    brain = np.clip(brain, 0.0, 1.0)
    wm = np.minimum(wm, brain)
    gm = np.minimum(np.clip((gm - a) / (1.0 - a), 0.0, 1.0), brain - wm)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    return {"gm": gm, "wm": wm, "csf": csf.astype(np.float32), "brain": brain, "deep_weight": deep,
            "deep_gm": (deep > 0.5) & (gm > 0.5)}
