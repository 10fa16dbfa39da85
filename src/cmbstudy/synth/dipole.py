"""Magnetic field of a susceptibility distribution (the dipole kernel).

The field offset relative to the main field B0 (along z) of a susceptibility
map chi is computed in k-space (Salomir 2003, Marques & Bowtell 2005):

    dB / B0 = F^-1{ D(k) F{chi} },   D(k) = 1/3 - kz^2 / |k|^2,   D(0) = 0.

Outside a uniformly magnetised sphere of radius a the same kernel gives the
analytic dipole field dB / B0 = (dchi / 3) (a / r)^3 (3 cos^2 theta - 1); any
ellipsoid has the point-dipole far field with moment dchi * V.  Units: chi in
ppm, fields in ppm of B0, lengths in mm, array axes (X, Y, Z) with Z along B0.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

__all__ = [
    "GAMMA_HZ_PER_T",
    "dipole_kernel",
    "compute_field",
    "sphere_field",
    "point_dipole_field",
    "field_to_phase",
]

GAMMA_HZ_PER_T = 42.577478e6  # proton gyromagnetic ratio / (2 pi), Hz per tesla


@functools.lru_cache(maxsize=32)
def _cached_kernel(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    kernel = dipole_kernel(shape, spacing).astype(np.float32)
    kernel.flags.writeable = False
    return kernel


def dipole_kernel(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """D(k) = 1/3 - kz^2/|k|^2 on the half spectrum of ``scipy.fft.rfftn``.

    Args:
        shape: (X, Y, Z) grid shape in voxels.
        spacing: voxel size (mm) along X, Y, Z.

    Returns:
        (X, Y, Z // 2 + 1) float array; D(0) = 0 (the mean field is not defined).
    """
    kx = np.fft.fftfreq(shape[0], d=spacing[0])[:, None, None]
    ky = np.fft.fftfreq(shape[1], d=spacing[1])[None, :, None]
    kz = np.fft.rfftfreq(shape[2], d=spacing[2])[None, None, :]
    k2 = kx**2 + ky**2 + kz**2
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = 1.0 / 3.0 - kz**2 / k2
    kernel[0, 0, 0] = 0.0
    return kernel


def compute_field(
    chi: np.ndarray, spacing: tuple[float, float, float], pad: float = 0.5
) -> np.ndarray:
    """Field offset dB/B0 (ppm) of ``chi`` (ppm) by the k-space dipole kernel.

    The volume is zero-padded by ``pad`` times its size on every axis (rounded
    to a fast FFT length) so that periodic copies barely interact.

    Args:
        chi: (X, Y, Z) susceptibility in ppm (relative to the surrounding tissue).
        spacing: voxel size (mm).
        pad: zero padding as a fraction of each axis length.

    Returns:
        (X, Y, Z) float32 field offset in ppm of B0.
    """
    chi = np.asarray(chi, dtype=np.float32)
    shape = tuple(scipy.fft.next_fast_len(int(n + 2 * np.ceil(pad * n)), real=True) for n in chi.shape)
    spectrum = scipy.fft.rfftn(chi, s=shape, workers=1)
    spectrum *= _cached_kernel(shape, tuple(float(v) for v in spacing))
    field = scipy.fft.irfftn(spectrum, s=shape, workers=1)
    return np.ascontiguousarray(field[: chi.shape[0], : chi.shape[1], : chi.shape[2]], dtype=np.float32)


def point_dipole_field(
    points_mm: np.ndarray, center_mm: np.ndarray, volume_mm3: float, dchi_ppm: float
) -> np.ndarray:
    """Far field dB/B0 (ppm) of a magnetised body of volume V: dchi V (3cos^2 - 1) / (4 pi r^3).

    Exact outside a sphere (then equal to :func:`sphere_field`).

    Args:
        points_mm: (..., 3) positions in mm.
        center_mm: (3,) centre of the body in mm.
        volume_mm3: body volume in mm^3.
        dchi_ppm: susceptibility difference to the surroundings in ppm.

    Returns:
        (...) field in ppm; 0 at the centre itself.
    """
    d = np.asarray(points_mm, dtype=np.float64) - np.asarray(center_mm, dtype=np.float64)
    r2 = np.einsum("...i,...i->...", d, d)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos2 = np.where(r2 > 0, d[..., 2] ** 2 / r2, 0.0)
        out = dchi_ppm * volume_mm3 * (3.0 * cos2 - 1.0) / (4.0 * np.pi * r2**1.5)
    return np.where(r2 > 0, out, 0.0)


def sphere_field(
    points_mm: np.ndarray, center_mm: np.ndarray, radius_mm: float, dchi_ppm: float
) -> np.ndarray:
    """Analytic dB/B0 (ppm) of a sphere: (dchi/3)(a/r)^3(3cos^2 theta - 1) outside, 0 inside.

    Inside, the Lorentz-sphere term (the 1/3 of D(k)) cancels the uniform
    demagnetising field, so the offset is zero.
    """
    d = np.asarray(points_mm, dtype=np.float64) - np.asarray(center_mm, dtype=np.float64)
    r2 = np.einsum("...i,...i->...", d, d)
    outside = r2 > radius_mm**2
    volume = 4.0 / 3.0 * np.pi * radius_mm**3
    return np.where(outside, point_dipole_field(points_mm, center_mm, volume, dchi_ppm), 0.0)


def field_to_phase(field_ppm: np.ndarray | float, b0_tesla: float, te_ms: float) -> np.ndarray:
    """GRE phase (radians) -gamma dB TE of a field offset in ppm (signal S ~ exp(-i gamma dB TE))."""
    return -2.0 * np.pi * GAMMA_HZ_PER_T * b0_tesla * 1e-6 * np.asarray(field_ppm) * te_ms * 1e-3
