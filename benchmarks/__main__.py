"""`python -m benchmarks --out DIR [--quick] [--only a,b]`: hh-ray's speed and memory, as ratios in one run.

Every pair of contenders runs interleaved in this same process run (A, B, A, B, ...), so a noisy machine
shifts both alike and the ratios hold. Writes DIR/results.json and DIR/results.md. Not part of the tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")


def machine() -> dict:
    import deepspeed
    import ray
    import torch
    import transformers

    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
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

    def ppo_overrides(self) -> list[str]:
        """Config overrides placing every PPO group on `gpu` GPUs per actor (none on CPU)."""
        if not self.gpu:
            return []
        g = self.gpu
        return [f"ppo.rollout.gpus_per_engine={g}", f"ppo.policy_trainer.gpus_per_rank={g}",
                f"ppo.critic_trainer.gpus_per_rank={g}", f"ppo.reference_gpus={g}", f"ppo.scorer_gpus={g}"]

    def model(self, name: str) -> str:
        """A preset's folder, built on first use (`medium` is ~400 MB, so only when a bench asks)."""
        from hh_ray.models.presets import build_preset

        if name not in self.models:
            self.models[name] = str(build_preset(name, self.tok, self.root / name))
        return self.models[name]


def bench_rollout(fx: Fixture, quick: bool) -> dict:
    """Generated tokens/s: one vLLM engine against HF `generate`, same model, prompts, batch and lengths.

    Both produce exactly `max_new_tokens` per sample (vLLM ignores end of turn here, HF is held to the length),
    each in its own actor with one CPU and one thread. The headline is the first shape; the others show how
    the ratio moves with batch size. Achieved GFLOP/s against the core's own GEMM rate shows how much room
    either side had left: on one CPU core decoding is compute-bound, unlike on a GPU.
    """
    import ray
    import torch
    from transformers import AutoModelForCausalLM

    from hh_ray.config import RolloutConfig
    from hh_ray.workers.rollout import RolloutGroup, Sampling

    shapes = [(16, 32)] if quick else [(32, 64), (8, 64), (128, 64)]
    model = fx.models["small"]
    rollout = RolloutGroup(model, RolloutConfig(cpus_per_engine=1.0, gpus_per_engine=fx.gpu, kv_cache_gb=1.0), 256)

    @ray.remote(num_cpus=1)
    class HFGenerate:
        def __init__(self, path, pad_id, device):
            dtype = torch.bfloat16 if device == "cuda" else torch.float32  # what the vLLM engine runs in, too
            self.m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
            self.pad, self.device = pad_id, device

        def run(self, prompts, new_tokens):
            n = max(len(p) for p in prompts)
            ids = torch.tensor([[self.pad] * (n - len(p)) + p for p in prompts], device=self.device)
            att = (ids != self.pad).long()
            t0 = time.perf_counter()
            with torch.no_grad():
                out = self.m.generate(input_ids=ids, attention_mask=att, max_new_tokens=new_tokens, do_sample=True,
                                      min_new_tokens=new_tokens, pad_token_id=self.pad, temperature=1.0, top_k=0)
            out = out.cpu()  # waits for the device
            return (out.shape[1] - n) * len(prompts), time.perf_counter() - t0

        def flops_per_token(self) -> int:
            from benchmarks.device import matmul_parameters

            return 2 * matmul_parameters(self.m)

        def matmul_gflops(self) -> float:
            """This worker's GEMM rate (its model's dtype) at a decode-like shape: batch 128 through an MLP matrix."""
            from benchmarks.device import matmul_flops

            return matmul_flops(128, 512, 1408, self.device, next(self.m.parameters()).dtype, repeats=20) / 1e9

    hf = HFGenerate.options(num_gpus=fx.gpu, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}}).remote(
        model, fx.tok.pad_token_id, fx.device)
    ray.get(hf.run.remote(fx.prompts[:2], 4))
    rollout.generate(fx.prompts[:2], Sampling(max_new_tokens=4), [0, 1])
    flops = ray.get(hf.flops_per_token.remote())
    out: dict = {"model": "small", "matmul_gflops_per_s": ray.get(hf.matmul_gflops.remote())}
    for batch, new in shapes:
        prompts = fx.prompts[:batch]
        fixed = Sampling(max_new_tokens=new, ignore_eos=True)

        def vllm_run():
            t0 = time.perf_counter()
            samples = rollout.generate(prompts, fixed, list(range(len(prompts))))
            return sum(len(o["response"]) for o in samples), time.perf_counter() - t0

        res = interleave({"vllm": vllm_run, "hf": lambda: ray.get(hf.run.remote(prompts, new))}, 2 if quick else 3)
        assert {t for t, _ in res["vllm"] + res["hf"]} == {batch * new}, res  # equal work on both sides
        v = med([t / s for t, s in res["vllm"]])
        h = med([t / s for t, s in res["hf"]])
        key = f"batch{batch}_new{new}"
        out[key] = {"vllm_tokens_per_s": v, "hf_tokens_per_s": h, "ratio": v / h,
                    "vllm_gflops_per_s": v * flops / 1e9, "hf_gflops_per_s": h * flops / 1e9}
        if "ratio" not in out:
            out |= {"vllm_tokens_per_s": v, "hf_tokens_per_s": h, "ratio": v / h, "batch": batch, "max_new_tokens": new}
    rollout.shutdown()
    ray.kill(hf)
    return out


