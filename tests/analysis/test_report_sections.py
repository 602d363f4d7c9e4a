"""`hh-ray report --run DIR` turns whatever analyses a run folder holds into report.md sections with plots."""

from __future__ import annotations

import json
import math

from hh_ray.algo.elo import Comparison, elo_ratings
from hh_ray.cli import main
from hh_ray.report.results import (
    OOD,
    AlignmentTax,
    BestOfN,
    Elo,
    PolicyTradeoff,
    TaskScore,
    Tradeoff,
    TradeoffPoint,
    result_path,
    write_result,
)


def _ppo_run(run, train: list[float], test: list[float], kls: list[float]):
    """A PPO folder as the driver writes it: eval before (step 0), evals in metrics.jsonl, eval after."""
    ppo = run / "ppo"
    ppo.mkdir(parents=True)
    def ev(i):
        return {"eval/pm_score": train[i], "eval/kl": kls[i], "eval/kl_k1": kls[i], "eval/response_length": 10.0,
                "eval/test_pm_score": test[i], "eval/pm_gap_se": 0.05}
    (ppo / "eval_before.json").write_text(json.dumps(ev(0)))
    rows = []
    for step in range(1, len(kls) - 1):
        rows.append({"step": step, "objective/kl": kls[step], "objective/pm_score": train[step],
                     "objective/reward": train[step], "objective/kl_coef": 0.001, "perf/samples": 8,
                     "time/step": 1.0, "time/generate": 0.5, "perf/samples_per_s": 8.0,
                     "rollout/tokens_per_s": 80.0} | ev(step))
    final = {k: v for k, v in rows[-1].items() if not k.startswith("eval/")}  # the last step's eval is eval_after
    rows.append(final | {"step": len(kls) - 1, "objective/kl": kls[-1], "objective/pm_score": train[-1]})
    (ppo / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (ppo / "eval_after.json").write_text(json.dumps(ev(len(kls) - 1)))


def test_report_sections_from_a_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    # sqrt(KL) = 0, 1, 2, 3, 4: the train PM rises linearly at first then flattens; the test PM stalls
    kls, train = [0.0, 1.0, 4.0, 9.0, 16.0], [0.0, 1.0, 2.0, 2.5, 2.5]
    test = [0.0, 0.2, 0.1, 0.0, -0.1]
    _ppo_run(run, train, test, kls)
    write_result(BestOfN(ns=[1, 4], kl=[0.0, math.log(4) - 0.75], train_pm=[0.0, 0.6], train_pm_se=[0.1, 0.1],
                         test_pm=[0.0, 0.3], test_pm_se=[0.1, 0.1], prompts=8, policy="p", train_scorer="pm",
                         test_scorer="pm-test", temperature=1.0, max_new_tokens=16), result_path(run, BestOfN))
    write_result(Tradeoff(metric="PM accuracy on held-out comparisons", baselines={"chance": [0.5, 0.5]},
                          points=[TradeoffPoint("harmless x1", 0.6, 0.45, 0.02, 0.02),
                                  TradeoffPoint("harmless x2", 0.53, 0.52, 0.02, 0.02)],
                          above_all_baselines=["harmless x2"], clearly_above_all=[]),
                 result_path(run, Tradeoff))
    write_result(PolicyTradeoff(metric="mean PM score", baselines={"initial": [0.1, -0.1]},
                                points=[TradeoffPoint("initial", 0.1, -0.1, 0.05, 0.05),
                                        TradeoffPoint("ppo", 0.9, -0.4, 0.05, 0.05)], above_all_baselines=[]),
                 result_path(run, PolicyTradeoff))
    write_result(AlignmentTax(before_model="sft", after_model="ppo", limit=None, num_fewshot=0,
                              tasks=[TaskScore("arc_easy", "acc", 0.40, 0.01, 0.38, 0.01, 100)]),
                 result_path(run, AlignmentTax))
    write_result(OOD(model="m", layer=4, pooling="mean", shrinkage=0.1, in_subset="helpful-base",
                     ood_subset="harmless-base", fit_prompts=10, auroc=0.71, test_in=[1.0, 2.0], test_ood=[3.0, 2.5]),
                 result_path(run, OOD))
    # version 1 beat version 0 in 30 of 40 comparisons: Elo +400 log10(3) = +191 without a prior
    elo = elo_ratings([Comparison(1, 0, 1.0)] * 30 + [Comparison(1, 0, 0.0)] * 10, 2, prior_sd=None, bootstraps=50)
    write_result(Elo.from_ratings(elo), result_path(run, Elo))
    (run / "analysis" / "ood.png").write_bytes(b"png")

    assert main(["report", "--run", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert str(run / "report.md") in capsys.readouterr().out
    # early fit = first 3 points, exactly on score = sqrt(KL); whole run: slope 0.65, intercept 0.3 (by hand)
    assert "| early | +1.000 | +0.000 | 1.000 | 3 |" in md
    assert "| whole run | +0.650 | +0.300 |" in md
    assert "**PPO raised the train-PM score (+2.500) but not the test-PM score (-0.100)" in md
    # gap - initial gap = 0.8 > 2 * sqrt(0.05^2 * 2) = 0.141 from step 1 on, and it stays so
    assert "The curves part ways at step 1 " in md
    for section in ("## Best-of-N", "## Helpful vs harmless: PMs", "(point estimates): harmless x2.",
                    "## Helpful vs harmless: policies", "| ppo | 0.900 ± 0.050 | -0.400 ± 0.050 |",
                    "![Helpful vs harmless: policies](analysis/tradeoff_policies.png)",
                    "**None is above every baseline by more than 2 standard errors",
                    "## Alignment tax", "| arc_easy | acc | 0.400 ± 0.010 | 0.380 ± 0.010 | -0.020 | 100 |",
                    "**AUROC 0.710**", "## Elo by policy version",
                    f"| 1 | +191 | [{elo.lo[1]:+.0f}, {elo.hi[1]:+.0f}] | 40 |"):
        assert section in md, section
    for png in ("ppo_heldout_sqrt_kl.png", "analysis/elo.png"):
        assert (run / png).stat().st_size > 1000


def test_report_says_plainly_when_both_pms_rose(tmp_path):
    run = tmp_path / "run"
    _ppo_run(run, [0.0, 0.5, 1.0], [0.0, 0.4, 0.9], [0.0, 1.0, 4.0])
    assert main(["report", "--run", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert "but not the test-PM score" not in md
    assert "the train-PM score moved +1.000 and the test-PM score +0.900" in md
    assert "do not part ways beyond noise" in md


def test_report_rejects_a_malformed_result(tmp_path, capsys):
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "ood.json").write_text(json.dumps({"auroc": 0.5, "bogus": 1}))
    assert main(["report", "--run", str(tmp_path)]) == 2
    assert "not a valid OOD result" in capsys.readouterr().err


def test_verdicts_decide_each_direction_by_standard_errors(tmp_path):
    from hh_ray.report import verdicts
    from hh_ray.report.results import InitialPolicies

    run = tmp_path / "run"
    _ppo_run(run, [0.0, 1.0, 2.0, 2.5, 2.5], [0.0, 0.2, 0.1, 0.0, -0.1], [0.0, 1.0, 4.0, 9.0, 16.0])
    write_result(BestOfN(ns=[1, 4], kl=[0.0, 0.64], train_pm=[0.0, 0.6], train_pm_se=[0.1, 0.1], test_pm=[0.0, 0.3],
                         test_pm_se=[0.1, 0.1], prompts=8, policy="p", train_scorer="pm", test_scorer="pm-test",
                         temperature=1.0, max_new_tokens=16), result_path(run, BestOfN))
    write_result(OOD(model="m", layer=4, pooling="mean", shrinkage=0.1, in_subset="helpful-base",
                     ood_subset="harmless-base", fit_prompts=10, auroc=0.71, test_in=[1.0], test_ood=[3.0],
                     auroc_se=0.03), result_path(run, OOD))
    write_result(AlignmentTax(before_model="sft", after_model="ppo", limit=None, num_fewshot=0,
                              tasks=[TaskScore("hh", "acc", 0.40, 0.01, 0.38, 0.01, 300)]),
                 result_path(run, AlignmentTax))
    assert main(["report", "--run", str(run)]) == 0
    md = (run / "report.md").read_text()
    # early fit R^2 1 (agrees); gap 0 -> 2.6, s.e. hypot(0.05, 0.05) = 0.071 (agrees); best-of-N test PM +0.3 with
    # s.e. hypot(0.1, 0.1) = 0.141: 2.1 s.e. (agrees); AUROC 0.71 < 0.85 (does not); tax -0.02 with s.e. 0.014:
    # 1.4 s.e., no measurable tax (does not agree)
    assert "3 of 4 headline checks hold" in md
    assert md.index("## Verdicts against the paper") < md.index("## PPO")
    assert "gap +0.000 at KL 0.00 -> +2.600 at KL 16.00: +2.600 ± 0.071 (+36.8 s.e.) | agrees |" in md
    assert "test PM N=1 -> N=4: +0.300 ± 0.141 (+2.1 s.e.) | agrees |" in md
    assert "AUROC 0.710 ± 0.030 at layer 4 | does not agree |" in md
    assert "mean change over 1 tasks -0.020 ± 0.014 (-1.4 s.e.) | does not agree |" in md
    # each verdict also closes its own section, before the next heading
    ood = md[md.index("## OOD detection"):]
    assert ood.startswith("## OOD detection") and "**Verdict:** this run does not agree with the paper's direction " \
        "(a Gaussian on a model's activations flags harmful requests (AUROC >= 0.85)): AUROC 0.710" in ood

    # the helpful/harmless tension: harmless-only beats helpful-only on harmless-base by 0.10 (s.e. 0.028, 3.5)
    # and loses on the helpful subsets by 0.06 (s.e. 0.028: 2.1 s.e.)
    trade = Tradeoff(metric="acc", baselines={}, above_all_baselines=[], points=[
        TradeoffPoint("harmless x0 (helpful only)", 0.58, 0.45, 0.02, 0.02),
        TradeoffPoint("harmless only", 0.52, 0.55, 0.02, 0.02)])
    v = verdicts.helpful_harmless_tension(trade)
    assert v.holds and "+0.100 ± 0.028 (+3.5 s.e.)" in v.measured and "+0.060 ± 0.028 (+2.1 s.e.)" in v.measured
    # context distillation scores 0.05 below SFT with s.e. 0.04: within 2 s.e., "at least as well" holds
    init = InitialPolicies(labels=["context distillation (the run's)", "SFT", "none"], policies=["a", "b", "c"],
                           prompts=10, train_pm=[0, 0, 0], train_pm_se=[1, 1, 1], test_pm=None, test_pm_se=None,
                           vs_first=[0.0, 0.05, -0.3], vs_first_se=[0.0, 0.04, 0.05], response_tokens=[9, 9, 9])
    assert verdicts.initial_policy(init).holds
    init.vs_first[1] = 0.2
    assert verdicts.initial_policy(init).holds is False
