"""`hh-ray ppo`: PPO against the PM with reward r_PM - lambda_KL * KL(policy || initial policy).

The loop below is the whole algorithm; every model lives in a worker group and the driver only moves
token ids, texts and small per-token tensors between them:

    generate (vLLM) -> reference logprobs + PM scores + critic values (concurrently)
    -> per-token KL and rewards -> GAE, whitening -> PPO epochs (policy and critic concurrently)
    -> weight sync trainer rank 0 -> engines -> metrics, checkpoint, evaluation
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import ray
import torch

from hh_ray.algo.ppo import (
    AdaptiveKLController, FixedKLController, gae, kl_penalty, masked_mean, pad_ragged, token_rewards, whiten,
)
from hh_ray.data import load_train_holdout, unique_prompts
from hh_ray.data.tokenize import load_tokenizer, truncate_prompt
from hh_ray.driver.cluster import connect
from hh_ray.driver.runlog import RunLog, read_metrics, write_json_atomic
from hh_ray.driver.sft import batches, initial_policy
from hh_ray.ops.autoscale import RolloutAutoscaler
from hh_ray.ops.metrics import PPOMetrics
from hh_ray.ops.storage import check_shared_folder
from hh_ray.workers.reference import ReferenceGroup
from hh_ray.workers.rollout import RolloutGroup, Sampling, connect_weight_sync, sync_weights
from hh_ray.workers.scorer import ScorerGroup
from hh_ray.workers.trainer import TrainerGroup

BUCKET_BYTES = 32 * 2**20
STATE = "state.json"


@dataclass
class PPOWorkers:
    """The five actor groups of a PPO run, each in its own placement group."""

    rollout: RolloutGroup
    reference: ReferenceGroup
    scorer: ScorerGroup
    policy: TrainerGroup
    critic: TrainerGroup

    @classmethod
    def start(cls, cfg, policy_path: str, pm_path: str) -> "PPOWorkers":
        p = cfg.ppo
        max_len = cfg.data.max_prompt_tokens + p.rollout.max_new_tokens + 8
        # largest groups first (workers.placement.ppo_group_placements): whole-node trainer groups claim their
        # nodes before single-GPU groups scatter over them
        return cls(
            policy=TrainerGroup("policy-trainer", policy_path, "causal_lm", p.policy_trainer, cfg.seed),
            critic=TrainerGroup("critic-trainer", policy_path, "value", p.critic_trainer, cfg.seed),
            reference=ReferenceGroup(policy_path, cpus=p.reference_cpus, gpus=p.reference_gpus,
                                     node_resource=p.reference_node_resource),
            scorer=ScorerGroup(p.scorer, pm_path, policy_path, cpus=p.scorer_cpus, gpus=p.scorer_gpus,
                               max_tokens=cfg.pm.max_tokens, node_resource=p.scorer_node_resource),
            rollout=RolloutGroup(policy_path, p.rollout, max_len, cfg.seed),
        )

    def groups(self) -> dict:
        return {"rollout": self.rollout, "reference": self.reference, "scorer": self.scorer, "policy": self.policy,
                "critic": self.critic}

    def peak_memory_mb(self) -> dict[str, dict[str, float]]:
        """Per group, the largest peak resident (and GPU) memory of any one of its actors."""
        return {name: g.peak_memory_mb() for name, g in self.groups().items()}

    def shutdown(self) -> None:
        for g in self.groups().values():
            g.shutdown()


def _rows(x: torch.Tensor, lengths: list[int]) -> list[list[float]]:
    return [row[:n].tolist() for row, n in zip(x, lengths)]


def sample_seeds(seed: int, step: int, count: int, n: int) -> list[int]:
    """Per-prompt vLLM seeds; spaced by n because an engine seeds sample j of a request with seed + j."""
    base = (seed * 100_003 + step) * 1_000_000
    return [base + i * n for i in range(count)]


def collect(w: PPOWorkers, prompts: list[list[int]], prompt_texts: list[str], sampling: Sampling, seeds: list[int],
            timing: dict, with_values: bool = True) -> dict:
    """Generate, then ask reference, scorer (and critic) about the samples, all at once."""
    t0 = time.perf_counter()
    samples = w.rollout.generate(prompts, sampling, seeds)
    timing["generate"] = time.perf_counter() - t0
    n = sampling.n
    batch = {
        "prompt": [prompts[i // n] for i in range(len(samples))],
        "response": [s["response"] for s in samples],
        "old_logprobs": [s["logprobs"] for s in samples],
    }
    texts = [prompt_texts[i // n] for i in range(len(samples))]
    responses_text = [s["text"] for s in samples]
    t1 = time.perf_counter()
    ref_refs = w.reference.logprobs_async(batch["prompt"], batch["response"], sampling.temperature)
    score_refs = w.scorer.score_async(texts, responses_text, batch["response"])
    value_refs = w.critic.infer_async("values", batch["prompt"], batch["response"]) if with_values else []
    batch["ref_logprobs"] = [row for part in ray.get(ref_refs) for row in part]
    timing["reference"] = time.perf_counter() - t1
    batch["score"] = [s for part in ray.get(score_refs) for s in part]
    timing["score"] = time.perf_counter() - t1
    if with_values:
        batch["old_values"] = [row for part in ray.get(value_refs) for row in part]
        timing["values"] = time.perf_counter() - t1
    batch["prompt_text"], batch["response_text"] = texts, responses_text
    batch["finish"] = [s["finish"] for s in samples]
    return batch


def advantages(batch: dict, ppo_cfg, kl_coef: float) -> dict:
    """Per-token KL, rewards (r_PM on the last token, -kl_coef * KL on all), GAE and whitening."""
    lengths = [len(r) for r in batch["response"]]
    (old, mask), (ref, _) = pad_ragged(batch["old_logprobs"]), pad_ragged(batch["ref_logprobs"])
    kl = kl_penalty(old, ref, ppo_cfg.kl_estimator) * mask
    score = torch.tensor(batch["score"], dtype=torch.float32)
    rewards = token_rewards(score, kl, kl_coef, mask)
    values, _ = pad_ragged(batch["old_values"])
    adv, returns = gae(rewards, values, mask, ppo_cfg.gamma, ppo_cfg.lam)
    if ppo_cfg.whiten_advantages:
        adv = whiten(adv, mask)
    return {
        "advantages": _rows(adv, lengths),
        "returns": _rows(returns, lengths),
        "stats": {
            "kl": float((kl.sum(1)).mean()),  # per-sample KL(policy || reference), summed over tokens
            "reward": float(rewards.sum(1).mean()),
            "pm_score": float(score.mean()),
            "response_length": float(mask.sum(1).mean()),
            "value_mean": float(masked_mean(values, mask)),
        },
    }


def ppo_update(w: PPOWorkers, batch: dict, ppo_cfg, temperature: float, rng: random.Random) -> dict:
    """`epochs` passes over the batch in `minibatches` steps; policy and critic train side by side."""
    n = len(batch["response"])
    keys_p = ("prompt", "response", "old_logprobs", "advantages")
    keys_v = ("prompt", "response", "old_values", "returns")
    hyper_p = {"clip_ratio": ppo_cfg.clip_ratio, "entropy_coef": ppo_cfg.entropy_coef, "temperature": temperature}
    hyper_v = {"value_clip": ppo_cfg.value_clip, "value_coef": ppo_cfg.value_coef}
    totals: dict[str, float] = {}
    for _ in range(ppo_cfg.epochs):
        order = list(range(n))
        rng.shuffle(order)
        size = n // ppo_cfg.minibatches
        for m in range(ppo_cfg.minibatches):
            idx = order[m * size:(m + 1) * size]
            pol = w.policy.train_async({k: [batch[k][i] for i in idx] for k in keys_p}, "policy", hyper_p)
            val = w.critic.train_async({k: [batch[k][i] for i in idx] for k in keys_v}, "value", hyper_v)
            p, v = pol(), val()
            for k, x in (("policy_loss", p["loss"]), ("value_loss", v["loss"]),
                         ("clipfrac", p["clipped_tokens"] / p["units"]), ("approx_kl", p["approx_kl_sum"] / p["units"]),
                         ("entropy", p["entropy_sum"] / p["units"])):
                totals[k] = totals.get(k, 0.0) + x
    steps = ppo_cfg.epochs * ppo_cfg.minibatches
    return {k: v / steps for k, v in totals.items()}


def evaluate(w: PPOWorkers, prompts, prompt_texts, sampling: Sampling, seed: int) -> tuple[dict, list[dict]]:
    """Mean PM score and KL on held-out prompts, one sample each with fixed seeds (comparable across steps)."""
    timing: dict = {}
    one = dataclasses.replace(sampling, n=1)
    b = collect(w, prompts, prompt_texts, one, sample_seeds(seed, 10**6, len(prompts), 1), timing, with_values=False)
    lengths = [len(r) for r in b["response"]]
    (old, mask), (ref, _) = pad_ragged(b["old_logprobs"]), pad_ragged(b["ref_logprobs"])
    kl = (kl_penalty(old, ref, "k1") * mask).sum(1)
    samples = [{"prompt": p, "response": r, "pm_score": s} for p, r, s in
               zip(b["prompt_text"], b["response_text"], b["score"])]
    return {"eval_pm_score": float(torch.tensor(b["score"]).mean()), "eval_kl": float(kl.mean()),
            "eval_response_length": float(sum(lengths) / len(lengths))}, samples


def run_ppo(cfg) -> dict:
    """Run (or resume) PPO; returns the before/after evaluation."""
    p = cfg.ppo
    run_dir = Path(cfg.run_dir)
    out = run_dir / "ppo"
    out.mkdir(parents=True, exist_ok=True)
    sft = run_dir / "sft"
    policy_path = str(sft) if (sft / "config.json").is_file() else initial_policy(cfg)
    pm_path = p.pm_checkpoint or str(run_dir / "pm")
    if p.scorer == "pm" and not (Path(pm_path) / "config.json").is_file():
        raise FileNotFoundError(f"no PM at {pm_path}; run `hh-ray pm` first or set ppo.pm_checkpoint")
    tok = load_tokenizer(policy_path)
    train, held, _ = load_train_holdout(cfg.data, cfg.seed)
    train_prompts, eval_prompts = unique_prompts(train), unique_prompts(held)[: p.eval_prompts]
    if not eval_prompts:
        eval_prompts = unique_prompts(train)[-p.eval_prompts:]
    encode = lambda texts: [truncate_prompt(tok, t, cfg.data.max_prompt_tokens) for t in texts]
    train_ids, eval_ids = encode(train_prompts), encode(eval_prompts)
    sampling = Sampling(p.rollout.temperature, p.rollout.top_p, p.rollout.max_new_tokens, p.rollout.samples_per_prompt)
    kl_ctl = (AdaptiveKLController(p.kl_coef, p.adaptive_kl_target, p.adaptive_kl_horizon)
              if p.adaptive_kl_target > 0 else FixedKLController(p.kl_coef))

    connect(cfg.ray)
    t_start = time.perf_counter()
    w = PPOWorkers.start(cfg, policy_path, pm_path)
    if cfg.ray.check_shared_storage:  # now that autoscaled nodes are up: every rank writes checkpoint shards here
        check_shared_folder(run_dir)
    connect_weight_sync(w.policy, w.rollout)
    metas = w.policy.weight_metas()
    ckpt = run_dir / "checkpoints" / "ppo"
    state = json.loads((ckpt / STATE).read_text()) if (ckpt / STATE).is_file() else None
    start = 0
    if state:
        w.policy.load_checkpoint(str(ckpt / "policy"), state["tag"])
        w.critic.load_checkpoint(str(ckpt / "critic"), state["tag"])
        kl_ctl.load_state_dict(state["kl_controller"])
        start = state["step"]
        sync_weights(w.policy, w.rollout, start, BUCKET_BYTES, metas)
        print(f"[ppo] resumed from {ckpt} at step {start}")
    print(f"[ppo] {len(train_prompts)} train prompts, {len(eval_ids)} held-out prompts; groups up in "
          f"{time.perf_counter() - t_start:.0f}s")
    log = RunLog(out, "ppo", p.steps, 1, fresh=start == 0)
    dashboard = PPOMetrics(cfg.name)
    r = p.rollout
    autoscaler = (RolloutAutoscaler(w.rollout, w.policy, r.min_engines, r.max_engines, r.backlog_per_engine,
                                    r.latency_threshold_s, r.scale_down_idle_s, BUCKET_BYTES)
                  if r.max_engines > r.min_engines else None)
    last_generate_s = 0.0
    evals = {}
    if start == 0:
        evals["before"], samples = evaluate(w, eval_ids, eval_prompts, sampling, cfg.seed)
        (out / "samples_before.json").write_text(json.dumps(samples, indent=1))
        write_json_atomic(out / "eval_before.json", evals["before"])
        print(f"[ppo] before: held-out PM score {evals['before']['eval_pm_score']:.3f}")
    rng = random.Random(cfg.seed)
    for step in range(start + 1, p.steps + 1):
        t0 = time.perf_counter()
        rng.seed(cfg.seed * 7919 + step)
        idx = batches(len(train_ids), p.prompts_per_step, cfg.seed, step - 1)
        timing: dict = {}
        if autoscaler:
            autoscaler.adjust(len(idx) * sampling.n, last_generate_s)
        batch = collect(w, [train_ids[i] for i in idx], [train_prompts[i] for i in idx], sampling,
                        sample_seeds(cfg.seed, step, len(idx), sampling.n), timing)
        adv = advantages(batch, p, kl_ctl.coef)
        batch |= {"advantages": adv["advantages"], "returns": adv["returns"]}
        t1 = time.perf_counter()
        train_stats = ppo_update(w, batch, p, sampling.temperature, rng)
        timing["train"] = time.perf_counter() - t1
        sync = sync_weights(w.policy, w.rollout, step, BUCKET_BYTES, metas)
        timing["sync"] = sync["sync_seconds"]
        kl_coef_used = kl_ctl.coef
        kl_ctl.update(adv["stats"]["kl"], len(batch["response"]))
        step_s = time.perf_counter() - t0
        gen_tokens = sum(len(r) for r in batch["response"])
        phases = {f"sec_{k}": v for k, v in timing.items()}
        phases["sec_driver"] = step_s - timing["generate"] - max(timing["score"], timing.get("values", 0.0)) \
            - timing["train"] - timing["sync"]
        metrics = adv["stats"] | train_stats | phases | {
            "kl_coef": kl_coef_used, "sec_step": step_s, "samples": len(batch["response"]),
            "samples_per_s": len(batch["response"]) / step_s, "tokens_per_s": gen_tokens / timing["generate"],
            "sync_bytes": sync["sync_bytes"], "engines": len(w.rollout.engines),
        }
        if p.eval_every and step % p.eval_every == 0 and step < p.steps:
            metrics |= evaluate(w, eval_ids, eval_prompts, sampling, cfg.seed)[0]
        log.log(step, metrics, show=("pm_score", "kl", "reward", "entropy", "samples_per_s"))
        # backlog: the step's prompts beyond what the current pool is sized for (what autoscaling reacts to)
        backlog = max(0, len(idx) * sampling.n - len(w.rollout.engines) * r.backlog_per_engine)
        dashboard.record(metrics, engines=len(w.rollout.engines), queue_depth=backlog)
        last_generate_s = timing["generate"]
        if (p.checkpoint_every and step % p.checkpoint_every == 0) or step == p.steps:
            save_state(w, ckpt, step, kl_ctl)
    evals["after"], samples = evaluate(w, eval_ids, eval_prompts, sampling, cfg.seed)
    (out / "samples_after.json").write_text(json.dumps(samples, indent=1))
    write_json_atomic(out / "eval_after.json", evals["after"])
    if "before" not in evals and (out / "eval_before.json").is_file():
        evals["before"] = json.loads((out / "eval_before.json").read_text())
    write_json_atomic(out / "memory.json", w.peak_memory_mb())
    w.policy.export_hf(str(out / "policy"))
    w.shutdown()
    print(f"[ppo] after: held-out PM score {evals['after']['eval_pm_score']:.3f} "
          f"(before {evals.get('before', {}).get('eval_pm_score', float('nan')):.3f}); "
          f"{len(read_metrics(out / 'metrics.jsonl'))} steps in {out / 'metrics.jsonl'}")
    return evals


def save_state(w: PPOWorkers, ckpt: Path, step: int, kl_ctl) -> None:
    """Policy and critic checkpoints under one tag, then the driver state naming it (written last)."""
    tag = f"step{step}"
    w.policy.save_checkpoint(str(ckpt / "policy"), tag, {"step": step})
    w.critic.save_checkpoint(str(ckpt / "critic"), tag, {"step": step})
    write_json_atomic(ckpt / STATE, {"step": step, "tag": tag, "kl_controller": kl_ctl.state_dict()})
