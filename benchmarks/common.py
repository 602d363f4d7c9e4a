"""What every benchmark shares: the machine's description, interleaved runs, medians and the model fixture.

Importing this sets the environment the benchmarks run in (before Ray, vLLM or tokenizers are imported).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

ONE_THREAD = {"env_vars": {"OMP_NUM_THREADS": "1"}}  # runtime_env of a bench's own actors, as hh-ray's run


def machine() -> dict:
    import deepspeed
    import ray
    import torch
    import transformers

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import vllm

        vllm_version = vllm.__version__
    except Exception:  # noqa: BLE001 - recorded, not fatal
        vllm_version = "not importable"
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "vllm": vllm_version, "ray": ray.__version__,
            "deepspeed": deepspeed.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def interleave(fns: dict, repeats: int) -> dict[str, list]:
    """Run each contender `repeats` times, alternating, and return every result per contender."""
    out: dict[str, list] = {k: [] for k in fns}
    for i in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            out[k].append(fn())
            print(f"[bench]   {k} {i + 1}/{repeats} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out


def med(xs) -> float:
    return float(statistics.median(xs))


def generated_tokens(samples) -> int:
    """Response tokens in a list of rollout `Sample`s."""
    return sum(len(s.response) for s in samples)


def ppo_record(run: Path) -> tuple[list[dict], list[float], dict]:
    """A finished PPO run: its per-step metrics with step 1 (which warms caches) left out, each of those steps'
    wall seconds on the run log's clock (previous row to this one: the step plus the driver's logging), and
    each group's peak memory."""
    from hh_ray.driver.runlog import read_metrics

    rows = read_metrics(run / "ppo" / "metrics.jsonl")
    if len(rows) < 2:
        raise RuntimeError(f"the PPO run under {run} logged {len(rows)} step(s); measuring needs at least 2")
    wall = [b["time"] - a["time"] for a, b in zip(rows, rows[1:])]
    return rows[1:], wall, json.loads((run / "ppo" / "memory.json").read_text())


def ppo_run(fx: "Fixture", name: str, preset: str, steps: int, *overrides: str) -> tuple[list[dict], list[float], dict]:
    """A short PPO job on `preset` under `fx.root / name` (16 prompts x 2 samples of 32 tokens, the substring
    scorer, on the fixture's devices); its `ppo_record`."""
    from hh_ray.config import load_config
    from hh_ray.driver.ppo import run_ppo

    run = fx.root / name
    run_ppo(load_config(None, [
        f"run_dir={run}", f"model.policy={preset}", "ppo.reward.scorer=substring:e", f"ppo.steps={steps}",
        "ppo.prompts_per_step=16", "ppo.rollout.samples_per_prompt=2", "ppo.eval_prompts=8",
        "ppo.rollout.max_new_tokens=32", "data.max_prompt_tokens=128",
        "ppo.policy_trainer.micro_batch_size=32", "ppo.critic_trainer.micro_batch_size=32",
        *fx.ppo_overrides(), *overrides]))
    return ppo_record(run)


class Fixture:
    """Tokenizer, presets and prompts built once under a temp dir."""

    def __init__(self, root: Path, quick: bool, gpu: float = 0.0):
        from hh_ray.config import default_data_dir
        from hh_ray.data.hh import SUBSETS, load_comparisons, unique_prompts
        from hh_ray.data.tokenize import train_tokenizer, truncate_prompt
        from hh_ray.models.presets import build_preset

        items, _ = load_comparisons(default_data_dir(), SUBSETS)
        self.items = items
        self.tok = train_tokenizer((c.chosen_dialogue for c in items), 8192, root / "tok")
        self.models = {name: str(build_preset(name, self.tok, root / name)) for name in ("tiny", "small")}
        self.prompt_texts = unique_prompts(items)
        self.prompts = [truncate_prompt(self.tok, p, 64) for p in self.prompt_texts]
        self.root, self.quick = root, quick
        self.gpu = gpu  # GPUs per actor (0 = CPU); with GPUs, models run in bf16 and sync uses NCCL
        self.device = "cuda" if gpu else "cpu"
        self.sizes: tuple[str, ...] = ()  # models the TRL comparison measures (empty: its own default)

    def ppo_overrides(self) -> list[str]:
        """Config overrides placing every PPO group on `gpu` GPUs per actor (none on CPU)."""
        if not self.gpu:
            return []
        g = self.gpu
        return [f"ppo.rollout.gpus_per_engine={g}", f"ppo.policy_trainer.gpus_per_rank={g}",
                f"ppo.critic_trainer.gpus_per_rank={g}", f"ppo.placement.reference_gpus={g}",
                f"ppo.placement.scorer_gpus={g}"]

    def model(self, name: str) -> str:
        """A preset's folder, built on first use (`medium` is ~400 MB, so only when a bench asks)."""
        from hh_ray.models.presets import build_preset

        if name not in self.models:
            self.models[name] = str(build_preset(name, self.tok, self.root / name))
        return self.models[name]
