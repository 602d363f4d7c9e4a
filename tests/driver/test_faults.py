"""Fault injection into running PPO jobs: SIGKILL of an actor as soon as a given step is logged (so the next
step is under way), and of the driver itself. Stateless groups come back and the step goes on; a dead trainer
rank rebuilds both trainer groups from the last checkpoint; a killed driver is resumed by rerunning the command.
Afterwards `metrics.jsonl` has every step once and matches an uninterrupted run, and nothing is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hh_ray.config import load_config
from hh_ray.driver.runlog import read_metrics

BASE = [
    "model.policy=tiny", "model.tokenizer_vocab_size=320", "data.max_prompt_tokens=64", "data.subsets=[helpful-base]",
    "ppo.reward.scorer=substring:e", "ppo.prompts_per_step=8", "ppo.eval_prompts=8", "ppo.rollout.max_new_tokens=16",
    "ppo.rollout.kv_cache_gb=0.25", "ppo.policy_trainer.micro_batch_size=16", "ppo.policy_trainer.lr=1e-3",
    "ppo.critic_trainer.micro_batch_size=16", "ppo.critic_trainer.lr=1e-3", "ppo.checkpoint_every=2",
    "logging.tensorboard=false",
]
COMPARED = ("objective/pm_score", "objective/kl", "objective/reward", "policy/loss", "critic/loss")


class Killer(threading.Thread):
    """Kills the named actor's process with SIGKILL as soon as `step` appears in the metrics log."""

    def __init__(self, metrics: Path, plan: list[tuple[int, str]]):
        super().__init__(daemon=True)
        self.metrics, self.plan, self.done = metrics, sorted(plan), []

    def run(self) -> None:
        import ray

        deadline = time.time() + 900
        for step, name in self.plan:
            while time.time() < deadline and not any(r["step"] >= step for r in read_metrics(self.metrics)):
                time.sleep(0.2)
            pid = ray.get(ray.get_actor(name).pid.remote())
            os.kill(pid, signal.SIGKILL)
            self.done.append((step, name))


def _run(root: Path, name: str, steps: int, kills: list[tuple[int, str]] = (), *overrides: str):
    from hh_ray.driver.ppo import run_ppo

    run = root / name
    killer = Killer(run / "ppo" / "metrics.jsonl", list(kills))
    if kills:
        killer.start()
    run_ppo(load_config(None, [f"run_dir={run}", f"ppo.steps={steps}", *BASE, *overrides]))
    if kills:
        killer.join(timeout=5)
    assert killer.done == sorted(kills)
    return read_metrics(run / "ppo" / "metrics.jsonl")


def _assert_same_run(rows, reference):
    assert [r["step"] for r in rows] == [r["step"] for r in reference]  # each step exactly once
    for a, b in zip(rows, reference):
        for key in COMPARED:
            assert a[key] == pytest.approx(b[key], abs=1e-3), (key, a["step"])


@pytest.fixture(scope="module")
def uninterrupted(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return root, _run(root, "clean", 6)


def _no_leftover_groups():
    import ray
    from ray.util import placement_group_table

    live = [pg["name"] for pg in placement_group_table().values() if pg["state"] != "REMOVED"]
    assert not live, live
    assert not ray.util.list_named_actors(), ray.util.list_named_actors()


def test_engine_death_is_survived_within_one_command(uninterrupted):
    """The engine dies during step 2: a new one gets the weights and the batch reruns."""
    root, clean = uninterrupted
    _assert_same_run(_run(root, "engine-dies", 6, [(1, "rollout-0")]), clean)
    _no_leftover_groups()


@pytest.mark.slow  # passed before the GPU-path merge; after it, the trainer restart hung once (see issue notes)
def test_engine_and_trainer_deaths_are_survived_within_one_command(uninterrupted):
    """The engine dies during step 2, a policy-trainer rank during step 4 (rebuilt from the step-2 checkpoint)."""
    root, clean = uninterrupted
    rows = _run(root, "faulty", 6, [(1, "rollout-0"), (3, "policy-trainer-0")])
    _assert_same_run(rows, clean)
    _no_leftover_groups()


@pytest.mark.slow
def test_async_rollout_survives_engine_and_trainer_deaths(ray_local, tmp_path):
    """Async: the engine dies during step 2 (while it also generates step 3's batch), a policy-trainer rank during
    step 4. The run finishes with every step once, never trains on a batch older than one version, and the step
    redone after the trainers' rebuild is generated afresh by the restored policy (lag 0)."""
    rows = _run(tmp_path, "async-faulty", 6, [(1, "rollout-0"), (3, "policy-trainer-0")],
                "ppo.async_rollout=true", "ppo.algo.old_logprobs=engine")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["rollout/policy_lag"] for r in rows] == [0, 1, 0, 1, 1, 1]  # rebuilt from step 2's checkpoint
    _no_leftover_groups()


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["reference-0", "pm-scorer-0", "critic-trainer-0"])
def test_each_other_actor_death_is_survived(uninterrupted, victim):
    root, clean = uninterrupted
    _assert_same_run(_run(root, f"kill-{victim}", 6, [(3, victim)]), clean)
    _no_leftover_groups()


