"""Alignment tax end to end: lm-eval on the tiny model's HF folder with a local multiple-choice task from HH data."""

from __future__ import annotations

import pytest
import torch

from hh_ray.analysis.alignment_tax import (
    AlignmentTaxConfig,
    ChoiceDoc,
    alignment_tax,
    evaluate_model,
    hh_choice_docs,
    write_choice_task,
)
from hh_ray.report.results import AlignmentTax, read_result, result_path


def _choice_loglik(model, tok, context: str, choice: str) -> float:
    """Sum of log p(choice tokens | context), computed directly with transformers (the reference)."""
    ctx, full = tok(context)["input_ids"], tok(context + choice)["input_ids"]
    ids = torch.tensor([full])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return float(sum(logp[t - 1, full[t]] for t in range(len(ctx), len(full))))


def test_lm_eval_accuracy_matches_direct_loglikelihood(tmp_path, tiny_model_dir, tokenizer_dir, hh_dir):
    from transformers import AutoModelForCausalLM

    from hh_ray.data.tokenize import load_tokenizer
    from hh_ray.models.presets import build_preset

    docs = hh_choice_docs(str(hh_dir), "harmless-base", 12, seed=3)
    assert {d.answer for d in docs} == {0, 1}  # chosen is not always first
    docs = [ChoiceDoc(d.context[-300:], [c[:80] for c in d.choices], d.answer) for d in docs]
    write_choice_task(tmp_path / "tasks", "hh_harmless_choice", docs)
    scores = evaluate_model(str(tiny_model_dir), ["hh_harmless_choice"], include_path=str(tmp_path / "tasks"))
    acc, se, n = scores["hh_harmless_choice"]

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    tok = load_tokenizer(tiny_model_dir)
    picks = [max(range(len(d.choices)), key=lambda i: _choice_loglik(model, tok, d.context, d.choices[i]))
             for d in docs]
    expected = sum(p == d.answer for p, d in zip(picks, docs)) / len(docs)
    assert n == 12 and acc == pytest.approx(expected)
    assert se == pytest.approx((expected * (1 - expected) / 11) ** 0.5, rel=1e-6)  # sample std / sqrt(n)

    other = build_preset("tiny", load_tokenizer(tokenizer_dir), tmp_path / "tiny-seed1", seed=1)
    cfg = AlignmentTaxConfig(before=str(tiny_model_dir), after=str(other), run_dir=str(tmp_path / "run"),
                             tasks=["hh_harmless_choice"], include_path=str(tmp_path / "tasks"), limit=6)
    result = alignment_tax(cfg)
    stored = read_result(AlignmentTax, result_path(tmp_path / "run", AlignmentTax))
    assert stored == result and stored.tasks[0].samples == 6
    assert (tmp_path / "run" / "analysis" / "alignment_tax.png").stat().st_size > 1000

    with pytest.raises(ValueError, match="unknown lm-eval tasks"):
        evaluate_model(str(tiny_model_dir), ["no_such_task"], include_path=str(tmp_path / "tasks"))
    with pytest.raises(ValueError, match="answer 2 outside"):
        write_choice_task(tmp_path / "bad", "bad", [ChoiceDoc("q", ["a", "b"], 2)])


@pytest.mark.slow  # kept out of the default suite for time; run with -m slow
def test_cli_alignment_tax_on_local_hh_tasks(tmp_path, tiny_model_dir, capsys):
    from hh_ray.cli import main

    run = tmp_path / "run"
    tiny = str(tiny_model_dir)
    assert main(["alignment-tax", "--before", tiny, "--after", tiny, "--run", str(run), "--hh-tasks", "6",
                 "--limit", "3"]) == 0
    tax = read_result(AlignmentTax, result_path(run, AlignmentTax))
    assert [t.task for t in tax.tasks] == ["hh_helpful_base_choice", "hh_harmless_base_choice"]
    assert all(t.before == t.after and t.samples == 3 for t in tax.tasks)  # the same model: no tax at all
    assert main(["alignment-tax", "--before", tiny, "--after", str(tmp_path / "nowhere"), "--run", str(run),
                 "--tasks", "hh_helpful_base_choice", "--include-path", str(run / "analysis" / "lm_eval_tasks")]) == 2
    assert "no HF model at" in capsys.readouterr().err
