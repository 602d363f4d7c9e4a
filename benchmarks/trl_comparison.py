"""`trl`: hh-ray's PPO step against TRL's PPOTrainer (run by `benchmarks.trl_ppo` in its own process).

Named so as not to shadow the `trl` package for a script run from this folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Fixture, interleave, med, ppo_record

# what both PPO contenders run per step: samples, response tokens, PPO epochs and minibatches, prompt tokens
PPO_SHAPE = {"batch": 16, "response_length": 32, "epochs": 4, "minibatches": 1, "prompt_tokens": 128}
# SmolLM2: jobs/smollm2.yaml's update (2 epochs over 2 minibatches) on a batch a 2-core bench can repeat
SMOLLM2_SHAPE = {"batch": 16, "response_length": 32, "epochs": 2, "minibatches": 2, "prompt_tokens": 128}
LORA = {"rank": 16, "alpha": 32, "top_layers": 12}  # jobs/smollm2.yaml's adapters, on policy and critic/value


@dataclass(frozen=True)
class Setting:
    """How one contender runs: weights' dtype (TRL also `autocast`: fp32 weights under bf16 autocast), LoRA
    adapters on policy and critic, and (TRL) its BLAS threads; hh-ray's actors take theirs from their CPUs."""

    dtype: str
    lora: bool
    threads: int = 0

    @property
    def name(self) -> str:
        return f"{self.dtype}-{'lora' if self.lora else 'full'}" + (f"-{self.threads}t" if self.threads else "")


