"""The verdict table: each claim of Cho et al. (2026), the paper's figure, ours with its 95% CI, and a verdict.

Every analysis notebook (Tables 2-8, Fig. 4, the Grad-CAM figures, one look or
two) writes its claims (:mod:`cmbstudy.study.claims` makes them) to
``OUT/claims/<table>.json`` with :func:`write_claims`; the abstract reads them
all back with :func:`load_claims`. A claim is of one of two kinds,
and its verdict follows the rule of its kind (:data:`RULES`):

- an *ordering* ("A scores above B"): it replicates when our 95% intervals of A
  and B do not overlap and A is above, does not replicate when they do not
  overlap and A is below, and we cannot tell when they overlap;
- a *value* (the paper's figure itself): it replicates when the paper's figure
  lies inside our 95% interval and does not replicate when outside.

Either verdict is "cannot tell" when an interval is unknown (a run missing, a
metric undefined). An ordering against a method that detected nothing is
"cannot tell", and so is "ours above the best baseline" when the best baseline
trained is not the paper's comparator and ours is above it. The paper's figures come from :mod:`cmbstudy.study.paper`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import pandas as pd

from ..data.outputs import write_text_atomically
from ..formatting import as_float
from .tables.format import ABOVE, BELOW, ordering_verdict

__all__ = [
    "REPLICATES",
    "DOES_NOT_REPLICATE",
    "CANNOT_TELL",
    "ORDERING",
    "VALUE",
    "RULES",
    "CLAIM_FILES",
    "Claim",
    "value_verdict",
    "order_verdict",
    "write_claims",
    "load_claims",
    "verdict_table",
    "style_verdict_table",
    "count_verdicts",
    "find_claim",
    "make_abstract",
    "missing_claims_note",
]

REPLICATES, DOES_NOT_REPLICATE, CANNOT_TELL = "replicates", "does not replicate", "cannot tell"
ORDERING, VALUE = "ordering", "value"

#: The rule of each kind of claim, as the abstract states it above the table.
RULES: Mapping[str, str] = MappingProxyType({
    ORDERING: ("an ordering (A above B) replicates when our 95% intervals of A and B do not overlap and A is "
               "above; it does not replicate when they do not overlap and A is below; otherwise we cannot tell"),
    VALUE: ("a value replicates when the paper's figure lies inside our 95% interval, and does not replicate "
            "when it lies outside"),
})

#: The claim files in the order of the paper, by the notebook that writes them.
CLAIM_FILES: tuple[str, ...] = ("table2", "table3", "table4", "table5", "table6_fig4", "table7_8", "gradcam", "looks")

_SENSE = {ABOVE: REPLICATES, BELOW: DOES_NOT_REPLICATE}


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and our verdict on it.

    Attributes:
        source: where the paper makes it ("Table 2"); claim: the claim in words.
        kind: "ordering" or "value" (:data:`RULES`); metric: the metric compared.
        paper, ours: the two figures as printed (ours with its 95% interval).
        estimate, ci_low, ci_high: our number and its interval (NaN when unknown).
        verdict: :data:`REPLICATES`, :data:`DOES_NOT_REPLICATE` or :data:`CANNOT_TELL`; note: why, when not plain.
    """

    source: str
    claim: str
    kind: str
    metric: str
    paper: str
    ours: str
    estimate: float
    ci_low: float
    ci_high: float
    verdict: str
    note: str = ""


def value_verdict(paper_value: float, low: float, high: float) -> str:
    """:data:`REPLICATES` when ``low <= paper_value <= high``, :data:`DOES_NOT_REPLICATE` outside, else cannot tell."""
    if not all(math.isfinite(as_float(v)) for v in (paper_value, low, high)):
        return CANNOT_TELL
    return REPLICATES if low <= paper_value <= high else DOES_NOT_REPLICATE


def order_verdict(first: Mapping[str, float] | None, second: Mapping[str, float] | None, metric: str = "f1",
                  higher_is_better: bool = True) -> str:
    """The verdict on "``first`` is better than ``second`` on ``metric``" by :func:`ordering_verdict`."""
    found = ordering_verdict(first, second, metric)
    if not higher_is_better:
        found = {ABOVE: BELOW, BELOW: ABOVE}.get(found, found)
    return _SENSE.get(found, CANNOT_TELL)


def _claims_dir(results_dir: Path | str) -> Path:
    return Path(results_dir) / "claims"


