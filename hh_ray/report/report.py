"""`report.md` and PNG plots from a run folder's files (no Ray, no models)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from hh_ray.algo.analysis import divergence_index, mean_se, sqrt_kl_law
from hh_ray.algo.ppo import sqrt_kl
from hh_ray.files import read_jsonl, write_text_atomic
from hh_ray.report import plots, verdicts
from hh_ray.report.online import online_section
from hh_ray.report.results import (
    OOD,
    AlignmentTax,
    BestOfN,
    Elo,
    InitialPolicies,
    PolicyTradeoff,
    Tradeoff,
    read_result,
    result_path,
)


def _read_json(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}


def _samples_md(before: list[dict], after: list[dict], k: int = 5) -> list[str]:
    def scores(s: dict) -> str:
        return f"PM {s['pm_score']:+.2f}" + (f", test PM {s['test_pm_score']:+.2f}" if "test_pm_score" in s else "")

    lines = []
    for i, (b, a) in enumerate(zip(before[:k], after[:k])):
        prompt = b["prompt"].strip().replace("\n\n", "\n")[-400:]
        lines += [f"### Held-out prompt {i + 1}", "", "```", prompt, "```", "",
                  "| before PPO | after PPO |", "|---|---|",
                  f"| {_cell(b['response'])} | {_cell(a['response'])} |", f"| {scores(b)} | {scores(a)} |", ""]
    return lines


def _cell(text: str, limit: int = 400) -> str:
    """A response as one markdown table cell: no pipes or line breaks, cut at `limit` characters."""
    text = text.strip()
    text = text[:limit] + (" ..." if len(text) > limit else "")
    return text.replace("|", "\\|").replace("\n", " <br> ") or "*(empty)*"


def _change_md(before: list[dict], after: list[dict]) -> list[str]:
    """Per held-out prompt, after-PPO score minus before-PPO score (the same prompts, seeds fixed): mean and its
    standard error for each PM that scored both, and how many standard errors the change is."""
    lines = []
    for key, name in (("pm_score", "train PM (PPO's reward)"), ("test_pm_score", "test PM (held out)")):
        if before and all(key in s for s in before + after):
            m, se = mean_se([a[key] - b[key] for b, a in zip(before, after)])
            lines.append(f"| {name} | {m:+.3f} | {se:.3f} | {m / se if se > 0 else float('nan'):+.1f} |")
    if not lines:
        return []
    return ([f"Change from before to after PPO on the {len(before)} held-out prompts (paired by prompt):", "",
             "| scored by | mean change | s.e. | change / s.e. |", "|---|---|---|---|"] + lines + [""])


def write_report(run_dir: str | Path) -> Path:
    """Plots (PNG) and `report.md` tying SFT, PM and PPO results together; returns the report path."""
    run = Path(run_dir)
    lines = [f"# hh-ray run report: `{run.name}`", ""]
    sft_log = read_jsonl(run / "sft-logs" / "metrics.jsonl")
    if sft_log:
        png = plots.line_plot([r["step"] for r in sft_log], {"train NLL": [r["sft/loss"] for r in sft_log]},
                              "step", "NLL per assistant token", "SFT loss", run / "sft_loss.png")
        ev = _read_json(run / "sft-logs" / "eval.json")
        lines += ["## SFT (initial policy)", "",
                  f"{len(sft_log)} steps; final train NLL {sft_log[-1]['sft/loss']:.3f}; "
                  f"held-out NLL {ev.get('heldout_nll', float('nan')):.3f} on {ev.get('heldout_dialogues', 0)} "
                  "dialogues.",
                  "", f"![SFT loss]({png.name})", ""]
    pm = _read_json(run / "pm" / "pm_eval.json")
    if pm:
        lines += ["## Preference model", "",
                  f"Held-out accuracy **{pm['accuracy']:.3f}** on {pm['pairs']} pairs "
                  f"(length baseline {pm['length_baseline_accuracy']:.3f}), ECE {pm['ece']:.3f}.", "",
                  "| subset | accuracy | length baseline | pairs |", "|---|---|---|---|"]
        for name, s in pm["per_subset"].items():
            lines.append(f"| {name} | {s['accuracy']:.3f} | {s.get('length_baseline_accuracy', float('nan')):.3f} "
                         f"| {s['pairs']} |")
        lines += ["", "![PM calibration](pm/reliability.png)", ""]
    ppo = read_jsonl(run / "ppo" / "metrics.jsonl")
    if ppo:
        steps = [r["step"] for r in ppo]
        def col(k):
            return [r[k] for r in ppo]
        plots.score_vs_sqrt_kl([sqrt_kl(k) for k in col("objective/kl")], col("objective/pm_score"), steps,
                               run / "ppo_score_vs_sqrt_kl.png")
        plots.line_plot(steps, {"reward": col("objective/reward"), "PM score": col("objective/pm_score")},
                        "PPO step", "per sample", "Reward and PM score", run / "ppo_reward.png")
        plots.line_plot(steps, {"KL(policy || reference)": col("objective/kl")},
                        "PPO step", "nats per sample", "KL", run / "ppo_kl.png")
        phases = [k for k in ppo[-1] if k.startswith("time/") and k != "time/step"]
        before, after = _read_json(run / "ppo" / "eval_before.json"), _read_json(run / "ppo" / "eval_after.json")
        lines += ["## PPO", "",
                  f"{len(ppo)} steps, {ppo[-1]['perf/samples']} samples per step, "
                  f"lambda_KL {ppo[0]['objective/kl_coef']:g}. KL is per sample, summed over the response's "
                  "tokens.", ""]
        if before and after:
            lines += ["| held-out prompts | before PPO | after PPO |", "|---|---|---|",
                      f"| PM score (normalized) | {before['eval/pm_score']:+.3f} | {after['eval/pm_score']:+.3f} |",
                      f"| KL from initial policy (nats, training estimator) | {before['eval/kl']:.3f} | "
                      f"{after['eval/kl']:.3f} |",
                      f"| KL, k1 estimate (nats) | {before['eval/kl_k1']:.3f} | {after['eval/kl_k1']:.3f} |",
                      f"| response length (tokens) | {before['eval/response_length']:.1f} | "
                      f"{after['eval/response_length']:.1f} |", ""]
            if "eval/test_pm_score" in before and "eval/test_pm_score" in after:
                lines[-1:-1] = [f"| test PM score (normalized) | {before['eval/test_pm_score']:+.3f} | "
                                f"{after['eval/test_pm_score']:+.3f} |"]
        sb, sa = _read_json(run / "ppo" / "samples_before.json"), _read_json(run / "ppo" / "samples_after.json")
        lines += _change_md(sb or [], sa or [])
        def mean(k):
            return sum(r.get(k, 0.0) for r in ppo) / len(ppo)
        lines += ["Mean seconds per step by phase: " + ", ".join(f"{k[5:]} {mean(k):.2f}" for k in phases)
                  + f"; whole step {mean('time/step'):.2f}; {mean('perf/samples_per_s'):.1f} samples/s, "
                  f"{mean('rollout/tokens_per_s'):.0f} generated tokens/s.", ""]
        if "rollout/logprob_gap_mean" in ppo[-1]:
            lines += [f"Engine vs trainer logprobs of the sampled tokens: mean |gap| "
                      f"{mean('rollout/logprob_gap_mean'):.2e}, largest {max(col('rollout/logprob_gap_max')):.2e} "
                      f"(the trainer's are the PPO ratio's denominator).", ""]
        lines += ["![PM score vs sqrt(KL)](ppo_score_vs_sqrt_kl.png)", "", "![reward](ppo_reward.png)", "",
                  "![KL](ppo_kl.png)", ""]
        lines += _heldout_md(run, heldout_points(run), read_result(BestOfN, result_path(run, BestOfN)))
        if sb and sa:
            lines += ["## Samples on held-out prompts", ""] + _samples_md(sb, sa)
    lines += _analyses_md(run)
    found = collect_verdicts(run)
    lines = lines[:2] + verdicts.summary_md(found) + verdicts.insert_under_sections(lines[2:], found)
    return write_text_atomic(run / "report.md", "\n".join(lines) + "\n")


def collect_verdicts(run: Path) -> list[verdicts.Verdict]:
    """Every verdict the run's stored figures allow, in report order."""
    found: list[verdicts.Verdict | None] = []
    pm = _read_json(run / "pm" / "pm_eval.json")
    if pm:
        found.append(verdicts.pm_beats_baselines(pm))
    sb, sa = _read_json(run / "ppo" / "samples_before.json"), _read_json(run / "ppo" / "samples_after.json")
    found.append(verdicts.ppo_raises_test_pm(sb or [], sa or []))
    pts = heldout_points(run)
    if len(pts) >= 2 and len({round(sqrt_kl(p.kl), 12) for p in pts}) >= 2:
        found.append(verdicts.sqrt_kl_early_fit(sqrt_kl_law([p.kl for p in pts], [p.train_pm for p in pts])))
        if all(p.test_pm is not None for p in pts):
            found.append(verdicts.gap_grows_with_kl([p.kl for p in pts], [p.train_pm - p.test_pm for p in pts],
                                                    [p.gap_se for p in pts]))
    for cls, rule in ((InitialPolicies, verdicts.initial_policy), (BestOfN, verdicts.bon_raises_test_pm),
                      (Tradeoff, verdicts.helpful_harmless_tension), (AlignmentTax, verdicts.alignment_tax),
                      (OOD, verdicts.ood_detects_harm)):
        result = read_result(cls, result_path(run, cls))
        if result:
            found.append(rule(result))
    return [v for v in found if v is not None]


