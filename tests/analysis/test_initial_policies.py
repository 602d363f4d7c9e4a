"""Comparing initial policies: every candidate answers the same prompts, both PMs score every answer, and the
differences from the run's policy are paired by prompt."""

from __future__ import annotations

import pytest

from hh_ray.analysis.initial_policies import compare_initial_policies, write_initial_policies
from hh_ray.report.results import InitialPolicies, read_result, result_path


def test_paired_differences_and_one_scoring_call_per_pm(tmp_path):
    prompts = ["p0", "p1", "p2"]
    answers = {"cd": ["a", "bb", "c"], "sft": ["aaaa", "b", "cc"]}  # test PM: the score is the answer's length

    def draw(path):
        return [([7] * len(t), t) for t in answers[path]]

    calls = []

    def score(by):
        def fn(ps, texts, ids):
            calls.append(by)
            assert ps == prompts * 2 and [len(i) for i in ids] == [len(t) for t in texts]
            return [float(len(t)) * (1 if by == "test" else -1) for t in texts]
        return fn

    r = compare_initial_policies([("cd (the run's)", "cd"), ("sft", "sft")], prompts, draw, score("train"),
                                 score("test"))
    assert calls == ["train", "test"]
    # test PM: cd 1, 2, 1 (mean 4/3); sft 4, 1, 2 (mean 7/3); paired sft - cd = 3, -1, 1: mean 1, sd 2, s.e. 2/sqrt(3)
    assert r.test_pm == pytest.approx([4 / 3, 7 / 3]) and r.train_pm == pytest.approx([-4 / 3, -7 / 3])
    assert r.vs_first == pytest.approx([0.0, 1.0]) and r.vs_first_se[1] == pytest.approx(2 / 3 ** 0.5)
    assert r.response_tokens == pytest.approx([4 / 3, 7 / 3]) and r.prompts == 3
    write_initial_policies(r, str(tmp_path))
    assert read_result(InitialPolicies, result_path(tmp_path, InitialPolicies)) == r
    assert (tmp_path / "analysis" / "initial_policies.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="every one of the 4 prompts"):
        compare_initial_policies([("a", "cd"), ("b", "sft")], prompts + ["p3"], draw, score("train"), None)
