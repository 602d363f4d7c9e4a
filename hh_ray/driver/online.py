"""`hh-ray online`: iterated online RLHF, round after round.

    round 0: policy v0 = an SFT policy, PM0 on static HH (trained here, or taken from `init_run`)
    round k: deploy policy k in a labeling campaign (against the best earlier version, or two samples of itself)
             -> labelers (people or simulated, over HTTP) until N comparisons or the deadline -> export
             -> retrain the PM on static HH + every online comparison so far -> PPO from policy k -> policy k+1
    at the end: the judge's head-to-head of every version against v0, Elo of every version, report.md

Run folder:
    sft/ pm/                     round 0 (unless init_run)    judge/pm/   the simulated labelers' judge
    label/label.db               every comparison of every round (the store)
    rounds/<k>/online/           round k's comparisons in HH layout (+ collected.json when complete)
    rounds/<k>/pm/ ppo/ sft->    the retrained PM, PPO (its checkpoints under rounds/<k>/checkpoints), policy k
    rounds/<k>/round.json        the round's results, written last (a finished round is skipped on resume)
    h2h/online/                  the head-to-head comparisons;  online.json, online_elo.png, report.md

Every step is either finished (its marker file exists) or resumed: collection continues from the store's
counts per labeler account, PM and PPO from their checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hh_ray.config import ConfigError, ExtraData, JobConfig, load_section
from hh_ray.config import validate as validate_job
from hh_ray.driver import stop
from hh_ray.files import write_text_atomic
from hh_ray.label.config import HELPFUL, RED_TEAM, CampaignConfig, LabelConfig, ServerConfig, SourceConfig
from hh_ray.label.config import validate as validate_label
from hh_ray.label.export import export_records
from hh_ray.label.simulated import (
    HELPFUL_PROMPTS,
    RED_TEAM_PROMPTS,
    LabelerSpec,
    held_out_dialogues,
    run_labelers,
)
from hh_ray.report.online import OnlineSummary, RoundResult, ratings, write_summary

COLLECTED = "collected.json"


@dataclass
class Collected:
    """A finished collection, kept as its marker file: comparisons per mode, whether every quota was met (else the
    deadline stopped it), its seconds, and the ids of the stored comparisons it exported."""

    comparisons: dict[str, int]
    finished: bool
    seconds: float
    ids: list[int]


@dataclass
class LabelersConfig:
    """The simulated labelers: how many per round, how they talk and how noisily they judge."""

    helpful: int = 2  # labeler processes per round in the helpfulness campaign
    red_team: int = 0  # ... in the red-team campaign (harmless-base prompts, the more harmful answer picked)
    turns: int = 2  # human turns per conversation at most (the HH dialogue's own next turns)
    temperature: float = 1.0  # Bradley-Terry noise on the judge's score gap
    strength_thresholds: list[float] = field(default_factory=lambda: [0.5, 1.5])  # gap/T for strength 2, 3
    judge_pm: str = ""  # a PM folder; "" = train one on judge_subsets into <run_dir>/judge/pm
    judge_subsets: list[str] = field(default_factory=lambda: ["helpful-online", "helpful-rejection-sampled"])
    dialogues: int = 400  # held-out HH dialogues per prompt subset the labelers draw their turns from


@dataclass
class OnlineConfig:
    """`hh-ray online`: the rounds, the labeling campaigns and the SFT/PM/PPO job each round runs."""

    name: str = "online"
    run_dir: str = "runs/online"
    init_run: str = ""  # a run folder with sft/ and pm/ to start from; "" = train them here on static HH
    rounds: int = 2
    comparisons_per_round: int = 48  # N, over all of a round's labelers
    deadline_s: float = 0.0  # per round's collection; 0 = until N
    opponent: str = "best"  # "best": policy k vs the best earlier version by Elo; "self": two samples of policy k
    online_weight: float = 1.0  # multiplier on the online comparisons' count in the PM's training data
    pm_init: str = "scratch"  # "scratch": each round's PM starts from the SFT backbone; "warm": from the last PM
    head_to_head: int = 24  # judge comparisons of every version against v0 at the end (0 = none)
    elo_bootstraps: int = 200
    elo_confidence: float = 0.9
    job: JobConfig = field(default_factory=JobConfig)  # data, model, sft, pm, ppo, ray (its run_dir is ignored)
    source: SourceConfig = field(default_factory=SourceConfig)  # every version's deployment (name/model set here)
    server: ServerConfig = field(default_factory=ServerConfig)
    database_url: str = ""  # "" = SQLite in <run_dir>/label/label.db
    labelers: LabelersConfig = field(default_factory=LabelersConfig)


def validate(cfg: OnlineConfig) -> None:
    validate_job(cfg.job)
    lab = cfg.labelers
    checks = [
        (cfg.rounds >= 1, f"rounds: must be >= 1, got {cfg.rounds}"),
        (cfg.comparisons_per_round >= 1, "comparisons_per_round: must be >= 1"),
        (cfg.opponent in ("best", "self"), f"opponent: expected 'best' or 'self', got '{cfg.opponent}'"),
        (cfg.pm_init in ("scratch", "warm"), f"pm_init: expected 'scratch' or 'warm', got '{cfg.pm_init}'"),
        (cfg.online_weight >= 0 and cfg.deadline_s >= 0 and cfg.head_to_head >= 0,
         "online_weight, deadline_s and head_to_head must be >= 0"),
        (lab.helpful + lab.red_team >= 1 or cfg.deadline_s > 0,
         "labelers: with no simulated labelers (people only) set deadline_s > 0, so a round cannot wait forever"),
        (lab.helpful >= 0 and lab.red_team >= 0 and lab.turns >= 1, "labelers: counts >= 0 and turns >= 1"),
        (lab.temperature > 0, f"labelers.temperature: must be > 0, got {lab.temperature}"),
        (len(lab.strength_thresholds) == 2 and 0 < lab.strength_thresholds[0] <= lab.strength_thresholds[1],
         "labelers.strength_thresholds: two increasing positive numbers"),
        (cfg.job.data.holdout_fraction > 0, "job.data.holdout_fraction: must be > 0 (labelers use held-out prompts)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    if not lab.judge_pm:
        shared = set(lab.judge_subsets) & set(cfg.job.data.subsets)
        if shared:
            raise ConfigError(f"labelers.judge_subsets share {sorted(shared)} with job.data.subsets: the judge must be "
                              "trained on data the policy's PM never sees (or give labelers.judge_pm)")


def load_online_config(path=None, overrides=()) -> OnlineConfig:
    cfg = load_section(OnlineConfig, path, overrides)
    validate(cfg)
    return cfg


class OnlineRun:
    """The paths and steps of one online run folder."""

    def __init__(self, cfg: OnlineConfig):
        self.cfg = cfg
        self.dir = Path(cfg.run_dir).resolve()
        init = Path(cfg.init_run).resolve() if cfg.init_run else self.dir
        self.base_sft, self.base_pm = init / "sft", init / "pm"

    def round_dir(self, k: int) -> Path:
        return self.dir / "rounds" / str(k)

    def policy(self, version: int) -> Path:
        return self.base_sft if version == 0 else self.round_dir(version - 1) / "ppo" / "policy"

    def pm(self, k: int) -> Path:
        return self.base_pm if k < 0 else self.round_dir(k) / "pm"

    def job(self, run_dir: Path, name: str) -> JobConfig:
        job = copy.deepcopy(self.cfg.job)
        job.run_dir, job.name, job.fresh = str(run_dir), f"{self.cfg.name}-{name}", False
        return job

    def label_config(self, versions: list[int], campaigns: list[CampaignConfig]) -> LabelConfig:
        sources = [dataclasses.replace(self.cfg.source, name=f"v{v}", model=str(self.policy(v)), version=v)
                   for v in versions]
        label = LabelConfig(name=f"{self.cfg.name}-label", dir=str(self.dir / "label"),
                            database_url=self.cfg.database_url, sources=sources, campaigns=campaigns,
                            server=self.cfg.server, ray=self.cfg.job.ray, test_fraction=0.0)
        validate_label(label)
        return label


# ---- round 0 and the judge ---------------------------------------------------------------------------------
def prepare_base(run: OnlineRun) -> None:
    """Round 0's SFT policy and static-HH PM (skipped when present), and the judge PM."""
    from hh_ray.driver.pm import run_pm
    from hh_ray.driver.sft import run_sft

    cfg = run.cfg
    if cfg.init_run:
        for p in (run.base_sft, run.base_pm):
            if not (p / "config.json").is_file():
                raise FileNotFoundError(f"init_run: no model at {p} (needs sft/ and pm/ of an hh-ray run)")
    else:
        job = run.job(run.dir, "base")
        if not (run.base_sft / "config.json").is_file():
            run_sft(job)
        if not (run.base_pm / "pm_eval.json").is_file():
            job.pm.backbone = str(run.base_sft)
            run_pm(job)
    if not cfg.labelers.judge_pm and not (run.dir / "judge" / "pm" / "pm_eval.json").is_file():
        job = run.job(run.dir / "judge", "judge")
        job.data.subsets, job.data.subset_weights = list(cfg.labelers.judge_subsets), {}
        job.pm.backbone = str(run.base_sft)
        print(f"[online] training the labelers' judge PM on {job.data.subsets} (never seen by the policy's PMs)")
        run_pm(job)


