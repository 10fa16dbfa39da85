"""Sites, scan geometry and the GRE signal with intravoxel dephasing ("blooming").

Signal model (per sample): S = M0 exp(-TE R2*) exp(-i gamma dB TE), averaged
(complex) into each scan voxel.  The field dB is the sum of

* the tissue + iron + vein field from the k-space dipole kernel on the *model
  grid* (scan in-plane spacing, each slice split into ``z_factor`` samples),
* the analytic fields of the air spheres at the skull base,
* for every focal source (CMB, calcification) its own field.

How the sub-voxel average is made affordable: on the model grid each sample
is multiplied by the exact average of a linear phase ramp across it,
prod_axes sinc(dphi_axis / 2pi) (dphi from the local field gradient), and the
``z_factor`` samples of a slice are averaged complex.  Near each focal source
(a box whose size grows with its surface phase) the voxels are recomputed on a
fine lattice (``supersample`` x ``supersample`` in-plane and about isotropic
through-plane): the source is rasterised there, its field computed by FFT on
that patch, other sources added as point dipoles, and the complex samples
averaged into the voxels.  Only these boxes need the fine grid, because away
from compact sources the field is smooth on the scale of a voxel.
R2* scales with B0 as R2*(3 T) (0.4 + 0.6 B0 / 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from .dipole import compute_field, field_to_phase, point_dipole_field, sphere_field
from .grid import Grid
from .susceptibility import AIR_CHI_PPM, TISSUE, AirSphere, FocalSource

__all__ = ["Site", "SITES", "ScanGeometry", "make_geometry", "TissueMaps", "Signal", "simulate_signal", "acquire"]


@dataclass(frozen=True)
class Site:
    """One acquisition site of the synthetic cohort."""

    name: str  # site label written to participants.tsv
    modality: str  # "gre" (2D T2*-GRE) or "swi" (3D, phase-mask enhanced)
    b0_tesla: float  # main field
    te_ms: float  # echo time
    inplane_factor: float  # in-plane voxel = profile voxel_mm x this
    slice_mm: float  # slice thickness
    snr: float  # mean brain signal / noise standard deviation (before snr_scale)
    bias: float  # peak relative amplitude of the smooth bias field

    def __post_init__(self) -> None:
        if self.modality not in ("gre", "swi"):
            raise ConfigError(f"site {self.name}: modality {self.modality!r} must be 'gre' or 'swi'")
        for name in ("b0_tesla", "te_ms", "inplane_factor", "slice_mm", "snr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"site {self.name}: {name} = {getattr(self, name)!r} must be > 0")


SITES: tuple[Site, ...] = (
    Site("alder-1.5T", "gre", 1.5, 25.0, 1.0, 5.0, 14.0, 0.15),
    Site("birch-3T", "gre", 3.0, 20.0, 1.0, 4.0, 18.0, 0.20),
    Site("cedar-3T", "gre", 3.0, 15.0, 1.05, 3.0, 15.0, 0.25),
    Site("dogwood-3T", "swi", 3.0, 20.0, 1.0, 2.0, 20.0, 0.20),
)


@dataclass(frozen=True)
class ScanGeometry:
    """The scan grid and the finer grids used to simulate it."""

    scan: Grid  # acquired voxels (X, Y, Z)
    z_factor: int  # model-grid samples per slice
    supersample: int  # fine-lattice samples per voxel in-plane near focal sources

    @property
    def model(self) -> Grid:
        """Model grid: scan in-plane spacing, ``z_factor`` samples per slice."""
        sx, sy, sz = self.scan.spacing
        ox, oy, oz = self.scan.origin
        h = sz / self.z_factor
        return Grid((self.scan.shape[0], self.scan.shape[1], self.scan.shape[2] * self.z_factor),
                    (sx, sy, h), (ox, oy, oz - sz / 2 + h / 2))

    @property
    def fine_factors(self) -> tuple[int, int, int]:
        """Fine-lattice samples per voxel along X, Y, Z (Z about isotropic with X)."""
        s = self.supersample
        sz = max(1, int(round(self.scan.spacing[2] / (self.scan.spacing[0] / s))))
        return s, s, sz


def make_geometry(
    matrix: tuple[int, int], voxel_mm: float, slice_mm: float, slab_mm: float,
    center_mm: tuple[float, float, float], supersample: int,
) -> ScanGeometry:
    """Axial scan of ``matrix`` voxels of ``voxel_mm`` with ``ceil(slab_mm / slice_mm)`` slices around ``center_mm``."""
    nz = max(1, int(np.ceil(slab_mm / slice_mm)))
    shape = (int(matrix[0]), int(matrix[1]), nz)
    spacing = (float(voxel_mm), float(voxel_mm), float(slice_mm))
    origin = tuple(float(c - (n - 1) / 2 * s) for c, n, s in zip(center_mm, shape, spacing))
    z_factor = max(1, int(round(slice_mm / voxel_mm)))
    return ScanGeometry(Grid(shape, spacing, origin), z_factor, int(supersample))  # type: ignore[arg-type]


@dataclass
class TissueMaps:
    """Background tissue on the model grid (X, Y, Z*z_factor); focal sources and air excluded."""

    chi: np.ndarray  # ppm
    m0: np.ndarray  # proton density (CSF = 1)
    r2s: np.ndarray  # R2* at 3 T, 1/s


@dataclass
class Signal:
    """Noiseless complex scan and what the simulation knows about each voxel."""

    image: np.ndarray  # (X, Y, Z) complex64
    labels: np.ndarray  # (X, Y, Z) int32: index+1 of the focal source occupying the voxel
    air_attenuation: np.ndarray  # (X, Y, Z) magnitude factor caused by the air fields alone


def _sinc_attenuation(phase: np.ndarray) -> np.ndarray:
    """Average of exp(i phi) over a voxel with the local linear phase gradient."""
    att = np.ones(phase.shape, dtype=np.float32)
    for g in np.gradient(phase):
        att *= np.abs(np.sinc(g / (2 * np.pi))).astype(np.float32)
    return att


def _block_mean_z(a: np.ndarray, b: int) -> np.ndarray:
    return a.reshape(a.shape[0], a.shape[1], -1, b).mean(axis=3)


def _r2s_at(r2s_3t: np.ndarray | float, b0: float) -> np.ndarray | float:
    return r2s_3t * (0.4 + 0.6 * b0 / 3.0)


def _surface_phase(src: FocalSource, b0: float, te_ms: float) -> float:
    return float(abs(field_to_phase(2.0 / 3.0 * src.chi_ppm, b0, te_ms)))


def _occupancy(src: FocalSource, pts: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Fraction of each fine sample (edge lengths ``h``) inside the ellipsoid, 2x2x2 sub-samples."""
    occ = np.zeros(len(pts), dtype=np.float32)
    for off in np.array(np.meshgrid([-0.25, 0.25], [-0.25, 0.25], [-0.25, 0.25], indexing="ij")).reshape(3, -1).T:
        q = (pts + off * h - np.array(src.center_mm)) / np.array(src.semi_axes_mm)
        occ += (np.einsum("ij,ij->i", q, q) <= 1.0).astype(np.float32)
    return occ / 8.0


