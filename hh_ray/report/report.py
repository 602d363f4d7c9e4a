"""`report.md` and PNG plots from a run folder's files (no Ray, no models)."""

from __future__ import annotations

import json
from pathlib import Path

from hh_ray.algo.ppo import sqrt_kl
from hh_ray.report import plots


def _read_jsonl(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.is_file() else []


def _read_json(p: Path) -> dict:
    return json.loads(p.read_text()) if p.is_file() else {}


def _samples_md(before: list[dict], after: list[dict], k: int = 4) -> list[str]:
    lines = []
    for i, (b, a) in enumerate(zip(before[:k], after[:k])):
        prompt = b["prompt"].strip().replace("\n\n", "\n")[-400:]
        lines += [f"### Held-out prompt {i + 1}", "", "```", prompt, "```", "",
                  f"- **before PPO** (PM score {b['pm_score']:+.2f}): `{b['response'].strip()[:300]!r}`",
                  f"- **after PPO** (PM score {a['pm_score']:+.2f}): `{a['response'].strip()[:300]!r}`", ""]
    return lines


def write_report(run_dir: str | Path) -> Path:
    """Plots (PNG) and `report.md` tying SFT, PM and PPO results together; returns the report path."""
    run = Path(run_dir)
    lines = [f"# hh-ray run report: `{run.name}`", ""]
    sft_log = _read_jsonl(run / "sft-logs" / "metrics.jsonl")
    if sft_log:
        png = plots.line_plot([r["step"] for r in sft_log], {"train NLL": [r["sft/loss"] for r in sft_log]},
                              "step", "NLL per assistant token", "SFT loss", run / "sft_loss.png")
        ev = _read_json(run / "sft-logs" / "eval.json")
        lines += ["## SFT (initial policy)", "",
                  f"{len(sft_log)} steps; final train NLL {sft_log[-1]['sft/loss']:.3f}; "
                  f"held-out NLL {ev.get('heldout_nll', float('nan')):.3f} on {ev.get('heldout_dialogues', 0)} dialogues.",
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
    ppo = _read_jsonl(run / "ppo" / "metrics.jsonl")
    if ppo:
        steps = [r["step"] for r in ppo]
        col = lambda k: [r[k] for r in ppo]
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
                  f"lambda_KL {ppo[0]['objective/kl_coef']:g}. KL is per sample, summed over the response's tokens.", ""]
        if before and after:
            lines += ["| held-out prompts | before PPO | after PPO |", "|---|---|---|",
                      f"| PM score (normalized) | {before['eval/pm_score']:+.3f} | {after['eval/pm_score']:+.3f} |",
                      f"| KL from initial policy (nats, training estimator) | {before['eval/kl']:.3f} | "
                      f"{after['eval/kl']:.3f} |",
                      f"| KL, k1 estimate (nats) | {before['eval/kl_k1']:.3f} | {after['eval/kl_k1']:.3f} |",
                      f"| response length (tokens) | {before['eval/response_length']:.1f} | "
                      f"{after['eval/response_length']:.1f} |", ""]
        mean = lambda k: sum(r.get(k, 0.0) for r in ppo) / len(ppo)
        lines += ["Mean seconds per step by phase: " + ", ".join(f"{k[5:]} {mean(k):.2f}" for k in phases)
                  + f"; whole step {mean('time/step'):.2f}; {mean('perf/samples_per_s'):.1f} samples/s, "
                  f"{mean('rollout/tokens_per_s'):.0f} generated tokens/s.", ""]
        if "rollout/logprob_gap_mean" in ppo[-1]:
            lines += [f"Engine vs trainer logprobs of the sampled tokens: mean |gap| "
                      f"{mean('rollout/logprob_gap_mean'):.2e}, largest {max(col('rollout/logprob_gap_max')):.2e} "
                      f"(the trainer's are the PPO ratio's denominator).", ""]
        lines += ["![PM score vs sqrt(KL)](ppo_score_vs_sqrt_kl.png)", "", "![reward](ppo_reward.png)", "",
                  "![KL](ppo_kl.png)", ""]
        sb, sa = _read_json(run / "ppo" / "samples_before.json"), _read_json(run / "ppo" / "samples_after.json")
        if sb and sa:
            lines += ["## Samples on held-out prompts", ""] + _samples_md(sb, sa)
    out = run / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
