"""Run the study: every notebook with papermill in dependency order, then the book.

Each step is one notebook of ``notebooks/``. A step is skipped when nothing it
depends on changed since its last successful run: its notebook, its
parameters, the package modules it runs (:mod:`~cmbstudy.study.dependencies`: its imports, followed
through the package, so a figure module's edit reruns that figure's notebook and retrains nothing), and
the steps it depends on (a content hash,
kept in ``OUT/study_state.json``). The training step runs its notebook once per
training run of :func:`cmbstudy.study.runs.training_instances`, each with its own
hash, so adding a run or changing one variant retrains only what changed. With ``jobs`` above 1 the
training runs go N at a time, each notebook in its own kernel with its share of the cores (the runs
do not depend on each other), and so do the steps that need none of each other's results (the
analyses, once the runs are trained). A failing step names the notebook and the
cell, and leaves the executed copy (with the traceback) for inspection. The
executed notebooks are copied into ``book/executed/`` and rendered by Jupyter
Book 1 (Sphinx), which builds offline; Jupyter Book 2 downloads its theme at
build time and cannot.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import papermill as pm

from ..config import Profile, load_profile, profile_to_dict, resolve_variant
from ..data.io import check_output_dir, write_text_atomically
from ..errors import ConfigError
from .book import VIEWER_DATA, build_book, build_book_from
from .dependencies import notebook_source_hash
from .jobs import Pending, StudyError, run_pending, threads_per_job
from .runs import STATE_FILE, book_instance, monitored_run, training_instances
from .state import RECORD_SUFFIX, content_hash, load_instance_records, load_state, sha256_of_files, write_timings
from .training_runs import is_volumetric_variant

__all__ = ["Step", "STEPS", "StudyError", "find_project_root", "run_study", "build_book_from", "build_book"]


@dataclass(frozen=True)
class Step:
    """One notebook of the study."""

    name: str  # notebook file name without .ipynb, numbered in run order
    depends_on: tuple[str, ...] = ()  # names of steps whose artefacts it reads
    title: str = ""  # short description for progress and logs
    synthetic_only: bool = False  # always runs on the synthetic cohort, even with --data
    # the notebook runs once per dict (variant, fold, modality, name), each with its own skip hash
    instances: Callable[[Profile], list[dict[str, Any]]] | None = None
    # the training runs it reads, if not all: it starts once these are trained, beside the other runs, and its
    # skip key follows their keys (not the whole training step's)
    after_runs: Callable[[Profile], list[str]] | None = None


_TRAINED = ("03_training",)
STEPS: tuple[Step, ...] = (
    Step("00_methods", (), "methods, with the settings that ran"),
    Step("00_settings", (), "the resolved profile beside the paper's"),
    Step("01_synthetic_cohort", (), "synthetic cohort: physics, cohort table, classical detector",
         synthetic_only=True),
    Step("02_preprocessing", ("01_synthetic_cohort",), "N4, brain mask, crop, resample, z-score; cache"),
    # the cohort in a scan viewer: a chapter of its own, so that an edit of the viewer retrains nothing
    Step("16_cohort_viewer", ("01_synthetic_cohort",), "the synthetic cohort in a scan viewer", synthetic_only=True),
    # 02 only fills the preprocessing cache (a speed-up): training does not depend on its notebook
    Step("03_training", ("01_synthetic_cohort",), "one training run per variant, fold and modality",
         instances=training_instances),
    # the monitoring chapter reads the main run alone: it starts once that run is trained, beside the other runs
    Step("15_monitoring", (), "beyond the paper: ARIA-H monitoring, new CMBs between two scans",
         synthetic_only=True, after_runs=lambda profile: [monitored_run(profile)]),
    # the analyses need only the runs and go `jobs` at a time, the longest first (none is left alone at the end)
    Step("10_explainability", _TRAINED, "Figs. 5-6: Grad-CAM and CBAM attention"),
    Step("13_one_look_or_two", _TRAINED, "beyond the paper: one look or two (the second look)"),
    Step("04_cross_validation", _TRAINED, "Table 3: cross-validation of the main network"),
    Step("05_method_comparison", _TRAINED, "Table 2: comparison with published methods"),
    Step("06_small_lesions", _TRAINED, "Table 4: lesions of at most 3 mm"),
    Step("07_cross_modality", _TRAINED, "Table 5: cross-modality"),
    Step("08_burden", _TRAINED, "Table 6 and Fig. 4: burden (ARIA-H) and counts"),
    Step("09_cbam_ablation", _TRAINED, "Tables 7-8: CBAM ablation"),
    Step("11_qualitative", _TRAINED, "Figs. 2-3: detections overlaid"),
    Step("12_beyond_the_paper", _TRAINED, "beyond the paper: mimics, sites, VALDO rule, timing"),
    # the claims of every analysis notebook (OUT/claims/) judged in one table: the book's first page
    Step("14_abstract", ("04_cross_validation", "05_method_comparison", "06_small_lesions", "07_cross_modality",
                         "08_burden", "09_cbam_ablation", "10_explainability", "13_one_look_or_two"),
         "abstract and verdict table"),
)


def find_project_root(start: Path | None = None) -> Path:
    """The folder holding ``notebooks/`` and ``book/`` (the repository root).

    Raises:
        StudyError: no such folder above ``start`` (the study runs from a source checkout).
    """
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "notebooks").is_dir() and (candidate / "book").is_dir():
            return candidate
    package_root = Path(__file__).resolve().parents[3]
    if (package_root / "notebooks").is_dir():
        return package_root
    raise StudyError(
        f"no notebooks/ and book/ folders found above {here}: run `cmbstudy study` "
        "from the cmbstudy source checkout"
    )


def _step_parameters(declared: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Only the parameters the notebook declares in its ``parameters`` cell."""
    return {key: value for key, value in context.items() if key in declared}


