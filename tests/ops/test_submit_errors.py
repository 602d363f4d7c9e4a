"""`hh-ray submit` against a token-protected head, a wrong token, nothing listening, and a non-Ray server:
success where the token is found where Ray put it, else one line naming the problem and exit code 2."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from ray_heads import start_head

from hh_ray.workers.group import free_port

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def _submit(address: str, env: dict, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hh_ray.cli", "submit", "--address", address, "--no-follow", "--entrypoint", "ppo",
           "--config", str(JOBS / "quickstart.yaml"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)


def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    lines = [x for x in proc.stderr.splitlines() if x.strip() and "WARNING" not in x and "INFO" not in x]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("hh-ray: error:"), proc.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    import secrets

    home = tmp_path_factory.mktemp("home")
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))  # where `ray get-auth-token --generate` puts it
    yield from start_head({"RAY_AUTH_MODE": "token", "HOME": str(home)})


def test_token_is_found_where_ray_put_it_and_a_wrong_one_is_one_line(token_head):
    home = Path(token_head["env"]["HOME"])
    client_env = token_head["env"] | {"RAY_AUTH_MODE": "disabled"}  # the laptop's setting must not matter
    ok = _submit(token_head["url"], client_env, "ppo.steps=1")
    assert ok.returncode == 0 and ok.stdout.strip(), ok.stderr[-2000:]
    token = (home / ".ray" / "auth_token").read_text().strip()
    elsewhere = client_env | {"HOME": str(home.parent), "RAY_AUTH_TOKEN_PATH": str(home / ".ray" / "auth_token")}
    assert _submit(token_head["url"], elsewhere, "ppo.steps=1").returncode == 0
    only_env = client_env | {"HOME": str(home.parent), "RAY_AUTH_TOKEN": token}
    assert _submit(token_head["url"], only_env, "ppo.steps=1").returncode == 0
    _one_line_error(_submit(token_head["url"], client_env, "--token", "not-the-token"), "refused the auth token")
    _one_line_error(_submit(token_head["url"], client_env | {"HOME": str(home.parent)}), "requires an auth token")


def test_nothing_listening_and_a_non_ray_server_are_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled"}
    _one_line_error(_submit(f"http://127.0.0.1:{free_port()}", env), "cannot reach a Ray dashboard")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _one_line_error(_submit(f"http://127.0.0.1:{server.server_address[1]}", env), "not a Ray dashboard")
    finally:
        server.shutdown()


def test_submit_waits_out_a_head_without_agent_or_dropping_requests_but_not_a_refusal():
    """A fresh head says "No available agent"; a busy one drops a request: both are retried until the deadline.
    Anything else (e.g. a refused token) fails at once."""
    import requests

    from hh_ray.ops.submit import _submit_with_retry

    class Head:
        def __init__(self, answers):
            self.answers, self.calls = list(answers), 0

        def submit_job(self, entrypoint, runtime_env):
            self.calls += 1
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    head = Head([RuntimeError("No available agent to submit job"), requests.exceptions.ConnectionError("reset"),
                 requests.exceptions.ReadTimeout("slow"), "raysubmit_1"])
    assert _submit_with_retry(head, "hh-ray run", None, wait_s=10, pause_s=0) == "raysubmit_1" and head.calls == 4
    refused = Head([RuntimeError("Request failed with status code 403: Invalid authentication token")])
    with pytest.raises(RuntimeError, match="403"):
        _submit_with_retry(refused, "hh-ray run", None, wait_s=10, pause_s=0)
    assert refused.calls == 1
    gone = Head([requests.exceptions.ConnectionError("refused")] * 3)
    with pytest.raises(requests.exceptions.ConnectionError):
        _submit_with_retry(gone, "hh-ray run", None, wait_s=0, pause_s=0)  # past the deadline: the error rises
    assert gone.calls == 1