def _air_field(air: list[AirSphere], model: Grid) -> np.ndarray:
    """Analytic field (ppm) of the air spheres, computed every 2nd sample and interpolated (it is smooth in the brain)."""
    import torch
    import torch.nn.functional as F

    coarse_shape = tuple(max(2, (n + 1) // 2) for n in model.shape)
    coarse = Grid(coarse_shape, tuple(s * (n - 1) / (c - 1) for s, n, c in zip(model.spacing, model.shape, coarse_shape)),
                  model.origin)
    pts = coarse.points()
    field = np.zeros(len(pts), dtype=np.float64)
    for sph in air:
        field += sphere_field(pts, np.array(sph.center_mm), sph.radius_mm, AIR_CHI_PPM)
    t = torch.from_numpy(field.reshape(coarse_shape).astype(np.float32))[None, None]
    return F.interpolate(t, size=model.shape, mode="trilinear", align_corners=True)[0, 0].numpy()


def simulate_signal(
    maps: TissueMaps, geom: ScanGeometry, sources: list[FocalSource], air: list[AirSphere],
    b0: float, te_ms: float,
) -> Signal:
    """Noiseless complex GRE signal on the scan grid (see the module docstring for the model).

    Raises:
        ConfigError: ``b0`` or ``te_ms`` is not positive.
    """
    if not (b0 > 0 and te_ms > 0):
        raise ConfigError(f"B0 = {b0!r} T and TE = {te_ms!r} ms must both be > 0")
    model = geom.model
    field_bg = compute_field(maps.chi, model.spacing)
    air_field = _air_field(air, model)
    field_bg += air_field
    field = field_bg.copy()
    radii = []
    for src in sources:
        phi_s = _surface_phase(src, b0, te_ms)
        a = max(src.semi_axes_mm)
        radii.append(a * float(np.clip((phi_s / 0.3) ** (1 / 3), 1.5, 5.0)) + max(geom.scan.spacing))
        far = min(30.0, a * float(np.clip((phi_s / 0.02) ** (1 / 3), 2.0, 12.0)))
        box = model.box(np.array(src.center_mm), far)
        sub = Grid(tuple(s.stop - s.start for s in box), model.spacing,
                   tuple(model.origin[i] + box[i].start * model.spacing[i] for i in range(3)))
        field[box] += point_dipole_field(sub.points(), np.array(src.center_mm), src.volume_mm3,
                                         src.chi_ppm).reshape(sub.shape).astype(np.float32)
    r2s = _r2s_at(maps.r2s, b0)
    mag = maps.m0 * np.exp(-te_ms * 1e-3 * r2s)
    phase = field_to_phase(field, b0, te_ms).astype(np.float32)
    sig = (mag * _sinc_attenuation(phase)) * np.exp(1j * phase)
    image = _block_mean_z(sig, geom.z_factor).astype(np.complex64)
    air_att = _block_mean_z(_sinc_attenuation(field_to_phase(air_field, b0, te_ms)), geom.z_factor)
    labels = np.zeros(geom.scan.shape, dtype=np.int32)
    for k, src in enumerate(sources):
        _refine_box(image, labels, k, radii[k], sources, maps, geom, field_bg, b0, te_ms)
    return Signal(image, labels, air_att.astype(np.float32))


def _refine_box(
    image: np.ndarray, labels: np.ndarray, k: int, radius: float, sources: list[FocalSource],
    maps: TissueMaps, geom: ScanGeometry, field_bg: np.ndarray, b0: float, te_ms: float,
) -> None:
    """Recompute the voxels around source ``k`` on the fine lattice (in place)."""
    src = sources[k]
    scan, model = geom.scan, geom.model
    box = scan.box(np.array(src.center_mm), radius)
    n = np.array([s.stop - s.start for s in box])
    if np.any(n == 0):
        return
    f = np.array(geom.fine_factors)
    h = np.array(scan.spacing) / f
    start = np.array(scan.origin) + np.array([s.start for s in box]) * np.array(scan.spacing) - np.array(scan.spacing) / 2 + h / 2
    fine = Grid(tuple(int(v) for v in n * f), tuple(float(v) for v in h), tuple(float(v) for v in start))  # type: ignore[arg-type]
    pts = fine.points()
    occ = [_occupancy(src, pts, h).reshape(fine.shape)]
    field = compute_field(occ[0] * src.chi_ppm, fine.spacing)
    props = [(TISSUE[src.kind][1], TISSUE[src.kind][2])]
    for j, other in enumerate(sources):
        if j == k:
            continue
        d = np.abs(np.array(other.center_mm) - np.array(src.center_mm))
        if np.any(d > radius + max(geom.scan.spacing) * 2 + 40.0):
            continue
        o = _occupancy(other, pts, h)
        dip = point_dipole_field(pts, np.array(other.center_mm), other.volume_mm3, other.chi_ppm)
        field += np.where(o > 0, 0.0, dip).reshape(fine.shape).astype(np.float32)
        if o.any():
            occ.append(o.reshape(fine.shape))
            props.append((TISSUE[other.kind][1], TISSUE[other.kind][2]))
    idx = model.to_index(pts).T
    field += ndimage.map_coordinates(field_bg, idx, order=1, mode="nearest").reshape(fine.shape)
    m0 = ndimage.map_coordinates(maps.m0, idx, order=1, mode="nearest").reshape(fine.shape)
    r2 = ndimage.map_coordinates(maps.r2s, idx, order=1, mode="nearest").reshape(fine.shape)
    total = np.clip(sum(occ), 0.0, 1.0)
    mag = (1.0 - total) * m0 * np.exp(-te_ms * 1e-3 * _r2s_at(r2, b0))
    for o, (m0_s, r2_s) in zip(occ, props):
        mag = mag + o * m0_s * np.exp(-te_ms * 1e-3 * _r2s_at(r2_s, b0))
    sig = mag * np.exp(1j * field_to_phase(field, b0, te_ms))
    blocks = sig.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5))
    image[box] = blocks.astype(np.complex64)
    own = occ[0].reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5))
    centre = np.clip(np.round(scan.to_index(np.array(src.center_mm)[None])[0]).astype(int), 0, np.array(scan.shape) - 1)
    own_mask = own >= 0.4
    region = labels[box]
    region[own_mask] = k + 1
    labels[tuple(centre)] = k + 1


