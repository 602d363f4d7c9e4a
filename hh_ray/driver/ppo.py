"""`hh-ray ppo`: RL against the PM with reward r_PM - lambda_KL * KL(policy || initial policy).

`ppo_step` below is the whole algorithm; every model lives in a worker group and the driver only moves token
ids, texts and small per-token tensors (one typed `Experience`) between them:

    generate (vLLM) -> old logprobs + reference logprobs + PM scores + critic values (concurrently)
    -> per-token KL, rewards, advantages -> clipped-surrogate epochs (policy and critic concurrently)
    -> weight sync trainer rank 0 -> engines (`RolloutGroup.ensure`, the one place weights move)

`ppo.algorithm` picks the spec (`hh_ray.algo.algorithms`): PPO (GAE, a critic) or GRPO (group-relative
advantages, no critic). The loop asks the spec for its trainer roles and estimator and assumes neither.
"""

from __future__ import annotations

import json
import random
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from ray.exceptions import RayActorError

from hh_ray.algo.advantages import AdvantageConfig, compute_advantages
from hh_ray.algo.algorithms import ALGORITHMS
from hh_ray.algo.analysis import paired_gap
from hh_ray.algo.batch import Experience, PolicyBatch, SequenceBatch, ValueBatch, batch_size, minibatches, select
from hh_ray.algo.ppo import KLController, kl_k1, kl_penalty, logprob_gap, pad_ragged
from hh_ray.config import JobConfig, PPOConfig, train_dtype
from hh_ray.data import DataError, load_train_holdout, unique_prompts
from hh_ray.data.tokenize import load_tokenizer, truncate_prompt
from hh_ray.driver import stop
from hh_ray.driver.cluster import connect
from hh_ray.driver.pm import TEST_PM, require_pm
from hh_ray.driver.resume import ResumeError, last_complete
from hh_ray.driver.runlog import RunLog, read_metrics, write_json_atomic
from hh_ray.driver.sft import batches, starting_policy
from hh_ray.models.objectives import PolicyObjective, TokenLogprobs, TokenValues, ValueObjective
from hh_ray.ops.autoscale import RolloutAutoscaler
from hh_ray.ops.metrics import PPOMetrics
from hh_ray.ops.storage import check_shared_folder
from hh_ray.workers.reference import ReferenceGroup
from hh_ray.workers.rollout import NoEnginesError, RolloutGroup, Sampling
from hh_ray.workers.scorer import ScorerGroup
from hh_ray.workers.trainer import TrainerGroup