def write_claims(results_dir: Path | str, name: str, claims: Sequence[Claim]) -> Path:
    """Write ``claims`` to ``results_dir/claims/<name>.json`` (replaced atomically); returns the path.

    Raises:
        ValueError: ``name`` is not one of :data:`CLAIM_FILES`.
    """
    if name not in CLAIM_FILES:
        raise ValueError(f"unknown claim file {name!r}; expected one of {', '.join(CLAIM_FILES)}")
    path = _claims_dir(results_dir) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(c).items()}
               for c in claims]
    write_text_atomically(path, json.dumps(records, indent=2))
    return path


def load_claims(results_dir: Path | str) -> tuple[list[Claim], list[str]]:
    """Every claim written under ``results_dir/claims`` in the paper's order, and the claim files missing."""
    claims, missing = [], []
    for name in CLAIM_FILES:
        path = _claims_dir(results_dir) / f"{name}.json"
        if not path.is_file():
            missing.append(name)
            continue
        for record in json.loads(path.read_text()):
            claims.append(Claim(**{k: (math.nan if v is None and k in ("estimate", "ci_low", "ci_high") else v)
                                   for k, v in record.items()}))
    return claims, missing


def verdict_table(claims: Sequence[Claim], dataset: str) -> pd.DataFrame:
    """The table the abstract prints: where, the claim, the paper's figure, ours with its interval, the verdict."""
    rows = [{"where": c.source, "claim": c.claim, "paper": c.paper, f"ours ({dataset}), 95% CI": c.ours,
             "verdict": c.verdict + (f" ({c.note})" if c.note else "")} for c in claims]
    return pd.DataFrame(rows, columns=["where", "claim", "paper", f"ours ({dataset}), 95% CI", "verdict"])


def style_verdict_table(table: pd.DataFrame) -> Any:
    """:func:`verdict_table` as the book shows it: no index, text escaped (its "<" are not tags)."""
    return table.style.hide(axis="index").format(escape="html")


def count_verdicts(claims: Sequence[Claim]) -> dict[str, int]:
    """How many claims replicate, do not replicate, and cannot be told."""
    return {verdict: sum(c.verdict == verdict for c in claims)
            for verdict in (REPLICATES, DOES_NOT_REPLICATE, CANNOT_TELL)}


def find_claim(claims: Sequence[Claim], source: str, metric: str | None = None) -> Claim | None:
    """The first claim made at ``source`` (on ``metric``, when given), or None."""
    return next((c for c in claims if c.source == source and metric in (None, c.metric)), None)


def make_abstract(claims: Sequence[Claim], profile: Any, training_data: str, test_data: str, n_test: int) -> str:
    """The abstract's text, every number from ``claims`` and the resolved ``profile``.

    Args:
        claims: :func:`load_claims`; profile: the resolved :class:`~cmbstudy.config.Profile` of the build.
        training_data, test_data: how the tables name the two datasets; n_test: test subjects.
    """
    counts = count_verdicts(claims)
    train = profile.train
    profile_name = Path(str(profile.name)).stem
    cv = find_claim(claims, "Table 3")
    headline = (f"Cross-validated, the network's test F1 is {cv.ours}, against the paper's {cv.paper} "
                f"on its own data ({cv.verdict}). ") if cv else ""
    return (
        "This study reimplements RLK-UNet with CBAM, a 2.5D U-Net with residual large-kernel blocks and "
        "attention on its skip connections for detecting cerebral microbleeds, and reruns the tables of its "
        f"paper on the {training_data} and the {test_data}: {n_test} subjects that no choice of a checkpoint, "
        f"a threshold or a setting has seen. The {profile_name} profile ran: {train.epochs} epochs per "
        f"training run, batch {train.batch_size}, a peak learning rate of {train.lr:g}, slices of "
        f"{profile.preprocess.size} × {profile.preprocess.size} voxels. {headline}"
        f"Of {len(claims)} {'claim' if len(claims) == 1 else 'claims'} of the paper, {counts[REPLICATES]} "
        f"{'replicates' if counts[REPLICATES] == 1 else 'replicate'} on this build, "
        f"{counts[DOES_NOT_REPLICATE]} {'does' if counts[DOES_NOT_REPLICATE] == 1 else 'do'} not, "
        f"and for {counts[CANNOT_TELL]} we cannot tell."
    )


def missing_claims_note(missing: Sequence[str]) -> str:
    """Markdown naming the claim files :func:`load_claims` did not find ("" when none is missing)."""
    if not missing:
        return ""
    return f"**Claims not computed** (the notebooks that write them did not run): {', '.join(missing)}."