def acquire(
    signal: np.ndarray, brain: np.ndarray, voxel_mm: tuple[float, float, float], site: Site,
    rng: np.random.Generator, snr_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Bias field, complex Gaussian noise (Rician magnitude), high-pass phase, SWI enhancement.

    Args:
        signal: (X, Y, Z) complex noiseless image.
        brain: (X, Y, Z) bool brain mask (sets the reference signal level).
        voxel_mm: voxel size, for the in-plane low-pass of the homodyne filter (sigma 8 mm).
        site: acquisition site; SWI multiplies the magnitude by the negative-phase mask^4.
        rng: noise generator.
        snr_scale: multiplies the site's SNR.

    Returns:
        magnitude (X, Y, Z) float32 and high-pass filtered phase (X, Y, Z) float32 in radians.
    """
    shape = signal.shape
    coords = [np.linspace(-1, 1, n) for n in shape]
    xx, yy, zz = np.meshgrid(*coords, indexing="ij")
    c = rng.normal(0, 1, 6)
    poly = c[0] * xx + c[1] * yy + c[2] * zz + c[3] * xx * yy + c[4] * (xx**2 - 0.3) + c[5] * (yy**2 - 0.3)
    bias = np.exp(site.bias * poly / max(np.abs(poly).max(), 1e-6)).astype(np.float32)
    level = float(np.median(np.abs(signal[brain]))) if brain.any() else 1.0
    sigma = level / (site.snr * snr_scale)
    noisy = signal * bias + sigma * (rng.normal(size=shape) + 1j * rng.normal(size=shape))
    s = [8.0 / voxel_mm[0], 8.0 / voxel_mm[1], 0.0]
    low = ndimage.gaussian_filter(noisy.real, s) + 1j * ndimage.gaussian_filter(noisy.imag, s)
    phase = np.angle(noisy * np.conj(low)).astype(np.float32)
    magnitude = np.abs(noisy).astype(np.float32)
    if site.modality == "swi":
        mask = np.where(phase < 0, 1.0 + phase / np.pi, 1.0).astype(np.float32)
        magnitude = magnitude * mask**4
    return magnitude, phase
