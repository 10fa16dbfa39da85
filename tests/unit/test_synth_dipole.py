"""The k-space dipole kernel against the analytic sphere field."""

from __future__ import annotations

import numpy as np

from cmbstudy.synth.dipole import (
    compute_field,
    dipole_kernel,
    field_to_phase,
    point_dipole_field,
    sphere_field,
)
from cmbstudy.synth.experiments import check_sphere_field


def test_kernel_shape_and_values() -> None:
    k = dipole_kernel((4, 6, 8), (1.0, 1.0, 1.0))  # rfft half spectrum: (4, 6, 5)
    assert k.shape == (4, 6, 5)
    assert k[0, 0, 0] == 0.0
    assert np.isclose(k[1, 0, 0], 1 / 3)  # k along x: 1/3
    assert np.isclose(k[0, 0, 1], 1 / 3 - 1)  # k along z: -2/3


def test_sphere_field_matches_analytic_outside() -> None:
    check = check_sphere_field(shape=(48, 50, 52), spacing_mm=0.5, radius_mm=2.5)
    assert check.relative_error < 0.01
    # worst voxel outside 1.5 a within 3 % of the peak analytic field
    diff = np.abs(check.numeric - check.analytic)[check.outside].max()
    assert diff < 0.03 * np.abs(check.analytic[check.outside]).max()


def test_analytic_sphere_pattern() -> None:
    a, chi = 2.0, 0.9
    pts = np.array([[0, 0, 4.0], [4.0, 0, 0], [0, 0, 1.0]])
    f = sphere_field(pts, np.zeros(3), a, chi)
    assert np.isclose(f[0], chi / 3 * (a / 4) ** 3 * 2)  # pole: +2/3 chi (a/r)^3
    assert np.isclose(f[1], -chi / 3 * (a / 4) ** 3)  # equator: -1/3 chi (a/r)^3
    assert f[2] == 0.0  # inside
    vol = 4 / 3 * np.pi * a**3
    assert np.allclose(point_dipole_field(pts[:2], np.zeros(3), vol, chi), f[:2])


def test_field_is_linear_and_phase_sign() -> None:
    rng = np.random.default_rng(3)
    chi = rng.normal(size=(9, 10, 11)).astype(np.float32)
    f1 = compute_field(chi, (1.0, 1.0, 2.0))
    assert f1.shape == (9, 10, 11)
    assert np.allclose(compute_field(-2 * chi, (1.0, 1.0, 2.0)), -2 * f1, atol=1e-5)
    # 1 ppm at 3 T, TE 20 ms: 2 pi * 127.7 Hz * 0.02 s = 16.05 rad, negative for a positive field
    assert np.isclose(field_to_phase(1.0, 3.0, 20.0), -2 * np.pi * 42.577478 * 3 * 0.02, rtol=1e-6)