class Timer:
    """`with timer("phase"):` records that phase's seconds as `time/phase`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        yield
        self.seconds[f"time/{phase}"] = time.perf_counter() - t0


@dataclass
class Prompts:
    ids: list[list[int]]
    texts: list[str]

    def take(self, idx: list[int]) -> "Prompts":
        return Prompts([self.ids[i] for i in idx], [self.texts[i] for i in idx])


@dataclass
class PPOWorkers:
    """The actor groups of a PPO run, each in its own placement group (the rollout pool owns the weight sync).

    `policy_version` is the version the policy trainers hold (PPO updates since the start); the engines' version
    is the pool's, and `RolloutGroup.ensure` brings it up to this one.
    """

    rollout: RolloutGroup
    reference: ReferenceGroup
    scorer: ScorerGroup
    policy: TrainerGroup
    critic: TrainerGroup | None  # None: the algorithm trains without one (GRPO)
    autoscaler: RolloutAutoscaler | None = None
    test_scorer: ScorerGroup | None = None  # the held-out test PM (pm.test_split): evaluation only
    policy_version: int = 0

    @classmethod
    def start(cls, cfg: JobConfig, policy_path: str, pm_path: str) -> "PPOWorkers":
        """Start every group; if one cannot start, the ones already up are torn down before the error rises."""
        p, dtype = cfg.ppo, train_dtype(cfg.model)
        max_len = cfg.data.max_prompt_tokens + p.rollout.max_new_tokens + 8
        started: list = []

        def up(group):
            started.append(group)
            return group

        try:
            # largest groups first (workers.placement.ppo_group_placements): whole-node trainer groups claim their
            # nodes before single-GPU groups scatter over them
            policy, critic = start_trainers(cfg, policy_path, up)
            pl = p.placement
            reference = up(ReferenceGroup(policy_path, cpus=pl.reference_cpus, gpus=pl.reference_gpus, dtype=dtype,
                                          node_resource=pl.reference_node_resource))
            scorer_kw = dict(cpus=pl.scorer_cpus, gpus=pl.scorer_gpus, dtype=dtype,
                             node_resource=pl.scorer_node_resource, fmt=cfg.data.format)
            scorer = up(ScorerGroup(p.reward.scorer, pm_path, policy_path, cfg.pm.max_tokens, **scorer_kw))
            test_pm = str(Path(cfg.run_dir) / TEST_PM)
            test_scorer = (up(ScorerGroup("pm", test_pm, policy_path, cfg.pm.max_tokens, name="test-pm-scorer",
                                          **scorer_kw))
                           if p.reward.scorer == "pm" and cfg.pm.test_split else None)
            rollout = up(RolloutGroup(policy_path, p.rollout, max_len, cfg.seed, dtype=dtype))
        except BaseException:
            for g in started:
                g.shutdown()
            raise
        r = p.rollout
        autoscaler = (RolloutAutoscaler(rollout, r.min_engines, r.max_engines, r.backlog_per_engine,
                                        r.latency_threshold_s, r.scale_down_idle_s)
                      if r.max_engines > r.min_engines else None)
        return cls(rollout, reference, scorer, policy, critic, autoscaler, test_scorer)

    def restart_trainers(self, cfg: JobConfig, policy_path: str) -> None:
        """Replace the trainer groups (after a rank died) and rejoin the new rank 0 to the engines."""
        for g in self.trainers().values():
            g.shutdown()
        self.policy, self.critic = start_trainers(cfg, policy_path, lambda g: g)
        self.rollout.connect(self.policy)

    def trainers(self) -> dict[str, TrainerGroup]:
        """The trainer groups by role (`AlgorithmSpec.roles`): what a step trains and a checkpoint saves."""
        return {"policy": self.policy} | ({"critic": self.critic} if self.critic else {})

    def groups(self) -> dict:
        return ({"rollout": self.rollout, "reference": self.reference, "scorer": self.scorer} | self.trainers()
                | ({"test_scorer": self.test_scorer} if self.test_scorer else {}))

    def ready_engines(self, pending_prompts: int, last_generate_s: float = 0.0):
        """Replace dead engines and give every engine the trainers' policy (so call it only while they are idle),
        then size the pool for the coming batch (engines it adds get the same weights before they serve).
        Returns the stats of the push, or None when every engine held the trainers' version already."""
        sync = self.rollout.ensure(self.policy_version)
        if self.autoscaler:
            self.autoscaler.adjust(pending_prompts, last_generate_s)
        return sync

    def peak_memory_mb(self) -> dict[str, dict[str, float]]:
        """Per group, the largest peak resident (and GPU) memory of any one of its actors."""
        return {name: g.peak_memory_mb() for name, g in self.groups().items()}

    def shutdown(self) -> None:
        for g in self.groups().values():
            g.shutdown()


def start_trainers(cfg: JobConfig, policy_path: str, up) -> tuple[TrainerGroup, TrainerGroup | None]:
    """The policy trainer group, and the critic's when the algorithm needs one."""
    p, dtype = cfg.ppo, train_dtype(cfg.model)
    policy = up(TrainerGroup("policy-trainer", policy_path, "causal_lm", p.policy_trainer, cfg.seed, dtype))
    critic = (up(TrainerGroup("critic-trainer", policy_path, "value", p.critic_trainer, cfg.seed, dtype))
              if ALGORITHMS[p.algorithm].needs_critic else None)
    return policy, critic


def sample_seeds(seed: int, step: int, count: int, n: int) -> list[int]:
    """Per-prompt vLLM seeds; spaced by n because an engine seeds sample j of a request with seed + j."""
    base = (seed * 100_003 + step) * 1_000_000
    return [base + i * n for i in range(count)]