class Contest:
    """One model's PPO job for both contenders: the policy, a scalar-head PM on its backbone, the prompts."""

    def __init__(self, fx: Fixture, size: str, shape: dict):
        from hh_ray.config import load_config
        from hh_ray.data import load_train_holdout
        from hh_ray.data.tokenize import load_tokenizer, truncate_prompt
        from hh_ray.models.forward import PM_STATS, load_model
        from hh_ray.models.presets import resolve_pretrained

        self.fx, self.size, self.shape = fx, size, shape
        self.policy = fx.model(size) if size in ("tiny", "small", "medium") else resolve_pretrained(size)
        tok = load_tokenizer(self.policy)
        self.pm_dir = fx.root / f"pm-{size}"  # both contenders load it
        if not self.pm_dir.is_dir():
            load_model(self.policy, "pm").save_pretrained(self.pm_dir)
            tok.save_pretrained(self.pm_dir)
            # identity normalization: hh-ray's rewards are the raw scores TRL's reward model gives
            (self.pm_dir / PM_STATS).write_text(json.dumps({"mean": 0.0, "std": 1.0}))
        self.overrides = [
            "model.policy=" + self.policy, "ppo.reward.scorer=pm", f"ppo.reward.pm_checkpoint={self.pm_dir}",
            f"ppo.prompts_per_step={shape['batch']}", "ppo.rollout.samples_per_prompt=1", "ppo.eval_prompts=4",
            f"ppo.rollout.max_new_tokens={shape['response_length']}", f"ppo.algo.epochs={shape['epochs']}",
            f"ppo.algo.minibatches={shape['minibatches']}", f"data.max_prompt_tokens={shape['prompt_tokens']}",
            f"ppo.policy_trainer.micro_batch_size={shape['batch'] // shape['minibatches']}",
            f"ppo.critic_trainer.micro_batch_size={shape['batch'] // shape['minibatches']}",
            "ppo.rollout.kv_cache_gb=0.25",
            # the PM reads what TRL's reward model reads: the truncated prompt, the response, one more token
            f"pm.max_tokens={shape['prompt_tokens'] + shape['response_length'] + 1}",
            *fx.ppo_overrides(),
        ]
        cfg = load_config(None, self.overrides)
        train, _, _ = load_train_holdout(cfg.data, cfg.seed)
        self.prompts = fx.root / f"trl-prompts-{size}.json"
        self.prompts.write_text(json.dumps([truncate_prompt(tok, c.prompt, shape["prompt_tokens"]) for c in train]))
        self.runs = 0

    def hh_ray(self, setting: Setting, steps: int, *extra: str) -> tuple[list[dict], dict[str, float]]:
        """Each measured step's phase seconds (`step` the whole; the first step warms caches and is left out)
        and each group's peak memory (MB)."""
        from hh_ray.config import load_config
        from hh_ray.driver.ppo import run_ppo

        self.runs += 1
        run = self.fx.root / f"ppo-vs-trl-{self.size}-{self.runs}"
        (run / "sft").parent.mkdir(parents=True)
        (run / "sft").symlink_to(self.policy)  # the run's starting policy, exactly as TRL gets it
        lora = [f"ppo.{t}.lora.{k}={v}" for t in ("policy_trainer", "critic_trainer") for k, v in LORA.items()]
        run_ppo(load_config(None, self.overrides + [f"run_dir={run}", f"ppo.steps={steps}",
                                                    f"model.dtype={setting.dtype}", *(lora if setting.lora else []),
                                                    *extra]))
        rows, _, memory = ppo_record(run)
        phases = [{k.removeprefix("time/"): v for k, v in r.items() if k.startswith("time/")} for r in rows]
        return phases, {g: m["rss_peak_mb"] for g, m in memory.items()}

    def trl(self, setting: Setting, steps: int) -> tuple[list[float], float]:
        """TRL in its own process: measured step seconds and the process's peak memory (MB)."""
        result = self.fx.root / f"trl-{self.size}.json"
        threads = str(setting.threads)
        lora = ["--lora-rank", str(LORA["rank"]), "--lora-alpha", str(LORA["alpha"]),
                "--lora-top-layers", str(LORA["top_layers"])] if setting.lora else []
        shape = self.shape
        subprocess.run([sys.executable, "-m", "benchmarks.trl_ppo", "--policy", self.policy,
                        "--reward", str(self.pm_dir), "--prompts", str(self.prompts), "--steps", str(steps),
                        "--out", str(result), "--batch", str(shape["batch"]),
                        "--response-length", str(shape["response_length"]), "--epochs", str(shape["epochs"]),
                        "--minibatches", str(shape["minibatches"]), "--device", self.fx.device,
                        "--dtype", setting.dtype, *lora],
                       check=True, env=os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
                       cwd=Path(__file__).resolve().parent.parent,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        trl = json.loads(result.read_text())
        assert trl["threads"] == setting.threads, trl
        return trl["step_seconds"][1:], trl["rss_peak_mb"]


def preset_contest(fx: Fixture, size: str, quick: bool) -> dict:
    """A random-init preset in fp32: hh-ray against TRL at one BLAS thread (as every hh-ray actor runs) and, in a
    full run, at every core. Runs interleave."""
    steps = 4 if quick or size == "small" else 8  # a small step is ~30 s here
    contest = Contest(fx, size, PPO_SHAPE)
    memory: dict = {}

    def hh_ray_run():
        phases, groups = contest.hh_ray(Setting("auto", False), steps)
        memory["hh_ray_all_groups"] = sum(groups.values())
        return [p["step"] for p in phases]

    def trl_run(threads: int):
        seconds, memory["trl_process"] = contest.trl(Setting("float32", False, threads), steps)
        return seconds

    contenders = {"hh_ray": hh_ray_run, "trl": lambda: trl_run(1)}
    if not quick:  # TRL with every core of the machine as its BLAS threads: hh-ray's groups use them all too
        contenders["trl_all_cores"] = lambda: trl_run(os.cpu_count() or 1)
    res = interleave(contenders, 1 if quick else 2)
    step = {k: med([x for r in runs for x in r]) for k, runs in res.items()}
    hh, trl = step["hh_ray"], step["trl"]
    out = {"steps_measured": steps - 1, "memory_mb": memory,
           "hh_ray_step_seconds": hh, "trl_step_seconds": trl,
           "hh_ray_samples_per_s": PPO_SHAPE["batch"] / hh, "trl_samples_per_s": PPO_SHAPE["batch"] / trl,
           "ratio": trl / hh}
    if "trl_all_cores" in step:
        out |= {"trl_all_cores_step_seconds": step["trl_all_cores"],
                "ratio_vs_best_trl": min(trl, step["trl_all_cores"]) / hh}
    return out


def smollm2_contest(fx: Fixture) -> dict:
    """SmolLM2-135M: each contender's settings searched (one run of 2 steps each, the second measured), then the
    two fastest once more, alternating (3 steps, two measured); the ratio is of their medians over both rounds.
    Memory: every setting's; hh-ray's phase split: its fastest setting's."""
    shape, cores = SMOLLM2_SHAPE, os.cpu_count() or 1
    contest = Contest(fx, "smollm2-135m", shape)
    # generation alone on both cores; reference, PM, critic and policy passes, then the two trainers, side by side
    placement = ("ppo.rollout.cpus_per_engine=2.0", "ppo.policy_trainer.cpus_per_rank=1.0",
                 "ppo.critic_trainer.cpus_per_rank=1.0")
    trl_grid = [Setting(d, lora, cores) for d in ("float32", "autocast", "bfloat16") for lora in (False, True)]
    hh_grid = [Setting("bfloat16", True), Setting("bfloat16", False), Setting("float32", True)]
    trl_runs: dict = {}
    hh_runs: dict = {}
    trl_memory: dict = {}
    hh_memory: dict = {}

    def run_trl(s: Setting, steps: int) -> None:
        seconds, trl_memory[s.name] = contest.trl(s, steps)
        trl_runs.setdefault(s.name, []).extend(seconds)

    def run_hh(s: Setting, steps: int) -> None:
        phases, hh_memory[s.name] = contest.hh_ray(s, steps, *placement)
        hh_runs.setdefault(s.name, []).extend(phases)

    def hh_step(name: str) -> float:
        return med([p["step"] for p in hh_runs[name]])

    interleave({s.name: (lambda s=s: run_trl(s, 2)) for s in trl_grid}, 1)
    fastest = min(trl_grid, key=lambda s: med(trl_runs[s.name]))
    one_thread = Setting(fastest.dtype, fastest.lora, 1)  # and TRL's fastest at one BLAS thread
    interleave({one_thread.name: lambda: run_trl(one_thread, 2)}, 1)
    interleave({s.name: (lambda s=s: run_hh(s, 2)) for s in hh_grid}, 1)
    best_trl = min([*trl_grid, one_thread], key=lambda s: med(trl_runs[s.name]))
    best_hh = min(hh_grid, key=lambda s: hh_step(s.name))
    interleave({"hh_ray": lambda: run_hh(best_hh, 3), "trl": lambda: run_trl(best_trl, 3)}, 1)  # round two
    hh, trl = hh_step(best_hh.name), med(trl_runs[best_trl.name])
    phases = hh_runs[best_hh.name]
    return {
        "shape": dict(shape), "lora": dict(LORA),
        "trl_settings_step_seconds": {k: med(v) for k, v in trl_runs.items()},
        "hh_ray_settings_step_seconds": {k: hh_step(k) for k in hh_runs},
        "best_trl_setting": best_trl.name, "best_hh_ray_setting": best_hh.name,
        "steps_measured": {"hh_ray": len(phases), "trl": len(trl_runs[best_trl.name])},
        "hh_ray_phase_seconds": {k: med([p[k] for p in phases]) for k in phases[0]},
        "hh_ray_step_seconds": hh, "trl_step_seconds": trl,
        "hh_ray_samples_per_s": shape["batch"] / hh, "trl_samples_per_s": shape["batch"] / trl,
        "ratio_vs_best_trl": trl / hh,
        "memory_mb": {"hh_ray_groups": hh_memory[best_hh.name],
                      "hh_ray_all_groups": sum(hh_memory[best_hh.name].values()),
                      "trl_process": trl_memory[best_trl.name],
                      "hh_ray_all_groups_by_setting": {k: sum(v.values()) for k, v in hh_memory.items()},
                      "trl_process_by_setting": trl_memory},
    }


def bench_trl(fx: Fixture, quick: bool) -> dict:
    """hh-ray's PPO step against TRL's PPOTrainer: same policy, PM, value model, prompts and PPO shape.

    TRL runs in its own process, all of its models one after another; hh-ray spreads its groups over the
    machine's cores. The presets (fp32, random init) compare at one BLAS thread and at every core; SmolLM2
    searches both sides' settings (dtype, LoRA, TRL's threads) and compares their fastest.
    """
    sizes = fx.sizes or (("tiny",) if quick else ("tiny", "small", "smollm2-135m"))
    out: dict = {}
    for size in sizes:
        if size == "smollm2-135m":
            out["smollm2"] = smollm2_contest(fx)
        else:
            out[size] = preset_contest(fx, size, quick) | {"shape": dict(PPO_SHAPE)}
    if "tiny" in out:  # the headline figures are the tiny model's
        out |= {k: v for k, v in out["tiny"].items() if k in ("hh_ray_samples_per_s", "ratio", "ratio_vs_best_trl")}
    return out
