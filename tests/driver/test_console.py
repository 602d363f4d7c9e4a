"""The console: the progress display's plain mode, and `hh-ray status` on run folders built by hand."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest
from rich.console import Console

from hh_ray.cli import main
from hh_ray.driver.progress import PLAIN_LINES_PER_PHASE, PhaseProgress
from hh_ray.driver.runlog import RunLog
from hh_ray.driver.status import format_status, run_status
from hh_ray.files import RunLock


@pytest.mark.parametrize("steps,every", [(1000, 1), (150, 25), (3, 1), (30, 1)])
def test_plain_progress_prints_a_bounded_number_of_lines(steps, every):
    out = io.StringIO()
    bar = PhaseProgress("SFT", steps, console=Console(file=out))  # a StringIO is no terminal: plain lines
    for step in range(1, steps + 1):
        bar.update(step, f"loss={1 / step:.4g}", every)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) <= PLAIN_LINES_PER_PHASE + 2
    assert lines[0].startswith("[SFT] step 1/") and lines[-1].startswith(f"[SFT] step {steps}/{steps} (100%)")
    assert "ETA" in lines[0] and "loss=" in lines[0]
    assert "\x1b" not in out.getvalue()  # no escape codes in a log file


def test_terminal_progress_draws_a_bar():
    out = io.StringIO()
    bar = PhaseProgress("PPO", 30, start=10, console=Console(file=out, force_terminal=True, width=120))
    bar.update(11, "kl=0.5 pm_score=0.1 reward=0.2 entropy=7.0 samples_per_s=15")
    bar.close()
    assert "11/30" in out.getvalue() and "kl=0.5" in out.getvalue() and "━" in out.getvalue()
    assert "reward=0.2" in out.getvalue() and "entropy" not in out.getvalue()  # three metrics keep the bar whole


def _hand_built_run(run, steps_done: int = 12):
    """A run folder as `hh-ray run` leaves it: config, a finished SFT phase, PPO under way."""
    run.mkdir()
    (run / "config.yaml").write_text("name: hand\n")
    sft = RunLog(run / "sft-logs", "sft", 3, label="SFT")
    for step in (1, 2, 3):
        sft.log(step, {"sft/loss": 3.0 - step}, show=("sft/loss",))
    sft.close()
    ppo = RunLog(run / "ppo", "ppo", 30)
    for step in range(1, steps_done + 1):
        ppo.log(step, {"objective/pm_score": 0.25, "objective/kl": 1.5, "time/train": 2.0},
                show=("objective/pm_score", "objective/kl"))
    ppo.close()
    return run


def test_status_of_a_live_run(tmp_path, capsys):
    run = _hand_built_run(tmp_path / "run")
    with RunLock(run, "hh-ray run --config jobs/quickstart.yaml"):
        status = run_status(run)
        assert status.live and status.holder.command == "hh-ray run --config jobs/quickstart.yaml"
        assert [p.phase for p in status.phases] == ["SFT", "PPO"]
        assert (status.phases[-1].step, status.phases[-1].total) == (12, 30)
        text = format_status(status)
        assert main(["status", str(run)]) == 0
    assert text.splitlines()[0].startswith(f"{run}: live: `hh-ray run --config jobs/quickstart.yaml`")
    assert "phase PPO: step 12/30 (40%)" in text and "ETA" in text
    assert "pm_score=0.25 kl=1.5" in text and "earlier phases: SFT 3/3" in text
    assert "phase PPO: step 12/30" in capsys.readouterr().out


def test_status_of_a_stopped_run(tmp_path, capsys):
    run = _hand_built_run(tmp_path / "run")
    RunLock(run, "hh-ray run").acquire().release()  # a clean exit empties the lock file
    text = format_status(run_status(run))
    assert "stopped (the last command exited cleanly)" in text and "phase PPO: step 12/30" in text
    assert "ETA" not in text
    # a holder killed without a clean exit leaves its record and no lock
    (run / RunLock.NAME).write_text(json.dumps({"host": "h", "pid": 1, "command": "hh-ray ppo", "started": "t"}))
    text = format_status(run_status(run), now=time.time())
    assert "stopped: `hh-ray ppo` (pid 1 on h, since t) is gone without a clean exit" in text
    assert main(["status", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["live"] is False and report["phases"][-1]["metrics"] == {"objective/pm_score": 0.25,
                                                                           "objective/kl": 1.5}


def test_status_names_what_is_wrong_with_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["status", str(tmp_path / "missing")]) == 2
    assert f"hh-ray: error: {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    assert main(["status", str(tmp_path / "other")]) == 2
    assert "is not an hh-ray run folder: it holds neither .hh-ray.lock nor config.yaml" in capsys.readouterr().err


WORKER_SCRIPT = """
import sys, types, ray
from hh_ray.driver.cluster import connect

connect(types.SimpleNamespace(address="local", num_cpus=2), sys.argv[1])

@ray.remote(num_cpus=0.1)
class Chatty:
    def talk(self):
        import logging, os
        print("chatty stdout line")
        logging.getLogger("vllm").warning("chatty warning line")
        return os.getpid()

    def fail(self):
        raise ValueError("the actor's own error")

actor = Chatty.remote()
print("pid", ray.get(actor.talk.remote()))
ray.get(actor.fail.remote())
"""


def test_worker_output_goes_to_the_run_folder_and_errors_to_the_console(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, str(run)], capture_output=True, text=True,
                          timeout=300, env=os.environ | {"RAY_AUTH_MODE": "disabled"})
    console = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "ValueError: the actor's own error" in console, console[-3000:]
    assert "chatty" not in console
    assert console.count(f"worker logs in {run / 'logs'}/") == 1
    pid = int(proc.stdout.split("pid ")[1].split()[0])
    log = (run / "logs" / f"worker-{pid}.log").read_text()
    assert "chatty stdout line" in log and "chatty warning line" in log
