"""Where a SmolLM2 PPO policy step's time goes: torch.profiler over one forward+backward, by operator.

    python -m benchmarks.profile_step [--dtype bfloat16|float32] [--threads 2] [--top 15]

One process, no Ray or DeepSpeed (the trainer adds its optimizer step, small with LoRA): the model as the
trainer holds it (its dtype, LoRA on the top 12 layers), the PPO objective on 8 HH prompts x 48 response tokens.
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile_step")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--compile", action="store_true", help="torch.compile the decoder layers (fused elementwise ops)")
    args = ap.parse_args(argv)
    from hh_ray.algo.batch import PolicyBatch
    from hh_ray.config import LoRAConfig, default_data_dir
    from hh_ray.data import load_comparisons
    from hh_ray.data.tokenize import load_tokenizer, truncate_prompt
    from hh_ray.models.forward import load_model
    from hh_ray.models.lora import add_lora
    from hh_ray.models.objectives import PolicyObjective
    from hh_ray.models.presets import resolve_pretrained

    torch.set_num_threads(args.threads)
    path = resolve_pretrained("smollm2-135m")
    tok = load_tokenizer(path)
    items, _ = load_comparisons(default_data_dir(), ["helpful-base"], "test", False)
    prompts = [truncate_prompt(tok, c.prompt, 192) for c in items[:8]]
    g = torch.Generator().manual_seed(0)
    responses = [torch.randint(100, 40000, (48,), generator=g).tolist() for _ in prompts]
    batch = PolicyBatch(prompts, responses, [[-2.0] * 48 for _ in prompts],
                        [torch.randn(48, generator=g).tolist() for _ in prompts])
    model = add_lora(load_model(path, "causal_lm", getattr(torch, args.dtype)),
                     LoRAConfig(rank=16, alpha=32, top_layers=12), "causal_lm")
    if args.compile:
        for layer in model.get_decoder().layers:
            layer.compile(dynamic=True)

    def step():
        PolicyObjective().loss(model, batch, tok.pad_token_id)[0].backward()

    t = time.perf_counter()
    step()  # warm-up (and compilation)
    print(f"first step {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    step()
    print(f"{args.dtype}: one forward+backward {time.perf_counter() - t:.2f} s "
          f"({sum(map(len, prompts)) + 8 * 48} tokens)")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40))


if __name__ == "__main__":
    main()