def generate(w: PPOWorkers, prompts: Prompts, sampling: Sampling, seeds: list[int], recover: bool = True) -> Experience:
    """Samples for every prompt; if every engine dies, new ones get the engines' weights and the batch reruns
    (`recover`: only while the trainers are idle and hold the engines' version, never from the async prefetch)."""
    for attempt in range(3):
        try:
            samples = w.rollout.generate(prompts.ids, sampling, seeds)
            break
        except NoEnginesError:
            if attempt == 2 or not recover:
                raise
            print("[ppo] every rollout engine died; starting new ones", file=sys.stderr, flush=True)
            w.rollout.ensure()  # new engines, given the version the pool serves
    owner = [i // sampling.n for i in range(len(samples))]
    return Experience(prompt=[prompts.ids[i] for i in owner], response=[s.response for s in samples],
                      prompt_text=[prompts.texts[i] for i in owner], response_text=[s.text for s in samples],
                      finish=[s.finish for s in samples], behaviour_logprobs=[s.logprobs for s in samples],
                      version=w.rollout.version)


def make_experience(w: PPOWorkers, exp: Experience, ppo_cfg: PPOConfig, with_values: bool = True) -> None:
    """Old logprobs (trainer), reference logprobs, PM scores and values (with a critic) of the samples, all at once."""
    seqs, temperature, pack = exp.view(SequenceBatch), ppo_cfg.rollout.temperature, ppo_cfg.pack_tokens
    old = (w.policy.forward_async(seqs, TokenLogprobs(temperature, pack)) if ppo_cfg.algo.old_logprobs == "trainer"
           else None)
    ref = w.reference.logprobs_async(seqs, temperature, pack)
    scores = w.scorer.score_async(exp.prompt_text, exp.response_text, exp.response)
    values = w.critic.forward_async(seqs, TokenValues(pack)) if with_values and w.critic else None
    exp.old_logprobs = old() if old else exp.behaviour_logprobs
    exp.ref_logprobs = ref()
    exp.scores = scores()
    exp.old_values = values() if values else []


def ppo_update(w: PPOWorkers, exp: Experience, ppo_cfg: PPOConfig, temperature: float, rng: random.Random,
               decoupled: bool = False) -> dict:
    """`epochs` passes over the batch, each in `minibatches` steps over every sample; every trainer role (policy,
    and critic when there is one) side by side, each on its objective.
    `decoupled`: the batch is from an older policy than the trainer's old logprobs (`behaviour_weights`)."""
    algo = ppo_cfg.algo
    objectives = {"policy": (PolicyBatch, PolicyObjective(algo.clip_ratio, algo.entropy_coef, temperature,
                                                          ppo_cfg.pack_tokens, decoupled)),
                  "critic": (ValueBatch, ValueObjective(algo.value_clip, algo.value_coef, ppo_cfg.pack_tokens))}
    trainers = w.trainers()
    totals: dict[str, float] = {}
    steps = 0
    for _ in range(algo.epochs):
        for idx in minibatches(batch_size(exp), algo.minibatches, rng):
            mb = select(exp, idx)
            waits = {role: g.train_async(mb.view(objectives[role][0]), objectives[role][1])
                     for role, g in trainers.items()}
            for role, result in waits.items():
                for k, v in objectives[role][1].metrics(result()).items():
                    totals[k] = totals.get(k, 0.0) + v
            steps += 1
    return {k: v / steps for k, v in totals.items()}


class Rollouts:
    """Where each step's batch comes from: generated when asked for (sync), or during the previous step while
    the trainers trained (`ppo.async_rollout`), by the policy the engines held then: one version behind."""

    def __init__(self, w: PPOWorkers, prompts: Prompts, cfg: JobConfig):
        self.w, self.prompts, self.cfg = w, prompts, cfg
        r = cfg.ppo.rollout
        self.sampling = Sampling(r.temperature, r.top_p, r.max_new_tokens, r.samples_per_prompt)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="rollout") if cfg.ppo.async_rollout else None
        self.pending: tuple[int, Future] | None = None
        self.last_generate_s = 0.0

    def _generate(self, step: int, recover: bool = True) -> Experience:
        t0 = time.perf_counter()
        per_step, seed = self.cfg.ppo.prompts_per_step, self.cfg.seed
        batch = self.prompts.take(batches(len(self.prompts.ids), per_step, seed, step - 1))
        seeds = sample_seeds(seed, step, len(batch.ids), self.sampling.n)
        exp = generate(self.w, batch, self.sampling, seeds, recover)
        self.last_generate_s = time.perf_counter() - t0
        return exp

    def ready(self):
        """Engines sized for a step's batch and holding the trainers' policy. Only on the driver's thread at a step
        boundary, while the trainers are idle and nothing is generating, so that no engine ever receives weights
        from the middle of an update. Returns the push's stats (None: no push)."""
        return self.w.ready_engines(self.cfg.ppo.prompts_per_step * self.sampling.n, self.last_generate_s)

    def take(self, step: int) -> Experience:
        """Step `step`'s batch: the prefetched one if there is one, else generated now by the trainers' policy."""
        if self.pending and self.pending[0] == step:
            future, self.pending = self.pending[1], None
            try:
                return future.result()
            except NoEnginesError:  # every engine died while generating ahead: this batch is regenerated (lag 0)
                print("[ppo] every rollout engine died generating ahead; regenerating the batch with the current "
                      "policy", file=sys.stderr, flush=True)
        self.ready()
        return self._generate(step)

    def prefetch(self, step: int) -> None:
        """Start generating step `step`'s batch in the background with the weights the engines hold now."""
        if step <= self.cfg.ppo.steps:
            self.pending = (step, self.pool.submit(self._generate, step, False))

    def settle(self) -> None:
        """Wait for a batch being generated ahead (its errors stay with it for `take`): the engines may then change
        weights, e.g. for an evaluation, without the batch mixing two versions."""
        if self.pending:
            wait([self.pending[1]])

    @property
    def queue_depth(self) -> int:
        """Async: samples queued or in generation for the coming step. Sync: the step's samples beyond what the
        engine pool is sized for (`backlog_per_engine` each), the backlog autoscaling reacts to."""
        samples = self.cfg.ppo.prompts_per_step * self.sampling.n
        if self.pool:
            return samples if self.pending and not self.pending[1].done() else 0
        return max(0, samples - len(self.w.rollout.engines) * self.cfg.ppo.rollout.backlog_per_engine)

    def close(self) -> None:
        if self.pool:
            if self.pending:
                self.pending[1].cancel()
            self.pool.shutdown(wait=True)