def _driver(run: Path, steps: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hh_ray.cli", "ppo", f"run_dir={run}", f"ppo.steps={steps}", *BASE]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"RAY_AUTH_MODE": "disabled"}, start_new_session=True)


def _wait_for_step(run: Path, step: int, proc: subprocess.Popen, limit_s: float = 900) -> None:
    deadline = time.time() + limit_s
    while not any(r["step"] >= step for r in read_metrics(run / "ppo" / "metrics.jsonl")):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.5)


def _session_alive(run: Path) -> list:
    from hh_ray.driver.cluster import SESSION_FILE, session_processes

    f = run / SESSION_FILE
    return session_processes(json.loads(f.read_text())["session"]) if f.is_file() else []


def _stop_with(signum: int, run: Path, steps: int, at_step: int) -> tuple[str, int]:
    """Send `signum` to a PPO driver once step `at_step` is logged; returns its stderr and the step it saved."""
    proc = _driver(run, steps)
    _wait_for_step(run, at_step, proc)
    session = json.loads((run / ".ray-local-session.json").read_text())["session"]
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "SIGTERM received" not in err and "StackTrace" not in err, err[-3000:]
    stopped = [line for line in err.splitlines() if line.startswith("hh-ray: stopped")]
    name = signal.Signals(signum).name
    assert len(stopped) == 1 and stopped[0].startswith(f"hh-ray: stopped by {name} after PPO step "), err[-3000:]
    assert stopped[0].endswith("rerun the same command to resume"), stopped
    saved = int(stopped[0].split("after PPO step ")[1].split()[0])
    assert saved >= at_step and (run / "checkpoints" / "ppo" / f"state-step{saved}.json").is_file()
    assert [r["step"] for r in read_metrics(run / "ppo" / "metrics.jsonl")][-1] == saved
    from hh_ray.driver.cluster import session_processes

    deadline = time.time() + 60
    while session_processes(session) and time.time() < deadline:
        time.sleep(1)
    assert not session_processes(session)  # the local cluster went with its driver
    return err, saved


def test_ctrl_c_checkpoints_the_last_step_and_exits_130(tmp_path):
    _stop_with(signal.SIGINT, tmp_path / "sigint", 20, 1)


def test_sigterm_checkpoints_the_last_step_and_the_rerun_continues_exactly(uninterrupted, tmp_path):
    """Preemption: SIGTERM once step 1 is logged (checkpoint_every=2, so step 1 or 3 is saved by the stop alone);
    the rerun of the same command finishes the run with the numbers and final score of an uninterrupted one."""
    root, clean = uninterrupted
    run = tmp_path / "sigterm"
    _stop_with(signal.SIGTERM, run, 6, 1)
    again = _driver(run, 6)
    out, err = again.communicate(timeout=1200)
    assert again.returncode == 0, err[-3000:]
    _assert_same_run(read_metrics(run / "ppo" / "metrics.jsonl"), clean)
    after, reference = (json.loads((r / "ppo" / "eval_after.json").read_text()) for r in (run, root / "clean"))
    assert after["eval/pm_score"] == pytest.approx(reference["eval/pm_score"], abs=1e-3)


def test_sigterm_to_sft_checkpoints_the_last_step(tmp_path):
    """The supervised stages (stage.py) stop the same way: the step boundary after the signal is saved as an intact
    checkpoint that mid-stage resume (tested with the stage runner) starts from."""
    run = tmp_path / "sft"
    cmd = [sys.executable, "-m", "hh_ray.cli", "sft", f"run_dir={run}", "model.policy=tiny",
           "model.tokenizer_vocab_size=320", "data.subsets=[helpful-base]", "data.max_prompt_tokens=64",
           "sft.steps=400", "sft.checkpoint_every=100", "logging.tensorboard=false"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"RAY_AUTH_MODE": "disabled"}, start_new_session=True)
    deadline = time.time() + 600
    while not read_metrics(run / "sft-logs" / "metrics.jsonl"):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143 and "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("hh-ray: stopped")]
    saved = int(line.split("after sft step ")[1].split()[0])
    assert 1 <= saved < 100 and line.endswith("rerun the same command to resume"), line
    assert (run / "checkpoints" / "sft" / f"step{saved}" / "COMPLETE").is_file()
    assert [r["step"] for r in read_metrics(run / "sft-logs" / "metrics.jsonl")][-1] == saved  # what resume keeps


@pytest.mark.slow
def test_killed_driver_is_resumed_by_rerunning_the_same_command(uninterrupted, tmp_path):
    root, clean = uninterrupted
    run = tmp_path / "sigkill"
    proc = _driver(run, 6)
    _wait_for_step(run, 3, proc)
    old_session = json.loads((run / ".ray-local-session.json").read_text())["session"]
    os.kill(proc.pid, signal.SIGKILL)  # the driver process alone, as `kill -9 <pid>` would
    proc.wait()
    orphans = _session_alive(run)  # Ray's own processes outlive their driver for a while
    again = _driver(run, 6)
    out, err = again.communicate(timeout=1200)
    assert again.returncode == 0, err[-3000:]
    if orphans:
        assert "processes of a local cluster whose driver died" in out, out[-2000:]
    from hh_ray.driver.cluster import session_processes

    assert not session_processes(old_session)
    _assert_same_run(read_metrics(run / "ppo" / "metrics.jsonl"), clean)
    assert not _session_alive(run)
