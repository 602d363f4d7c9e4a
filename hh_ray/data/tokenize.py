"""Tokenization in HH's own chat format: an offline BPE tokenizer, prompt/response masks, left truncation.

The text is never reformatted: a dialogue is the HH transcript itself ("\\n\\nHuman: ...\\n\\nAssistant: ..."),
so what the policy reads and writes is byte for byte what the crowdworkers saw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from hh_ray.data.hh import ASSISTANT, HUMAN

PAD = "<|pad|>"
EOS = "<|endoftext|>"
END_OF_CONTEXT = "<|endofcontext|>"  # appended after a response; a decoder PM scores its hidden state


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path):
    """Train a byte-level BPE on `texts` and save it in HF format (round-trips any text exactly)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, END_OF_CONTEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, bos_token=None,
                                 additional_special_tokens=[END_OF_CONTEXT], clean_up_tokenization_spaces=False,
                                 padding_side="right")
    hf.save_pretrained(str(out_dir))
    return hf


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:  # many HF decoders ship without one; reuse eos for padding
        tok.pad_token = tok.eos_token
    return tok


def end_of_context_id(tokenizer) -> int | None:
    """The id a decoder PM appends after a response, or None for tokenizers without it (encoders)."""
    tid = tokenizer.convert_tokens_to_ids(END_OF_CONTEXT)
    return None if tid is None or tid == tokenizer.unk_token_id else tid


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def truncate_prompt(tokenizer, prompt: str, max_tokens: int) -> list[int]:
    """Token ids of `prompt`, dropping whole early turns until it fits, then cutting tokens on the left.

    The last turns (and the final "\\n\\nAssistant:") carry what the response must answer, so they are kept.
    """
    ids = _ids(tokenizer, prompt)
    text = prompt
    while len(ids) > max_tokens:
        nxt = text.find(HUMAN, 1)
        if nxt < 0:
            return ids[-max_tokens:]
        text = text[nxt:]
        ids = _ids(tokenizer, text)
    return ids


@dataclass
class Encoded:
    input_ids: list[int]
    loss_mask: list[int]  # 1 on tokens the loss is taken on (assistant text, eos)


def encode_dialogue(tokenizer, transcript: str, max_tokens: int) -> Encoded:
    """A whole dialogue for SFT: loss on every assistant turn's text and a closing eos, none on the rest.

    Long dialogues are cut on the left (earliest turns go first), keeping the final answer.
    """
    ids: list[int] = []
    mask: list[int] = []
    for seg in re.split(r"(?=\n\nHuman:|\n\nAssistant:)", transcript):  # cut before every turn marker
        # an assistant turn: its marker unmasked, the answer text masked in; any other text unmasked
        parts = ((ASSISTANT, 0), (seg[len(ASSISTANT):], 1)) if seg.startswith(ASSISTANT) else ((seg, 0),)
        for part, m in parts:
            if part:
                t = _ids(tokenizer, part)
                ids += t
                mask += [m] * len(t)
    ids.append(tokenizer.eos_token_id)
    mask.append(1)
    if len(ids) > max_tokens:
        ids, mask = ids[-max_tokens:], mask[-max_tokens:]
    return Encoded(ids, mask)


def pm_input_ids(tokenizer, prompt: str, response: str, max_tokens: int) -> list[int]:
    """PM input: the dialogue, then the end-of-context token for decoders (encoders add their own specials).

    The dialogue is cut from the left only: the prompt gives way first, whole early turns at a time, and the
    response is kept whole, so the score sees how the answer ends. A response longer than the whole budget
    (possible in static data, refused at config load for PPO samples) keeps its last tokens.
    """
    eoc = end_of_context_id(tokenizer)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    pair = eoc is None and cls is not None and sep is not None  # encoders: [CLS] prompt [SEP] response [SEP]
    specials = 3 if pair else (1 if eoc is not None else 0)
    budget = max_tokens - specials
    r = _ids(tokenizer, response)[-budget:]
    p = truncate_prompt(tokenizer, prompt, budget - len(r)) if budget > len(r) else []
    if pair:
        return [cls] + p + [sep] + r + [sep]
    return p + r + ([eoc] if eoc is not None else [])