def advantage_config(p: PPOConfig) -> AdvantageConfig:
    """The advantage settings of `ppo` config `p`: its algorithm's estimator, a group per prompt's samples."""
    return AdvantageConfig(ALGORITHMS[p.algorithm].estimator, p.reward.kl_estimator, p.algo.gamma, p.algo.lam,
                           p.algo.whiten_advantages, p.reward.truncation_penalty, p.rollout.samples_per_prompt)


def ppo_step(w: PPOWorkers, step: int, rollouts: Rollouts, cfg: JobConfig, kl_ctl, rng: random.Random) -> dict:
    """One PPO step: generate, experience, advantages, update, sync. Returns the step's metrics.

    The trainers hold `w.policy_version` when the step starts and one more when it ends. Async: the engines are
    given the trainers' version as soon as this step's batch is out of them, and generate the next batch with it
    while the trainers train.
    """
    p, timer = cfg.ppo, Timer()
    with timer("generate"):
        exp = rollouts.take(step)
    if p.async_rollout:
        with timer("sync"):
            sync = rollouts.ready()
        rollouts.prefetch(step + 1)
    with timer("experience"):
        make_experience(w, exp, p)
    lag = w.policy_version - exp.version
    stale = lag != 0  # generated by an older policy than the trainers hold (async)
    with timer("advantages"):
        stats = compute_advantages(exp, kl_ctl.coef, advantage_config(p), stale)
    with timer("train"):
        stats |= ppo_update(w, exp, p, p.rollout.temperature, rng, decoupled=stale and p.algo.old_logprobs == "trainer")
    w.policy_version += 1
    if not p.async_rollout:
        with timer("sync"):
            sync = w.rollout.ensure(w.policy_version)
    stats["objective/kl_coef"] = kl_ctl.coef
    kl_ctl.update(stats["objective/kl"], batch_size(exp))
    if p.algo.old_logprobs == "trainer":
        stats["rollout/logprob_gap_mean"], stats["rollout/logprob_gap_max"] = logprob_gap(
            exp.behaviour_logprobs, exp.old_logprobs)
    step_s = sum(timer.seconds.values())
    return stats | timer.seconds | {
        "time/step": step_s, "perf/samples": batch_size(exp), "perf/samples_per_s": batch_size(exp) / step_s,
        "rollout/tokens_per_s": sum(map(len, exp.response)) / max(rollouts.last_generate_s, 1e-9),
        "rollout/engines": len(w.rollout.engines), "rollout/policy_lag": lag,
        "rollout/queue_depth": rollouts.queue_depth,
        "sync/bytes": sync.bytes if sync else 0, "sync/load_seconds": sync.load_seconds if sync else 0.0,
    }


