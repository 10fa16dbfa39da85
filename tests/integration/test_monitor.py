"""ARIA-H monitoring: follow-up pairs, registration, the paired decision, `cmbstudy monitor` and its scoring."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from cmbstudy.cli import main
from cmbstudy.config import load_profile
from cmbstudy.errors import ConfigError, InputError
from cmbstudy.evaluation.lesions import find_lesions
from cmbstudy.evaluation.monitoring import evaluate_monitoring, score_pair
from cmbstudy.inference.model_store import load_detection_model, packaged_model_path, second_look_path
from cmbstudy.inference.monitor import (background_darkness, check_pair_inputs, focal_darkness, pair_backgrounds,
                                       pair_lesions, pair_tables_by_threshold)
from cmbstudy.inference import monitor_files
from cmbstudy.inference.monitor_files import find_pairs, monitoring_point
from cmbstudy.inference.second_look import THRESHOLDS
from cmbstudy.inference.rigid import register_follow_up, resample_onto, to_sitk
from cmbstudy.synth.acquisition import SITES
from cmbstudy.synth.anatomy import load_template_space
from cmbstudy.synth.follow_up import FollowUpSettings, make_follow_up_cohort, severity_of, simulate_pair

QUICK = load_profile("quick").synth
#: the quick profile's scans on a thinner slab: the packaged model detects, and pairs register, on any coverage
THIN = load_profile("quick", ["synth.slab_mm=60"])
GRE = SITES[1]


def _image(scan) -> nib.Nifti1Image:
    return nib.Nifti1Image(scan.magnitude.astype(np.float32), scan.geometry.scan.affine)


def _oracle(scan, keep: list[int] | None = None) -> SimpleNamespace:
    """What the detector would give if it found exactly the scan's CMBs (those of ``keep``, by lesion order)."""
    lesions = find_lesions(scan.cmb_mask.astype(np.float32), 0.5, connectivity=26)
    if keep is not None:
        order = [int(np.argmin([np.linalg.norm(c - scan.geometry.scan.to_index(np.array(s.center_mm)[None])[0])
                                for c in lesions.centroids])) for s in scan.cmbs]
        chosen = [order[i] for i in keep]
        labels = np.zeros_like(lesions.labels)
        for new_id, old in enumerate(chosen, start=1):
            labels[lesions.labels == old + 1] = new_id
        lesions = SimpleNamespace(labels=labels, centroids=lesions.centroids[chosen], n=len(chosen))
    return SimpleNamespace(image=_image(scan), lesions=lesions, result=SimpleNamespace(brain=scan.brain > 0))


@pytest.fixture(scope="module")
def pair():
    """One head, 3 CMBs at baseline and 2 new ones, the head turned 5 degrees about z and shifted 2 mm."""
    template = load_template_space(QUICK.template_resolution)
    return simulate_pair(template, QUICK, (GRE, GRE), 3, 2, np.random.SeedSequence(7),
                         motion=((0.0, 0.0, 5.0), (2.0, -1.0, 1.0)))


@pytest.fixture(scope="module")
def registered(pair):
    base, follow = to_sitk(_image(pair.baseline)), to_sitk(_image(pair.followup))
    registration = register_follow_up(base, follow, pair.baseline.brain > 0, pair.followup.brain > 0)
    return base, follow, registration, resample_onto(follow, base, registration.transform)


def test_severity_counts_new_microbleeds() -> None:
    assert [severity_of(n) for n in (0, 1, 4, 5, 9, 10, 30)] == ["none", "mild", "mild", "moderate", "moderate",
                                                                 "severe", "severe"]
    with pytest.raises(ValueError, match="non-negative"):
        severity_of(-1)
    with pytest.raises(ConfigError, match="severity shares"):
        FollowUpSettings(severity_shares=(1, 0, 0))


def test_the_follow_up_is_the_same_brain_moved_with_new_cmbs(pair) -> None:
    assert pair.new == [False, False, False, True, True]
    assert pair.motion.rotation_deg == pytest.approx(5.0)
    moved = pair.motion.move(np.array([c.center_mm for c in pair.baseline.cmbs]))
    assert np.allclose(moved, [c.center_mm for c in pair.followup.cmbs[:3]])
    assert pair.motion.inverse(pair.motion(moved)) == pytest.approx(moved, abs=0.05)


