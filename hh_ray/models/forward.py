"""Model loading and the forward passes every role shares: collation, response logprobs, values, PM scores.

One layout throughout: a sample is prompt ids followed by response ids, right-padded, so positions start at 0
as in the rollout engine. Per-token outputs are returned left-aligned over the response, [batch, T_response].
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from hh_ray.algo.batch import first_fit
from hh_ray.algo.ppo import token_logprobs
from hh_ray.data.tokenize import load_tokenizer, pm_input_ids
from hh_ray.models.prefix import run_backbone

KINDS = ("causal_lm", "pm", "value")
PM_STATS = "pm_stats.json"


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX): there bf16 GEMMs run ~2.4x fp32; elsewhere
    bf16 is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_dtype(name: str, on_gpu: bool) -> torch.dtype:
    """`model.dtype` as `config.train_dtype` hands it on: "auto" is bf16 on a GPU and fp32 on CPU (the random-init
    presets, compared exactly in tests); "bfloat16" on a CPU without native bf16 falls back to fp32, said once."""
    if name == "auto":
        return torch.bfloat16 if on_gpu else torch.float32
    if name == "bfloat16" and not on_gpu and not cpu_has_native_bf16():
        _warn_once("this CPU has no native bf16 (AVX512-BF16/AMX): models run in float32")
        return torch.float32
    return DTYPES[name]


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"[hh-ray] {message}", file=sys.stderr, flush=True)


def load_model(path: str, kind: str, dtype: torch.dtype = torch.float32):
    """`from_pretrained` for a role: causal LM (policy, reference), scalar-head PM, per-token value head."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    if kind == "causal_lm":
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    elif kind in ("pm", "value"):
        # no dropout before the scalar head (HF defaults it to 0.1): a score must be a function of the text
        config = AutoConfig.from_pretrained(path, num_labels=1)
        config.classifier_dropout = 0.0
        auto = AutoModelForSequenceClassification if kind == "pm" else AutoModelForTokenClassification
        model = auto.from_pretrained(path, config=config, dtype=dtype)
    else:
        raise ValueError(f"unknown model kind '{kind}'; kinds: {', '.join(KINDS)}")
    if model.config.pad_token_id is None:  # sequence-classification pooling needs it
        model.config.pad_token_id = load_tokenizer(path).pad_token_id
    return model


def collate(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        att[i, : len(s)] = 1
    return ids, att


@dataclass
class Layout:
    """Prompt+response samples laid out for one forward pass, and where each response token's prediction is.

    Output at (rows[b, k], cols[b, k]) predicts response token k of sample b; `mask` marks real tokens.
    """

    ids: torch.Tensor  # [R, L]
    model_kwargs: dict  # attention_mask (2-D when padded, block-diagonal causal 4-D when packed), position_ids
    rows: torch.Tensor  # [B, T]
    cols: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T]
    tokens: int  # real (non-padding) tokens in `ids`
    seqs: list[list[int]]  # each sample's tokens, prompt then response
    spans: list[tuple[int, int, int]]  # (row, start, length) of each sample's tokens in `ids`

    def to(self, device) -> "Layout":
        return Layout(self.ids.to(device), {k: v.to(device) for k, v in self.model_kwargs.items()},
                      self.rows.to(device), self.cols.to(device), self.mask.to(device), self.tokens, self.seqs,
                      self.spans)

    @property
    def padding_share(self) -> float:
        """Share of the forward pass's token slots that hold no sample (compute spent on nothing)."""
        return 1.0 - self.tokens / self.ids.numel()