def evaluate(w: PPOWorkers, prompts: Prompts, cfg: JobConfig) -> tuple[dict, list[dict]]:
    """Held-out PM score and KL (the training estimator, and k1) of the trainers' policy (so the engines get it
    first: in async mode they hold one version behind), one sample per prompt with fixed seeds."""
    r = cfg.ppo.rollout
    sampling = Sampling(r.temperature, r.top_p, r.max_new_tokens, 1)
    w.rollout.ensure(w.policy_version)
    exp = generate(w, prompts, sampling, sample_seeds(cfg.seed, 10**6, len(prompts.ids), 1))
    test = w.test_scorer.score_async(exp.prompt_text, exp.response_text, exp.response) if w.test_scorer else None
    make_experience(w, exp, cfg.ppo, with_values=False)
    (old, mask), (ref, _) = pad_ragged(exp.old_logprobs), pad_ragged(exp.ref_logprobs)
    samples = [{"prompt": p, "response": t, "pm_score": s}
               for p, t, s in zip(exp.prompt_text, exp.response_text, exp.scores)]
    out = {"eval/pm_score": float(torch.tensor(exp.scores).mean()),
           "eval/kl": float((kl_penalty(old, ref, cfg.ppo.reward.kl_estimator) * mask).sum(1).mean()),
           "eval/kl_k1": float((kl_k1(old, ref) * mask).sum(1).mean()),
           "eval/response_length": float(mask.sum(1).mean()), "eval/policy_version": exp.version}
    if test:
        test_scores = test()
        out["eval/test_pm_score"] = float(torch.tensor(test_scores).mean())
        out["eval/pm_gap"], out["eval/pm_gap_se"] = paired_gap(exp.scores, test_scores)
        for s, t in zip(samples, test_scores):
            s["test_pm_score"] = t
    return out, samples


@dataclass
class PPOSetup:
    """What a PPO run needs before its first step: model paths, encoded prompts, the KL controller."""

    policy_path: str
    pm_path: str
    train: Prompts
    held_out: Prompts
    kl_ctl: KLController

    @classmethod
    def prepare(cls, cfg: JobConfig) -> "PPOSetup":
        """Checks first (PM, data), then the policy: bad input fails before anything is built."""
        p, run_dir = cfg.ppo, Path(cfg.run_dir)
        pm_path = p.reward.pm_checkpoint or str(run_dir / "pm")
        if p.reward.scorer == "pm":
            if not (Path(pm_path) / "config.json").is_file():
                raise FileNotFoundError(f"no PM at {pm_path}; run `hh-ray pm` first or set ppo.reward.pm_checkpoint")
            require_pm(Path(pm_path), need_stats=True)
            if cfg.pm.test_split:
                require_pm(run_dir / TEST_PM, need_stats=True)
        train, held, _ = load_train_holdout(cfg.data, cfg.seed)
        train_texts, held_texts = unique_prompts(train), unique_prompts(held)[: p.eval_prompts]
        if not held_texts:
            raise DataError("no held-out prompts to evaluate PPO on (data.holdout_fraction="
                            f"{cfg.data.holdout_fraction} left none); set data.holdout_fraction > 0, e.g. 0.1")
        policy_path = starting_policy(cfg)
        tok = load_tokenizer(policy_path, cfg.data.format)
        def encode(texts):
            return Prompts([truncate_prompt(tok, t, cfg.data.max_prompt_tokens) for t in texts], texts)
        kl_ctl = KLController(p.reward.kl_coef, p.reward.adaptive_kl_target, p.reward.adaptive_kl_horizon)
        return cls(policy_path, pm_path, encode(train_texts), encode(held_texts), kl_ctl)


