"""`hh-ray label user add|password|disable|enable` and `hh-ray label serve` as an operator runs them: a process on
its own local Ray that prints the URL, writes the admin's one-time password to a 0600 file (its stdout is not a
terminal, as a Ray job's log is not), serves, and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hh_ray.cli import main as cli_main
from hh_ray.label.client import LabelAPIError, LabelClient
from hh_ray.workers.group import free_port


def _read_until(proc, pattern: str, timeout_s: float, seen: list[str]) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(seen)[-4000:]}")


def test_user_add_then_serve_until_ctrl_c(tmp_path, capsys):
    port = free_port()
    cfg = {"name": "cli-test", "dir": str(tmp_path / "svc"),
           "sources": [{"name": "e1", "model": "echo:first answer", "cpus_per_replica": 0.1},
                       {"name": "e2", "model": "echo:second answer", "cpus_per_replica": 0.1}],
           "campaigns": [{"name": "c", "mode": "helpful", "sources": ["e1", "e2"]}],
           "server": {"port": port, "ingress_cpus": 0.1}, "ray": {"num_cpus": 2}}
    path = tmp_path / "label.yaml"
    path.write_text(yaml.safe_dump(cfg))

    assert cli_main(["label", "user", "add", "ann", "--role", "labeler", "--config", str(path)]) == 0
    (ann_password,) = re.findall(r"one-time password: (\S+)", capsys.readouterr().out)
    assert cli_main(["label", "user", "add", "ann", "--config", str(path)]) == 2  # exists: one clear line
    assert "user 'ann' exists already" in capsys.readouterr().err

    import hh_ray

    repo = str(Path(hh_ray.__file__).resolve().parents[1])  # this checkout's hh_ray, not another install
    env = dict(os.environ, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "hh_ray.cli", "label", "serve", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=str(tmp_path), start_new_session=True)
    seen: list[str] = []
    try:
        url = _read_until(proc, r"\[label\] serving (http://\S+)", 240, seen).group(1)
        secret_file = Path(_read_until(proc, r"one-time password is in (\S+) \(mode 0600", 10, seen).group(1))
        assert url == f"http://127.0.0.1:{port}"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        admin_password = secret_file.read_text().strip()
        with LabelClient(url) as admin, LabelClient(url) as ann:
            assert admin.login("admin", admin_password) == "admin"
            with pytest.raises(LabelAPIError) as err:  # a one-time password: nothing before it is changed
                admin.progress()
            assert err.value.status == 403 and "change your one-time password first" in err.value.message
            with pytest.raises(LabelAPIError) as err:
                admin.change_password(admin_password, admin_password)
            assert err.value.status == 422
            admin.change_password(admin_password, "admin's own passphrase")
            ann.login("ann", ann_password)
            ann.change_password(ann_password, "ann's own passphrase")
            task = ann.post_turn(ann.start("c"), "Hello?")
            assert {task.response_a, task.response_b} == {"first answer", "second answer"}
            assert ann.choose(task.task_id, "A", 2).duplicate is False
            assert admin.progress()["total"] == 1
            with pytest.raises(LabelAPIError) as err:  # one-time means once
                LabelClient(url).login("admin", admin_password)
            assert err.value.status == 401

            assert cli_main(["label", "user", "disable", "ann", "--config", str(path)]) == 0
            with pytest.raises(LabelAPIError) as err:  # her session ended with the account
                ann.stats()
            assert err.value.status == 401
            with pytest.raises(LabelAPIError) as err:
                LabelClient(url).login("ann", "ann's own passphrase")
            assert err.value.status == 401
            assert cli_main(["label", "user", "enable", "ann", "--config", str(path)]) == 0
            assert LabelClient(url).login("ann", "ann's own passphrase") == "labeler"
            assert cli_main(["label", "user", "password", "ann", "--config", str(path)]) == 0
            (reset,) = re.findall(r"new one-time password: (\S+)", capsys.readouterr().out)
            with LabelClient(url) as again:
                with pytest.raises(LabelAPIError):
                    again.login("ann", "ann's own passphrase")
                again.login("ann", reset)
                with pytest.raises(LabelAPIError) as err:
                    again.stats()
                assert err.value.status == 403
            assert cli_main(["label", "user", "disable", "nobody", "--config", str(path)]) == 2
            assert "no user named 'nobody'" in capsys.readouterr().err
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(seen) + proc.stdout.read()
    assert "[label] stopping" in out and admin_password not in out  # stdout is the log a Ray job keeps
    with socket.socket() as s:  # the HTTP port is free again
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_serve_refuses_a_missing_model_folder(tmp_path, capsys):
    path = tmp_path / "label.yaml"
    path.write_text(yaml.safe_dump({"dir": str(tmp_path / "svc"),
                                    "sources": [{"name": "v0", "model": str(tmp_path / "no-such-run")}],
                                    "campaigns": [{"name": "c", "sources": ["v0", "v0"]}]}))
    from hh_ray.config import ConfigError
    from hh_ray.label.config import load_label_config
    from hh_ray.label.serve import check_models

    with pytest.raises(ConfigError, match="sources.v0.model: no model at .*no-such-run"):
        check_models(load_label_config(path))


def test_admin_password_is_shown_only_on_a_terminal(tmp_path):
    """On a real terminal (a pty) the one-time password is printed and no file is written; the serve test above
    covers stdout as a pipe (a log), where it goes to a 0600 file and is never printed."""
    import pty

    code = ("import sys; from hh_ray.label.commands import show_admin_password; from hh_ray.label.config import "
            f"LabelConfig; print(show_admin_password(LabelConfig(dir={str(tmp_path)!r}), 'pw-on-the-tty'))")
    leader, follower = pty.openpty()
    proc = subprocess.run([sys.executable, "-c", code], stdout=follower, stderr=subprocess.PIPE, timeout=60)
    os.close(follower)
    out = os.read(leader, 4096).decode()
    os.close(leader)
    assert proc.returncode == 0 and "one-time password pw-on-the-tty" in out, (out, proc.stderr)
    assert not (tmp_path / "admin-password").exists()
