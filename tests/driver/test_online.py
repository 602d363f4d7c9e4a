"""`hh-ray online` end to end (slow): two rounds on the tiny preset, and the same run killed twice in round 1,
once while its labelers collect and once during PPO, then rerun to the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from hh_ray.workers.group import free_port

pytestmark = pytest.mark.slow

SMALL = [
    "rounds=2", "comparisons_per_round=6", "head_to_head=4", "elo_bootstraps=50", "labelers.helpful=1",
    "labelers.dialogues=60", "job.model.tokenizer_vocab_size=320", "job.data.max_examples=256",
    "job.sft.steps=10", "job.pm.epochs=1.0", "job.pm.checkpoint_every=4", "job.ppo.steps=4",
    "job.ppo.checkpoint_every=1", "job.ppo.prompts_per_step=8", "job.ppo.eval_prompts=8",
    "job.ppo.policy_trainer.micro_batch_size=16", "job.ppo.critic_trainer.micro_batch_size=16",
]


def _cmd(run_dir: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hh_ray.cli", "online", "--config", "jobs/online-quickstart.yaml",
            f"run_dir={run_dir}", f"server.port={port}", *SMALL, *extra]


def _run_until(cmd: list[str], stop_when, log: Path, timeout_s: float = 1800) -> int | None:
    """Run the driver; SIGKILL its whole process group once `stop_when()` holds. Returns its exit code or None."""
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    with open(log, "a") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        t0 = time.monotonic()
        while p.poll() is None and time.monotonic() - t0 < timeout_s:
            if stop_when and stop_when():
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                return None
            time.sleep(0.5)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            raise AssertionError(f"driver ran past {timeout_s}s; see {log}")
        return p.returncode


def _rows(run_dir: Path):
    from hh_ray.label.store import Store

    store = Store(f"sqlite:///{run_dir / 'label' / 'label.db'}")
    try:
        return store.comparisons()
    finally:
        store.dispose()


@pytest.mark.timeout(3600)  # four driver runs of two rounds each: about 25 minutes on 2 quiet cores
def test_online_rounds_resume_after_kills(tmp_path):
    from hh_ray.driver.runlog import read_metrics
    from hh_ray.report.online import read_summary

    a, b = tmp_path / "a", tmp_path / "b"
    assert _run_until(_cmd(a, free_port()), None, tmp_path / "a.log") == 0, (tmp_path / "a.log").read_text()[-3000:]
    shared = [f"init_run={a}", f"labelers.judge_pm={a / 'judge' / 'pm'}"]
    def acks():
        return list((b / "rounds" / "1" / "online").glob("acks-*.jsonl"))
    def in_collection():
        return any(f.read_text().strip() for f in acks())
    def in_ppo():
        return any((b / "rounds" / "1" / "checkpoints" / "ppo").glob("state-*.json"))
    log = tmp_path / "b.log"
    assert _run_until(_cmd(b, free_port(), *shared), in_collection, log) is None
    assert _run_until(_cmd(b, free_port(), *shared), in_ppo, log) is None
    assert _run_until(_cmd(b, free_port(), *shared), None, log) == 0, log.read_text()[-3000:]

    for run in (a, b):
        rows = _rows(run)
        per_campaign = Counter(r.campaign for r in rows)
        assert per_campaign == {"r0-helpful": 6, "r1-helpful": 6, "h2h-v1": 4, "h2h-v2": 4}, per_campaign
        assert len({r.task_id for r in rows}) == len(rows)
        summary = read_summary(run)
        assert [r.comparisons for r in summary.rounds] == [{"helpful": 6}, {"helpful": 6}]
        assert [r.version for r in summary.elo_head_to_head] == [0, 1, 2]
        metrics = (run / "rounds" / "1" / "ppo" / "metrics.jsonl").read_text().splitlines()
        steps = [json.loads(x)["step"] for x in metrics]
        assert steps == [1, 2, 3, 4]  # PPO resumed after the kill: no step lost or logged twice
        assert "## Online rounds" in (run / "report.md").read_text()
    # b started from a's SFT, PM and judge, so every round must match a's: the comparisons of round 1, which b's
    # labelers were killed in the middle of, and the PPO metrics of round 1, which b was killed in the middle of
    def key(r):
        return (r.context, r.response_a, r.response_b, r.choice)
    for campaign in ("r0-helpful", "r1-helpful"):
        assert [key(r) for r in _rows(a) if r.campaign == campaign] == \
            [key(r) for r in _rows(b) if r.campaign == campaign], campaign
    ppo_a, ppo_b = (read_metrics(run / "rounds" / "1" / "ppo" / "metrics.jsonl") for run in (a, b))
    for x, y in zip(ppo_a, ppo_b):
        for k in ("objective/pm_score", "objective/kl", "objective/reward", "policy/loss", "critic/loss"):
            assert x[k] == pytest.approx(y[k], abs=1e-3), (k, x["step"])
