"""Template-derived anatomy and the subject transform."""

from __future__ import annotations

import numpy as np

from cmbstudy.synth.anatomy import load_template_space, random_transform, warp_maps
from cmbstudy.synth.grid import Grid
from cmbstudy.synth.susceptibility import Tube, draw_cmb_diameters, tube_occupancy


def test_template_regions() -> None:
    t = load_template_space(2)
    assert t.gm.shape == (99, 117, 95)
    assert np.all(t.csf >= 0) and np.all(t.csf <= 1)
    partition = t.gm + t.wm <= t.brain  # where GM + WM fit in the mask, CSF fills the rest exactly
    assert np.allclose((t.csf + t.gm + t.wm)[partition], t.brain[partition], atol=1e-5)
    deep = np.argwhere(t.deep_gm)
    assert 2000 < len(deep) < 20000  # basal ganglia + thalami: ~ 10-60 ml at 8 ul/voxel
    centre_mm = t.affine[:3, :3] @ deep.mean(axis=0) + t.affine[:3, 3]
    assert abs(centre_mm[0]) < 5 and -25 < centre_mm[1] < 10
    infra = np.argwhere(t.infratentorial)
    z_mm = infra[:, 2] * 2 - 72
    assert z_mm.max() < -5


def test_transform_inverse_round_trip(rng: np.random.Generator) -> None:
    tr = random_transform(rng)
    p = rng.uniform(-60, 60, size=(50, 3))
    assert np.abs(tr.inverse(tr(p)) - p).max() < 0.05
    assert np.abs(tr(p) - p).max() > 0.5  # not the identity


def test_warp_maps_shapes_and_partition(rng: np.random.Generator) -> None:
    t = load_template_space(2)
    grid = Grid((21, 23, 19), (6.0, 6.0, 6.0), (-60.0, -84.0, -40.0))
    maps = warp_maps(t, random_transform(rng), grid)
    assert maps["gm"].shape == (21, 23, 19)
    total = maps["gm"] + maps["wm"] + maps["csf"]
    assert np.allclose(total[maps["brain"] > 0.5], maps["brain"][maps["brain"] > 0.5], atol=1e-5)
    assert maps["brain"][10, 11, 9] > 0.9  # centre of the head is brain
    assert maps["brain"][0, 0, 0] == 0.0


def test_tube_occupancy_keeps_cross_section() -> None:
    grid = Grid((20, 21, 40), (1.0, 1.0, 1.0), (-10.0, -10.0, -20.0))
    for r in (0.3, 2.0):
        tube = Tube(np.array([[0.1, 0.2, -30.0], [0.1, 0.2, 30.0]]), np.array([r, r]))
        occ = tube_occupancy([tube], grid)
        area = occ[:, :, 20].sum()  # mm^2 per axial slice
        assert abs(area - np.pi * r**2) < 0.2 * np.pi * r**2 + 0.05


def test_cmb_diameters_mostly_small(rng: np.random.Generator) -> None:
    d = draw_cmb_diameters(rng, 4000)
    assert d.min() >= 2.0 and d.max() <= 10.0
    assert 0.8 < np.mean(d <= 5.0) < 0.92