def test_registration_recovers_the_motion(pair, registered) -> None:
    base, follow, registration, _ = registered
    assert registration.rotation_deg == pytest.approx(5.0, abs=0.5)
    assert registration.brain_dice > 0.97 and registration.correlation > 0.6
    # the truth: where the baseline's CMBs went (within a voxel)
    for before, after in zip(pair.baseline.cmbs, pair.followup.cmbs):
        mapped = registration.transform.TransformPoint(
            base.TransformContinuousIndexToPhysicalPoint(
                [float(v) for v in pair.baseline.geometry.scan.to_index(np.array(before.center_mm)[None])[0]]))
        truth = follow.TransformContinuousIndexToPhysicalPoint(
            [float(v) for v in pair.followup.geometry.scan.to_index(np.array(after.center_mm)[None])[0]])
        assert np.linalg.norm(np.subtract(mapped, truth)) < 1.5


def test_a_persistent_cmb_stays_persistent_and_a_new_one_is_found(pair, registered) -> None:
    base, follow, registration, follow_in_base = registered
    table = pair_lesions(_oracle(pair.baseline), _oracle(pair.followup), follow_in_base, follow, base,
                         registration.transform)
    found = table[table["detected_followup"]]
    assert len(found) == 5 and (table["status"] != "not seen").all()
    assert sorted(found["followup_lesion"]) == [1, 2, 3, 4, 5] and sorted(found["baseline_lesion"]) == [0, 0, 1, 2, 3]
    # the follow-up's CMBs, in its lesion order: three from the baseline, then the two new ones
    statuses = [found.loc[np.argmin(np.linalg.norm(
        found[["fx_vox", "fy_vox", "fz_vox"]].to_numpy() - pair.followup.geometry.scan.to_index(
            np.array(c.center_mm)[None])[0], axis=1)), "status"] for c in pair.followup.cmbs]
    assert statuses == ["persistent"] * 3 + ["new"] * 2


def test_the_paired_decision_looks_at_the_baseline_scan(pair, registered) -> None:
    """The baseline's detector missed one of its CMBs: the naive rule calls it new, the paired decision does not."""
    base, follow, registration, follow_in_base = registered
    table = pair_lesions(_oracle(pair.baseline, keep=[0, 1]), _oracle(pair.followup), follow_in_base, follow, base,
                         registration.transform)
    found = table[table["detected_followup"]]
    assert int(found["new_naive"].sum()) == 3
    assert int((found["status"] == "new").sum()) == 2
    reference = pd.DataFrame({"x_vox": [], "y_vox": [], "z_vox": [], "new": []})
    for i, c in enumerate(pair.followup.cmbs):
        reference.loc[i] = [*pair.followup.geometry.scan.to_index(np.array(c.center_mm)[None])[0], int(pair.new[i])]
    counts = score_pair(table, reference)
    assert (counts["tp"], counts["fp"], counts["fn"]) == (2, 0, 0)
    assert (counts["naive_tp"], counts["naive_fp"], counts["naive_fp_persistent"]) == (2, 1, 1)


