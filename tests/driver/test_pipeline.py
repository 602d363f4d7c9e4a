"""`hh-ray run` end to end as a user runs it (a subprocess with its own local Ray), scaled down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JOBS = Path(__file__).resolve().parents[2] / "jobs"
CONSOLE_LINE_BUDGET = 40  # stdout and stderr of a short `hh-ray run` together


def test_run_writes_the_run_folder(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "hh_ray.cli", "run", "--config", str(JOBS / "quickstart.yaml"), f"run_dir={run}",
            "data.max_examples=300", "sft.steps=6", "sft.trainer.total_steps=6", "pm.epochs=0.2",
            "ppo.steps=2", "ppo.prompts_per_step=8", "ppo.eval_prompts=8", "ppo.rollout.max_new_tokens=16"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900,
                          env=os.environ | {"RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"report: {run / 'report.md'}" in proc.stdout
    # the console: progress lines and the driver's own, no worker output (that is in <run>/logs, named once)
    console = (proc.stdout + proc.stderr).splitlines()
    assert len(console) <= CONSOLE_LINE_BUDGET, "\n".join(console)
    assert not [line for line in console if "pid=" in line or " INFO " in line or "[WARNING]" in line], console
    assert sum("malformed HH records" in line for line in console) == 1  # one warning, not one per stage
    assert sum(f"worker logs in {run / 'logs'}" in line for line in console) == 1
    assert any(line.startswith("[PPO] step 2/2 (100%)") for line in console), console
    worker_logs = list((run / "logs").glob("worker-*.log"))
    assert worker_logs and any("vllm" in f.read_text(errors="replace").lower() for f in worker_logs)
    assert json.loads((run / "ppo" / "progress.json").read_text())["step"] == 2
    for f in ("config.yaml", "sft/config.json", "pm/pm_eval.json", "pm/pm_stats.json", "pm/reliability.png",
              "ppo/metrics.jsonl", "ppo/samples_before.json", "ppo/samples_after.json", "ppo/policy/config.json",
              "ppo_score_vs_sqrt_kl.png", "ppo_reward.png", "ppo_kl.png", "sft_loss.png", "report.md"):
        assert (run / f).is_file(), f
    rows = [json.loads(x) for x in (run / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("objective/reward", "objective/kl", "objective/pm_score", "policy/entropy",
                "objective/response_length", "time/generate", "time/experience", "time/train", "time/sync",
                "rollout/tokens_per_s", "rollout/logprob_gap_mean"):
        assert key in rows[0], key
    report = (run / "report.md").read_text()
    assert "PM score vs sqrt(KL)" in report and "before PPO" in report
    for png in run.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # three MiniLM PMs, PPO and every analysis: 15-25 minutes on 2 cores
@pytest.mark.timeout(2400)
def test_paper_job_runs_every_analysis_into_the_report(tmp_path):
    run = tmp_path / "paper"
    args = [sys.executable, "-m", "hh_ray.cli", "run", "--config", str(JOBS / "paper.yaml"), f"run_dir={run}",
            "data.max_examples=240", "sft.steps=6", "sft.trainer.total_steps=6", "pm.epochs=0.3",
            "pm.trainer.warmup_steps=0",
            "ppo.steps=2", "ppo.eval_every=1", "ppo.prompts_per_step=8", "ppo.eval_prompts=8",
            "ppo.rollout.max_new_tokens=16", "analyses.bon_ns=[1,2,4]", "analyses.bon_prompts=6",
            "analyses.hh_task_questions=6", "analyses.lm_eval_limit=4", "analyses.ood_fit_prompts=40",
            "analyses.ood_test_prompts=20", "analyses.ood_val_prompts=20"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1800,
                          env=os.environ | {"RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("initial_policies", "bon", "tradeoff", "tradeoff_policies", "alignment_tax", "ood"):
        assert (run / "analysis" / f"{name}.json").is_file(), name
        assert (run / "analysis" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    bon = json.loads((run / "analysis" / "bon.json").read_text())
    assert bon["test_pm"] != bon["train_pm"]  # two PMs trained on disjoint halves score differently
    policies = json.loads((run / "analysis" / "tradeoff_policies.json").read_text())
    assert [p["label"] for p in policies["points"]] == ["initial", "ppo"]
    assert all(p["helpful_pairs"] == 6 and p["harmless_pairs"] == 6 for p in policies["points"])
    pms = json.loads((run / "analysis" / "tradeoff.json").read_text())
    assert [p["label"] for p in pms["points"]] == ["harmless x2 (the run's PM)", "harmless x0 (helpful only)",
                                                  "harmless x0.5", "harmless only"]
    init = json.loads((run / "analysis" / "initial_policies.json").read_text())
    assert init["labels"] == ["SFT on chosen responses (the run's)", "context distillation", "no fine-tuning"]
    assert (run / "initial-context_distill" / "sft" / "config.json").is_file() and init["prompts"] == 6
    ood = json.loads((run / "analysis" / "ood.json").read_text())
    assert ood["layers"] == [2, 3, 4, 5, 6] and ood["layer"] in ood["layers"] and len(ood["test_in"]) == 20
    report = (run / "report.md").read_text()
    for section in ("Best-of-N", "Helpful vs harmless: PMs", "Helpful vs harmless: policies", "Alignment tax",
                    "OOD detection", "Robustness: train PM vs test PM", "## Verdicts against the paper",
                    "## Initial policy: context distillation vs SFT", "**Verdict:**"):
        assert section in report, section
