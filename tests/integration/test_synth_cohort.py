"""The smoke cohort end to end: layout read by the loader, determinism, CLI, figures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from cmbstudy.cli import main
from cmbstudy.data.datasets import detect_layout, load_participants, load_subjects
from cmbstudy.data.io import load_image, load_mask
from cmbstudy.synth import cohort as synth_cohort
from cmbstudy.synth import make_cohort
from cmbstudy.synth.follow_up import make_follow_up_cohort

matplotlib.use("Agg")
pytestmark = pytest.mark.slow


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "cohort"
    with pytest.MonkeyPatch.context() as patch:  # two subjects here, two in two worker processes, however quick
        patch.setattr(synth_cohort, "WORKER_START_SECONDS", 0.0)
        summary = make_cohort(root, profile="smoke", n_subjects=4, seed=11, progress=False, workers=2)
    assert summary.n_subjects == 4 and "subjects/s" in str(summary)
    return root


def test_layout_is_read_by_the_loader(cohort: Path) -> None:
    assert detect_layout(cohort) == "synthetic"
    subjects = load_subjects(cohort)
    assert [s.subject_id for s in subjects] == ["001", "002", "003", "004"]
    participants = load_participants(cohort)
    expected = ["modality", "site", "b0_tesla", "te_ms", "voxel_x_mm", "voxel_y_mm", "slice_thickness_mm",
                "cmb_count", "aria_h_category"]
    assert list(participants.columns) == expected
    for sub in subjects:
        assert set(sub.extra_paths) == {"phase", "mimic", "lesions"}
        img = load_image(sub.image_path)
        assert img.shape[:2] == (64, 64)
        mask = np.asarray(load_mask(sub.mask_path, reference=img).dataobj)
        brain = np.asarray(load_mask(sub.brain_mask_path, reference=img).dataobj)
        mimic = np.asarray(load_image(sub.extra_paths["mimic"], allow_zero=True).dataobj)
        assert set(np.unique(mimic)) <= {0, 1, 2, 3, 4}
        lesions = pd.read_csv(sub.extra_paths["lesions"], sep="\t")
        assert list(lesions.columns) == ["lesion_id", "x_vox", "y_vox", "z_vox", "x_mm", "y_mm", "z_mm",
                                         "diameter_mm", "chi_ppm", "location", "small"]
        assert len(lesions) == participants.loc[sub.subject_id, "cmb_count"]
        assert (lesions.small == (lesions.diameter_mm <= 3.0)).all()
        assert lesions.chi_ppm.between(0.1, 2.0).all() and lesions.diameter_mm.between(2, 10).all()
        for _, row in lesions.iterrows():
            c = tuple(int(v) for v in np.round([row.x_vox, row.y_vox, row.z_vox]))
            assert mask[c] == 1 and brain[c] == 1
            assert np.allclose(img.affine @ [row.x_vox, row.y_vox, row.z_vox, 1], [row.x_mm, row.y_mm, row.z_mm, 1], atol=1e-3)
        if len(lesions):
            # CMBs are hypointense: their centre voxels lie below the median brain voxel, as a rule (a 2 mm CMB
            # of low susceptibility on a thick slice may sink into the noise, as on a real scan)
            data = np.asarray(img.dataobj)
            centres = np.round(lesions[["x_vox", "y_vox", "z_vox"]].to_numpy(float)).astype(int)
            assert np.median(data[tuple(centres.T)]) < np.median(data[brain > 0])


def test_same_seed_gives_identical_bytes(cohort: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"  # one process here, the machine's cores for the fixture: the same files
    make_cohort(again, profile="smoke", n_subjects=4, seed=11, progress=False, workers=1)
    assert _digests(again) == _digests(cohort)
    other = tmp_path / "other"
    make_cohort(other, profile="smoke", n_subjects=1, seed=12, progress=False)
    assert _digests(other)["sub-001/anat/sub-001_label-brain_mask.nii.gz"] != _digests(cohort)["sub-001/anat/sub-001_label-brain_mask.nii.gz"]


def test_follow_up_pairs_are_the_same_for_any_number_of_workers(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    one = make_follow_up_cohort(tmp_path / "one", "smoke", n_subjects=4, seed=3, progress=False, workers=1)
    monkeypatch.setattr(synth_cohort, "WORKER_START_SECONDS", 0.0)  # two pairs here, two in worker processes
    two = make_follow_up_cohort(tmp_path / "two", "smoke", n_subjects=4, seed=3, progress=False, workers=2)
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")
    assert one.equals(two) and list(one["participant_id"]) == ["sub-001", "sub-002", "sub-003", "sub-004"]


def test_cli_synth_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--profile", "smoke", "--n-subjects", "1", "--seed", "3", "--quiet"]) == 0
    assert "subjects: 1" in capsys.readouterr().out
    assert main(["synth", "--out", str(out), "--profile", "smoke", "--n-subjects", "1", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "neg"), "--profile", "smoke", "--n-subjects", "-2"]) == 2
    assert "n_subjects -2" in capsys.readouterr().err
    assert not (tmp_path / "neg").exists()


def test_figures_run(cohort: Path) -> None:
    from cmbstudy.figures.synth import (
        plot_blooming,
        plot_cohort,
        plot_example_slices,
        plot_sphere_field,
    )
    from cmbstudy.synth.cohort import cohort_tables
    from cmbstudy.synth.experiments import check_sphere_field

    rows = [{"experiment": "te_b0", "te_ms": t, "b0_tesla": 3.0, "slice_mm": 1.0, "volume_mm3": v, "true_volume_mm3": 14.1}
            for t, v in ((20.0, 21.0), (40.0, 41.0))]
    rows.append({"experiment": "slice", "te_ms": 20.0, "b0_tesla": 3.0, "slice_mm": 3.0, "volume_mm3": 90.0, "true_volume_mm3": 14.1})
    cats, lesions = cohort_tables(cohort)
    figs = [plot_sphere_field(check_sphere_field(shape=(24, 25, 26), radius_mm=2.0)), plot_blooming(rows),
            plot_example_slices(cohort, n_per_modality=1), plot_cohort(cats, lesions, load_participants(cohort))]
    assert all(len(f.axes) >= 2 for f in figs)
    assert cats.subjects.sum() == 4 and list(cats.paper_test_set) == [8, 50, 9, 5]
    assert len(lesions) == load_participants(cohort).cmb_count.sum()