def state_file(ckpt: Path, tag: str) -> Path:
    return ckpt / f"state-{tag}.json"


def resume_point(ckpt: Path, fresh: bool, algorithm: str = "ppo") -> dict | None:
    """The driver state of the newest step whose checkpoints of every trainer role of `algorithm` are intact, or
    None (`driver/resume.py`'s rule). Checkpoints of another algorithm stop the run (a state without the key is
    PPO's, from before there was a choice)."""
    states = sorted(ckpt.glob("state-*.json"), key=lambda f: json.loads(f.read_text())["step"], reverse=True)
    written_by = json.loads(states[0].read_text()).get("algorithm", "ppo") if states and not fresh else algorithm
    if written_by != algorithm:
        raise ResumeError(f"{ckpt} holds checkpoints of ppo.algorithm={written_by}, not {algorithm}; rerun with that "
                          f"algorithm, or with --fresh (or fresh=true) to start over")
    tag = last_complete(ckpt, fresh, ALGORITHMS[algorithm].roles, "PPO checkpoints",
                        named=lambda t: state_file(ckpt, t).is_file(), saved_state=tuple(states))
    return json.loads(state_file(ckpt, tag).read_text()) if tag else None


def resume(w: PPOWorkers, ckpt: Path, state: dict | None, kl_ctl) -> int:
    """Load a saved step's trainers (every role) and KL controller; returns that step (0 when there is none), the
    trainers' policy version from then on."""
    w.policy_version = state["step"] if state else 0
    if state is None:
        return 0
    for role, group in w.trainers().items():
        group.load_checkpoint(str(ckpt / role), state["tag"])
    kl_ctl.load_state_dict(state["kl_controller"])
    print(f"[ppo] resumed from {ckpt} at step {state['step']}")
    return state["step"]


def save_state(w: PPOWorkers, ckpt: Path, step: int, kl_ctl, algorithm: str) -> None:
    """Every trainer role's checkpoint under one tag, then the driver state naming it (written last)."""
    tag = f"step{step}"
    for role, group in w.trainers().items():
        group.save_checkpoint(str(ckpt / role), tag, {"step": step})
    write_json_atomic(state_file(ckpt, tag), {"step": step, "tag": tag, "algorithm": algorithm,
                                              "kl_controller": kl_ctl.state_dict()})


