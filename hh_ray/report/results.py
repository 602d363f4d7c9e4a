"""Typed results of the paper's analyses, as the analysis modules write them and `report.md` reads them.

Each is a dataclass stored as JSON under `<run>/analysis/<name>.json` (`RESULT_FILES`), with its PNG beside it.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path

from hh_ray.algo.elo import EloRatings
from hh_ray.files import write_text_atomic


@dataclass
class BestOfN:
    """Best-of-n from the initial policy: kept by the train PM, scored by both PMs, per n (prefixes of max n)."""

    ns: list[int]
    kl: list[float]  # log n - (n - 1) / n, nats
    train_pm: list[float]  # mean over prompts of the kept sample's train-PM score
    train_pm_se: list[float]
    test_pm: list[float] | None  # the same kept samples scored by the held-out PM (None without one)
    test_pm_se: list[float] | None
    prompts: int
    policy: str
    train_scorer: str
    test_scorer: str | None
    temperature: float
    max_new_tokens: int


@dataclass
class TradeoffPoint:
    label: str
    helpful: float
    harmless: float
    helpful_se: float
    harmless_se: float
    helpful_pairs: int = 0
    harmless_pairs: int = 0


@dataclass
class Tradeoff:
    """Models in the helpful/harmless plane; `baselines` name -> [helpful, harmless] (NaN: not on that axis)."""

    metric: str  # what both axes measure, e.g. "PM accuracy on held-out comparisons"
    points: list[TradeoffPoint]
    baselines: dict[str, list[float]]
    above_all_baselines: list[str]  # labels above every baseline on both axes at once (point estimates)
    notes: str = ""
    clearly_above_all: list[str] = dataclasses.field(default_factory=list)  # ... by more than 2 standard errors


@dataclass
class PolicyTradeoff(Tradeoff):
    """Policies (not PMs) in the helpful/harmless plane: mean PM score per subset; stored in a file of its own."""


@dataclass
class TaskScore:
    task: str
    metric: str
    before: float
    before_se: float
    after: float
    after_se: float
    samples: int


@dataclass
class AlignmentTax:
    """Zero-shot accuracy of the policy before and after RLHF (lm-evaluation-harness)."""

    before_model: str
    after_model: str
    tasks: list[TaskScore]
    limit: int | None
    num_fewshot: int


@dataclass
class OOD:
    """Mahalanobis OOD detection of harmful requests: fit on in-distribution prompts, AUROC on held-out ones."""

    model: str
    layer: int
    pooling: str
    shrinkage: float
    in_subset: str
    ood_subset: str
    fit_prompts: int
    auroc: float
    test_in: list[float]  # distances of held-out in-distribution prompts
    test_ood: list[float]  # distances of held-out out-of-distribution prompts
    auroc_se: float = float("nan")  # Hanley & McNeil
    layers: list[int] = dataclasses.field(default_factory=list)  # a sweep: `layer` won on the validation split
    val_prompts: int = 0  # per side
    val_auroc: list[float] = dataclasses.field(default_factory=list)  # per layer
    test_auroc: list[float] = dataclasses.field(default_factory=list)  # per layer


@dataclass
class InitialPolicies:
    """Candidate initial policies (labels[0] is the run's), one sample per held-out prompt each with the same
    prompts and seeds, scored by both PMs; differences from labels[0] are paired by prompt."""

    labels: list[str]
    policies: list[str]
    prompts: int
    train_pm: list[float]
    train_pm_se: list[float]
    test_pm: list[float] | None
    test_pm_se: list[float] | None
    vs_first: list[float]  # mean paired difference from labels[0], by the test PM where there is one
    vs_first_se: list[float]
    response_tokens: list[float]


@dataclass(frozen=True)
class Elo(EloRatings):
    """Elo per policy version from all comparisons between versions (Bradley-Terry, see hh_ray.algo.elo)."""

    versions: list[int]

    @classmethod
    def from_ratings(cls, r: EloRatings) -> "Elo":
        """The stored form of hh_ray.algo.elo.elo_ratings' answer (versions 0..n-1)."""
        return cls(**dataclasses.asdict(r), versions=list(range(len(r.elo))))


RESULT_FILES = {BestOfN: "bon", InitialPolicies: "initial_policies", Tradeoff: "tradeoff",
                PolicyTradeoff: "tradeoff_policies", AlignmentTax: "alignment_tax", OOD: "ood", Elo: "elo"}


def result_path(run_dir: str | Path, cls: type) -> Path:
    return Path(run_dir) / "analysis" / f"{RESULT_FILES[cls]}.json"


def write_result(obj, path: str | Path) -> Path:
    """JSON of a result dataclass, written atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(dataclasses.asdict(obj), indent=1))


def _build(tp, value):
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = set(value) - names
        if unknown:
            raise ValueError(f"{tp.__name__}: unknown fields {sorted(unknown)}")
        return tp(**{k: _build(hints[k], v) for k, v in value.items()})
    if typing.get_origin(tp) is list and value is not None:
        (inner,) = typing.get_args(tp)
        return [_build(inner, v) for v in value]
    return value


def read_result(cls: type, path: str | Path):
    """The result dataclass stored at `path`, or None when the file is absent."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return _build(cls, json.loads(p.read_text()))
    except (TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: not a valid {cls.__name__} result: {e}") from e