def bench_pm(fx: Fixture, quick: bool) -> dict:
    """PM training pairs/s with 1 and 2 DeepSpeed ranks on the tiny preset (same global batch)."""
    from hh_ray.config import TrainerConfig
    from hh_ray.data.tokenize import pm_input_ids
    from hh_ray.workers.trainer import TrainerGroup

    items = fx.items[:64]
    batch = {"chosen": [pm_input_ids(fx.tok, c.prompt, c.chosen, 256) for c in items[:16]],
             "rejected": [pm_input_ids(fx.tok, c.prompt, c.rejected, 256) for c in items[:16]]}
    steps = 3 if quick else 8
    out = {}
    for ranks in (1, 2):
        g = TrainerGroup(f"bench-pm-{ranks}", fx.models["tiny"], "pm",
                         TrainerConfig(num_ranks=ranks, micro_batch_size=16 // ranks, cpus_per_rank=1.0,
                                       gpus_per_rank=fx.gpu, lr=1e-4))
        g.train(batch, "pm")
        t0 = time.perf_counter()
        for _ in range(steps):
            g.train(batch, "pm")
        out[f"pairs_per_s_{ranks}_rank"] = 16 * steps / (time.perf_counter() - t0)
        g.shutdown()
    out["trainer_2_over_1"] = out["pairs_per_s_2_rank"] / out["pairs_per_s_1_rank"]
    return out


