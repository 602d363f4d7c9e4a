"""The smollm2-135m preset: converted offline from the wheel's GGUF, exactly, atomically, and listed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from hh_ray.models.presets import PRETRAINED, list_presets, resolve_model, wheel_gguf


def test_converted_folder_equals_the_gguf_load(smollm2_dir, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM

    gguf = wheel_gguf(PRETRAINED["smollm2-135m"])
    ids = smollm2_tokenizer("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
                            return_tensors="pt").input_ids
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                    dtype=torch.float32)(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32)(input_ids=ids).logits
    assert (got - want).abs().max() < 1e-5
    # a real chat model: greedy decoding answers the question
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32)
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in smollm2_tokenizer.decode(out[0, ids.shape[1]:])
    tok = smollm2_tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id != tok.eos_token_id and tok.chat_template


def test_presets_resolve_and_are_listed(smollm2_dir):
    assert resolve_model("smollm2-135m") == str(smollm2_dir)
    rows = {r["name"]: r for r in list_presets()}
    assert set(rows) == {"tiny", "small", "medium", "smollm2-135m"}
    assert "GGUF" in rows["smollm2-135m"]["source"] and str(smollm2_dir) in rows["smollm2-135m"]["source"]


def test_a_killed_conversion_leaves_no_folder_a_later_run_would_use(tmp_path):
    """SIGKILL while the converted weights are being written: the preset's folder must not exist (a later run
    converts again) rather than exist half-written."""
    env = os.environ | {"HH_RAY_MODEL_CACHE": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-c", "from hh_ray.models.presets import resolve_pretrained as r; "
                             "r('smollm2-135m')"], env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    staging = tmp_path / "smollm2-135m.tmp"
    deadline = time.monotonic() + 240
    while not staging.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert staging.exists(), "the conversion never started writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "smollm2-135m").exists()