@dataclass(frozen=True)
class HeldoutPoint:
    """One held-out evaluation of the policy: before PPO (step 0), every `eval_every` steps, after PPO."""

    step: int
    kl: float
    train_pm: float
    test_pm: float | None  # the same samples scored by the held-out (test) PM, when the run has one
    gap_se: float | None  # standard error of the per-sample train-minus-test difference (algo.analysis.paired_gap)


def heldout_points(run: Path) -> list[HeldoutPoint]:
    """Held-out evaluation points in step order, from eval_before.json, metrics.jsonl and eval_after.json.

    Keys read: eval/kl, eval/pm_score, and when both PMs score the evaluation eval/test_pm_score, eval/pm_gap_se.
    """
    rows = []
    before, after = _read_json(run / "ppo" / "eval_before.json"), _read_json(run / "ppo" / "eval_after.json")
    metrics = read_jsonl(run / "ppo" / "metrics.jsonl")
    if before:
        rows.append((0, before))
    rows += [(r["step"], r) for r in metrics if "eval/pm_score" in r]
    if after:
        rows.append((max([r["step"] for r in metrics], default=len(rows)), after))
    return [HeldoutPoint(step, r["eval/kl"], r["eval/pm_score"], r.get("eval/test_pm_score"),
                         r.get("eval/pm_gap_se")) for step, r in rows]


