"""Small physics experiments on a uniform phantom: the sphere field and blooming.

Used by the tests and by notebook 01 (the numbers it quotes come from here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .acquisition import TissueMaps, make_geometry, simulate_signal
from .dipole import compute_field, sphere_field
from .grid import Grid
from .susceptibility import TISSUE, FocalSource

__all__ = [
    "SPHERE_RADIUS_MM",
    "SPHERE_SPACING_MM",
    "SPHERE_ERROR_RADII",
    "VISIBLE_FRACTION",
    "BLOOMING_DIAMETER_MM",
    "BLOOMING_CHI_PPM",
    "BLOOMING_TE_MS",
    "BLOOMING_B0_TESLA",
    "BLOOMING_SLICE_MM",
    "SLICE_SERIES_TE_MS",
    "SLICE_SERIES_B0_TESLA",
    "LIU2012_TE_MS",
    "LIU2012_VOLUME_RATIO",
    "SphereFieldCheck",
    "check_sphere_field",
    "single_source_scan",
    "apparent_volume",
    "blooming_table",
]

#: The sphere of :func:`check_sphere_field`: its radius and the grid spacing (mm), and how far out the
#: error is measured, in radii (nearer the surface the rasterised sphere is not a sphere).
SPHERE_RADIUS_MM = 3.0
SPHERE_SPACING_MM = 0.5
SPHERE_ERROR_RADII = 1.5
#: A voxel belongs to a lesion's visible hypointensity when darker than this fraction of the background
#: (:func:`apparent_volume`).
VISIBLE_FRACTION = 0.8
#: The CMB of :func:`blooming_table`: equal-volume diameter (mm) and susceptibility (ppm).
BLOOMING_DIAMETER_MM = 3.0
BLOOMING_CHI_PPM = 0.8
#: Echo times (ms) and fields (T) of the TE x B0 series, with slices as thin as the voxels.
BLOOMING_TE_MS: tuple[float, ...] = (10.0, 20.0, 30.0, 40.0)
BLOOMING_B0_TESLA: tuple[float, ...] = (1.5, 3.0)
#: Slice thicknesses (mm) of the slice series, at echo time SLICE_SERIES_TE_MS and field SLICE_SERIES_B0_TESLA.
BLOOMING_SLICE_MM: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0)
SLICE_SERIES_TE_MS = 20.0
SLICE_SERIES_B0_TESLA = 3.0
#: In vivo (Liu et al. 2012, Radiology 262:269, ten patients at 3 T): as TE rose from about 20 to 40 ms the CMB
#: volume measured on T2*-weighted images grew by a mean factor of 2.30 (SD 1.20), what notebook 01 sets the
#: blooming series beside (both echo times are in BLOOMING_TE_MS).
LIU2012_TE_MS: tuple[float, float] = (20.0, 40.0)
LIU2012_VOLUME_RATIO = 2.30


@dataclass(frozen=True)
class SphereFieldCheck:
    """FFT field of a sphere against the analytic dipole formula."""

    numeric: np.ndarray  # (X, Y, Z) ppm, FFT dipole kernel
    analytic: np.ndarray  # (X, Y, Z) ppm, (dchi/3)(a/r)^3(3cos^2 - 1) outside, 0 inside
    outside: np.ndarray  # (X, Y, Z) bool, voxels with r >= SPHERE_ERROR_RADII a (where the error is measured)
    relative_error: float  # RMS(numeric - analytic) / max|analytic| over ``outside``
    grid: Grid


def check_sphere_field(
    shape: tuple[int, int, int] = (64, 66, 68), spacing_mm: float = SPHERE_SPACING_MM,
    radius_mm: float = SPHERE_RADIUS_MM, chi_ppm: float = 1.0, subsample: int = 4,
) -> SphereFieldCheck:
    """Rasterise a sphere (``subsample``^3 partial volume), compute its field by FFT, compare."""
    grid = Grid(shape, (spacing_mm,) * 3, tuple(-(n - 1) / 2 * spacing_mm for n in shape))  # type: ignore[arg-type]
    pts = grid.points()
    occ = np.zeros(len(pts))
    offsets = (np.arange(subsample) + 0.5) / subsample - 0.5
    for ox in offsets:
        for oy in offsets:
            for oz in offsets:
                q = pts + np.array([ox, oy, oz]) * spacing_mm
                occ += np.einsum("ij,ij->i", q, q) <= radius_mm**2
    chi = (occ / subsample**3 * chi_ppm).reshape(shape)
    numeric = compute_field(chi, grid.spacing, pad=1.0)
    analytic = sphere_field(pts, np.zeros(3), radius_mm, chi_ppm).reshape(shape)
    r = np.linalg.norm(pts, axis=1).reshape(shape)
    outside = r >= SPHERE_ERROR_RADII * radius_mm
    err = float(np.sqrt(np.mean((numeric[outside] - analytic[outside]) ** 2)) / np.abs(analytic[outside]).max())
    return SphereFieldCheck(numeric, analytic, outside, err, grid)


def single_source_scan(
    te_ms: float = 20.0, b0_tesla: float = 3.0, slice_mm: float = 1.0, voxel_mm: float = 1.0,
    diameter_mm: float = 3.0, chi_ppm: float = 1.0, kind: str = "cmb", supersample: int = 3,
    fov_mm: float = 40.0,
) -> tuple[np.ndarray, float, Grid]:
    """Noiseless complex scan of one spherical source in uniform white matter.

    Returns:
        complex (X, Y, Z) image, the background signal magnitude, and the scan grid
        (the source sits at the scan centre, slightly off the voxel grid).
    """
    n = int(round(fov_mm / voxel_mm))
    geom = make_geometry((n, n + 1), voxel_mm, slice_mm, fov_mm, (0.0, 0.0, 0.0), supersample)
    shape = geom.model.shape
    _, m0, r2 = TISSUE["wm"]
    maps = TissueMaps(np.zeros(shape, np.float32), np.full(shape, m0, np.float32), np.full(shape, r2, np.float32))
    src = FocalSource(kind, (0.2, -0.1, 0.15), (diameter_mm / 2,) * 3, chi_ppm, "lobar")
    sig = simulate_signal(maps, geom, [src], [], b0_tesla, te_ms)
    background = float(m0 * np.exp(-te_ms * 1e-3 * r2 * (0.4 + 0.6 * b0_tesla / 3.0)))
    return sig.image, background, geom.scan


def apparent_volume(
    image: np.ndarray, background: float, voxel_mm: tuple[float, float, float], fraction: float = VISIBLE_FRACTION,
) -> float:
    """Volume (mm^3) of the voxels darker than ``fraction`` x background (visible hypointensity: >= 20 % darker)."""
    return float((np.abs(image) < fraction * background).sum() * np.prod(voxel_mm))


def blooming_table(
    te_values: tuple[float, ...] = BLOOMING_TE_MS, b0_values: tuple[float, ...] = BLOOMING_B0_TESLA,
    slice_values: tuple[float, ...] = BLOOMING_SLICE_MM, diameter_mm: float = BLOOMING_DIAMETER_MM,
    chi_ppm: float = BLOOMING_CHI_PPM, voxel_mm: float = 1.0,
) -> list[dict]:
    """Apparent volume of one CMB across TE x B0 (1 mm slices) and across slice thickness.

    The slice series is scanned at :data:`SLICE_SERIES_B0_TESLA` and :data:`SLICE_SERIES_TE_MS`.

    Returns:
        rows with keys experiment ("te_b0" or "slice"), te_ms, b0_tesla, slice_mm, volume_mm3, true_volume_mm3.
    """
    true_v = float(np.pi / 6 * diameter_mm**3)
    rows = []
    for b0 in b0_values:
        for te in te_values:
            img, bg, grid = single_source_scan(te, b0, voxel_mm, voxel_mm, diameter_mm, chi_ppm)
            rows.append({"experiment": "te_b0", "te_ms": te, "b0_tesla": b0, "slice_mm": voxel_mm,
                         "volume_mm3": apparent_volume(img, bg, grid.spacing), "true_volume_mm3": true_v})
    for sl in slice_values:
        te, b0 = SLICE_SERIES_TE_MS, SLICE_SERIES_B0_TESLA
        img, bg, grid = single_source_scan(te, b0, sl, voxel_mm, diameter_mm, chi_ppm)
        rows.append({"experiment": "slice", "te_ms": te, "b0_tesla": b0, "slice_mm": sl,
                     "volume_mm3": apparent_volume(img, bg, grid.spacing), "true_volume_mm3": true_v})
    return rows