def _instance_parameters(instance: dict[str, Any]) -> dict[str, Any]:
    modality = instance.get("modality")
    return {"variant": instance["variant"], "fold": int(instance["fold"]),
            "modality": "all" if modality is None else modality}


def _instance_profile(profile: Profile, instance: dict[str, Any]) -> dict[str, Any]:
    """The resolved profile of one run, without the study section (which only lists the runs)."""
    data = profile_to_dict(resolve_variant(profile, instance["variant"]))
    data.pop("study", None)
    data.pop("variants", None)
    return data


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_study(
    profile_name: str = "quick",
    data_root: Path | None = None,
    out: Path = Path("results"),
    overrides: Sequence[str] = (),
    force: bool = False,
    build_book: bool = True,
    steps: Sequence[str] | None = None,
    project_root: Path | None = None,
    runs: Sequence[str] | None = None,
    jobs: int = 1,
    threads: int | None = None,
) -> dict[str, float]:
    """Execute the study's notebooks in order, then render the book.

    A step with ``instances`` (03_training) runs its notebook once per training
    run into ``OUT/notebooks/<step>/<run>.ipynb``, each skipped when its notebook,
    the package source, its resolved variant profile, its parameters and its
    upstream steps are unchanged; the main variant's first cross-validation run
    is copied to ``OUT/notebooks/<step>.ipynb`` for the book. Every step and run
    prints a progress line with its elapsed seconds; the seconds of the last run
    of each step and run, and their total, go to ``OUT/study_state.json`` and
    ``OUT/study_timings.tsv``.

    Args:
        profile_name: ``smoke``, ``quick``, ``paper`` or a YAML path.
        data_root: a real dataset; None uses the synthetic cohort generated under ``out``.
        out: results folder; executed notebooks and artefacts go here.
        overrides: ``section.key=value`` profile overrides passed to every notebook.
        force: rerun steps even when their inputs did not change.
        build_book: render the book after the notebooks.
        steps: run only these steps (and nothing else); default all.
        project_root: the checkout with notebooks/ and book/ (default: found from cwd).
        runs: train only these runs (names of :func:`~cmbstudy.study.runs.training_instances`):
            the training step and the steps it depends on, no analysis and no book. The runs do not
            depend on each other, so a cluster can train one per job; the study then skips them.
        jobs: training runs (and independent notebooks) at once on this machine, each in its own kernel.
        threads: torch threads of each training run and notebook (default: the cores divided by ``jobs``;
            with one job, torch's own default). Give the same value to repeat a run to the bit.

    Returns:
        Seconds per step actually run (skipped steps are absent; a step with instances
        counts the instances run now).

    Raises:
        ConfigError: unknown profile, step or run. StudyError: a requested notebook is missing,
        or a notebook or the book failed.
    """
    profile = load_profile(profile_name, overrides)
    run_threads = threads_per_job(jobs, threads)
    root = project_root or find_project_root()
    out = Path(out).resolve()
    if runs is not None:
        known = [str(i["name"]) for i in training_instances(profile)]
        unknown = sorted(set(runs) - set(known))
        if unknown:
            raise ConfigError(f"unknown run(s) {unknown} of profile {profile_name}; "
                              f"`cmbstudy study --list-runs` lists them: {', '.join(known)}")
        training = next(step for step in STEPS if step.instances is not None)
        steps, build_book = [*training.depends_on, training.name], False
    wanted = _check_request(profile_name, data_root, steps, root)
    executed_dir = out / "notebooks"
    check_output_dir(out, overwrite=True)  # a file in the way is an OutputError; results are reused
    executed_dir.mkdir(parents=True, exist_ok=True)
    synthetic_root_text = str(out / "data" / f"synthetic-{Path(profile.name).stem}")
    synthetic_test_text = f"{synthetic_root_text}-test"
    real_root = str(Path(data_root).resolve()) if data_root else None
    # a real dataset is its own test root (a seeded, saved split of it); the synthetic cohort has its own
    context: dict[str, Any] = {
        "profile": profile_name, "overrides": ",".join(overrides),
        "data_root": real_root or synthetic_root_text, "test_root": real_root or synthetic_test_text,
        "synthetic_root": synthetic_root_text,
        "results_dir": str(out),
        "seed": profile.seed,
        "device": "auto",
    }
    run = _StudyRun(profile, root, out, executed_dir, load_state(out / STATE_FILE), force,
                    only_runs=None if runs is None else tuple(runs), jobs=jobs, threads=run_threads)
    # consecutive steps that need none of each other's results run together, ``jobs`` at a time
    synthetic = {"data_root": synthetic_root_text, "test_root": synthetic_test_text}

    def context_of(step: Step) -> dict[str, Any]:
        return {**context, **synthetic} if step.synthetic_only else context

    batch: list[tuple[Step, dict[str, Any]]] = []
    started_early: set[str] = set()  # steps that ran beside the training runs
    for step in STEPS:
        if step.name not in wanted or step.name in started_early:
            continue
        if step.instances is not None or any(dep in {s.name for s, _ in batch} for dep in step.depends_on):
            run.run_steps(batch)
            batch = []
        if step.instances is None:
            batch.append((step, context_of(step)))
        else:
            # the steps that read only runs go into the same pool, each once the runs it reads are trained
            riders = [(s, context_of(s)) for s in STEPS if s.name in wanted
                      and (s.after_runs is not None or s.depends_on == (step.name,))]
            run.run_instances(step, context_of(step), riders)
            started_early.update(s.name for s, _ in riders)
    run.run_steps(batch)
    run.progress(f"notebooks done; steps run now: {', '.join(run.timings) or 'none'}")
    if build_book:
        start = time.perf_counter()
        build_book_from(executed_dir, root / "book", out / VIEWER_DATA)
        run.timings["book"] = time.perf_counter() - start
        run.progress(f"book done in {run.timings['book']:.0f} s")
    return run.timings