def _fmt_fit(f) -> str:
    return f"{f.slope:+.3f} | {f.intercept:+.3f} | {f.r2:.3f} | {f.n}" if f else "n/a | n/a | n/a | <2"


def _heldout_md(run: Path, pts: list[HeldoutPoint], bon: BestOfN | None) -> list[str]:
    """The sqrt(KL) law (fits early and overall) and train-PM vs test-PM robustness on held-out points."""
    if len(pts) < 2 or len({round(sqrt_kl(p.kl), 12) for p in pts}) < 2:
        return []
    kls, train = [p.kl for p in pts], [p.train_pm for p in pts]
    law = sqrt_kl_law(kls, train)
    xs = [sqrt_kl(k) for k in kls]
    curves: dict[str, tuple[list, list]] = {}
    both = all(p.test_pm is not None for p in pts)
    if both:
        curves["PPO (test PM)"] = (xs, [p.test_pm for p in pts])
    if bon:
        curves["best-of-N (train PM)"] = ([sqrt_kl(k) for k in bon.kl], bon.train_pm)
        if bon.test_pm:
            curves["best-of-N (test PM)"] = ([sqrt_kl(k) for k in bon.kl], bon.test_pm)
    fits = {"early fit": law.early} if law.early else {}
    fits["whole-run fit"] = law.whole
    split = None
    if both and all(p.gap_se is not None for p in pts):
        split = divergence_index([p.train_pm - p.test_pm for p in pts], [p.gap_se for p in pts])
    png = plots.score_vs_sqrt_kl(xs, train, [p.step for p in pts], run / "ppo_heldout_sqrt_kl.png", fits=fits,
                                 curves=curves, divergence_x=xs[split] if split is not None else None,
                                 title="Held-out PM score vs sqrt(KL)")
    lines = ["## The sqrt(KL) law (held-out evaluations)", "",
             f"Least-squares lines of the train-PM score against sqrt(KL) over {len(pts)} held-out evaluation "
             f"points; early = {law.early_rule}.", "",
             "| fit | slope | intercept | R^2 | points |", "|---|---|---|---|---|",
             f"| early | {_fmt_fit(law.early)} |", f"| whole run | {_fmt_fit(law.whole)} |", ""]
    if both:
        d_train, d_test = pts[-1].train_pm - pts[0].train_pm, pts[-1].test_pm - pts[0].test_pm
        lines += ["### Robustness: train PM vs test PM", "",
                  "PPO optimizes the train PM; the test PM was trained on the other half of the comparisons "
                  "(split by prompt) and scores the same held-out samples.", "",
                  "| step | sqrt(KL) | train PM | test PM | gap | gap s.e. |", "|---|---|---|---|---|---|"]
        lines += [f"| {p.step} | {x:.3f} | {p.train_pm:+.3f} | {p.test_pm:+.3f} | {p.train_pm - p.test_pm:+.3f} | "
                  f"{'n/a' if p.gap_se is None else f'{p.gap_se:.3f}'} |" for p, x in zip(pts, xs)]
        lines.append("")
        if d_train > 0 and d_test <= 0:
            lines.append(f"**PPO raised the train-PM score ({d_train:+.3f}) but not the test-PM score "
                         f"({d_test:+.3f}): the policy exploited the train PM rather than improving by the held-out "
                         "PM's judgement.**")
        else:
            lines.append(f"From before to after PPO the train-PM score moved {d_train:+.3f} and the test-PM score "
                         f"{d_test:+.3f}.")
        if split is not None:
            lines.append(f"The curves part ways at step {pts[split].step} (sqrt(KL) {xs[split]:.3f}): from there "
                         "on, the train PM's lead over the test PM exceeds its initial value by more than 2 standard "
                         "errors at every evaluation (rule: `hh_ray.algo.analysis.divergence_index`).")
        elif all(p.gap_se is not None for p in pts):
            lines.append("The curves do not part ways beyond noise (2 standard errors of the paired gap, "
                         "sustained to the end of the run).")
        lines.append("")
    return lines + [f"![held-out PM score vs sqrt(KL)]({png.name})", ""]


