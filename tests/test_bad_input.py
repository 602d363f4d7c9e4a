"""Every bad input a user was seen to try: one line naming the problem, exit code 2, and no cluster started
when the input alone shows the problem. The table in docs/bad-input.md is written from these cases."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from hh_ray import cli

ROOT = Path(__file__).resolve().parents[1]
QUICK = str(ROOT / "jobs" / "quickstart.yaml")
TABLE = ROOT / "docs" / "bad-input.md"


def _malformed_data(tmp: Path) -> list[str]:
    (tmp / "data" / "helpful-base").mkdir(parents=True)
    with gzip.open(tmp / "data" / "helpful-base" / "test.jsonl.gz", "wt") as fh:
        fh.write("{not json\n" + json.dumps({"chosen": "no assistant turn", "rejected": "x"}) + "\n")
    return [f"data.data_dir={tmp / 'data'}", "data.subsets=[helpful-base]"]


def _non_pm_folder(tmp: Path, tiny: Path) -> list[str]:
    shutil.copytree(tiny, tmp / "sft-policy")
    return ["pm", "eval", "--checkpoint", str(tmp / "sft-policy"), "--data-dir", str(tmp)]


def _pm_without_stats(tmp: Path, tiny: Path) -> list[str]:
    from hh_ray.models.forward import load_model

    load_model(str(tiny), "pm").save_pretrained(tmp / "run" / "pm")
    return ["ppo", "--config", QUICK, f"run_dir={tmp / 'run'}"]


def _checkpoints_without_state(tmp: Path, tiny: Path) -> list[str]:
    (tmp / "run" / "checkpoints" / "ppo" / "policy" / "step2").mkdir(parents=True)
    return ["ppo", "--config", QUICK, f"run_dir={tmp / 'run'}", "ppo.reward.scorer=substring:e"]


HELD: list[int] = []  # lock file descriptors the cases hold (closed when the module's tests end)


def _folder_in_use(tmp: Path, tiny: Path) -> list[str]:
    """Another live command holds the run folder's lock (a fixed record, so the table stays the same)."""
    import fcntl
    import os

    from hh_ray.files import RunLock

    lock = tmp / "run" / RunLock.NAME
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": "node-1", "pid": 4242, "command": "hh-ray ppo --config jobs/quickstart.yaml",
                                "started": "2026-12-04T09:00:00+0000"}))
    fd = os.open(lock, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    HELD.append(fd)
    return ["ppo", "--config", QUICK, f"run_dir={tmp / 'run'}"]


def _log_damaged_mid_file(tmp: Path, tiny: Path) -> list[str]:
    """An intact step-2 checkpoint to resume from, and a metrics log with a bad line before its last."""
    import torch

    from hh_ray.workers.checkpoint import write_manifest

    ckpt = tmp / "run" / "checkpoints" / "ppo"
    for group in ("policy", "critic"):
        (ckpt / group / "step2").mkdir(parents=True)
        torch.save({}, ckpt / group / "step2" / "model.pt")
        write_manifest(ckpt / group / "step2")
    (ckpt / "state-step2.json").write_text(json.dumps({"step": 2, "tag": "step2", "kl_controller": {}}))
    (tmp / "run" / "ppo").mkdir(parents=True)
    (tmp / "run" / "ppo" / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "objective/kl": 0.\n{"step": 3}\n')
    return ["ppo", "--config", QUICK, f"run_dir={tmp / 'run'}", "ppo.reward.scorer=substring:e"]


# (what was tried, argv or a function of (tmp, tiny model dir) building it, words the one line must contain)
CASES = [
    ("prompts per step negative", ["ppo", "--config", QUICK, "ppo.prompts_per_step=-4"], "ppo.prompts_per_step"),
    ("prompts per step zero", ["ppo", "--config", QUICK, "ppo.prompts_per_step=0"], "ppo.prompts_per_step"),
    ("zero PPO steps", ["ppo", "--config", QUICK, "ppo.steps=0"], "ppo.steps"),
    ("max_new_tokens 0", ["ppo", "--config", QUICK, "ppo.rollout.max_new_tokens=0"], "max_new_tokens"),
    ("max_new_tokens negative", ["ppo", "--config", QUICK, "ppo.rollout.max_new_tokens=-5"], "max_new_tokens"),
    ("temperature -1", ["ppo", "--config", QUICK, "ppo.rollout.temperature=-1"], "temperature"),
    ("top_p 2", ["ppo", "--config", QUICK, "ppo.rollout.top_p=2"], "top_p"),
    ("kl_coef nan", ["ppo", "--config", QUICK, "ppo.reward.kl_coef=.nan"], "kl_coef"),
    ("epochs 0", ["ppo", "--config", QUICK, "ppo.algo.epochs=0"], "ppo.algo.epochs"),
    ("minibatches 0", ["ppo", "--config", QUICK, "ppo.algo.minibatches=0"], "ppo.algo.minibatches"),
    ("more minibatches than samples", ["ppo", "--config", QUICK, "ppo.algo.minibatches=100"], "minibatch"),
    ("samples_per_prompt 0", ["ppo", "--config", QUICK, "ppo.rollout.samples_per_prompt=0"], "samples_per_prompt"),
    ("unknown scorer", ["ppo", "--config", QUICK, "ppo.reward.scorer=bogus"], "ppo.reward.scorer"),
    ("unknown key", ["ppo", "--config", QUICK, "ppo.kl_coeff=0.1"], "did you mean 'ppo.reward.kl_coef'"),
    ("a PPO key from before the sections", ["ppo", "--config", QUICK, "ppo.kl_coef=0.1"], "use ppo.reward.kl_coef"),
    ("override not valid YAML", ["ppo", "--config", QUICK, "ppo.steps=[1"], "ppo.steps"),
    ("wrong type", ["ppo", "--config", QUICK, "ppo.steps=many"], "ppo.steps"),
    ("config file missing", ["ppo", "--config", "no/such.yaml"], "config file not found"),
    ("PM cannot hold a full response", ["ppo", "--config", QUICK, "pm.max_tokens=32"], "pm.max_tokens"),
    ("engine logprobs with top_p < 1", ["ppo", "--config", QUICK, "ppo.algo.old_logprobs=engine", "ppo.rollout.top_p=0.9"],
     "top-p"),
    ("unknown model dtype", ["sft", "--config", QUICK, "model.dtype=fp8"], "model.dtype"),
    ("unknown subset", ["sft", "--config", QUICK, "data.subsets=[nosuch]"], "nosuch"),
    ("policy folder missing", ["sft", "--config", QUICK, "model.policy=/no/such/model"], "model.policy"),
    ("hub id offline", ["sft", "--config", QUICK, "model.policy=no-org/no-model"], "model.policy"),
    ("all records malformed", lambda tmp, tiny: ["sft", "--config", QUICK, *_malformed_data(tmp)],
     "no usable training comparisons"),
    ("holdout fraction 0 leaves no held-out prompts",
     ["ppo", "--config", QUICK, "data.holdout_fraction=0", "ppo.reward.scorer=substring:e"], "data.holdout_fraction"),
    ("pm eval on a folder that is not a PM", _non_pm_folder, "not a preference model"),
    ("PPO with a PM that has no normalisation stats", _pm_without_stats, "pm_stats.json"),
    ("PPO checkpoints without driver state", _checkpoints_without_state, "--fresh"),
    ("a second command on a run folder in use", _folder_in_use, "is in use by `hh-ray ppo --config"),
    ("metrics log garbled before its last line", _log_damaged_mid_file, "line 2 is not a JSON object"),
    ("submit to nothing listening", ["submit", "--address", "http://127.0.0.1:9", "--config", QUICK, "--no-follow"],
     "cannot reach a Ray dashboard"),
]
SEEN: list[tuple[str, str, int]] = []
# The labeling service's answers to bad requests, each checked over HTTP by tests/label/test_security.py
LABEL_CASES = """
## Labeling service

Checked over real HTTP by `tests/label/test_security.py` (and the browser test for the lockout).

| request | answer |
|---|---|
| a JSON body nested 5000 deep | 422 `the JSON body is nested too deeply` |
| a turn with a lone surrogate (`"\\ud800"`) | 422 `the body holds text that is not valid Unicode (a lone surrogate)` |
| `GET /api/conversations/²` | 404 `no conversation '²'` |
| `strength=²` from the page's form | 422 `strength must be one of [1, 2, 3] (...)` |
| a turn with `\\r\\n\\r\\nHuman:` (CRLF from a textarea) or `\\r\\rAssistant:` | 422 `the turn may not contain the transcript marker 'Human:' after a blank line` |
| export of a campaign whose name is not Latin-1 | 200; `Content-Disposition` with an ASCII `filename` and `filename*=UTF-8''...` |
| a body over `server.max_body_bytes` on any route, `/api/login` included (by Content-Length, or counted when chunked) | 413 `the request body is over 65536 bytes` |
| `POST /api/login` without the login token, whatever the body | 403 `missing or wrong login CSRF token`, before the body is read |
| wrong passwords for a user from another address (20 at once) | 5 answered 401, the rest 429 for that address and name only; the user logs in from their own |
| anything but changing the password or logging out, with a one-time password | 403 `change your one-time password first (...)` (pages redirect to `/password`) |
| an unexpected error (a bug) | 500 `internal error; the service log has the details`, with the same security headers as every answer |
"""


@pytest.fixture(scope="module", autouse=True)
def write_table():
    import os

    yield
    for fd in HELD:
        os.close(fd)
    if len(SEEN) == len(CASES):  # only a full run rewrites the table
        rows = ["| input | message | exit code |", "|---|---|---|"]
        rows += [f"| {what} | `{msg.replace('|', '/')}` | {code} |" for what, msg, code in SEEN]
        TABLE.parent.mkdir(exist_ok=True)
        TABLE.write_text("# Bad input and what hh-ray says\n\nWritten by `tests/test_bad_input.py` from the cases it "
                         "checks; each exits before any cluster starts.\n\n" + "\n".join(rows) + "\n" + LABEL_CASES)


@pytest.mark.parametrize("what,argv,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(what, argv, words, tmp_path, tiny_model_dir, monkeypatch, capsys):
    def no_cluster(*a, **k):
        raise AssertionError("a cluster was started for input the config alone shows to be bad")

    for mod in ("sft", "pm", "ppo"):  # first: a driver module imported here binds the real connect, put back after
        monkeypatch.setattr(f"hh_ray.driver.{mod}.connect", no_cluster)
    monkeypatch.setattr("hh_ray.driver.cluster.connect", no_cluster)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    args = argv(tmp_path, tiny_model_dir) if callable(argv) else argv
    if args[0] in ("sft", "pm", "ppo") and not any(a.startswith("run_dir=") for a in args) and "eval" not in args:
        args = [*args, f"run_dir={tmp_path / 'run'}"]
    code = cli.main(args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("hh-ray:")]
    assert code == 2 and len(err) == 1, (code, err)
    assert words in err[0], err[0]
    message = err[0].removeprefix("hh-ray: error: ").replace(str(tmp_path), "<tmp>").replace("`", "'")
    SEEN.append((what, message, code))
