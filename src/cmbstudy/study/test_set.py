"""The study's test set: the subjects every table is scored on, and that no choice ever sees.

The paper's design (section 3.1): a separate test set (72 subjects), and 5-fold
cross-validation on the rest, where each fold's checkpoint is chosen on its
validation subjects. Here each run's operating point is chosen there too
(:mod:`cmbstudy.training.calibrate`), and the classical floor is tuned there.

- On the synthetic cohort the test set is a separate cohort generated from its
  own seed (:func:`cmbstudy.synth.cohort.make_test_cohort`), at ``TEST_ROOT``.
- On a real dataset (``TEST_ROOT`` is the dataset itself) it is a seeded,
  stratified share ``study.test_fraction`` of its subjects, drawn once and saved
  as ``RESULTS/test_split.json`` (:func:`cmbstudy.data.splits.make_test_split`);
  every run leaves those subjects out of its cross-validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Profile
from ..data.datasets import aria_h_strata, load_subjects
from ..data.splits import load_test_split, make_test_split, save_test_split
from ..errors import InputError

__all__ = ["TEST_SPLIT_FILE", "TestSet", "resolve_test_set"]

#: A real dataset's saved test split, in the results folder.
TEST_SPLIT_FILE = "test_split.json"


@dataclass(frozen=True)
class TestSet:
    """Where the test subjects are and whether training must leave them out.

    Attributes:
        root: dataset root holding the test subjects.
        subject_ids: the test subjects (sorted).
        held_out: True when they belong to the training dataset (a real dataset's split).
    """

    root: Path
    subject_ids: tuple[str, ...]
    held_out: bool

    @property
    def excluded_from_training(self) -> tuple[str, ...]:
        """The subjects a training run of the study must leave out."""
        return self.subject_ids if self.held_out else ()


def resolve_test_set(profile: Profile, data_root: Path | str, test_root: Path | str,
                     results_dir: Path | str) -> TestSet:
    """The study's test set for training data at ``data_root`` and test subjects at ``test_root``.

    A separate ``test_root``: all its subjects. ``test_root`` equal to
    ``data_root`` (a real dataset): the split saved in ``RESULTS/test_split.json``,
    made there from ``profile.seed`` and ``profile.study.test_fraction`` (stratified
    by ARIA-H category when ``participants.tsv`` has one) when absent.

    Raises:
        InputError: an empty or unreadable test root, or a saved split naming subjects the dataset lacks.
        ConfigError: a test fraction that leaves no test or no training subject.
    """
    data_root, test_root = Path(data_root).resolve(), Path(test_root).resolve()
    ids = sorted(s.subject_id for s in load_subjects(test_root))
    if not ids:
        raise InputError(f"the test root {test_root} has no subjects")
    if test_root != data_root:
        return TestSet(test_root, tuple(ids), held_out=False)
    path = Path(results_dir) / TEST_SPLIT_FILE
    if path.is_file():
        test = load_test_split(path)
        unknown = sorted(set(test) - set(ids))
        if unknown:
            raise InputError(f"{path} names subjects {unknown[:5]} that {data_root} lacks: it was made for "
                             "another dataset; use another results folder (--out) for this one")
        return TestSet(data_root, tuple(test), held_out=True)
    strata = aria_h_strata(data_root, ids)
    test = make_test_split(ids, profile.study.test_fraction, profile.seed, strata)
    save_test_split(path, test, profile.seed, profile.study.test_fraction, strata is not None)
    return TestSet(data_root, tuple(test), held_out=True)