def layout(prompts: list[list[int]], responses: list[list[int]], pad_id: int, pack_to: int = 0) -> Layout:
    """Padded rows (one sample each, right-padded), or with `pack_to` > 0 packed rows of at least that length.

    Packed samples keep their own positions (0, 1, ...) and attend only within themselves, so every output
    equals the padded layout's, without computing on padding.
    """
    seqs = [p + r for p, r in zip(prompts, responses)]
    T = max(max((len(r) for r in responses), default=1), 1)
    k = torch.arange(T)[None, :]
    mask = (k < torch.tensor([len(r) for r in responses])[:, None]).float()
    prompt_len = torch.tensor([len(p) for p in prompts])[:, None]
    if pack_to <= 0:
        ids, att = collate(seqs, pad_id)
        cols = (prompt_len + k - 1).clamp(0, ids.shape[1] - 2)
        rows = torch.arange(len(seqs))[:, None].expand(-1, T)
        return Layout(ids, {"attention_mask": att}, rows, cols, mask, sum(map(len, seqs)), seqs,
                      [(b, 0, len(s)) for b, s in enumerate(seqs)])
    width = max(pack_to, max(len(s) for s in seqs))
    groups = first_fit([len(s) for s in seqs], width)
    ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(groups), width), dtype=torch.long)
    seg = torch.full((len(groups), width), -1, dtype=torch.long)
    row_of, offset_of = [0] * len(seqs), [0] * len(seqs)
    for r, members in enumerate(groups):
        at = 0
        for b in members:
            n = len(seqs[b])
            ids[r, at:at + n] = torch.tensor(seqs[b], dtype=torch.long)
            pos[r, at:at + n] = torch.arange(n)
            seg[r, at:at + n] = b
            row_of[b], offset_of[b] = r, at
            at += n
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    att = (seg[:, :, None] == seg[:, None, :]) & causal & (seg[:, :, None] >= 0)
    att |= torch.eye(width, dtype=torch.bool)  # padding slots attend to themselves (no empty softmax rows)
    offsets = torch.tensor(offset_of)[:, None]
    cols = (offsets + prompt_len + k - 1).clamp(0, width - 2)
    rows = torch.tensor(row_of)[:, None].expand(-1, T)
    return Layout(ids, {"attention_mask": att[:, None], "position_ids": pos}, rows, cols, mask, sum(map(len, seqs)),
                  seqs, [(r, o, len(s)) for r, o, s in zip(row_of, offset_of, seqs)])


def response_logprobs(
    model, prompts: list[list[int]], responses: list[list[int]], pad_id: int, temperature: float = 1.0,
    entropy: str = "none", pack_to: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """log pi(response token | context) for each response token: ([B, T], mask [B, T], entropy or None; `entropy`
    as in `token_logprobs`).

    Logits are divided by the sampling temperature, so these match the engine's processed logprobs.
    """
    device = next(model.parameters()).device
    lay = layout(prompts, responses, pad_id, pack_to).to(device)
    # No KV cache (use_cache=False): hh-ray never generates with these models, and a cache filled on every
    # training forward is copies for nothing. The LM head runs only where it predicts a response token: prompts
    # are long and the vocabulary wide, so full-sequence logits would cost several times the rest of the forward.
    base = getattr(model, "module", model)  # a DeepSpeed engine wraps the HF model
    decoder = base.get_decoder()
    hidden = run_backbone(decoder, decoder, lay, use_cache=False).last_hidden_state
    picked = base.get_output_embeddings()(hidden[lay.rows, lay.cols]).float() / temperature  # [B, T, V]
    targets = lay.ids[lay.rows, (lay.cols + 1).clamp_max(lay.ids.shape[1] - 1)]
    logp, ent = token_logprobs(picked, targets, entropy)
    return logp * lay.mask, lay.mask, (ent * lay.mask if ent is not None else None)


def response_values(model, prompts: list[list[int]], responses: list[list[int]], pad_id: int, pack_to: int = 0):
    """V(state before response token k) from a per-token value head: ([B, T], mask)."""
    device = next(model.parameters()).device
    lay = layout(prompts, responses, pad_id, pack_to).to(device)
    decoder = getattr(model, "module", model).get_decoder()
    values = run_backbone(model, decoder, lay, use_cache=False).logits.squeeze(-1).float()
    return values[lay.rows, lay.cols] * lay.mask, lay.mask


def sequence_scores(model, seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    """One scalar per sequence from a PM (the head reads the last real token, the end-of-context token)."""
    device = next(model.parameters()).device
    ids, att = collate(seqs, pad_id)
    return model(input_ids=ids.to(device), attention_mask=att.to(device), use_cache=False).logits[:, 0].float()


def read_pm_stats(path: str | Path) -> dict:
    """The PM's score mean/std on its eval set, for normalized rewards; identity when absent."""
    f = Path(path) / PM_STATS
    return json.loads(f.read_text()) if f.is_file() else {"mean": 0.0, "std": 1.0}


SCORE_BATCH_ROWS = 32  # texts per PM forward pass in score_texts (the capacity plan sizes activations by it)


@torch.no_grad()
def score_texts(model, tokenizer, prompts: list[str], responses: list[str], max_tokens: int,
                batch_size: int = SCORE_BATCH_ROWS) -> torch.Tensor:
    """Raw PM scores of (prompt, response) texts, in order (the PM's own tokenizer and input format)."""
    model.eval()
    out = []
    for i in range(0, len(prompts), batch_size):
        seqs = [pm_input_ids(tokenizer, p, r, max_tokens) for p, r in zip(prompts[i:i + batch_size],
                                                                          responses[i:i + batch_size])]
        out.append(sequence_scores(model, seqs, tokenizer.pad_token_id))
    return torch.cat(out) if out else torch.zeros(0)