def _analyses_md(run: Path) -> list[str]:
    """One section per analysis result stored under `<run>/analysis/`."""
    lines: list[str] = _initial_policies_md(read_result(InitialPolicies, result_path(run, InitialPolicies)))
    bon = read_result(BestOfN, result_path(run, BestOfN))
    if bon:
        test = bon.test_pm or [math.nan] * len(bon.ns)
        test_se = bon.test_pm_se or [math.nan] * len(bon.ns)
        lines += ["## Best-of-N (initial policy)", "",
                  f"{bon.prompts} held-out prompts, {max(bon.ns)} samples each from `{bon.policy}` (temperature "
                  f"{bon.temperature:g}); best-of-n keeps the first n samples' best by the train PM (`"
                  f"{bon.train_scorer}`) and is scored by both PMs. KL = log n - (n-1)/n.", "",
                  "| n | KL (nats) | sqrt(KL) | train PM | test PM |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {k:.3f} | {sqrt_kl(k):.3f} | {a:+.3f} ± {ase:.3f} | {b:+.3f} ± {bse:.3f} |"
                  for n, k, a, ase, b, bse in zip(bon.ns, bon.kl, bon.train_pm, bon.train_pm_se, test, test_se)]
        lines += ["", "![best-of-N](analysis/bon.png)", ""]
    for cls, title in ((Tradeoff, "Helpful vs harmless: PMs"), (PolicyTradeoff, "Helpful vs harmless: policies")):
        trade = read_result(cls, result_path(run, cls))
        if trade:
            lines += _tradeoff_md(trade, title, result_path(run, cls).with_suffix(".png").name)
    tax = read_result(AlignmentTax, result_path(run, AlignmentTax))
    if tax:
        lines += ["## Alignment tax (zero-shot evaluations)", "",
                  f"lm-evaluation-harness, {tax.num_fewshot}-shot, before = `{tax.before_model}`, after = "
                  f"`{tax.after_model}`" + (f", first {tax.limit} examples per task" if tax.limit else "") + ".", "",
                  "| task | metric | before | after | change | examples |", "|---|---|---|---|---|---|"]
        lines += [f"| {t.task} | {t.metric} | {t.before:.3f} ± {t.before_se:.3f} | {t.after:.3f} ± {t.after_se:.3f} "
                  f"| {t.after - t.before:+.3f} | {t.samples} |" for t in tax.tasks]
        lines += ["", "![alignment tax](analysis/alignment_tax.png)", ""]
    ood = read_result(OOD, result_path(run, OOD))
    if ood:
        lines += ["## OOD detection of harmful requests", "",
                  f"Mahalanobis distance on `{ood.model}` activations (layer {ood.layer}, {ood.pooling} pooling, "
                  f"covariance shrinkage {ood.shrinkage:g}), fit on {ood.fit_prompts} {ood.in_subset} prompts; "
                  f"held out: {len(ood.test_in)} {ood.in_subset} vs {len(ood.test_ood)} {ood.ood_subset} prompts.",
                  "", f"**AUROC {ood.auroc:.3f}" + (f" ± {ood.auroc_se:.3f}** (0.5 = chance; s.e. by Hanley & McNeil)."
                                                     if ood.auroc_se == ood.auroc_se else "** (0.5 = chance)."), ""]
        if ood.layers:
            best = ood.layers.index(ood.layer)
            lines += [f"Layer {ood.layer} of {ood.layers} had the best AUROC on a validation split ({ood.val_prompts} "
                      f"requests a side, disjoint from the fit and test requests): {ood.val_auroc[best]:.3f}; the "
                      "figure above is that layer's on the test split.", "",
                      "| layer | validation AUROC | test AUROC |", "|---|---|---|"]
            lines += [f"| {k} | {v:.3f} | {t:.3f} |" for k, v, t in zip(ood.layers, ood.val_auroc, ood.test_auroc)]
            lines += ["", "![AUROC by layer](analysis/ood_layers.png)", ""]
        lines += ["![OOD distances](analysis/ood.png)", ""]
    elo = read_result(Elo, result_path(run, Elo))
    if elo:
        lines += ["## Elo by policy version", "",
                  f"Bradley-Terry over all comparisons; {elo.confidence:.0%} bootstrap intervals "
                  f"({elo.bootstraps} resamples); Elo 0 = version {elo.anchor if elo.anchor is not None else 'mean'}.",
                  "", "| version | Elo | interval | games |", "|---|---|---|---|"]
        lines += [f"| {v} | {e:+.0f} | [{a:+.0f}, {b:+.0f}] | {g} |"
                  for v, e, a, b, g in zip(elo.versions, elo.elo, elo.lo, elo.hi, elo.games)]
        png = plots.elo_by_round(elo.versions, elo.elo, elo.lo, elo.hi, run / "analysis" / "elo.png")
        lines += ["", f"![Elo by round](analysis/{png.name})", ""]
    lines += online_section(run)
    return lines


