"""PM sweep on SmolLM2 (GPU): which training budget/config makes the PM learn harmless-base? Not part of the repo."""

import json
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.getcwd())
from hh_ray.config import LoRAConfig
from hh_ray.data.hh import load_comparisons, mix_subsets, prompt_bucket, split_holdout
from hh_ray.data.tokenize import load_tokenizer, pm_input_ids
from hh_ray.models.lora import add_lora

OUT = Path(os.environ.get("OUT", "/tmp/out"))
dev = "cuda" if torch.cuda.is_available() else "cpu"
model_dir, data_dir = sys.argv[1], sys.argv[2]
quick = len(sys.argv) > 3
SUBS = ["harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"]
items, _ = load_comparisons(data_dir, SUBS, "test", False)
train_all, held = split_holdout(items, 0.1)
tok = load_tokenizer(model_dir, "auto")


def halves(weights):
    mixed = mix_subsets(train_all, weights, 0)
    first = [c for c in mixed if prompt_bucket(c.prompt) < 0.55]
    val = [c for c in train_all if prompt_bucket(c.prompt) >= 0.55]  # the other half, unweighted: validation
    return first, val


enc_cache = {}


def enc(c, mt):
    k = (id(c), mt)
    if k not in enc_cache:
        enc_cache[k] = (pm_input_ids(tok, c.prompt, c.chosen, mt), pm_input_ids(tok, c.prompt, c.rejected, mt))
    return enc_cache[k]


def collate(seqs):
    n = max(map(len, seqs))
    ids = torch.zeros(len(seqs), n, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
    return ids.to(dev), att.to(dev)


def scores(model, seqs):
    ids, att = collate(seqs)
    with torch.autocast(dev, dtype=torch.bfloat16):
        return model(input_ids=ids, attention_mask=att).logits[:, 0].float()


@torch.no_grad()
def evaluate(model, pairs, mt):
    model.eval()
    correct = []
    for i in range(0, len(pairs), 32):
        b = [enc(c, mt) for c in pairs[i : i + 32]]
        s = scores(model, [x[0] for x in b] + [x[1] for x in b])
        n = len(b)
        correct += (s[:n] > s[n:]).tolist()
    model.train()
    res = {"all": sum(correct) / len(correct)}
    for sub in SUBS:
        sel = [x for x, c in zip(correct, pairs) if c.subset == sub]
        res[sub] = round(sum(sel) / max(len(sel), 1), 3)
    return res


def run(name, top, lr, steps, mt=192, hw=3.0, bs=8, rank=16, evals=()):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    if top >= 0:
        model = add_lora(model, LoRAConfig(rank=rank, alpha=2 * rank, top_layers=top), "pm")
    model.to(dev).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = 5
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(steps - warm, 1)))
    )
    first, val = halves({"harmless-base": hw})
    rng = random.Random(0)
    order = []
    t0 = time.time()
    hist = []
    tr = []
    for step in range(1, steps + 1):
        if len(order) < bs:
            perm = list(range(len(first)))
            rng.shuffle(perm)
            order += perm
        idx, order = order[:bs], order[bs:]
        b = [enc(first[i], mt) for i in idx]
        s = scores(model, [x[0] for x in b] + [x[1] for x in b])
        d = s[:bs] - s[bs:]
        loss = (-torch.nn.functional.logsigmoid(d) + 0.001 * (s[:bs] + s[bs:]) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        tr += [(first[i].subset, float(x > 0)) for i, x in zip(idx, d)]
        if step in evals or step == steps:
            last = tr[-400:]
            th = [x for s_, x in last if s_ == "harmless-base"]
            row = {
                "name": name,
                "step": step,
                "epochs": round(step * bs / len(first), 2),
                "sec": round(time.time() - t0, 1),
                "train_acc_last400": round(sum(x for _, x in last) / len(last), 3),
                "train_harmless_last400": round(sum(th) / max(len(th), 1), 3),
                "held": evaluate(model, held, mt),
                "val": evaluate(model, val if not quick else val[:64], mt),
            }
            hist.append(row)
            print(json.dumps(row), flush=True)
            with open(OUT / "sweep.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
    del model, opt
    torch.cuda.empty_cache() if dev == "cuda" else None
    return hist


OUT.mkdir(parents=True, exist_ok=True)
print("pairs", len(items), "held", len(held), "train", len(train_all), flush=True)
if quick:
    held = held[:32]
    run("smoke", 10, 5e-4, 2, evals=(1,))
    sys.exit()
grid = [
    ("lora_top10_lr5e-4", 10, 5e-4, 100, {}),  # today's job
    ("lora_top10_lr5e-4", 10, 5e-4, 1100, {"evals": (100, 200, 350, 700)}),
    ("lora_all_lr5e-4", 0, 5e-4, 350, {"evals": (100, 200)}),
    ("lora_top10_lr2e-3", 10, 2e-3, 350, {"evals": (100, 200)}),
    ("full_lr1e-5", -1, 1e-5, 350, {"evals": (100, 200)}),
    ("full_lr3e-5", -1, 3e-5, 350, {"evals": (100, 200)}),
    ("lora_top10_lr5e-4_hw1", 10, 5e-4, 350, {"evals": (100, 200), "hw": 1.0}),
    ("lora_top10_lr5e-4_mt128", 10, 5e-4, 350, {"evals": (100, 200), "mt": 128}),
    ("lora_all_lr1e-3", 0, 1e-3, 700, {"evals": (100, 200, 350)}),
]
for name, top, lr, steps, kw in grid:
    run(name, top, lr, steps, **kw)
