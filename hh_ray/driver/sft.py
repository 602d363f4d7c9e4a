"""`hh-ray sft`: fine-tune the initial policy on chosen HH dialogues, loss on assistant tokens only."""

from __future__ import annotations

import random
from pathlib import Path

from hh_ray.algo.batch import TokenBatch
from hh_ray.config import JobConfig, train_dtype
from hh_ray.data import load_train_holdout
from hh_ray.data.tokenize import context_ids, encode_dialogue, load_tokenizer
from hh_ray.driver.cluster import connect
from hh_ray.driver.runlog import write_json_atomic
from hh_ray.driver.stage import run_stage
from hh_ray.models.objectives import ContextDistillObjective, DialogueNLL, SFTObjective
from hh_ray.models.presets import ensure_policy
from hh_ray.workers.trainer import TrainerGroup


def batches(n_items: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of the batch for `step`: epoch-wise permutations from `seed`, so a resumed run sees the same data."""
    per_epoch = max(1, n_items // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = list(range(n_items))
    random.Random(seed * 100003 + epoch).shuffle(order)
    return order[k * batch_size:(k + 1) * batch_size]


def initial_policy(cfg: JobConfig) -> str:
    """The run's starting policy (a preset is built, with its tokenizer, from the run's training text)."""
    def texts():
        train, _, _ = load_train_holdout(cfg.data, cfg.seed)
        return [c.chosen_dialogue for c in train]

    return ensure_policy(cfg.model.policy, cfg.run_dir, texts, cfg.model.tokenizer_vocab_size, cfg.seed)


def starting_policy(cfg: JobConfig) -> str:
    """The policy PPO and the analyses start from: the run's SFT export, else its initial policy."""
    sft = Path(cfg.run_dir) / "sft"
    return str(sft) if (sft / "config.json").is_file() else initial_policy(cfg)


def sft_objective(cfg: JobConfig, tok):
    """SFT on chosen dialogues, or context distillation of the HHH prompt (`sft.mode`)."""
    if cfg.sft.mode == "context_distill":
        from hh_ray.algo.distill import HHH_PROMPT

        prompt = cfg.sft.hhh_prompt or HHH_PROMPT
        return ContextDistillObjective(tuple(context_ids(tok, prompt)))
    return SFTObjective()


def run_sft(cfg: JobConfig) -> str:
    """Train, evaluate on held-out dialogues, export HF weights to `<run_dir>/sft`; returns that path."""
    run_dir = Path(cfg.run_dir)
    out = run_dir / "sft"
    init = initial_policy(cfg)
    tok = load_tokenizer(init, cfg.data.format)
    train, held, _ = load_train_holdout(cfg.data, cfg.seed)
    max_tokens = cfg.data.max_prompt_tokens + cfg.data.max_response_tokens
    encoded = [encode_dialogue(tok, c.chosen_dialogue, max_tokens) for c in train]
    held_enc = [encode_dialogue(tok, c.chosen_dialogue, max_tokens) for c in held[:256]]
    def as_batch(items):
        return TokenBatch([e.input_ids for e in items], [e.loss_mask for e in items])
    t = cfg.sft.trainer
    bs = t.micro_batch_size * t.grad_accum_steps * t.num_ranks

    connect(cfg.ray, cfg.run_dir)
    group = TrainerGroup("sft-trainer", init, "causal_lm", t, cfg.seed, train_dtype(cfg.model))
    try:
        run_stage("sft", group, sft_objective(cfg, tok), cfg.sft.steps,
                  lambda step: as_batch([encoded[i] for i in batches(len(encoded), bs, cfg.seed, step - 1)]),
                  run_dir / "checkpoints" / "sft", run_dir / "sft-logs", cfg, cfg.sft.log_every,
                  cfg.sft.checkpoint_every, show=("sft/loss", "sft/units_per_s"))
        nll = group.forward(as_batch(held_enc), DialogueNLL()) if held_enc else []
        group.export_hf(str(out))
    finally:
        group.shutdown()
    heldout = sum(s for s, _ in nll) / max(sum(n for _, n in nll), 1) if nll else float("nan")
    write_json_atomic(run_dir / "sft-logs" / "eval.json", {"heldout_nll": heldout, "heldout_dialogues": len(held_enc)})
    print(f"[sft] held-out NLL per assistant token {heldout:.3f}; policy saved to {out}")
    return str(out)