def run_ppo(cfg: JobConfig) -> dict:
    """Run (or resume) PPO, or the algorithm `ppo.algorithm` names; returns the before/after held-out evaluation."""
    p, run_dir = cfg.ppo, Path(cfg.run_dir)
    out, ckpt = run_dir / "ppo", run_dir / "checkpoints" / "ppo"
    out.mkdir(parents=True, exist_ok=True)
    resume_state = resume_point(ckpt, cfg.fresh, p.algorithm)  # a file check: refuses before any cluster starts
    if resume_state:
        read_metrics(out / "metrics.jsonl")  # so is a log damaged before its last line (DamagedFileError)
    setup = PPOSetup.prepare(cfg)
    connect(cfg.ray, cfg.run_dir)
    t_start = time.perf_counter()
    w = PPOWorkers.start(cfg, setup.policy_path, setup.pm_path)
    try:
        if cfg.ray.check_shared_storage:  # now that autoscaled nodes are up: every rank writes checkpoint shards here
            check_shared_folder(run_dir)
        w.rollout.connect(w.policy, p.sync.bucket_mb * 2**20, p.sync.timeout_s)
        start = resume(w, ckpt, resume_state, setup.kl_ctl)
        w.rollout.ensure(w.policy_version)
        print(f"[ppo] {len(setup.train.ids)} train prompts, {len(setup.held_out.ids)} held-out prompts; groups up in "
              f"{time.perf_counter() - t_start:.0f}s")
        if start == 0:
            before, samples = evaluate(w, setup.held_out, cfg)
            write_json_atomic(out / "samples_before.json", samples)
            write_json_atomic(out / "eval_before.json", before)
            print(f"[ppo] before: held-out PM score {before['eval/pm_score']:.3f}")
        log = RunLog(out, "ppo", p.steps, 1, resume_step=start, logging_cfg=cfg.logging, run_name=cfg.name)
        dashboard = PPOMetrics(cfg.name)
        rng, step, failures = random.Random(cfg.seed), start, 0
        kl_at_start = setup.kl_ctl.state_dict()
        rollouts = Rollouts(w, setup.train, cfg)
        saved = start
        while step < p.steps:
            if stop.requested():  # a signal: checkpoint the last finished step as the periodic checkpoint does
                if step > saved:
                    save_state(w, ckpt, step, setup.kl_ctl, p.algorithm)
                rollouts.close()
                stop.stop_after_step("PPO", step, p.steps, ckpt)
            rng.seed(cfg.seed * 7919 + step + 1)
            try:
                metrics = ppo_step(w, step + 1, rollouts, cfg, setup.kl_ctl, rng)
            except RayActorError as exc:  # a trainer rank died: the trainer groups restart from the last checkpoint
                failures += 1
                if failures > p.max_failures:
                    raise
                print(f"[ppo] step {step + 1}: a trainer died ({type(exc).__name__}); failure {failures} of "
                      f"{p.max_failures} allowed, restarting the trainer groups from the last checkpoint",
                      file=sys.stderr, flush=True)
                rollouts.close()  # a batch prefetched by the old policy is dropped; the resumed step regenerates
                w.restart_trainers(cfg, setup.policy_path)
                rollouts = Rollouts(w, setup.train, cfg)
                state = resume_point(ckpt, fresh=False, algorithm=p.algorithm)
                if state is None:  # no checkpoint yet: the new trainers start from the initial weights
                    setup.kl_ctl.load_state_dict(kl_at_start)
                step = saved = resume(w, ckpt, state, setup.kl_ctl)
                w.rollout.ensure(w.policy_version)
                log.truncate(step)
                continue
            step += 1
            if p.eval_every and step % p.eval_every == 0 and step < p.steps:
                rollouts.settle()
                metrics |= evaluate(w, setup.held_out, cfg)[0]
            log.log(step, metrics, show=("objective/pm_score", "objective/kl", "objective/reward", "policy/entropy",
                                         "rollout/logprob_gap_mean", "perf/samples_per_s"))
            dashboard.record(metrics)
            if (p.checkpoint_every and step % p.checkpoint_every == 0) or step == p.steps:
                save_state(w, ckpt, step, setup.kl_ctl, p.algorithm)
                saved = step
        log.close()
        rollouts.close()
        after, samples = evaluate(w, setup.held_out, cfg)
        write_json_atomic(out / "samples_after.json", samples)
        write_json_atomic(out / "eval_after.json", after)
        write_json_atomic(out / "memory.json", w.peak_memory_mb())
        w.policy.export_hf(str(out / "policy"))
    finally:
        w.shutdown()
    before = json.loads((out / "eval_before.json").read_text())
    print(f"[ppo] after: held-out PM score {after['eval/pm_score']:.3f} (before {before['eval/pm_score']:.3f}); "
          f"{len(read_metrics(out / 'metrics.jsonl'))} steps in {out / 'metrics.jsonl'}")
    return {"before": before, "after": after}
