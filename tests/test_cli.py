"""The `hh-ray` command as a user runs it: real subprocesses, real files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

ENV = os.environ | {"RAY_AUTH_MODE": "disabled"}


def hh_ray(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "hh_ray.cli", *args], capture_output=True, text=True, env=ENV,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"hh-ray {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def test_help_lists_subcommands():
    out = hh_ray("--help").stdout
    for cmd in ("data", "sft", "pm", "ppo", "run", "submit"):
        assert cmd in out


def test_data_stats_json_counts_every_line(hh_dir, tokenizer_dir):
    stats = json.loads(hh_ray("data", "stats", "--data-dir", str(hh_dir), "--tokenizer", str(tokenizer_dir),
                              "--json").stdout)
    assert set(stats) == {"harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"}
    for subset, s in stats.items():
        with gzip.open(hh_dir / subset / "test.jsonl.gz", "rt") as fh:
            lines = sum(1 for line in fh if line.strip())
        assert s["kept"] + sum(s["rejected"].values()) == lines
        assert s["prompt_tokens"]["p50"] > 0 and s["response_chars"]["p95"] >= s["response_chars"]["p50"]


def test_bad_config_is_one_clear_line(tmp_path):
    p = hh_ray("ppo", "ppo.kl_coeff=1", check=False)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == (
        "hh-ray: error: unknown config key 'ppo.kl_coeff'; did you mean 'ppo.reward.kl_coef'?")


def test_pm_eval_errors_are_one_line(tmp_path, hh_dir):
    p = hh_ray("pm", "eval", "--checkpoint", str(tmp_path / "none"), "--data-dir", str(hh_dir), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("hh-ray: error: no saved PM at")
    p = hh_ray("pm", "eval", "--checkpoint", str(tmp_path), "--data-dir", str(tmp_path / "nodata"), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def _pm_checkpoint(tokenizer, out: Path) -> Path:
    """A tiny decoder PM saved the way `hh-ray pm` saves one (random head: we test the plumbing)."""
    from hh_ray.models.forward import load_model
    from hh_ray.models.presets import build_preset, save_atomic

    build_preset("tiny", tokenizer, out / "lm")
    model = load_model(str(out / "lm"), "pm")
    save_atomic(model, tokenizer, out / "pm")
    return out / "pm"


def test_pm_eval_reports_rejects_and_scores_the_rest(tmp_path, tokenizer):
    ck = _pm_checkpoint(tokenizer, tmp_path)
    folder = tmp_path / "data" / "helpful-base"
    folder.mkdir(parents=True)
    good = [{"chosen": f"\n\nHuman: q{i}\n\nAssistant: a long good answer {i}",
             "rejected": f"\n\nHuman: q{i}\n\nAssistant: bad"} for i in range(6)]
    with gzip.open(folder / "part-0.jsonl.gz", "wt") as fh:
        for g in good[:3]:
            fh.write(json.dumps(g) + "\n")
        fh.write("{oops\n")
        fh.write(json.dumps({"chosen": "\n\nHuman: x"}) + "\n")
    with gzip.open(folder / "part-1.jsonl.gz", "wt") as fh:
        for g in good[3:]:
            fh.write(json.dumps(g) + "\n")
    out = json.loads(hh_ray("pm", "eval", "--checkpoint", str(ck), "--data-dir", str(tmp_path / "data"),
                            "--json").stdout)
    assert out["pairs"] == 6 and out["per_subset"]["helpful-base"]["pairs"] == 6
    assert out["length_baseline_accuracy"] == 1.0
    assert 0.0 <= out["accuracy"] <= 1.0 and 0.0 <= out["ece"] <= 1.0
    assert out["rejected"] == {str(folder / "part-0.jsonl.gz"): {"bad_json": 1, "missing_key": 1}}
    assert (ck / "reliability.png").stat().st_size > 5000
