"""TRL's PPO trainer on the same policy, PM, value model and prompts as hh-ray's PPO benchmark.

Run in its own process (so its thread settings are its own) by `python -m benchmarks`:

    python -m benchmarks.trl_ppo --policy DIR --reward DIR --prompts prompts.json --steps N --out result.json

Needs `pip install -r benchmarks/requirements.txt` (trl==1.12.0, the last release with PPO). Writes the wall
seconds of every PPO step (generation, reference, reward and value passes, PPO epochs), measured from TRL's own
`on_step_end` callback, and the process's peak resident memory.

Settings (searched by `benchmarks.trl_comparison` for TRL's fastest): BLAS threads (OMP_NUM_THREADS), `--dtype`
(float32; autocast = float32 weights under bf16 autocast, TRL's `bf16=True`; bfloat16 = every model loaded in
bf16) and `--lora-rank` (adapters on the policy through TRL's `peft_config`, which makes the reference the policy
with its adapters off, and the same adapters injected into the value model's backbone, as hh-ray's critic has).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.trl_ppo")
    ap.add_argument("--policy", required=True, help="causal LM folder; also the value model's backbone")
    ap.add_argument("--reward", required=True, help="sequence-classification PM folder (num_labels=1)")
    ap.add_argument("--prompts", required=True, help="JSON list of prompt token-id lists")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--batch", type=int, default=16, help="samples per PPO step")
    ap.add_argument("--response-length", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--minibatches", type=int, default=1)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("float32", "autocast", "bfloat16"), default="float32")
    ap.add_argument("--lora-rank", type=int, default=0, help="0 = every weight trains")
    ap.add_argument("--lora-alpha", type=float, default=32.0)
    ap.add_argument("--lora-top-layers", type=int, default=0, help="adapters on the top N layers only (0 = all)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from hh_ray.data.tokenize import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(args.policy)
    tok.padding_side = "left"
    assert tok.pad_token_id != tok.eos_token_id, "TRL's PPO needs a pad token distinct from eos"
    prompts = json.loads(open(args.prompts).read())
    train = Dataset.from_dict({"input_ids": prompts})
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    policy = AutoModelForCausalLM.from_pretrained(args.policy, dtype=dtype)
    value = AutoModelForSequenceClassification.from_pretrained(args.policy, num_labels=1, dtype=dtype)
    reward = AutoModelForSequenceClassification.from_pretrained(args.reward, num_labels=1, dtype=dtype)
    for m in (value, reward):
        m.config.pad_token_id = tok.pad_token_id
    ref, peft_config = AutoModelForCausalLM.from_pretrained(args.policy, dtype=dtype), None
    if args.lora_rank:
        ref = None  # TRL's reference is then the policy with its adapters disabled
        peft_config = adapters_on_value(value, policy.config.num_hidden_layers, args)

    class StepClock(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_train_begin(self, *a, **k):
            self.marks.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.marks.append(time.perf_counter())

    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PPOConfig(
            output_dir=tmp, per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
            local_rollout_forward_batch_size=args.batch, num_mini_batches=args.minibatches,
            num_ppo_epochs=args.epochs, response_length=args.response_length, total_episodes=args.batch * args.steps,
            learning_rate=1e-5, kl_coef=0.001, stop_token="eos", temperature=1.0, seed=0,
            use_cpu=args.device == "cpu", bf16=args.device == "cuda" or args.dtype == "autocast",
            gradient_checkpointing=False,
            num_sample_generations=0, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = PPOTrainer(args=cfg, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                             value_model=value, train_dataset=train, eval_dataset=train.select(range(args.batch)),
                             callbacks=[clock], peft_config=peft_config)
        trainer.train()
    steps = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
    import resource

    result = {"step_seconds": steps, "batch": args.batch, "threads": torch.get_num_threads(), "dtype": args.dtype,
              "lora_rank": args.lora_rank,
              "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "trl": __import__("trl").__version__}
    open(args.out, "w").write(json.dumps(result))
    return 0


def adapters_on_value(value, num_layers: int, args):
    """The LoRA config TRL puts on the policy, injected into the value model too (its head trains whole)."""
    from peft import LoraConfig, inject_adapter_in_model

    top = args.lora_top_layers
    config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                        layers_to_transform=list(range(num_layers - top, num_layers)) if 0 < top < num_layers else None)
    inject_adapter_in_model(config, value)  # its backbone's layers; the head is no target
    for name, p in value.named_parameters():  # the adapters and the new value head train
        p.requires_grad_("lora_" in name or name.startswith("score."))
    return config


if __name__ == "__main__":
    raise SystemExit(main())
