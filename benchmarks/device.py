"""The one-GPU device benchmark: hh-ray's DeepSpeed trainer in bf16 (throughput and MFU) and HF generation.

The device machine this workplace lends has one GPU, PyTorch and transformers, but neither Ray nor a CUDA
vLLM (its wheel is over the carry limit). So this runs what it can in one process: hh-ray's own
`TrainerWorker` (the class each trainer actor runs: same DeepSpeed config, bf16, objectives) built
directly, and HF `generate`, on a random-init Llama of a few hundred million parameters built there.

    python -m benchmarks.device --out DIR                # on the GPU: the 350m model, about 3 minutes
    python -m benchmarks.device --out DIR --size smoke   # any CPU: the same code on a tiny model

MFU counts 6 x (matmul parameters) x tokens + the attention term (12 x layers x width x sequence x tokens)
per training step, over the chip's dense bf16 peak (H200/H100 datasheet 989 TFLOP/s) and over the bf16
matmul rate measured here. The policy objective computes the LM head at response positions only, so its
FLOPs count the head for response tokens alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

GPU_RUN = dict(vocab_size=32000, batch=16, prompt=512, response=512, gen_batch=64, gen_prompt=128, gen_new=128, steps=8)
SIZES = {
    # ~374M parameters (GPT-2-medium depth at width 1024, Llama blocks, 32k vocab)
    "350m": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=2816, **GPU_RUN),
    # ~0.95B parameters: where the same code sits as the model grows
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=16, intermediate_size=5632, **GPU_RUN),
    # a CPU check of the same code path
    "smoke": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                  vocab_size=512, batch=4, prompt=32, response=32, gen_batch=4, gen_prompt=16, gen_new=16, steps=2),
}
DATASHEET_BF16_TFLOPS = 989.0  # H100/H200 SXM dense bf16


def build_model(root: Path, size: dict) -> tuple[str, int, int]:
    """Random-init Llama saved with a small local tokenizer; returns (path, matmul params, head params)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hh_ray.data.tokenize import train_tokenizer
    from hh_ray.models.presets import save_atomic

    corpus = [f"\n\nHuman: question {i} about item {i * 7 % 13}?\n\nAssistant: answer {i}." for i in range(2000)]
    tok = train_tokenizer(corpus, 300, root / "tok")
    cfg = LlamaConfig(vocab_size=max(size["vocab_size"], len(tok)), hidden_size=size["hidden_size"],
                      num_hidden_layers=size["num_hidden_layers"], num_attention_heads=size["num_attention_heads"],
                      num_key_value_heads=size["num_attention_heads"], intermediate_size=size["intermediate_size"],
                      max_position_embeddings=2048, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    head = model.lm_head.weight.numel()
    matmul = matmul_parameters(model)
    save_atomic(model, tok, root / "model")
    return str(root / "model"), matmul, head


def matmul_tflops(device: str) -> float:
    """The chip's measured bf16 (GPU) or fp32 (CPU) matmul rate: the practical ceiling for MFU."""
    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (512, torch.float32)
    return matmul_flops(n, n, n, device, dtype) / 1e12


def matmul_flops(m: int, k: int, n: int, device: str, dtype, repeats: int = 10) -> float:
    """FLOP/s of an [m, k] x [k, n] product on `device`, after three warm-up products."""
    a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
    return 2 * m * k * n * repeats / sum(seconds_each(lambda: a @ b, repeats, 3, device))


def matmul_parameters(model) -> int:
    """Parameters a token multiplies through: all but the input embedding (a lookup)."""
    return sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def seconds_each(fn, repeats: int, warmup: int = 0, device: str = "cpu") -> list[float]:
    """Wall seconds of each of `repeats` calls of `fn` after `warmup` untimed ones, each waited for on `device`."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def bench_trainer(path: str, size: dict, matmul: int, head: int, device: str, zero_stage: int) -> dict:
    """hh-ray's TrainerWorker on one device: SFT and PPO-policy steps, tokens/s and achieved TFLOP/s."""
    from hh_ray.algo.batch import PolicyBatch, SequenceBatch, TokenBatch
    from hh_ray.config import TrainerConfig
    from hh_ray.models.objectives import PolicyObjective, SFTObjective, TokenLogprobs, probe_tokens
    from hh_ray.workers.group import free_port
    from hh_ray.workers.trainer import TrainerWorker, forward_micro_batches

    B, P, R, steps = size["batch"], size["prompt"], size["response"], size["steps"]
    layers, width = size["num_hidden_layers"], size["hidden_size"]
    worker = TrainerWorker()
    # the trainer places itself (and picks bf16, NCCL, fused AdamW) by its GPU share, as a Ray actor would
    cfg = TrainerConfig(micro_batch_size=B, zero_stage=zero_stage, lr=1e-5,
                        gpus_per_rank=1.0 if device == "cuda" else 0.0)
    parameters = worker.setup(0, 1, ("127.0.0.1", free_port()), path, "causal_lm", cfg, 0).parameters
    g = torch.Generator().manual_seed(0)
    def ids(n, t):
        return torch.randint(10, size["vocab_size"], (n, t), generator=g).tolist()
    seq = P + R
    attention = 12 * layers * width * seq  # per token, forward + backward
    policy = PolicyBatch(prompt=ids(B, P), response=ids(B, R), old_logprobs=[[-5.0] * R] * B,
                         advantages=torch.randn(B, R, generator=g).tolist())
    runs = {  # objective, its batch, FLOPs per step
        "sft": (SFTObjective(), TokenBatch(ids(B, seq), [[1] * seq] * B), (6 * matmul + attention) * B * seq),
        "policy": (PolicyObjective(clip_ratio=0.2), policy,
                   (6 * (matmul - head) + attention) * B * seq + 6 * head * B * R),
    }
    out: dict = {"parameters": parameters, "zero_stage": cfg.zero_stage, "batch": B, "sequence": seq}
    for name, (objective, batch, flops) in runs.items():
        units = objective.units(batch)
        # two warm-up steps: allocator, kernels, optimizer state
        step = statistics.median(seconds_each(lambda: worker.train(batch, objective, units), steps, 2, device))
        out[name] = {"step_seconds": step, "tokens_per_s": B * seq / step, "tflops": flops / step / 1e12}
    sequences = SequenceBatch(policy.prompt, policy.response)
    calls = forward_micro_batches([probe_tokens(sequences)], cfg.forward_micro_batch_size, cfg.forward_token_budget)
    times = seconds_each(lambda: worker.forward(sequences, TokenLogprobs(), calls), 3, 1, device)  # 1: eval path
    out["reference_logprobs_tokens_per_s"] = B * seq / statistics.median(times)
    if device == "cuda":
        out["gpu_peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    torch.distributed.destroy_process_group()  # the worker's one-rank world, before the next part
    return out


def bench_generate(path: str, size: dict, device: str) -> dict:
    """HF `generate` (KV cache, sampling) in the device's dtype: the rollout baseline vLLM is measured against."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    B, P, new = size["gen_batch"], size["gen_prompt"], size["gen_new"]
    ids = torch.randint(10, size["vocab_size"], (B, P), device=device)
    kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=True, top_k=0, pad_token_id=model.config.pad_token_id)
    warm = kw | {"max_new_tokens": 4, "min_new_tokens": 4}
    with torch.no_grad():
        model.generate(input_ids=ids[:, :8], attention_mask=torch.ones_like(ids[:, :8]), **warm)
        sync(device)
        t0 = time.perf_counter()
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)
        sync(device)
    secs = time.perf_counter() - t0
    return {"batch": B, "prompt": P, "new_tokens": new, "tokens_per_s": (out.shape[1] - P) * B / secs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.device")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", choices=sorted(SIZES), default="350m")
    ap.add_argument("--zero-stage", type=int, choices=(0, 2, 3), default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.size != "smoke" and device != "cuda":
        ap.error(f"size {args.size} is for a GPU; use --size smoke on a CPU")
    size = SIZES[args.size]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                     "torch": torch.__version__, "size": args.size, "zero_stage": args.zero_stage}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path, matmul, head = build_model(Path(tmp), size)
        print(f"[device] model built: {matmul / 1e6:.0f}M matmul parameters ({time.perf_counter() - t_start:.0f}s)",
              flush=True)
        results["matmul_tflops"] = matmul_tflops(device)
        results["trainer"] = bench_trainer(path, size, matmul, head, device, args.zero_stage)
        print(f"[device] trainer done ({time.perf_counter() - t_start:.0f}s)", flush=True)
        results["generate"] = bench_generate(path, size, device)
    for objective in ("sft", "policy"):
        t = results["trainer"][objective]
        t["mfu_vs_measured_matmul"] = t["tflops"] / results["matmul_tflops"]
        if device == "cuda":
            t["mfu_vs_datasheet"] = t["tflops"] / DATASHEET_BF16_TFLOPS
    results["seconds"] = time.perf_counter() - t_start
    (out_dir / f"device_{args.size}_z{args.zero_stage}.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
