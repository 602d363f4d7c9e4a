"""Run-folder guards: a damaged JSON-lines log (what a kill mid-append leaves, and what it does not), and one
writer per run folder, checked with two real `hh-ray` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hh_ray.driver.runlog import RunLog
from hh_ray.files import DamagedFileError, RunLock, read_jsonl

ROWS = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4}, {"step": 3, "loss": 0.3}]


def _write(path: Path, rows: list[dict], tail: bytes = b"") -> int:
    """Rows as JSON lines, then `tail`; returns the byte offset where `tail` starts."""
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(body + tail)
    return len(body)


@pytest.mark.parametrize("tail", [b'{"step": 4, "lo', b'\x00\x00\x00\x00\n', b'{"step": 4}garbage\n'])
def test_a_damaged_last_line_is_cut_off_on_resume_with_one_warning(tmp_path, capsys, tail):
    log = tmp_path / "metrics.jsonl"
    offset = _write(log, ROWS, tail)
    assert read_jsonl(log) == ROWS and log.read_bytes().endswith(tail)  # a reader skips it, leaves the file alone
    RunLog(tmp_path, "ppo", 10, resume_step=3).log(4, {"loss": 0.2})
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and f"{log}: cut off a damaged last line at byte {offset}" in err, err
    assert [r["step"] for r in read_jsonl(log)] == [1, 2, 3, 4]


def test_a_complete_last_row_without_its_newline_is_kept_and_the_next_append_is_its_own_line(tmp_path, capsys):
    acks = tmp_path / "acks-sim.jsonl"
    _write(acks, ROWS[:2], json.dumps(ROWS[2]).encode())
    assert read_jsonl(acks, repair=True) == ROWS
    with acks.open("a") as fh:
        fh.write(json.dumps({"step": 4}) + "\n")
    assert [r["step"] for r in read_jsonl(acks)] == [1, 2, 3, 4] and "warning" not in capsys.readouterr().err


def test_a_garbled_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps(ROWS[0]) + "\n{\"step\": 2, oops\n" + json.dumps(ROWS[2]) + "\n")
    before = log.read_bytes()
    with pytest.raises(DamagedFileError, match=rf"{log}: line 2 is not a JSON object"):
        RunLog(tmp_path, "ppo", 10, resume_step=3)
    assert log.read_bytes() == before  # nothing guessed away


def test_report_on_a_log_garbled_in_the_middle_is_one_line_exit_2(tmp_path):
    (tmp_path / "ppo").mkdir()
    log = tmp_path / "ppo" / "metrics.jsonl"
    log.write_text(json.dumps(ROWS[0]) + "\nnot json\n" + json.dumps(ROWS[1]) + "\n")
    p = _hh_ray("report", "--run", str(tmp_path))
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    assert err.strip().splitlines() == [f"hh-ray report: error: {log}: line 2 is not a JSON object "
                                        "(Expecting value at column 1); lines follow it, "
                                        "so this is not an interrupted write: fix or remove that line"], err


# ---- one writer per run folder ----------------------------------------------------------------------------------
SFT = ["model.policy=tiny", "model.tokenizer_vocab_size=320", "data.subsets=[helpful-base]", "sft.steps=500",
       "logging.tensorboard=false"]


def _hh_ray(*args: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hh_ray.cli", *args], stdout=subprocess.PIPE, stderr=stderr,
                            text=True, env=os.environ | {"RAY_AUTH_MODE": "disabled"}, start_new_session=True)


def _wait_for_holder(run: Path, pid: int, proc: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        held = RunLock(run, "").holder()
        if held and held.pid == pid:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    raise AssertionError(f"pid {pid} never took the lock of {run}")


def test_one_writer_per_run_folder_with_stale_takeover(tmp_path):
    run = tmp_path / "run"
    first = _hh_ray("sft", f"run_dir={run}", *SFT)
    try:
        _wait_for_holder(run, first.pid, first)
        second = _hh_ray("sft", f"run_dir={run}", *SFT)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"hh-ray: error: {run} is in use by `hh-ray sft run_dir={run}")
        assert f"(pid {first.pid} on " in lines[0], lines
        reader = _hh_ray("report", "--run", str(run))  # read-only: no lock needed, none refused
        _, err = reader.communicate(timeout=120)
        assert "in use" not in err, err
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # as a lost node or `kill -9` would: the lock file keeps its record
        first.wait()
    assert RunLock(run, "").holder().pid == first.pid
    log = tmp_path / "third.err"
    with log.open("w") as fh:
        third = _hh_ray("sft", f"run_dir={run}", *SFT, "ray.stop_grace_s=1", stderr=fh)
        _wait_for_holder(run, third.pid, third)
        third.send_signal(signal.SIGTERM)  # before its first step: nothing to save, abandoned after the grace
        third.wait(timeout=120)
    err = log.read_text()
    assert f"warning: taking over {run / RunLock.NAME} from `hh-ray sft run_dir={run}" in err, err
    assert f"(pid {first.pid} on" in err and third.returncode == 143, err
    assert len([line for line in err.splitlines() if line.startswith("hh-ray: stopped by SIGTERM")]) == 1, err
    assert "Traceback" not in err, err
    assert RunLock(run, "").holder() is None  # a clean exit leaves the lock file empty