def test_a_focus_no_darker_than_the_background_does_not_make_a_cmb_persistent(pair, registered) -> None:
    """The baseline's missed CMB is persistent because it is darker than the baseline's background; were the
    background that dark everywhere, it would be new."""
    base, follow, registration, follow_in_base = registered
    detections = _oracle(pair.baseline, keep=[0, 1]), _oracle(pair.followup)
    measured = pair_backgrounds(detections[0], follow_in_base)
    assert all(0.0 < b < 0.6 for b in measured)
    # a follow-up that reaches only part of the baseline's brain: a thinner slab, or half a slice's width
    thin, narrow = follow_in_base.copy(), follow_in_base.copy()
    thin[:, :, : thin.shape[2] // 3] = thin[:, :, 2 * thin.shape[2] // 3:] = 0.0
    narrow[: narrow.shape[0] // 2] = 0.0
    for partial in (thin, narrow):  # the zeros beyond its reach are no black foci (they made it 1 before)
        assert pair_backgrounds(detections[0], partial)[1] == pytest.approx(measured[1], abs=0.05)
    table = pair_lesions(*detections, follow_in_base, follow, base, registration.transform, measured)
    missed = table[table["detected_followup"] & table["new_naive"] & (table["status"] == "persistent")]
    assert len(missed) == 1 and float(missed["darkness_baseline"].iloc[0]) > measured[0]
    table = pair_lesions(*detections, follow_in_base, follow, base, registration.transform,
                         (float(missed["darkness_baseline"].iloc[0]), measured[1]))
    assert int((table["status"] == "new").sum()) == 3


def test_background_darkness_is_what_noise_alone_shows() -> None:
    rng = np.random.default_rng(0)
    image = (100.0 + 10.0 * rng.standard_normal((48, 48, 12))).astype(np.float32)
    brain, voxel_mm = np.ones(image.shape, bool), np.array([1.0, 1.0, 2.0])
    background = background_darkness(image, brain, voxel_mm)
    assert 0.1 < background < 0.6
    assert background_darkness(image, brain, voxel_mm) == background  # no sampling: the same every time
    # the grid: every 6 mm in-plane, 8 voxels (the ring and one) from the edge; every 2nd slice, not the ends
    grid = [np.array([x, y, z]) for x in range(12, 40, 6) for y in range(12, 40, 6) for z in range(2, 11, 2)]
    assert background == pytest.approx(np.percentile([focal_darkness(image, g, voxel_mm) for g in grid], 95),
                                       abs=1e-6)  # the measure of focal_darkness, at the grid's voxels
    image[23:26, 23:26, 5] = 10.0
    assert focal_darkness(image, np.array([24, 24, 5]), voxel_mm) > background
    assert background_darkness(np.full(image.shape, 100.0, np.float32), brain, voxel_mm) == 0.0
    small = np.zeros(image.shape, bool)
    small[20:26, 20:26, 4:8] = True  # no place a ring away from its edge
    assert background_darkness(image, small, voxel_mm) == 0.0


def test_two_different_people_are_refused(pair) -> None:
    other = simulate_pair(load_template_space(QUICK.template_resolution), QUICK, (GRE, GRE), 2, 0,
                          np.random.SeedSequence(8))
    with pytest.raises(InputError, match="same person"):
        register_follow_up(to_sitk(_image(pair.baseline)), to_sitk(_image(other.followup)), pair.baseline.brain > 0,
                           other.followup.brain > 0)


def test_focal_darkness_sees_a_dark_focus_and_not_flat_tissue() -> None:
    image = np.full((40, 40, 5), 100.0, dtype=np.float32)
    image[19:22, 19:22, 2] = 10.0
    voxel_mm = np.array([1.0, 1.0, 2.0])
    assert focal_darkness(image, np.array([20, 20, 2]), voxel_mm) == pytest.approx(0.9)
    assert focal_darkness(image, np.array([8, 8, 2]), voxel_mm) == 0.0
    assert focal_darkness(image, np.array([80, 8, 2]), voxel_mm) == 0.0  # outside the image


def test_bad_pairs_are_named(tmp_path: Path) -> None:
    gre, swi = tmp_path / "sub-1_ses-baseline_T2starw.nii.gz", tmp_path / "sub-1_ses-followup_swi.nii.gz"
    with pytest.raises(InputError, match="both the baseline and the follow-up"):
        check_pair_inputs(gre, gre)
    with pytest.raises(InputError, match="dated before the baseline"):
        check_pair_inputs(gre, gre.with_name("b_T2starw.nii.gz"), *map(pd.Timestamp.date, (
            pd.Timestamp("2026-05-01"), pd.Timestamp("2026-01-01"))))
    with pytest.raises(InputError, match="new CMBs are counted between scans of one modality"):
        check_pair_inputs(gre, swi)
    assert check_pair_inputs(gre, swi, modality="gre") == "gre"


@pytest.mark.slow
def test_follow_up_cohort_is_monitored_end_to_end(tmp_path: Path, capsys) -> None:
    one = tmp_path / "one"  # the same files for any number of workers: tests/integration/test_synth_cohort.py
    table = make_follow_up_cohort(one, THIN, n_subjects=2, seed=3, progress=False)
    follow = pd.read_csv(one / "sub-001" / "ses-followup" / "anat" / "sub-001_ses-followup_lesions.tsv", sep="\t")
    assert int(follow["new"].sum()) == int(table.loc[0, "new_count"])
    assert list(table["severity"]) == [severity_of(n) for n in table["new_count"]]

    out = tmp_path / "monitored"
    assert main(["monitor", str(one), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "monitored 2 pair(s)" in printed
    for subject in ("sub-001", "sub-002"):
        summary = json.loads((out / subject / "monitor.json").read_text())
        lesions = pd.read_csv(out / subject / "lesions.tsv", sep="\t")
        assert summary["new_count"] == int((lesions["status"] == "new").sum())
        assert summary["aria_h_severity"] == severity_of(summary["new_count"])
        assert summary["registration"]["brain_dice"] >= summary["registration"]["min_brain_dice"]
        status = np.asarray(nib.load(out / subject / "space-baseline_desc-cmbstatus_dseg.nii.gz").dataobj)
        baseline = nib.load(one / subject / "ses-baseline" / "anat" / f"{subject}_ses-baseline_T2starw.nii.gz"
                            if (one / subject / "ses-baseline" / "anat" / f"{subject}_ses-baseline_T2starw.nii.gz"
                                ).is_file() else
                            one / subject / "ses-baseline" / "anat" / f"{subject}_ses-baseline_swi.nii.gz")
        assert status.shape == baseline.shape and set(np.unique(status)) <= {0, 1, 2, 3}
        assert (out / subject / "monitor_report.pdf").read_bytes()[:4] == b"%PDF"
    scores = evaluate_monitoring(out, one, n_bootstrap=20)
    s = scores.summary
    assert s["n_pairs"] == 2 and 0.0 <= s["severity_agreement"] <= 1.0
    assert s["severity_right"] == int((scores.per_pair["severity"] == scores.per_pair["reference_severity"]).sum())
    # the agreement's interval is Wilson's for k of 2 pairs right (none right: up to z^2 / (2 + z^2) = 0.6576)
    wilson = {0: (0.0, 0.6576), 1: (0.0945, 0.9055), 2: (0.3424, 1.0)}[s["severity_right"]]
    assert (s["severity_agreement_ci_low"], s["severity_agreement_ci_high"]) == pytest.approx(wilson, abs=1e-4)
    assert f"[{s['severity_agreement_ci_low']:.1%}, {s['severity_agreement_ci_high']:.1%}]" in scores.format_table()
    # one detection per scan, kept at several thresholds: at the model's own, the table monitor wrote
    model = load_detection_model(None)
    own = monitoring_point(model).second_look  # the packaged model's monitoring threshold, where it has one
    own_single = model.second_look.threshold
    first = find_pairs(one)[0]
    tables = pair_tables_by_threshold(first.baseline, first.followup, model, "cpu", [own, 0.05],
                                      first.baseline_mask, first.followup_mask)
    written = pd.read_csv(out / "sub-001" / "lesions.tsv", sep="\t")
    assert tables[own]["status"].tolist() == written["status"].tolist()
    assert np.allclose(tables[own][["x_vox", "y_vox", "z_vox"]].to_numpy(float),
                       written[["x_vox", "y_vox", "z_vox"]].to_numpy(float), atol=1e-3)
    assert (tables[0.05]["detected_followup"].sum() >= tables[own]["detected_followup"].sum())
    assert monitoring_point(model, second_look=0.05).second_look == 0.05
    for single, value in ((True, 0.05), (False, 1.5)):
        with pytest.raises(ConfigError, match="second-look"):
            monitoring_point(model, single, value)
    # a model's monitoring threshold, chosen on development pairs and recorded beside its second look
    weights = tmp_path / "weights"
    weights.mkdir()
    for path in packaged_model_path().parent.glob(f"{packaged_model_path().stem}*"):
        shutil.copy(path, weights / path.name)
    (weights / f"{packaged_model_path().stem}.second_look.json").write_text(json.dumps(
        {k: v for k, v in json.loads(Path(second_look_path(packaged_model_path())).with_suffix(".json").read_text())
         .items() if k != "monitoring"}))
    development = tmp_path / "development"
    shutil.copytree(one / "sub-001", development / "sub-001")
    shutil.copy(one / "dataset_description.json", development / "dataset_description.json")
    copy = weights / packaged_model_path().name
    assert main(["monitor-threshold", str(development), "--model", str(copy), "--quiet"]) == 0
    recorded = json.loads((weights / f"{copy.stem}.second_look.json").read_text())["monitoring"]
    assert recorded["threshold"] in THRESHOLDS.tolist() and recorded["single_scan_threshold"] == own_single
    assert recorded["chosen_on"]["n_pairs"] == 1 and recorded["chosen_on"]["cmbstudy"]["seed"] == 3
    assert monitoring_point(load_detection_model(copy)).second_look == recorded["threshold"]
    with pytest.MonkeyPatch.context() as patch:  # no overwrite, refused before a pair is detected
        patch.setattr(monitor_files, "choose_monitoring_threshold", lambda *a, **k: pytest.fail("pairs detected"))
        assert main(["monitor-threshold", str(development), "--model", str(copy), "--quiet"]) == 2
    assert main(["evaluate", "--rule", "monitoring", "--pred", str(out), "--ref", str(one)]) == 0
    assert "ARIA-H monitoring: 2 pairs" in capsys.readouterr().out
    # a rerun does not overwrite, and two scans of different people write nothing
    assert main(["monitor", str(one), "--out", str(out), "--quiet"]) == 2
    mixed = tmp_path / "mixed"
    base = one / "sub-001" / "ses-baseline" / "anat"
    other = one / "sub-002" / "ses-followup" / "anat"
    scans = [next(p for p in folder.glob("*.nii.gz") if "label" not in p.name and "phase" not in p.name)
             for folder in (base, other)]
    code = main(["monitor", str(scans[0]), str(scans[1]), "--out", str(mixed), "--quiet", "--modality", "gre"])
    assert code == 2 and not mixed.exists()