def _check_request(profile_name: str, data_root: Path | None, steps: Sequence[str] | None, root: Path) -> list[str]:
    """The steps to run; raises for an unknown step, a missing dataset root or notebook."""
    known = {step.name for step in STEPS}
    wanted = list(steps) if steps is not None else [step.name for step in STEPS]
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise ConfigError(f"unknown study step(s) {unknown}; steps are {sorted(known)}")
    if data_root is not None and not Path(data_root).is_dir():
        raise ConfigError(f"dataset root {data_root} is not a folder: check --data")
    missing = [root / "notebooks" / f"{name}.ipynb" for name in wanted
               if not (root / "notebooks" / f"{name}.ipynb").is_file()]
    if missing:
        raise StudyError(
            f"notebook(s) {', '.join(str(p) for p in missing)} missing from the checkout: "
            "run the other steps with --steps"
        )
    return wanted


@dataclass
class _StudyRun:
    """One call of :func:`run_study`: where it writes, what it has run, and how long each step took."""

    profile: Profile
    root: Path
    out: Path
    executed_dir: Path
    state: dict[str, Any]
    force: bool
    only_runs: tuple[str, ...] | None = None  # train only these instances (None: all)
    jobs: int = 1  # training runs (and notebooks that need none of each other) at once
    threads: int | None = None  # torch threads of each (None: torch's default)
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    run_keys: dict[str, dict[str, str]] = field(default_factory=dict)  # training run -> {"key": its key now}
    expected: dict[str, str] = field(default_factory=dict)  # a step of runs -> its key once all are trained

    def progress(self, text: str) -> None:
        print(f"[study {time.perf_counter() - self.started:7.0f} s] {text}", flush=True)

    def _base_key(self, step: Step, source: Path) -> dict[str, Any]:
        upstream = [self.expected.get(dep) or self.state["steps"].get(dep, {}).get("key") for dep in step.depends_on]
        if step.after_runs is not None:  # the runs it reads, as trained now or recorded
            recorded = {**self.state["steps"].get(_TRAINED[0], {}).get("instances", {}), **self.run_keys}
            upstream += [recorded.get(name, {}).get("key") for name in step.after_runs(self.profile)]
        return {
            "notebook": sha256_of_files([source]),
            "source": notebook_source_hash(source),  # the package modules the notebook imports, followed
            "upstream": upstream,
        }

    def plan_step(self, step: Step, context: dict[str, Any]) -> Pending | None:
        """A one-notebook step to run, or None (said so) when its inputs are unchanged."""
        source = self.root / "notebooks" / f"{step.name}.ipynb"
        parameters = _step_parameters(pm.inspect_notebook(str(source)), context)
        key = content_hash({**self._base_key(step, source), "parameters": parameters})
        executed = self.executed_dir / f"{step.name}.ipynb"
        if not self.force and executed.is_file() and self.state["steps"].get(step.name, {}).get("key") == key:
            self.progress(f"{step.name}: inputs unchanged, skipped")
            return None
        return Pending(step.name, key, f"{step.name}: {step.title}", executed, parameters, source=source)

    def run_steps(self, steps: Sequence[tuple[Step, dict[str, Any]]]) -> None:
        """Run one-notebook steps that do not depend on each other, ``jobs`` at a time; skip those unchanged.

        With more than one job every step runs on ``threads`` threads, whatever runs beside it, so that a
        step rerun alone gives the numbers it gave among others.
        """
        pending = [job for job in (self.plan_step(step, context) for step, context in steps) if job is not None]
        run_pending(None, pending, self.step_finished, self.out, self.jobs, self.threads, self.progress,
                    what="notebooks")

    def step_finished(self, job: Pending, seconds: float) -> None:
        """Record a one-notebook step that ran (its key, seconds and end) and say so."""
        self.timings[job.name] = seconds
        self.state["steps"][job.name] = {"key": job.key, "seconds": round(seconds, 1), "finished": _now()}
        write_timings(self.out, self.state, STEPS)
        self.progress(f"{job.name}: done in {seconds:.0f} s")

    def run_instances(self, step: Step, context: dict[str, Any],
                      riders: Sequence[tuple[Step, dict[str, Any]]] = ()) -> None:
        """Run a step's notebook once per instance (training run) whose inputs changed, and each step of
        ``riders`` in the same pool once the runs it reads (``after_runs``, else all) are trained."""
        source = self.root / "notebooks" / f"{step.name}.ipynb"
        declared = pm.inspect_notebook(str(source))
        parameters = _step_parameters(declared, context)
        base = self._base_key(step, source)
        previous = self.state["steps"].get(step.name, {})
        instances = step.instances(self.profile)
        done = {**previous.get("instances", {}), **load_instance_records(self.executed_dir / step.name)}
        entry = {"key": None, "seconds": 0.0, "instances": done, "finished": previous.get("finished")}
        self.state["steps"][step.name] = entry
        ran = 0.0
        free = {k: v for k, v in parameters.items() if k not in ("profile", "overrides")}
        keys = [content_hash({**base, "parameters": {**free, **_instance_parameters(instance)},
                              "profile": _instance_profile(self.profile, instance)}) for instance in instances]
        pending: list[Pending] = []
        for number, (instance, key) in enumerate(zip(instances, keys), start=1):
            name = str(instance["name"])
            if self.only_runs is not None and name not in self.only_runs:
                continue
            own = {**parameters, **_step_parameters(declared, _instance_parameters(instance))}
            executed = self.executed_dir / step.name / f"{name}.ipynb"
            label = f"{step.name} [{number}/{len(instances)}] {name}"
            if not self.force and executed.is_file() and done.get(name, {}).get("key") == key:
                self.progress(f"{label}: inputs unchanged, skipped")
                continue
            pending.append(Pending(name, key, label, executed, own))
        if self.jobs > 1:  # volumetric runs first, so that no long run is left alone at the end
            variants = {str(i["name"]): str(i["variant"]) for i in instances}
            volumetric = {v: is_volumetric_variant(self.profile, v) for v in set(variants.values())}
            pending.sort(key=lambda job: not volumetric[variants[job.name]])
        self.run_keys.update({str(i["name"]): {"key": key} for i, key in zip(instances, keys)})
        self.expected[step.name] = content_hash(keys)
        training = [job.name for job in pending]
        for rider, rider_context in riders:  # after the runs, in their order: the first ready starts first
            job = self.plan_step(rider, rider_context)
            if job is not None:
                reads = training if rider.after_runs is None else rider.after_runs(self.profile)
                pending.append(dataclasses.replace(job, after=tuple(name for name in reads if name in training)))

        def finished(job: Pending, seconds: float) -> None:
            nonlocal ran
            if job.source is not None:  # a rider
                self.step_finished(job, seconds)
                return
            ran += seconds
            done[job.name] = {"key": job.key, "seconds": round(seconds, 1), "finished": _now()}
            # beside the executed copy too: jobs training runs at once each write their own record
            write_text_atomically(job.executed.with_suffix(RECORD_SUFFIX), json.dumps(done[job.name], sort_keys=True))
            entry["seconds"] = round(sum(done[i["name"]]["seconds"] for i in instances if i["name"] in done), 1)
            write_timings(self.out, self.state, STEPS)
            self.progress(f"{job.label}: done in {seconds:.0f} s")

        ridden = len(pending) - len(training)
        run_pending(source, pending, finished, self.out, self.jobs, self.threads, self.progress,
                    what=f"notebooks ({len(training)} training runs, then {ridden} that read them as they are "
                    "trained)" if ridden else "training runs")
        # complete (the analyses downstream may be skipped) only when every run holds its current key,
        # whether trained now, earlier, or one per job with --run
        complete = all(done.get(str(i["name"]), {}).get("key") == key for i, key in zip(instances, keys))
        entry["key"] = self.expected[step.name] if complete else None
        entry["seconds"] = round(sum(done[i["name"]]["seconds"] for i in instances if i["name"] in done), 1)
        if ran:
            entry["finished"] = _now()
            self.timings[step.name] = ran
        write_timings(self.out, self.state, STEPS)
        book_copy = book_instance(self.profile, instances)
        if book_copy is not None and (self.executed_dir / step.name / f"{book_copy}.ipynb").is_file():
            shutil.copy2(self.executed_dir / step.name / f"{book_copy}.ipynb", self.executed_dir / f"{step.name}.ipynb")

