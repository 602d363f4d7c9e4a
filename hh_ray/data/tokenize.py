"""Tokenization of HH dialogues: prompt/response ids, SFT masks, PM inputs, left truncation, in two formats.

Texts travel through hh-ray as HH transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ..."); only here do they become
tokens, in one of two formats, decided by the tokenizer (`load_tokenizer(path, fmt)`):
- hh: the transcript itself, byte for byte what the crowdworkers saw (the random-init presets' BPE tokenizers);
- chat: the turns rendered through the model's chat template, as a chat model was tuned to read them. A prompt
  ends with the template's assistant header; a response is its text, stripped, then the end-of-turn token (eos).
Either way the prompt's ids followed by the response's are the ids of the whole rendered dialogue (tested).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from hh_ray.data.hh import ASSISTANT, HUMAN, split_turns

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


def load_tokenizer(path: str | Path, fmt: str = "auto"):
    """The tokenizer at `path`, set to format `fmt` (`data.format`): "hh" drops its chat template, "chat" needs one."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:  # many HF decoders ship without one; reuse eos for padding
        tok.pad_token = tok.eos_token
    if fmt == "hh":
        tok.chat_template = None
    elif fmt == "chat" and not uses_chat(tok):
        raise ValueError(f"data.format=chat, but the tokenizer at {path} has no chat template; use data.format=hh")
    return tok


def uses_chat(tokenizer) -> bool:
    """Whether dialogues are rendered through the tokenizer's chat template (see the module docstring)."""
    return bool(getattr(tokenizer, "chat_template", None))


ROLES = {"Human": "user", "Assistant": "assistant", "": "user"}


def chat_messages(transcript: str) -> list[dict[str, str]]:
    """HH turns as chat messages; a prompt's closing empty "Assistant:" turn is left to the generation header."""
    msgs = [{"role": ROLES[role], "content": text.strip()} for role, text in split_turns(transcript)]
    return msgs[:-1] if msgs and msgs[-1]["role"] == "assistant" and not msgs[-1]["content"] else msgs


def render(tokenizer, messages: list[dict[str, str]], open_turn: bool) -> str:
    """The chat template's text; `open_turn` ends it with the assistant header (a prompt)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=open_turn)


def response_ids(tokenizer, response: str) -> list[int]:
    """A response's ids as the policy writes them: in chat format its stripped text and the end-of-turn token."""
    if uses_chat(tokenizer):
        return _ids(tokenizer, response.strip()) + [tokenizer.eos_token_id]
    return _ids(tokenizer, response)


def context_ids(tokenizer, context: str) -> list[int]:
    """Ids of a context put before a dialogue (context distillation's HHH prompt): in chat format a system turn."""
    if uses_chat(tokenizer):
        return _ids(tokenizer, render(tokenizer, [{"role": "system", "content": context.strip()}], False))
    return _ids(tokenizer, context)


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
    if uses_chat(tokenizer):
        msgs = chat_messages(prompt)
        ids = _ids(tokenizer, render(tokenizer, msgs, True))
        while len(ids) > max_tokens and len(msgs) > 1:
            msgs = msgs[2:] if len(msgs) > 2 else msgs[1:]  # the earliest exchange (a user and an assistant turn)
            ids = _ids(tokenizer, render(tokenizer, msgs, True))
        return ids[-max_tokens:] if len(ids) > max_tokens else ids
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
    if uses_chat(tokenizer):
        return _encode_chat(tokenizer, transcript, max_tokens)
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


def _encode_chat(tokenizer, transcript: str, max_tokens: int) -> Encoded:
    """`encode_dialogue` in chat format: each assistant turn's text and its end-of-turn token are learned; the
    template's headers, the user turns and the system turn are not. Pieces are the differences between renders of
    growing prefixes, so their ids join to the ids of the whole render."""
    msgs = chat_messages(transcript)
    ids: list[int] = []
    mask: list[int] = []
    done = ""  # the text already encoded

    def add(text: str, learned: int) -> None:
        t = _ids(tokenizer, text)
        ids.extend(t)
        mask.extend([learned] * len(t))

    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        head = render(tokenizer, msgs[:k], True)
        add(head[len(done):], 0)
        add(m["content"], 1)
        ids.append(tokenizer.eos_token_id)
        mask.append(1)
        done = head + m["content"] + tokenizer.eos_token
    if len(ids) > max_tokens:
        ids, mask = ids[-max_tokens:], mask[-max_tokens:]
    return Encoded(ids, mask)


def pm_input_ids(tokenizer, prompt: str, response: str, max_tokens: int) -> list[int]:
    """PM input: the dialogue, then the end-of-context token for decoders (encoders add their own specials).

    The dialogue is cut from the left only: the prompt gives way first, whole early turns at a time, and the
    response is kept whole, so the score sees how the answer ends. A response longer than the whole budget
    (possible in static data, refused at config load for PPO samples) keeps its last tokens.
    """
    if uses_chat(tokenizer):  # the response's closing end-of-turn token is the end of context the PM reads
        r = response_ids(tokenizer, response)[-max_tokens:]
        return (truncate_prompt(tokenizer, prompt, max_tokens - len(r)) if max_tokens > len(r) else []) + r
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
