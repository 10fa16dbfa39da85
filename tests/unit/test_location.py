"""MARS lesion location: the template region rule and the registration of synthetic subjects."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from cmbstudy.config import SynthConfig
from cmbstudy.errors import InputError
from cmbstudy.inference.location import (
    MARS_REGIONS,
    assign_locations,
    compute_mars_regions,
)
from cmbstudy.synth.acquisition import SITES
from cmbstudy.synth.anatomy import load_template_space, random_transform
from cmbstudy.synth.cohort import make_subject
from cmbstudy.synth.susceptibility import _candidates

# small scans: 96 x 96 voxels of 2 mm in-plane, the quick profile's 128 mm slab
SMALL = SynthConfig(matrix=(96, 96), voxel_mm=2.0, slab_mm=128.0, supersample=1)
MIN_AGREEMENT = 0.8  # measured 18/20 on these two subjects; about 0.95 on quick cohorts


def test_region_rule_on_known_template_points() -> None:
    points = np.array([
        [0.0, -30.0, -40.0],  # brainstem
        [20.0, -60.0, -40.0],  # cerebellar hemisphere
        [-22.0, 4.0, 2.0],  # left putamen
        [-12.0, -18.0, 8.0],  # left thalamus
        [-40.0, 20.0, 40.0],  # frontal lobe
        [40.0, -70.0, 20.0],  # parieto-occipital
        [0.0, -20.0, 84.0],  # ~8 mm above the vertex: nearest region
        [0.0, -20.0, 95.0],  # ~19 mm above the vertex: too far
        [300.0, 0.0, 0.0],  # outside the template grid
    ])
    expected = ["infratentorial", "infratentorial", "deep", "deep", "lobar", "lobar", "lobar", "unknown", "unknown"]
    assert compute_mars_regions(points).tolist() == expected
    assert compute_mars_regions(points[6], max_outside_mm=5.0).tolist() == ["unknown"]


def test_region_rule_matches_the_generators_placement_pools(rng: np.random.Generator) -> None:
    t = load_template_space(2)
    for region in MARS_REGIONS:
        pool = _candidates(2)[region]
        points = pool[rng.integers(0, len(pool), 2000)] + rng.uniform(-0.5, 0.5, (2000, 3)) * t.spacing  # as placed
        labels = compute_mars_regions(points)
        assert np.all(labels == region), f"{region}: {dict(zip(*np.unique(labels, return_counts=True)))}"


def test_region_rule_rejects_bad_points() -> None:
    with pytest.raises(InputError, match=r"shape \(4, 2\) must be \(N, 3\)"):
        compute_mars_regions(np.zeros((4, 2)))
    with pytest.raises(InputError, match="finite"):
        compute_mars_regions(np.array([[0.0, np.nan, 0.0]]))


@pytest.fixture(scope="module")
def subjects() -> list[dict]:
    """A GRE and an SWI subject with 10 CMBs each, their true template points and locations."""
    out = []
    for site_name, seed in (("birch-3T", 5), ("dogwood-3T", 6)):
        site = next(s for s in SITES if s.name == site_name)
        seq = np.random.SeedSequence(seed)
        scan = make_subject(SMALL, site, 10, seq)
        truth = random_transform(np.random.default_rng(seq))  # the subject's first draw (simulate_subject)
        grid = scan.geometry.scan
        centres_mm = np.array([c.center_mm for c in scan.cmbs])
        out.append({"image": nib.Nifti1Image(scan.magnitude, grid.affine), "brain": scan.brain,
                    "centroids": grid.to_index(centres_mm), "true_mm": truth(centres_mm), "scan_mm": centres_mm,
                    "locations": [c.location for c in scan.cmbs], "modality": site.modality})
    return out


def test_round_trip_locations_agree_with_the_generator(subjects: list[dict]) -> None:
    agree, total, errors, header_errors = 0, 0, [], []
    for s in subjects:
        assert len(s["locations"]) == 10
        assert compute_mars_regions(s["true_mm"]).tolist() == s["locations"]  # the rule reproduces the truth
        found = assign_locations(s["image"], s["centroids"], s["brain"])
        agree += sum(a == b for a, b in zip(found.labels, s["locations"]))
        total += len(found.labels)
        errors += np.linalg.norm(found.template_mm - s["true_mm"], axis=1).tolist()
        header_errors += np.linalg.norm(s["scan_mm"] - s["true_mm"], axis=1).tolist()
    assert agree / total >= MIN_AGREEMENT, f"{agree}/{total} locations agree"
    assert np.median(errors) < 3.5, f"median template error {np.median(errors):.2f} mm"
    assert np.median(errors) < 0.7 * np.median(header_errors)  # better than taking scanner mm as MNI mm


def test_registration_is_deterministic_and_describes_itself(subjects: list[dict]) -> None:
    s = subjects[0]
    a = assign_locations(s["image"], s["centroids"], s["brain"])
    b = assign_locations(s["image"], s["centroids"], s["brain"])
    assert np.array_equal(a.template_mm, b.template_mm)
    summary = json.loads(json.dumps(a.as_dict()))
    assert summary["registration"]["brain_mask"] == "given"
    assert 0.0 <= summary["registration"]["metric_value"] < 0.02  # smoothed masks overlap well
    assert sum(summary["counts"].values()) == 10
    matrix = np.array(summary["registration"]["subject_to_template"])
    assert matrix.shape == (4, 4) and 0.85 < abs(np.linalg.det(matrix[:3, :3])) < 1.15


def test_result_does_not_depend_on_the_voxel_order(subjects: list[dict]) -> None:
    s = subjects[1]
    ras = assign_locations(s["image"], s["centroids"], s["brain"])
    shape = np.array(s["brain"].shape)
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # store the same scan as LPS: i -> X-1-i, j -> Y-1-j
    flip[:2, 3] = shape[:2] - 1
    affine = s["image"].affine @ flip
    lps = nib.Nifti1Image(np.asarray(s["image"].dataobj)[::-1, ::-1], affine)
    centroids = s["centroids"] * [-1, -1, 1] + [shape[0] - 1, shape[1] - 1, 0]
    found = assign_locations(lps, centroids, s["brain"][::-1, ::-1])
    assert np.abs(found.template_mm - ras.template_mm).max() < 1.0
    assert found.labels == ras.labels


def test_result_does_not_depend_on_where_the_scanner_put_the_head(subjects: list[dict]) -> None:
    s = subjects[0]
    ref = assign_locations(s["image"], s["centroids"], s["brain"])
    a, b = np.deg2rad(15.0), np.deg2rad(7.5)
    moved = np.eye(4)  # 15 deg about z, 7.5 deg about x, then 20, -30, 40 mm
    moved[:3, :3] = (np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
                     @ np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]]))
    moved[:3, 3] = [20.0, -30.0, 40.0]
    image = nib.Nifti1Image(np.asarray(s["image"].dataobj), moved @ s["image"].affine)
    found = assign_locations(image, s["centroids"], s["brain"])
    assert np.abs(found.template_mm - ref.template_mm).max() < 1.0
    assert found.labels == ref.labels


def test_otsu_mask_when_no_brain_mask_is_given(subjects: list[dict]) -> None:
    s = subjects[0]
    given = assign_locations(s["image"], s["centroids"], s["brain"])
    otsu = assign_locations(s["image"], s["centroids"])
    assert otsu.registration.brain_mask == "otsu"
    assert np.abs(otsu.template_mm - given.template_mm).max() < 3.0


def test_bad_inputs_are_named(subjects: list[dict]) -> None:
    s = subjects[0]
    with pytest.raises(InputError, match=r"brain mask of shape \(3, 3, 3\) must match"):
        assign_locations(s["image"], s["centroids"], np.ones((3, 3, 3)))
    with pytest.raises(InputError, match="is empty"):
        assign_locations(s["image"], s["centroids"], np.zeros_like(s["brain"]))
    with pytest.raises(InputError, match=r"centroids of shape \(2, 2\)"):
        assign_locations(s["image"], np.zeros((2, 2)), s["brain"])
    sheared = s["image"].affine.copy()
    sheared[0, 1] = 0.5
    with pytest.raises(InputError, match="has shear"):
        assign_locations(nib.Nifti1Image(np.asarray(s["image"].dataobj), sheared), s["centroids"], s["brain"])
    empty = assign_locations(s["image"], np.zeros((0, 3)), s["brain"])
    assert empty.labels == () and empty.template_mm.shape == (0, 3)
