"""The verdict table: the two rules, each table's claims, the claim files, the abstract; the settings table."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from cmbstudy.config import load_profile
from cmbstudy.evaluation.stats import CountAgreement
from cmbstudy.study.paper import TABLE2, TABLE6_CONFUSION
from cmbstudy.study.settings_table import (
    compute_settings_table,
    field_descriptions,
    format_setting,
    settings_values,
)
from cmbstudy.study.tables.burden import compute_agreement
from cmbstudy.study.claims import (
    ablation_claims,
    burden_claims,
    comparison_claims,
    cross_validation_claims,
    detected_nothing,
    explanation_claims,
)
from cmbstudy.study.verdicts import (
    CANNOT_TELL,
    CLAIM_FILES,
    DOES_NOT_REPLICATE,
    REPLICATES,
    count_verdicts,
    load_claims,
    make_abstract,
    order_verdict,
    value_verdict,
    verdict_table,
    write_claims,
)


def scores(f1: float, low: float, high: float, fp: float = 1.0) -> dict[str, float]:
    return {"f1": f1, "f1_ci_low": low, "f1_ci_high": high,
            "fp_per_subject": fp, "fp_per_subject_ci_low": fp - 0.1, "fp_per_subject_ci_high": fp + 0.1}


def test_a_value_replicates_only_inside_the_interval() -> None:
    assert value_verdict(0.887, 0.85, 0.90) == REPLICATES
    assert value_verdict(0.887, 0.887, 0.90) == REPLICATES  # the bounds belong to the interval
    assert value_verdict(0.887, 0.40, 0.50) == DOES_NOT_REPLICATE
    assert value_verdict(0.887, math.nan, 0.50) == CANNOT_TELL


def test_an_ordering_needs_intervals_that_do_not_overlap() -> None:
    high, low = scores(0.8, 0.75, 0.85), scores(0.5, 0.45, 0.55)
    assert order_verdict(high, low) == REPLICATES
    assert order_verdict(low, high) == DOES_NOT_REPLICATE
    assert order_verdict(high, scores(0.78, 0.70, 0.80)) == CANNOT_TELL
    assert order_verdict(high, None) == CANNOT_TELL
    # fewer false positives is better: "with" at 0.5 FP beats "without" at 2.0
    assert order_verdict(scores(0.8, 0.7, 0.9, fp=0.5), scores(0.8, 0.7, 0.9, fp=2.0), "fp_per_subject",
                         higher_is_better=False) == REPLICATES


def comparison(ours: dict, best: dict | None, subset: str = "all",
               label: str = "Wei 2022 (MMOC-Net)") -> SimpleNamespace:
    rows = {"RLK-UNet + CBAM (Cho 2026)": ours}
    if best is not None:
        rows[label] = best
    table = pd.DataFrame.from_dict(rows, orient="index")
    return SimpleNamespace(subset=subset, table=table, best_baseline=label if best else "no baseline")


def test_table2_claims_ours_above_the_best_baseline() -> None:
    [claim] = comparison_claims(comparison(scores(0.6, 0.55, 0.65), scores(0.3, 0.25, 0.35)))
    assert (claim.source, claim.kind, claim.verdict) == ("Table 2", "ordering", REPLICATES)
    assert claim.paper.startswith(f"{TABLE2['rlk_unet_cbam']['f1']:.3f} vs {TABLE2['wei2022']['f1']:.3f}")
    assert "0.600 [0.550, 0.650]" in claim.ours and "Wei 2022" in claim.ours
    # above a baseline that is not the paper's comparator: we cannot tell; below it, it does not replicate
    dou = "Dou 2016 (two-stage 3D CNN)"
    [claim] = comparison_claims(comparison(scores(0.6, 0.55, 0.65), scores(0.3, 0.25, 0.35), label=dou))
    assert claim.verdict == CANNOT_TELL and "Wei 2022" in claim.note and "not trained" in claim.note
    [claim] = comparison_claims(comparison(scores(0.3, 0.25, 0.35), scores(0.6, 0.55, 0.65), label=dou))
    assert claim.verdict == DOES_NOT_REPLICATE
    [claim] = comparison_claims(comparison(scores(0.6, 0.55, 0.65), None, subset="small"))
    assert (claim.source, claim.verdict) == ("Table 4", CANNOT_TELL)
    assert "no baseline" in claim.note


def test_a_comparison_with_a_method_that_detected_nothing_cannot_tell() -> None:
    nothing = {**scores(0.0, 0.0, 0.0), "precision": math.nan, "recall": 0.0}  # no lesion reported at all
    assert detected_nothing(nothing) and not detected_nothing({**scores(0.0, 0.0, 0.0), "precision": 0.0,
                                                                 "recall": 0.0})
    [claim] = comparison_claims(comparison({**scores(0.6, 0.55, 0.65), "precision": 0.7, "recall": 0.5}, nothing))
    assert claim.verdict == CANNOT_TELL and "detected nothing" in claim.note
    [claim] = comparison_claims(comparison(nothing, {**scores(0.6, 0.55, 0.65), "precision": 0.7, "recall": 0.5}))
    assert claim.verdict == CANNOT_TELL  # not "does not replicate": our network found nothing to compare


def test_table3_uses_the_fold_mean_and_its_t_interval() -> None:
    folds = pd.DataFrame({"f1": [0.80, 0.90, 0.85], "f1_ci_low": [0.7] * 3, "f1_ci_high": [0.95] * 3},
                         index=[0, 1, 2])
    frame = pd.concat([folds, pd.DataFrame({"f1": [0.85, 0.05]}, index=["mean", "sd"])])
    [claim] = cross_validation_claims(SimpleNamespace(scores=frame))
    assert claim.estimate == pytest.approx(0.85)
    half_width = 4.302653 * 0.05 / math.sqrt(3)  # t(0.975, 2 df) * sd / sqrt(n)
    assert claim.ci_low == pytest.approx(0.85 - half_width, abs=1e-4)
    assert claim.ci_high == pytest.approx(min(0.85 + half_width, 1.0), abs=1e-4)
    assert claim.verdict == REPLICATES  # 0.887 lies inside
    one = pd.concat([folds.iloc[:1], pd.DataFrame({"f1": [0.8, math.nan]}, index=["mean", "sd"])])
    [claim] = cross_validation_claims(SimpleNamespace(scores=one))
    assert (claim.ci_low, claim.ci_high) == (0.7, 0.95) and "one fold" in claim.note


def test_burden_claims_use_wilson_and_fisher_intervals() -> None:
    counts = CountAgreement(rho=0.9, ci_low=0.85, ci_high=0.95, p=0.001, n=72, fit=None, confidence=0.95)
    paper = compute_agreement(TABLE6_CONFUSION)
    table6, fig4 = burden_claims(SimpleNamespace(confusion=TABLE6_CONFUSION, counts=counts, paper=paper))
    hits, n = int(np.trace(TABLE6_CONFUSION)), int(TABLE6_CONFUSION.sum())
    assert table6.estimate == pytest.approx(hits / n) and table6.verdict == REPLICATES
    assert table6.ci_low < hits / n < table6.ci_high
    assert fig4.verdict == REPLICATES  # 0.93 inside [0.85, 0.95]
    empty = burden_claims(SimpleNamespace(confusion=np.zeros((4, 4), dtype=int), counts=counts, paper=paper))[0]
    assert empty.verdict == CANNOT_TELL


def test_table8_needs_every_arm_and_every_step_up() -> None:
    arms = {"Without CBAM": scores(0.5, 0.45, 0.55, fp=2.0), "CBAM-AllSkip": scores(0.8, 0.75, 0.85, fp=0.5)}
    f1, fp, table8 = ablation_claims(SimpleNamespace(scores=arms))
    assert (f1.verdict, fp.verdict) == (REPLICATES, REPLICATES)
    assert table8.verdict == CANNOT_TELL and "CBAM-Skip1" in table8.note
    arms.update({"CBAM-Skip1": scores(0.6, 0.57, 0.63), "CBAM-Skip2": scores(0.7, 0.66, 0.74)})
    assert ablation_claims(SimpleNamespace(scores=arms))[2].verdict == REPLICATES
    arms["CBAM-Skip2"] = scores(0.3, 0.28, 0.32)
    assert ablation_claims(SimpleNamespace(scores=arms))[2].verdict == DOES_NOT_REPLICATE


def test_gradcam_claim_is_a_paired_difference_judged_over_trained_pairs() -> None:
    index = pd.MultiIndex.from_product([["without CBAM", "with CBAM"], range(20)], names=["model", "row"])
    mass = np.r_[np.full(20, 0.2), np.full(20, 0.5)] + np.tile(np.linspace(0, 0.1, 20), 2)
    focus = pd.DataFrame({"cam_mass_fraction": mass, "chance": 0.1}, index=index)
    # one pair of trained networks: its estimate and interval over slices are shown, not judged
    [claim] = explanation_claims(SimpleNamespace(focus=focus))
    assert claim.estimate == pytest.approx(0.3) and claim.ci_low > 0 and claim.verdict == CANNOT_TELL
    assert claim.note.startswith("one pair of trained networks: the interval is over 20 test slices")
    # three folds with both arms: judged on the folds' means, with a t interval over folds
    folds = pd.DataFrame({"with minus without": [0.3, 0.25, 0.35], "slices": 20}, index=[0, 1, 2])
    [claim] = explanation_claims(SimpleNamespace(focus=focus, fold_differences=folds))
    assert claim.estimate == pytest.approx(0.3) and claim.verdict == REPLICATES
    assert claim.ci_low == pytest.approx(0.3 - 4.302653 * 0.05 / math.sqrt(3), abs=1e-5)
    folds["with minus without"] = [-0.3, -0.25, -0.35]
    assert explanation_claims(SimpleNamespace(focus=focus, fold_differences=folds))[0].verdict == DOES_NOT_REPLICATE
    folds["with minus without"] = [0.3, -0.25, 0.05]  # trainings disagree: the sign is not the architecture's
    assert explanation_claims(SimpleNamespace(focus=focus, fold_differences=folds))[0].verdict == CANNOT_TELL
    [claim] = explanation_claims(SimpleNamespace(focus=focus.loc[["with CBAM"]]))
    assert claim.verdict == CANNOT_TELL and claim.note == "an arm was not trained"
    # an all-zero map (NaN share) in one arm leaves that slice out of the pairs, and says so
    focus.loc[("without CBAM", 3), "cam_mass_fraction"] = np.nan
    [claim] = explanation_claims(SimpleNamespace(focus=focus))
    assert math.isfinite(claim.estimate)
    assert claim.note.endswith("; 1 of 20 slices left out: a Grad-CAM map there is all zero")


def test_claims_round_trip_through_their_files_in_the_papers_order(tmp_path) -> None:
    gradcam = explanation_claims(SimpleNamespace(focus=pd.DataFrame(columns=["cam_mass_fraction", "chance"])))
    table2 = comparison_claims(comparison(scores(0.6, 0.55, 0.65), scores(0.3, 0.25, 0.35)))
    write_claims(tmp_path, "gradcam", gradcam)
    write_claims(tmp_path, "table2", table2)
    claims, missing = load_claims(tmp_path)
    assert [c.source for c in claims] == ["Table 2", "Figs. 5-6"]
    assert claims[0] == table2[0] and math.isnan(claims[1].estimate)
    assert set(missing) == set(CLAIM_FILES) - {"table2", "gradcam"}
    with pytest.raises(ValueError, match="unknown claim file"):
        write_claims(tmp_path, "table9", table2)
    table = verdict_table(claims, "synthetic test cohort")
    assert list(table["where"]) == ["Table 2", "Figs. 5-6"]
    assert count_verdicts(claims) == {REPLICATES: 1, DOES_NOT_REPLICATE: 0, CANNOT_TELL: 1}


def test_the_abstract_states_the_profile_that_ran_and_the_counts() -> None:
    profile = load_profile("smoke", ["train.epochs=3"])
    claims = comparison_claims(comparison(scores(0.6, 0.55, 0.65), scores(0.3, 0.25, 0.35)))
    text = make_abstract(claims, profile, "synthetic training cohort", "synthetic test cohort", 4)
    assert "The smoke profile ran" in text and "3 epochs" in text and f"batch {profile.train.batch_size}" in text
    assert "Of 1 claim of the paper, 1 replicates on this build, 0 do not" in text and "4 subjects" in text


def test_every_setting_is_described_and_the_paper_column_is_the_paper_profile() -> None:
    quick, paper = load_profile("quick"), load_profile("paper")
    table = compute_settings_table(quick, paper)
    assert (table["what it sets"] != "").all(), table.loc[table["what it sets"] == "", "setting"].tolist()
    row = table.set_index("setting").loc["train.batch_size"]
    assert (row["this build"], row["paper profile"]) == (str(quick.train.batch_size), str(paper.train.batch_size))
    assert bool(row["differs"]) == (quick.train.batch_size != paper.train.batch_size)
    assert "rlk" in field_descriptions(type(quick.model))["kernel_size"].lower()
    assert format_setting((0.4, 0.3)) == "0.4, 0.3" and format_setting(True) == "yes" and format_setting(None) == "—"
    values = settings_values(paper, "paper")
    assert values["paper.train.epochs"] == str(paper.train.epochs)


def test_the_quoted_values_come_from_the_profiles_and_the_paper_module() -> None:
    from cmbstudy.study.paper import PAPER_N_SCANS, TABLE6_CONFUSION
    from cmbstudy.study.runs import training_instances
    from cmbstudy.study.settings_table import compute_quoted_values

    values = compute_quoted_values()
    quick = load_profile("quick")
    assert values["quick.train.epochs"] == str(quick.train.epochs)
    assert values["quick.n_training_runs"] == len(training_instances(quick))
    assert values["paper_data.n_scans"] == PAPER_N_SCANS
    assert values["paper_data.test_subjects"] == int(TABLE6_CONFUSION.sum())
    assert "paper.train.epochs" not in values  # the paper profile's fields are settings_values(paper, "paper")


def test_the_gpu_check_numbers_are_read_from_its_json() -> None:
    from cmbstudy.study.settings_table import compute_quoted_values, gpu_check_values

    measured = {"device_name": "GPU X", "torch": "2.0.0+cu1", "cuda": "12.0", "torch_threads": 8,
                "inference": {"side": 256, "slices": 10, "batch": 16,
                              "eager": {"network_seconds": 2.0, "post_seconds": 1.0, "seconds_per_subject": 3.0},
                              "compile": {"network_seconds": 1.5, "post_seconds": 1.0, "seconds_per_subject": 2.5}},
                "training_step": {"side": 128, "batch": 4, "step_seconds": 0.5, "slices_per_second": 8.0,
                                  "forward_gflop_per_slice": 10.0, "tflops": 0.24, "peak_tflops": 100.0,
                                  "share_of_peak": 0.0024}}
    values = gpu_check_values(measured)
    assert values["gpu_check.torch"] == "2.0.0" and values["gpu_check.side"] == "256"
    # 10 slices of 40 GFLOP (four times the crop's pixels) in 2 s, then in 1.5 s
    assert values["gpu_check.eager.tflops"] == "0.2" and values["gpu_check.compile.tflops"] == "0.3"
    assert values["gpu_check.compile_saving"] == "25%" and values["gpu_check.share_of_peak"] == "0.24%"
    shipped = compute_quoted_values()
    assert set(values) <= set(shipped) and float(shipped["gpu_check.step_tflops"]) > 0