def judge_path(run: OnlineRun) -> str:
    return run.cfg.labelers.judge_pm or str(run.dir / "judge" / "pm")


# ---- collection ----------------------------------------------------------------------------------------------
@dataclass
class Assignment:
    """One labeler account's work: a campaign, red team or not, and how many comparisons it ends with."""

    name: str
    campaign: str
    red_team: bool
    quota: int
    turns: int


def split_quota(total: int, n: int) -> list[int]:
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def collect(run: OnlineRun, out_dir: Path, versions: list[int], campaigns: list[CampaignConfig],
            work: list[Assignment], seed: int, evaluation: bool = False) -> Collected:
    """Deploy the versions, let the labelers work to their quotas (or the deadline), export; returns the marker.

    The held-out dialogues are split in two: rounds draw from the first half (their comparisons then train PMs
    and their prompts PPO), the final head-to-head (`evaluation`) from the second, which no model has seen."""
    from hh_ray.label.auth import create_user, hash_password, new_password
    from hh_ray.label.serve import start_service, stop_service
    from hh_ray.label.store import LABELER

    marker = out_dir / COLLECTED
    if marker.is_file():
        return Collected(**json.loads(marker.read_text()))
    cfg, data = run.cfg, run.cfg.job.data
    label_cfg = run.label_config(versions, campaigns)
    names = [c.name for c in campaigns]
    dialogues = {}
    for red in sorted({a.red_team for a in work}):
        every = held_out_dialogues(data.data_dir, RED_TEAM_PROMPTS if red else HELPFUL_PROMPTS,
                                   data.holdout_fraction, cfg.labelers.dialogues, data.split)
        half = max(1, len(every) // 2)
        dialogues[red] = (every[half:] or every) if evaluation else every[:half]
    service = start_service(label_cfg)
    try:
        store = service.store
        specs = []
        lab = cfg.labelers
        for i, a in enumerate(work):  # a fresh password per start: a rerun logs the same accounts in again
            found = store.user_credentials(a.name)
            if found is None:
                _, password = create_user(store, a.name, LABELER, one_time=False)  # never leaves the driver
            else:
                password = new_password()
                store.set_password_hash(found[0].id, hash_password(password))
            specs.append(LabelerSpec(
                name=a.name, password=password, url=service.url, campaign=a.campaign, quota=a.quota,
                judge_pm=judge_path(run), dialogues=dialogues[a.red_team], red_team=a.red_team, turns=a.turns,
                temperature=lab.temperature, thresholds=tuple(lab.strength_thresholds), seed=seed * 1000 + i,
                judge_max_tokens=cfg.job.pm.max_tokens, work_dir=str(out_dir), parent_pid=os.getpid()))
        out_dir.mkdir(parents=True, exist_ok=True)
        target = sum(a.quota for a in work) or cfg.comparisons_per_round
        def count():
            return sum(1 for r in store.comparisons() if r.campaign in names)

        shown = {"n": -1, "t": 0.0}

        def progress(n: int, total: int, elapsed: float) -> None:  # on news, else every 30 s
            if n != shown["n"] or elapsed - shown["t"] >= 30:
                shown.update(n=n, t=elapsed)
                print(f"[online] {out_dir.parent.name}/{out_dir.name}: {n}/{total} comparisons, {elapsed:.0f}s",
                      flush=True)

        result = run_labelers(specs, count, target, cfg.deadline_s, progress=progress, should_stop=stop.requested)
        records = [r for r in store.comparisons() if r.campaign in names]
        if stop.requested():
            stop.stop(f"during the collection into {out_dir}: {len(records)} of {target} comparisons are in the "
                      f"store, which a rerun continues from")
        if not result.finished and not (cfg.deadline_s and result.seconds > cfg.deadline_s):
            raise RuntimeError(f"a simulated labeler failed (exit codes {result.exit_codes}); "
                               f"{len(records)} of {target} comparisons are stored, rerun to continue")
    finally:
        stop_service(service)
    export_records(records, out_dir, test_fraction=0.0)
    modes: dict[str, int] = {}
    for r in records:
        modes[r.mode] = modes.get(r.mode, 0) + 1
    summary = Collected(modes, result.finished, result.seconds, [r.id for r in records])
    write_text_atomic(marker, json.dumps(dataclasses.asdict(summary)))
    return summary


def best_version(run: OnlineRun, below: int) -> int:
    """The best of versions 0..below-1 by Elo over the comparisons stored so far (the newest when there are none)."""
    from hh_ray.algo.elo import elo_ratings
    from hh_ray.algo.labeler import version_games
    from hh_ray.label.store import Store

    if below <= 1:
        return 0
    store = Store(run.label_config([0], [CampaignConfig("probe", HELPFUL, ["v0", "v0"])]).db_url)
    try:
        games = version_games([(r.version_a, r.version_b, r.chosen == r.response_a) for r in store.comparisons()
                               if r.version_a < below and r.version_b < below])
    finally:
        store.dispose()
    if not games:
        return below - 1
    elo = elo_ratings(games, below).elo
    return max(range(below), key=lambda v: (elo[v], v))


def round_work(cfg: OnlineConfig, k: int, opponent: int) -> tuple[list[CampaignConfig], list[Assignment]]:
    """Round k's campaigns (people label in r<k>-helpful too) and the simulated labelers' shares of N."""
    lab = cfg.labelers
    n = lab.helpful + lab.red_team
    quotas = split_quota(cfg.comparisons_per_round, n) if n else []
    campaigns, work = [CampaignConfig(f"r{k}-helpful", HELPFUL, [f"v{k}", f"v{opponent}"])], []
    if lab.red_team:
        campaigns.append(CampaignConfig(f"r{k}-redteam", RED_TEAM, [f"v{k}", f"v{k}"]))
    for i in range(n):
        red = i >= lab.helpful
        work.append(Assignment(f"sim-r{k}-{'t' if red else 'h'}{i}", f"r{k}-{'redteam' if red else 'helpful'}",
                               red, quotas[i], lab.turns))
    return campaigns, [w for w in work if w.quota > 0]


# ---- PM, PPO and evaluation of one round ----------------------------------------------------------------------
def retrain_pm(run: OnlineRun, k: int) -> JobConfig:
    """Round k's job: static HH plus rounds 0..k's online comparisons; the PM trained (or resumed) in rounds/k."""
    from hh_ray.driver.pm import run_pm

    rd = run.round_dir(k)
    job = run.job(rd, f"r{k}")
    job.data.extra = [ExtraData(str(run.round_dir(j) / "online"), run.cfg.online_weight) for j in range(k + 1)]
    job.pm.backbone = str(run.base_sft if run.cfg.pm_init == "scratch" else run.pm(k - 1))
    if not (rd / "pm" / "pm_eval.json").is_file():
        run_pm(job)
    return job


def ppo_round(run: OnlineRun, k: int, job: JobConfig) -> None:
    """PPO from policy k (rounds/k/sft links to it; the KL reference is policy k) against round k's PM."""
    from hh_ray.driver.ppo import run_ppo

    rd = run.round_dir(k)
    link = rd / "sft"
    if not link.exists():
        tmp = rd / ".sft.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run.policy(k), target_is_directory=True)
        os.replace(tmp, link)
    if not ((rd / "ppo" / "policy" / "config.json").is_file() and (rd / "ppo" / "eval_after.json").is_file()):
        run_ppo(job)


def pm_accuracy(pm: Path, folder: Path, max_tokens: int) -> tuple[float, int]:
    """A saved PM's accuracy on every comparison in an HH-layout folder (the driver's CPU; small sets only);
    (nan, 0) when the folder holds none."""
    from hh_ray.data.hh import DataError
    from hh_ray.driver.pm import score_folder

    try:
        _, _, scores = score_folder(pm, folder, max_tokens)
    except DataError:
        return float("nan"), 0
    return sum(c > r for c, r in scores) / len(scores), len(scores)


def round_result(run: OnlineRun, k: int, opponent: int, collected: Collected) -> RoundResult:
    rd = run.round_dir(k)
    pm_eval = json.loads((rd / "pm" / "pm_eval.json").read_text())
    before = json.loads((rd / "ppo" / "eval_before.json").read_text())
    after = json.loads((rd / "ppo" / "eval_after.json").read_text())
    samples = json.loads((rd / "ppo" / "samples_after.json").read_text())[:3]
    return RoundResult(round=k, policy_version=k, opponent_version=opponent, comparisons=collected.comparisons,
                       collection_finished=collected.finished, collection_s=collected.seconds,
                       pm_train_pairs=pm_eval.get("train_pairs", 0), pm_static_accuracy=pm_eval["accuracy"],
                       ppo_score_before=before["eval/pm_score"], ppo_score_after=after["eval/pm_score"],
                       samples=samples)


def run_round(run: OnlineRun, k: int) -> RoundResult:
    rd = run.round_dir(k)
    done = rd / "round.json"
    if done.is_file():
        return RoundResult(**json.loads(done.read_text()))
    rd.mkdir(parents=True, exist_ok=True)
    cfg = run.cfg
    opponent = k if cfg.opponent == "self" else best_version(run, k) if k else 0
    campaigns, work = round_work(cfg, k, opponent)
    print(f"== online round {k}: policy v{k} vs v{opponent}, {cfg.comparisons_per_round} comparisons ==", flush=True)
    collected = collect(run, rd / "online", sorted({k, opponent}), campaigns, work, cfg.job.seed + k)
    job = retrain_pm(run, k)
    ppo_round(run, k, job)
    result = round_result(run, k, opponent, collected)
    write_text_atomic(done, json.dumps(result.__dict__))
    return result


# ---- the whole run ----------------------------------------------------------------------------------------------
def head_to_head(run: OnlineRun) -> Path:
    """The judge's labelers compare every version against v0 on held-out prompts (one turn each)."""
    cfg, K = run.cfg, run.cfg.rounds
    campaigns = [CampaignConfig(f"h2h-v{v}", HELPFUL, [f"v{v}", "v0"]) for v in range(1, K + 1)]
    work = [Assignment(f"sim-h2h-v{v}", f"h2h-v{v}", False, cfg.head_to_head, 1) for v in range(1, K + 1)]
    out = run.dir / "h2h" / "online"
    print(f"== online head-to-head: v1..v{K} vs v0, {cfg.head_to_head} comparisons each ==", flush=True)
    collect(run, out, list(range(K + 1)), campaigns, work, cfg.job.seed + 10_000, evaluation=True)
    return out


def elo_of(run: OnlineRun, keep) -> object:
    from hh_ray.algo.elo import elo_ratings
    from hh_ray.algo.labeler import version_games
    from hh_ray.label.store import Store

    store = Store(run.label_config([0], [CampaignConfig("probe", HELPFUL, ["v0", "v0"])]).db_url)
    try:
        games = version_games([(r.version_a, r.version_b, r.chosen == r.response_a) for r in store.comparisons()
                               if keep(r.campaign)])
    finally:
        store.dispose()
    if not games:
        return None
    return elo_ratings(games, run.cfg.rounds + 1, bootstraps=run.cfg.elo_bootstraps,
                       confidence=run.cfg.elo_confidence, seed=run.cfg.job.seed)


def run_online(cfg: OnlineConfig) -> OnlineSummary:
    from hh_ray.config import dump_config
    from hh_ray.driver.cluster import connect
    from hh_ray.report import plots
    from hh_ray.report.report import write_report
    from hh_ray.report.results import Elo, result_path, write_result

    run = OnlineRun(cfg)
    run.dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run.dir / "online-config.yaml")
    connect(cfg.job.ray, run.dir)
    prepare_base(run)
    results = [run_round(run, k) for k in range(cfg.rounds)]
    h2h = head_to_head(run) if cfg.head_to_head else None
    for k, r in enumerate(results):  # PM k on the comparisons that came after it (round k+1, else the head-to-head)
        fresh = run.round_dir(k + 1) / "online" if k + 1 < cfg.rounds else h2h
        if fresh is not None:
            r.pm_next_accuracy, r.pm_next_pairs = pm_accuracy(run.pm(k), fresh, cfg.job.pm.max_tokens)
    summary = OnlineSummary(rounds=results, pm_init=cfg.pm_init, opponent=cfg.opponent,
                            online_weight=cfg.online_weight, confidence=cfg.elo_confidence,
                            bootstraps=cfg.elo_bootstraps)
    every = elo_of(run, lambda campaign: True)
    if every is not None:
        summary.elo_all = ratings(every)
        write_result(Elo.from_ratings(every), result_path(run.dir, Elo))
    duel = elo_of(run, lambda campaign: campaign.startswith("h2h-")) if h2h else None
    if duel is not None:
        summary.elo_head_to_head = ratings(duel)
        plots.elo_by_round(list(range(cfg.rounds + 1)), duel.elo, duel.lo, duel.hi, run.dir / "online_elo.png",
                           title="Judge Elo of each policy version vs v0")
    write_summary(summary, run.dir)
    report = write_report(run.dir)
    for r in summary.elo_head_to_head:
        print(f"[online] v{r.version}: Elo vs v0 {r.elo:+.0f} [{r.lo:+.0f}, {r.hi:+.0f}] ({r.games} games)")
    print(f"[online] done; report: {report}", file=sys.stderr)
    return summary
