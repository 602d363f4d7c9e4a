"""`hh-ray sft`: fine-tune the initial policy on chosen HH dialogues, loss on assistant tokens only."""

from __future__ import annotations

import random
from pathlib import Path

from hh_ray.data import load_train_holdout
from hh_ray.data.tokenize import encode_dialogue, load_tokenizer
from hh_ray.driver.cluster import connect
from hh_ray.driver.runlog import RunLog, write_json_atomic
from hh_ray.models.presets import ensure_policy
from hh_ray.workers.trainer import TrainerGroup, latest_tag


def batches(n_items: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Indices of the batch for `step`: epoch-wise permutations from `seed`, so a resumed run sees the same data."""
    per_epoch = max(1, n_items // batch_size)
    epoch, k = divmod(step, per_epoch)
    order = list(range(n_items))
    random.Random(seed * 100003 + epoch).shuffle(order)
    return order[k * batch_size:(k + 1) * batch_size]


def initial_policy(cfg) -> str:
    """The run's starting policy (a preset is built, with its tokenizer, from the run's training text)."""
    def texts():
        train, _, _ = load_train_holdout(cfg.data, cfg.seed)
        return [c.chosen_dialogue for c in train]

    return ensure_policy(cfg.model.policy, cfg.run_dir, texts, cfg.model.tokenizer_vocab_size, cfg.seed)


def run_sft(cfg) -> str:
    """Train, evaluate on held-out dialogues, export HF weights to `<run_dir>/sft`; returns that path."""
    run_dir = Path(cfg.run_dir)
    out = run_dir / "sft"
    init = initial_policy(cfg)
    tok = load_tokenizer(init)
    train, held, _ = load_train_holdout(cfg.data, cfg.seed)
    max_tokens = cfg.data.max_prompt_tokens + cfg.data.max_response_tokens
    encoded = [encode_dialogue(tok, c.chosen_dialogue, max_tokens) for c in train]
    held_enc = [encode_dialogue(tok, c.chosen_dialogue, max_tokens) for c in held[:256]]

    connect(cfg.ray)
    t = cfg.sft.trainer
    group = TrainerGroup("sft-trainer", init, "causal_lm", t, cfg.seed)
    ckpt = run_dir / "checkpoints" / "sft"
    start = 0
    if latest_tag(str(ckpt)):
        start = group.load_checkpoint(str(ckpt))["step"]
        print(f"[sft] resumed from {ckpt} at step {start}")
    bs = t.micro_batch_size * t.grad_accum_steps * t.num_ranks
    log = RunLog(out.with_name("sft-logs"), "sft", cfg.sft.steps, cfg.sft.log_every, fresh=start == 0)

    def as_batch(items):
        return {"input_ids": [e.input_ids for e in items], "loss_mask": [e.loss_mask for e in items]}

    for step in range(start + 1, cfg.sft.steps + 1):
        idx = batches(len(encoded), bs, cfg.seed, step - 1)
        stats = group.train(as_batch([encoded[i] for i in idx]), "sft")
        log.log(step, {"loss": stats["loss"], "lr": stats["lr"], "tokens": stats["units"],
                       "tokens_per_s": stats["units"] / stats["seconds"]}, show=("loss", "tokens_per_s"))
    held_stats = group.evaluate(as_batch(held_enc), "sft") if held_enc else {"loss": float("nan")}
    group.save_checkpoint(str(ckpt), f"step{cfg.sft.steps}", {"step": cfg.sft.steps})
    group.export_hf(str(out))
    group.shutdown()
    write_json_atomic(out.with_name("sft-logs") / "eval.json", {"heldout_nll": held_stats["loss"],
                                                               "heldout_dialogues": len(held_enc)})
    print(f"[sft] held-out NLL per assistant token {held_stats['loss']:.3f}; policy saved to {out}")
    return str(out)
