"""`trl`: hh-ray's PPO step against TRL's PPOTrainer (run by `benchmarks.trl_ppo` in its own process).

Named so as not to shadow the `trl` package for a script run from this folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from benchmarks.common import Fixture, interleave, med, ppo_record

# what both PPO contenders run per step: samples, response tokens, PPO epochs and minibatches, prompt tokens
PPO_SHAPE = {"batch": 16, "response_length": 32, "epochs": 4, "minibatches": 1, "prompt_tokens": 128}


def bench_trl(fx: Fixture, quick: bool) -> dict:
    """hh-ray's PPO step against TRL's PPOTrainer: same policy, PM, value model, prompts and PPO shape.

    TRL runs in its own process with OMP_NUM_THREADS=1, as every hh-ray actor does; hh-ray spreads its
    groups over the machine's cores, TRL runs them one after another in one process. The full run also
    gives TRL every core as BLAS threads, and `ratio_vs_best_trl` compares against TRL's faster setting.
    Runs interleave.
    """
    import subprocess

    from hh_ray.config import load_config
    from hh_ray.data import load_train_holdout
    from hh_ray.data.tokenize import truncate_prompt
    from hh_ray.driver.ppo import run_ppo
    from hh_ray.models.forward import PM_STATS, load_model

    shape = PPO_SHAPE
    out: dict = {"shape": dict(shape)}
    for size in (("tiny",) if quick else ("tiny", "small")):
        steps = 4 if quick or size == "small" else 8  # a small step is ~30 s here
        out[f"{size}_steps_measured"] = steps - 1
        policy = fx.model(size)
        pm_dir = fx.root / f"pm-{size}"  # a scalar-head PM on the policy's backbone; both contenders load it
        if not pm_dir.is_dir():
            load_model(policy, "pm").save_pretrained(pm_dir)
            fx.tok.save_pretrained(pm_dir)
            # identity normalization: hh-ray's rewards are the raw scores TRL's reward model gives
            (pm_dir / PM_STATS).write_text(json.dumps({"mean": 0.0, "std": 1.0}))
        overrides = [
            "model.policy=" + policy, "ppo.reward.scorer=pm", f"ppo.reward.pm_checkpoint={pm_dir}",
            f"ppo.steps={steps}",
            f"ppo.prompts_per_step={shape['batch']}", "ppo.rollout.samples_per_prompt=1", "ppo.eval_prompts=4",
            f"ppo.rollout.max_new_tokens={shape['response_length']}", f"ppo.algo.epochs={shape['epochs']}",
            f"ppo.algo.minibatches={shape['minibatches']}", f"data.max_prompt_tokens={shape['prompt_tokens']}",
            f"ppo.policy_trainer.micro_batch_size={shape['batch']}",
            f"ppo.critic_trainer.micro_batch_size={shape['batch']}", "ppo.rollout.kv_cache_gb=0.25",
            # the PM reads what TRL's reward model reads: the truncated prompt, the response, one more token
            f"pm.max_tokens={shape['prompt_tokens'] + shape['response_length'] + 1}",
            *fx.ppo_overrides(),
        ]
        cfg = load_config(None, overrides)
        train, _, _ = load_train_holdout(cfg.data, cfg.seed)
        prompts = fx.root / f"trl-prompts-{size}.json"
        prompts.write_text(json.dumps([truncate_prompt(fx.tok, c.prompt, shape["prompt_tokens"]) for c in train]))
        runs = iter(range(100))

        def hh_ray_run():
            run = fx.root / f"ppo-vs-trl-{size}-{next(runs)}"
            (run / "sft").parent.mkdir(parents=True)
            (run / "sft").symlink_to(policy)  # the run's starting policy, exactly as TRL gets it
            run_ppo(load_config(None, overrides + [f"run_dir={run}"]))
            rows, _, memory = ppo_record(run)
            out[size + "_memory_mb"] = {"hh_ray_all_groups": sum(m["rss_peak_mb"] for m in memory.values())}
            return [r["time/step"] for r in rows]

        def trl_run(threads: int = 1):
            result = fx.root / f"trl-{size}.json"
            env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            subprocess.run([sys.executable, "-m", "benchmarks.trl_ppo", "--policy", policy, "--reward", str(pm_dir),
                            "--prompts", str(prompts), "--steps", str(steps), "--out", str(result),
                            "--batch", str(shape["batch"]), "--response-length", str(shape["response_length"]),
                            "--epochs", str(shape["epochs"]), "--minibatches", str(shape["minibatches"]),
                            "--device", fx.device],
                           check=True, env=env, cwd=Path(__file__).resolve().parent.parent,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            trl = json.loads(result.read_text())
            out.setdefault(size + "_memory_mb", {})["trl_process"] = trl["rss_peak_mb"]
            assert trl["threads"] == threads, trl
            return trl["step_seconds"][1:]

        contenders = {"hh_ray": hh_ray_run, "trl": trl_run}
        if not quick:  # TRL with every core of the machine as its BLAS threads: hh-ray's groups use them all too
            contenders["trl_all_cores"] = lambda: trl_run(threads=os.cpu_count() or 1)
        res = interleave(contenders, 1 if quick else 2)
        step = {k: med([x for r in runs for x in r]) for k, runs in res.items()}
        hh, trl = step["hh_ray"], step["trl"]
        out[size] = {"hh_ray_step_seconds": hh, "trl_step_seconds": trl,
                     "hh_ray_samples_per_s": shape["batch"] / hh, "trl_samples_per_s": shape["batch"] / trl,
                     "ratio": trl / hh}
        if "trl_all_cores" in step:
            best = min(trl, step["trl_all_cores"])
            out[size] |= {"trl_all_cores_step_seconds": step["trl_all_cores"], "ratio_vs_best_trl": best / hh}
    headline = ("hh_ray_samples_per_s", "ratio", "ratio_vs_best_trl")  # the tiny model's
    return out | {"samples_per_s": out["tiny"]["trl_samples_per_s"]} | {
        k: v for k, v in out["tiny"].items() if k in headline}