def bench_sync(fx: Fixture, quick: bool) -> dict:
    """Weight sync trainer -> engine in GB/s, against an in-memory copy of the same bytes (the local limit).

    Also split out: the wire alone (a bare gloo broadcast between two processes) and the time the engine
    spends inside vLLM's loader, which on CPU repacks every linear layer for oneDNN.
    """
    import ray
    import torch

    from hh_ray.config import RolloutConfig, TrainerConfig
    from hh_ray.workers.rollout import RolloutGroup, connect_weight_sync, sync_weights
    from hh_ray.workers.trainer import TrainerGroup

    @ray.remote(num_cpus=1)
    class Wire:
        def join(self, master, rank, device):
            from hh_ray.workers.weight_sync import make_group

            backend = "nccl" if device == "cuda" else "gloo"
            self.group, self.rank, self.device = make_group(tuple(master), rank, 2, backend), rank, device

        def broadcast(self, nbytes: int, repeats: int) -> float:
            from hh_ray.workers.weight_sync import _broadcast

            t = torch.empty(nbytes // 4, device=self.device)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                _broadcast(self.group, t).wait()
                t[:1].cpu()  # NCCL's wait only orders the stream; this waits for the bytes
                times.append(time.perf_counter() - t0)
            return med(times[1:])

    def wire_seconds(nbytes: int) -> float:
        from hh_ray.workers.group import free_port

        a, b = (Wire.options(num_gpus=fx.gpu, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}}).remote()
                for _ in range(2))
        master = (ray.util.get_node_ip_address(), free_port())
        ray.get([a.join.remote(master, 0, fx.device), b.join.remote(master, 1, fx.device)])
        secs = ray.get([a.broadcast.remote(nbytes, 4), b.broadcast.remote(nbytes, 4)])[1]
        ray.kill(a), ray.kill(b)
        return secs

    out = {}
    for name in ("tiny", "small", "medium"):
        path = fx.model(name)
        trainer = TrainerGroup(f"bench-sync-{name}", path, "causal_lm",
                               TrainerConfig(cpus_per_rank=1.0, gpus_per_rank=fx.gpu))
        rollout = RolloutGroup(path, RolloutConfig(cpus_per_engine=1.0, gpus_per_engine=fx.gpu, kv_cache_gb=0.25), 256)
        connect_weight_sync(trainer, rollout)
        metas = trainer.weight_metas()
        sync_weights(trainer, rollout, 1, 32 << 20, metas)
        runs = [sync_weights(trainer, rollout, v, 32 << 20, metas) for v in range(2, 5 if quick else 7)]
        rollout.shutdown()
        trainer.shutdown()
        nbytes = runs[0]["sync_bytes"]
        secs = med([r["sync_seconds"] for r in runs])
        load = med([r["sync_load_seconds"] for r in runs])
        src = torch.empty(nbytes // 4, device=fx.device)  # the local limit: one copy in the same memory
        dst = torch.empty_like(src)
        copies = []
        for _ in range(5):
            t0 = time.perf_counter()
            dst.copy_(src)
            dst[:1].cpu()
            copies.append(time.perf_counter() - t0)
        out[name] = {"bytes": nbytes, "seconds": secs, "gb_per_s": nbytes / secs / 1e9,
                     "memcpy_gb_per_s": nbytes / med(copies) / 1e9,
                     "wire_gb_per_s": nbytes / wire_seconds(nbytes) / 1e9,
                     "engine_load_seconds": load, "engine_load_gb_per_s": nbytes / load / 1e9}
    out["gb_per_s"] = out["small"]["gb_per_s"]
    out["memcpy_gb_per_s"] = out["small"]["memcpy_gb_per_s"]
    return out


def bench_rollout_scaling(fx: Fixture, quick: bool) -> dict:
    """The same generation work on 1 and on 2 engines."""
    from hh_ray.config import RolloutConfig
    from hh_ray.workers.rollout import RolloutGroup, Sampling

    prompts = fx.prompts[: (32 if quick else 64)]
    rates = {}
    for k in (1, 2):
        g = RolloutGroup(fx.models["small"], RolloutConfig(num_engines=k, min_engines=1, max_engines=k,
                                                           gpus_per_engine=fx.gpu,
                                                           cpus_per_engine=1.0, kv_cache_gb=0.5), 256)
        g.generate(prompts[:2], Sampling(max_new_tokens=4), [0, 1])
        t0 = time.perf_counter()
        out = g.generate(prompts, Sampling(max_new_tokens=32, ignore_eos=True), list(range(len(prompts))))
        rates[k] = sum(len(o["response"]) for o in out) / (time.perf_counter() - t0)
        g.shutdown()
    return {"tokens_per_s_1": rates[1], "tokens_per_s_2": rates[2], "rollout_2_over_1": rates[2] / rates[1]}


def bench_ppo(fx: Fixture, quick: bool) -> dict:
    """A short PPO run on the tiny preset: seconds per step by phase, samples/s, peak memory per group.

    Peak memory is each group's largest actor process (resident set; vLLM's KV cache is sized 1 GiB here).
    """
    from hh_ray.config import load_config
    from hh_ray.driver.ppo import run_ppo
    from hh_ray.driver.runlog import read_metrics

    run = fx.root / "ppo-run"
    steps = 4 if quick else 10
    cfg = load_config(None, [f"run_dir={run}", "model.policy=tiny", "ppo.scorer=substring:e", f"ppo.steps={steps}",
                             "ppo.prompts_per_step=16", "ppo.rollout.samples_per_prompt=2", "ppo.eval_prompts=8",
                             "ppo.rollout.max_new_tokens=32", "data.max_prompt_tokens=128",
                             "ppo.policy_trainer.micro_batch_size=32", "ppo.critic_trainer.micro_batch_size=32",
                             *fx.ppo_overrides()])
    run_ppo(cfg)
    rows = read_metrics(run / "ppo" / "metrics.jsonl")[1:]  # step 1 warms caches
    phases = {k[4:]: med([r[k] for r in rows]) for k in rows[0] if k.startswith("sec_") and k != "sec_step"}
    step = med([r["sec_step"] for r in rows])
    memory = json.loads((run / "ppo" / "memory.json").read_text())
    return {"phase_seconds": phases, "step_seconds": step, "samples_per_s": med([r["samples_per_s"] for r in rows]),
            "driver_overhead_fraction": phases["driver"] / step, "samples_per_step": rows[0]["samples"],
            "peak_memory_mb": {group: m["rss_peak_mb"] for group, m in memory.items()}}


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
    from hh_ray.driver.runlog import read_metrics
    from hh_ray.models.forward import load_model

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
        overrides = [
            "model.policy=" + policy, "ppo.scorer=pm", f"ppo.pm_checkpoint={pm_dir}", f"ppo.steps={steps}",
            f"ppo.prompts_per_step={shape['batch']}", "ppo.rollout.samples_per_prompt=1", "ppo.eval_prompts=4",
            f"ppo.rollout.max_new_tokens={shape['response_length']}", f"ppo.epochs={shape['epochs']}",
            f"ppo.minibatches={shape['minibatches']}", f"data.max_prompt_tokens={shape['prompt_tokens']}",
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
            memory = json.loads((run / "ppo" / "memory.json").read_text())
            out[size + "_memory_mb"] = {"hh_ray_all_groups": sum(m["rss_peak_mb"] for m in memory.values())}
            return [r["sec_step"] for r in read_metrics(run / "ppo" / "metrics.jsonl")[1:]]

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
    out["samples_per_s"] = out["tiny"]["trl_samples_per_s"]
    out["hh_ray_samples_per_s"] = out["tiny"]["hh_ray_samples_per_s"]
    out["ratio"] = out["tiny"]["ratio"]
    if "ratio_vs_best_trl" in out["tiny"]:
        out["ratio_vs_best_trl"] = out["tiny"]["ratio_vs_best_trl"]
    return out


BENCHES = {"rollout": bench_rollout, "pm": bench_pm, "sync": bench_sync, "scaling": bench_rollout_scaling,
           "ppo": bench_ppo, "trl": bench_trl}


def to_markdown(results: dict) -> str:
    lines = ["# hh-ray benchmarks", "", "Machine: " + ", ".join(f"{k} {v}" for k, v in results["machine"].items()), "",
             "| figure | value |", "|---|---|"]

    def walk(prefix, obj):
        for k, v in obj.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k}.", v)
            elif isinstance(v, float):
                lines.append(f"| {prefix}{k} | {v:.4g} |")
            else:
                lines.append(f"| {prefix}{k} | {v} |")

    walk("", {k: v for k, v in results.items() if k != "machine"})
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="about 5 minutes on 2 cores")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHES))
    ap.add_argument("--address", default="local", help="Ray cluster to run on ('auto' inside a cluster)")
    ap.add_argument("--gpus-per-actor", type=float, default=0.0,
                    help="GPUs per engine / rank / model actor (0 = CPU). Weight sync over NCCL and the "
                         "2-rank/2-engine scaling need whole, distinct GPUs (1)")
    args = ap.parse_args(argv)
    wanted = [b for b in (args.only.split(",") if args.only else BENCHES) if b]
    unknown = [b for b in wanted if b not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    if "trl" in wanted and importlib.util.find_spec("trl") is None:
        ap.error("the TRL comparison needs TRL: pip install -r benchmarks/requirements.txt (or leave out 'trl')")
    import ray

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    local = args.address == "local"
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False,
             **({"num_cpus": 4, "runtime_env": {"env_vars": {"RAY_AUTH_MODE": "disabled"}}} if local else {}))
    results: dict = {"machine": machine(), "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        fx = Fixture(Path(tmp), args.quick, args.gpus_per_actor)
        for name in wanted:
            t0 = time.perf_counter()
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            results[name] = BENCHES[name](fx, args.quick)
            results[name]["bench_seconds"] = time.perf_counter() - t0
            (out / "results.json").write_text(json.dumps(results, indent=2))
    if "pm" in results:
        results.setdefault("scaling", {})["trainer_2_over_1"] = results["pm"]["trainer_2_over_1"]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(to_markdown(results))
    print(to_markdown(results))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
