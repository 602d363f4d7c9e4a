"""Tokenizer round trips, masks and truncation in HH's own format."""

from __future__ import annotations

from hh_ray.data.hh import SUBSETS, load_comparisons
from hh_ray.data.tokenize import (
    END_OF_CONTEXT,
    encode_dialogue,
    end_of_context_id,
    pm_input_ids,
    truncate_prompt,
)


def test_round_trip_on_real_hh_text(tokenizer, hh_dir):
    items, _ = load_comparisons(str(hh_dir), SUBSETS)
    for c in items[::7]:
        for text in (c.chosen_dialogue, c.rejected_dialogue):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert tokenizer.decode(ids) == text
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert end_of_context_id(tokenizer) == tokenizer.convert_tokens_to_ids(END_OF_CONTEXT)


def test_dialogue_mask_covers_assistant_text_only(tokenizer):
    t = "\n\nHuman: where is Paris?\n\nAssistant: In France.\n\nHuman: thanks\n\nAssistant: You are welcome."
    enc = encode_dialogue(tokenizer, t, 512)
    assert tokenizer.decode(enc.input_ids[:-1]) == t
    assert enc.input_ids[-1] == tokenizer.eos_token_id
    learned = tokenizer.decode([i for i, m in zip(enc.input_ids[:-1], enc.loss_mask[:-1]) if m])
    assert learned == " In France. You are welcome."
    short = encode_dialogue(tokenizer, t, 8)
    assert len(short.input_ids) == 8 and short.input_ids[-1] == tokenizer.eos_token_id


def test_left_truncation_keeps_last_turns(tokenizer):
    prompt = "".join(f"\n\nHuman: question number {i}\n\nAssistant: answer {i}" for i in range(20))
    prompt += "\n\nHuman: final question\n\nAssistant:"
    ids = truncate_prompt(tokenizer, prompt, 24)
    text = tokenizer.decode(ids)
    assert len(ids) <= 24
    assert text.startswith("\n\nHuman:") and text.endswith("\n\nHuman: final question\n\nAssistant:")
    assert prompt.endswith(text)
    assert len(truncate_prompt(tokenizer, "\n\nHuman: " + "word " * 200 + "\n\nAssistant:", 16)) == 16


def test_pm_input_ends_with_end_of_context(tokenizer):
    ids = pm_input_ids(tokenizer, "\n\nHuman: hi\n\nAssistant:", " hello there", 64)
    assert ids[-1] == end_of_context_id(tokenizer)
    assert tokenizer.decode(ids[:-1]) == "\n\nHuman: hi\n\nAssistant: hello there"


def test_pm_sees_the_last_token_of_a_long_response(tokenizer, tiny_model_dir):
    """A 300-token response with a 384-token PM budget: the prompt gives way, the response is kept whole, so a
    score that depends on the response's last token changes when that token changes."""
    import torch

    from hh_ray.models.forward import load_model, score_texts

    words = " ".join(f"word{i % 50}" for i in range(2000))
    prompt = f"\n\nHuman: {words}\n\nAssistant:"
    ids = tokenizer(" " + words, add_special_tokens=False)["input_ids"][:300]
    a = tokenizer.decode(ids[:-1] + [tokenizer(" yes", add_special_tokens=False)["input_ids"][0]])
    b = tokenizer.decode(ids[:-1] + [tokenizer(" no", add_special_tokens=False)["input_ids"][0]])
    ids_a = pm_input_ids(tokenizer, prompt, a, 384)
    assert len(ids_a) <= 384 and ids_a[-1] == end_of_context_id(tokenizer)
    assert ids_a[-1 - len(tokenizer(a, add_special_tokens=False)["input_ids"]):-1] == \
        tokenizer(a, add_special_tokens=False)["input_ids"]  # the whole response, right before the end token
    torch.manual_seed(0)
    pm = load_model(str(tiny_model_dir), "pm")
    s = score_texts(pm, tokenizer, [prompt, prompt], [a, b], 384)
    assert abs(float(s[0] - s[1])) > 1e-6


# ---- chat format (the smollm2-135m preset's template) -----------------------------------------------------------
def test_chat_prompt_and_response_ids_join_to_the_rendered_conversation(smollm2_tokenizer, hh_dir):
    from hh_ray.data.tokenize import chat_messages, render, response_ids, uses_chat

    tok = smollm2_tokenizer
    assert uses_chat(tok)
    items, _ = load_comparisons(str(hh_dir), SUBSETS)
    for c in items[::40]:
        for response in (c.chosen, c.rejected):
            whole = tok(render(tok, chat_messages(c.prompt + response), False), add_special_tokens=False)["input_ids"]
            p, r = truncate_prompt(tok, c.prompt, 10**6), response_ids(tok, response)
            assert p + r == whole[: len(p) + len(r)] and r[-1] == tok.eos_token_id
            assert tok.decode(whole[len(p) + len(r):]) == "\n"  # only the template's newline follows
            enc = encode_dialogue(tok, c.prompt + response, 10**6)
            assert enc.input_ids == whole[: len(enc.input_ids)] and len(enc.input_ids) == len(p) + len(r)


def test_chat_masks_learn_assistant_text_and_end_of_turn_only(smollm2_tokenizer):
    tok = smollm2_tokenizer
    t = "\n\nHuman: where is Paris?\n\nAssistant: In France.\n\nHuman: thanks\n\nAssistant: You are welcome."
    enc = encode_dialogue(tok, t, 512)
    learned = tok.decode([i for i, m in zip(enc.input_ids, enc.loss_mask) if m])
    assert learned == "In France.<|im_end|>You are welcome.<|im_end|>"
    assert tok.decode(enc.input_ids).startswith("<|im_start|>system\n")
    assert encode_dialogue(tok, t, 6).input_ids[-1] == tok.eos_token_id  # cut on the left, the answer kept


def test_chat_truncation_drops_whole_early_turns_and_never_the_response(smollm2_tokenizer):
    from hh_ray.data.tokenize import response_ids

    tok = smollm2_tokenizer
    prompt = ("\n\nHuman: " + "tell me about the history of bread " * 8 + "\n\nAssistant: " + "Bread is old. " * 8 +
              "\n\nHuman: and cheese?\n\nAssistant:")
    full = truncate_prompt(tok, prompt, 10**6)
    cut = truncate_prompt(tok, prompt, len(full) - 1)
    text = tok.decode(cut)
    assert "history of bread" not in text and "Bread is old" not in text  # the first exchange went whole
    assert text.startswith("<|im_start|>system\n") and text.endswith("and cheese?<|im_end|>\n<|im_start|>assistant\n")
    answer = " Cheese is made from milk, usually by letting it curdle and pressing the curds."
    ids = pm_input_ids(tok, prompt, answer, 40)
    r = response_ids(tok, answer)
    assert len(ids) <= 40 and ids[-len(r):] == r and ids[-1] == tok.eos_token_id  # the response whole, at the end


def test_hh_format_on_a_chat_model_keeps_the_raw_transcript(smollm2_dir):
    from hh_ray.data.tokenize import load_tokenizer, uses_chat

    hh = load_tokenizer(smollm2_dir, "hh")
    assert not uses_chat(hh)
    assert hh.decode(truncate_prompt(hh, "\n\nHuman: hi\n\nAssistant:", 64)) == "\n\nHuman: hi\n\nAssistant:"
