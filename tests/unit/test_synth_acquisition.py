"""Blooming, hypointensity and phase of single sources; site validation."""

from __future__ import annotations

import numpy as np
import pytest

from cmbstudy.errors import ConfigError
from cmbstudy.synth.acquisition import (
    SITES,
    Site,
    TissueMaps,
    acquire,
    make_geometry,
    simulate_signal,
)
from cmbstudy.synth.experiments import apparent_volume, single_source_scan


def _volume(te: float, slice_mm: float = 1.0, b0: float = 3.0, fov_mm: float = 24.0) -> float:
    img, bg, grid = single_source_scan(te, b0, slice_mm, 1.0, 3.0, 0.8, fov_mm=fov_mm)
    return apparent_volume(img, bg, grid.spacing)


def test_blooming_grows_with_te_about_twofold() -> None:
    v20, v40 = _volume(20.0), _volume(40.0)
    assert 1.5 < v40 / v20 < 2.6


def test_blooming_grows_with_b0() -> None:
    assert _volume(20.0, b0=3.0) > _volume(20.0, b0=1.5)


def test_blooming_grows_with_slice_thickness() -> None:
    v1, v3, v5 = (_volume(20.0, slice_mm=s, fov_mm=40.0) for s in (1.0, 3.0, 5.0))
    assert v1 < v3 < v5
    assert v5 > 2.5 * v1


def test_cmb_is_hypointense_and_calcification_has_opposite_phase() -> None:
    img_c, bg, grid = single_source_scan(kind="cmb", chi_ppm=0.6, fov_mm=20.0)
    img_k, _, _ = single_source_scan(kind="calcification", chi_ppm=-0.6, fov_mm=20.0)
    c = tuple(int(v) for v in np.round(grid.to_index(np.array([[0.2, -0.1, 0.15]]))[0]))
    assert abs(img_c[c]) < 0.3 * bg
    assert abs(img_c[0, 0, 0]) == pytest.approx(bg, rel=0.02)  # far from the lesion
    # the phase pattern of a paramagnetic and a diamagnetic source are mirror images
    win = tuple(slice(v - 3, v + 4) for v in c)
    pc, pk = np.angle(img_c[win]), np.angle(img_k[win])
    strong = np.abs(pc) > 0.2
    assert strong.sum() > 10
    assert np.all(np.sign(pc[strong]) == -np.sign(pk[strong]))


def test_site_table_and_bad_sites() -> None:
    assert {s.modality for s in SITES} == {"gre", "swi"}
    assert all(3.0 <= s.slice_mm <= 5.0 for s in SITES if s.modality == "gre")
    with pytest.raises(ConfigError, match="te_ms"):
        Site("bad", "gre", 3.0, 0.0, 1.0, 4.0, 20.0, 0.1)
    with pytest.raises(ConfigError, match="modality"):
        Site("bad", "flair", 3.0, 20.0, 1.0, 4.0, 20.0, 0.1)


def test_simulate_signal_rejects_nonpositive_te() -> None:
    geom = make_geometry((8, 9), 2.0, 2.0, 10.0, (0.0, 0.0, 0.0), 1)
    maps = TissueMaps(*(np.ones(geom.model.shape, np.float32) for _ in range(3)))
    with pytest.raises(ConfigError, match="TE"):
        simulate_signal(maps, geom, [], [], 3.0, -5.0)


def test_geometry_grids() -> None:
    geom = make_geometry((10, 11), 1.5, 4.0, 30.0, (0.0, -18.0, 14.0), 3)
    assert geom.scan.shape == (10, 11, 8)  # ceil(30 / 4)
    assert geom.z_factor == 3 and geom.model.shape == (10, 11, 24)
    assert geom.fine_factors == (3, 3, 8)  # 4 mm / 0.5 mm
    # the model samples of slice k average to the slice centre
    zc = geom.model.origin[2] + geom.model.spacing[2] * np.arange(3).mean()
    assert np.isclose(zc, geom.scan.origin[2])


def test_acquire_noise_and_swi(rng: np.random.Generator) -> None:
    signal = np.full((12, 13, 5), 1.0 + 0j, dtype=np.complex64)
    signal[6, 6, 2] = 0.5 * np.exp(-1.0j)  # negative phase: darkened further by SWI
    brain = np.ones(signal.shape, bool)
    gre = SITES[1]
    mag, phase = acquire(signal, brain, (1.0, 1.0, 2.0), gre, np.random.default_rng(0), snr_scale=1e6)
    assert mag.shape == phase.shape == signal.shape
    swi = SITES[3]
    mag_s, _ = acquire(signal, brain, (1.0, 1.0, 2.0), swi, np.random.default_rng(0), snr_scale=1e6)
    assert mag_s[6, 6, 2] < 0.8 * mag[6, 6, 2]
    noisy, _ = acquire(signal, brain, (1.0, 1.0, 2.0), gre, rng)
    assert np.std(noisy - mag) > 0.01  # Rician noise added at the site SNR
