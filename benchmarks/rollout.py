"""`rollout`: generated tokens/s of one vLLM engine against HF `generate`."""

from __future__ import annotations

import time

from benchmarks.common import ONE_THREAD, Fixture, generated_tokens, interleave, med


def bench_rollout(fx: Fixture, quick: bool) -> dict:
    """Generated tokens/s: one vLLM engine against HF `generate`, same model, prompts, batch and lengths.

    Both produce exactly `max_new_tokens` per sample (vLLM ignores end of turn here, HF is held to the length),
    each in its own actor with one CPU and one thread. The headline is the first shape; the others show how
    the ratio moves with batch size. Achieved GFLOP/s against the core's own GEMM rate shows how much room
    either side had left: on one CPU core decoding is compute-bound, unlike on a GPU. The full run adds the real
    chat model (SmolLM2-135M, batch 64 x 128 new tokens) with both sides in bf16 where the CPU has it natively.
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
        def __init__(self, path, pad_id, device, dtype):
            self.m = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
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

    def race(rollout, hf, prompts, new) -> dict:
        """Interleaved runs of one shape: tokens/s of each side and their ratio (equal work asserted)."""
        fixed = Sampling(max_new_tokens=new, ignore_eos=True)

        def vllm_run():
            t0 = time.perf_counter()
            samples = rollout.generate(prompts, fixed, list(range(len(prompts))))
            return generated_tokens(samples), time.perf_counter() - t0

        res = interleave({"vllm": vllm_run, "hf": lambda: ray.get(hf.run.remote(prompts, new))}, 2 if quick else 3)
        assert {t for t, _ in res["vllm"] + res["hf"]} == {len(prompts) * new}, res  # equal work on both sides
        v, h = med([t / s for t, s in res["vllm"]]), med([t / s for t, s in res["hf"]])
        return {"vllm_tokens_per_s": v, "hf_tokens_per_s": h, "ratio": v / h}

    dtype = "bfloat16" if fx.device == "cuda" else "float32"  # what the vLLM engine runs `small` in, too
    hf = HFGenerate.options(num_gpus=fx.gpu, runtime_env=ONE_THREAD).remote(model, fx.tok.pad_token_id, fx.device,
                                                                           dtype)
    ray.get(hf.run.remote(fx.prompts[:2], 4))
    rollout.generate(fx.prompts[:2], Sampling(max_new_tokens=4), [0, 1])
    flops = ray.get(hf.flops_per_token.remote())
    out: dict = {"model": "small", "matmul_gflops_per_s": ray.get(hf.matmul_gflops.remote())}
    for batch, new in shapes:
        r = race(rollout, hf, fx.prompts[:batch], new)
        out[f"batch{batch}_new{new}"] = r | {"vllm_gflops_per_s": r["vllm_tokens_per_s"] * flops / 1e9,
                                             "hf_gflops_per_s": r["hf_tokens_per_s"] * flops / 1e9}
        if "ratio" not in out:
            out |= r | {"batch": batch, "max_new_tokens": new}
    rollout.shutdown()
    ray.kill(hf)
    if not quick:
        out["smollm2"] = bench_smollm2_rollout(fx, race, HFGenerate)
    return out


def bench_smollm2_rollout(fx: Fixture, race, hf_actor) -> dict:
    """The real chat model at the issue's shape (batch 64, 128 new tokens), each side in the dtype it trains in."""
    import ray

    from hh_ray.config import RolloutConfig
    from hh_ray.data.tokenize import load_tokenizer, truncate_prompt
    from hh_ray.models.forward import cpu_has_native_bf16
    from hh_ray.models.presets import resolve_pretrained
    from hh_ray.workers.rollout import RolloutGroup, Sampling

    path = resolve_pretrained("smollm2-135m")
    tok = load_tokenizer(path)
    dtype = "bfloat16" if fx.device == "cuda" or cpu_has_native_bf16() else "float32"
    prompts = [truncate_prompt(tok, p, 64) for p in fx.prompt_texts[:64]]
    rollout = RolloutGroup(path, RolloutConfig(cpus_per_engine=1.0, gpus_per_engine=fx.gpu, kv_cache_gb=1.0), 256,
                           name="bench-rollout-smollm2", dtype=dtype)
    hf = hf_actor.options(num_gpus=fx.gpu, runtime_env=ONE_THREAD).remote(path, tok.pad_token_id, fx.device, dtype)
    ray.get(hf.run.remote(prompts[:2], 4))
    rollout.generate(prompts[:2], Sampling(max_new_tokens=4), [0, 1])
    r = race(rollout, hf, prompts, 128)
    rollout.shutdown()
    ray.kill(hf)
    return {"dtype": dtype, "batch": 64, "max_new_tokens": 128, "vllm_tokens_per_s": r["vllm_tokens_per_s"],
            "hf_tokens_per_s": r["hf_tokens_per_s"], "vllm_over_hf": r["ratio"]}