def _initial_policies_md(init: InitialPolicies | None) -> list[str]:
    if not init:
        return []
    judge = "test PM" if init.test_pm else "train PM"
    test, test_se = init.test_pm or [math.nan] * len(init.labels), init.test_pm_se or [math.nan] * len(init.labels)
    lines = ["## Initial policy: context distillation vs SFT", "",
             f"{init.prompts} held-out prompts, one sample each from every candidate with the same seeds; both PMs "
             f"score every sample; the difference from the run's initial policy is paired by prompt ({judge}).", "",
             "| policy | train PM | test PM | vs the run's | response tokens |", "|---|---|---|---|---|"]
    lines += [f"| {lbl} | {a:+.3f} ± {ase:.3f} | {b:+.3f} ± {bse:.3f} | "
              + ("-" if k == 0 else f"{d:+.3f} ± {dse:.3f}") + f" | {n:.1f} |"
              for k, (lbl, a, ase, b, bse, d, dse, n) in enumerate(zip(
                  init.labels, init.train_pm, init.train_pm_se, test, test_se, init.vs_first, init.vs_first_se,
                  init.response_tokens))]
    return lines + ["", "![initial policies](analysis/initial_policies.png)", ""]


def _tradeoff_md(trade: Tradeoff, title: str, png: str) -> list[str]:
    lines = ["## " + title, "", f"Both axes: {trade.metric}.", "", "| model | helpful | harmless |", "|---|---|---|"]
    lines += [f"| {p.label} | {p.helpful:.3f} ± {p.helpful_se:.3f} | {p.harmless:.3f} ± {p.harmless_se:.3f} |"
              for p in trade.points]
    lines += [""] + [f"Baseline {name}: helpful {h:.3f}, harmless {x:.3f}." for name, (h, x) in
                     trade.baselines.items()]
    lines += ["", ("Above every baseline on both axes at once (point estimates): "
                   + ", ".join(trade.above_all_baselines) + ".")
              if trade.above_all_baselines else "**No model is above every baseline on both axes at once.**"]
    if trade.above_all_baselines:
        lines.append(("By more than 2 standard errors on both axes: " + ", ".join(trade.clearly_above_all) + ".")
                     if trade.clearly_above_all else "**None is above every baseline by more than 2 standard "
                     "errors on both axes: the difference is within noise.**")
    if trade.notes:
        lines += ["", trade.notes]
    lines += ["", f"![{title}](analysis/{png})", ""]
    return lines
