"""`hh-ray submit` against a real Ray head (Jobs API over real HTTP), and hh-ray's metrics on its Prometheus port."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def _job_args(run_dir: Path, steps: int) -> list[str]:
    return ["--config", str(JOBS / "quickstart.yaml"), f"run_dir={run_dir}", "ppo.scorer=substring:e",
            "model.tokenizer_vocab_size=320", "data.subsets=[helpful-base]", "data.max_prompt_tokens=64",
            f"ppo.steps={steps}", "ppo.prompts_per_step=8", "ppo.eval_prompts=8", "ppo.rollout.max_new_tokens=16",
            "ppo.rollout.kv_cache_gb=0.25", "ppo.policy_trainer.micro_batch_size=16",
            "ppo.critic_trainer.micro_batch_size=16"]


def _runtime_env(tmp: Path, hh_dir: Path) -> Path:
    p = tmp / "runtime_env.yaml"
    p.write_text(yaml.safe_dump({"env_vars": {"HH_RLHF_DIR": str(hh_dir), "RAY_AUTH_MODE": "disabled"}}))
    return p


def test_submit_follows_a_tiny_ppo_job_to_success(ray_head, hh_dir, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "hh_ray.cli", "submit", "--address", ray_head["url"], "--entrypoint", "ppo",
           "--runtime-env", str(_runtime_env(tmp_path, hh_dir)), *_job_args(run_dir, 2)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=ray_head["env"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_id = proc.stdout.splitlines()[0].strip()
    assert job_id.startswith("raysubmit_")
    assert "[ppo] after: held-out PM score" in proc.stdout  # the job's own log, followed live
    assert f"job {job_id}: SUCCEEDED" in proc.stderr
    rows = [json.loads(x) for x in (run_dir / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]


def test_bad_config_fails_before_submitting(ray_head):
    proc = subprocess.run([sys.executable, "-m", "hh_ray.cli", "submit", "--address", ray_head["url"], "--config",
                           str(JOBS / "quickstart.yaml"), "ppo.stepz=3"], capture_output=True, text=True,
                          env=ray_head["env"], timeout=120)
    assert proc.returncode == 2 and "did you mean 'ppo.steps'" in proc.stderr


def _scrape(url: str) -> dict[str, list[tuple[str, float]]]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out: dict[str, list[tuple[str, float]]] = {}
    for line in text.splitlines():
        m = re.match(r"^(ray_hh_ray_\w+)(\{[^}]*\})? ([0-9.eE+-]+|NaN)$", line)
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "", float(m.group(3))))
    return out


def test_prometheus_endpoint_has_every_metric_during_a_run(ray_head, hh_dir, tmp_path):
    from hh_ray.ops.metrics import GAUGES, PHASES

    cmd = [sys.executable, "-m", "hh_ray.cli", "submit", "--address", ray_head["url"], "--entrypoint", "ppo",
           "--no-follow", "--runtime-env", str(_runtime_env(tmp_path, hh_dir)), *_job_args(tmp_path / "run", 12)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=ray_head["env"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    want = {f"ray_hh_ray_{g}" for g in GAUGES} | {"ray_hh_ray_phase_seconds", "ray_hh_ray_queue_depth"}
    seen: dict = {}
    deadline = time.time() + 400
    while time.time() < deadline:
        seen = _scrape(ray_head["metrics"])
        if want <= set(seen):
            break
        time.sleep(5)
    assert want <= set(seen), f"missing {sorted(want - set(seen))}"
    value = lambda name: max(v for _, v in seen[name])
    assert value("ray_hh_ray_generated_tokens_per_s") > 10
    assert 0 < value("ray_hh_ray_samples_per_s") < 1000
    assert value("ray_hh_ray_engines") == 1
    assert value("ray_hh_ray_sync_bytes") > 1e6 and 0 < value("ray_hh_ray_sync_seconds") < 60
    assert 0.0 <= value("ray_hh_ray_pm_score") <= 1.0  # substring:e scores are shares of tokens
    phases = {re.search(r'phase="(\w+)"', tags).group(1) for tags, _ in seen["ray_hh_ray_phase_seconds"]}
    assert set(PHASES) <= phases
    assert all('job="quickstart"' in tags and "role=" in tags for tags, _ in seen["ray_hh_ray_reward"])
