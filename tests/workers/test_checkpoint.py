"""Damaged checkpoints are never trusted: resume verifies the tag and falls back to the newest intact one."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from hh_ray.algo.batch import PairBatch
from hh_ray.config import TrainerConfig
from hh_ray.driver.ppo import resume_point, state_file
from hh_ray.driver.resume import ResumeError, last_complete
from hh_ray.models.objectives import PMObjective
from hh_ray.workers.checkpoint import checkpoint_problem, intact_tags, latest_tag, write_manifest
from hh_ray.workers.trainer import TrainerGroup


def _fake_tag(root, tag, payload=b"x" * 100):
    d = root / tag
    d.mkdir(parents=True)
    torch.save({"w": torch.zeros(4)}, d / "mp_rank_00_model_states.pt")
    (d / "extra.bin").write_bytes(payload)
    write_manifest(d)


def test_truncated_deleted_and_unmarked_tags_are_skipped(tmp_path, caplog):
    for step in (2, 4, 6, 8):
        _fake_tag(tmp_path, f"step{step}")
    (tmp_path / "latest").write_text("step8")
    pt = tmp_path / "step8" / "mp_rank_00_model_states.pt"
    pt.write_bytes(pt.read_bytes()[:-20])  # cut short
    (tmp_path / "step6" / "extra.bin").unlink()  # deleted, marker still there
    (tmp_path / "step4" / "COMPLETE").unlink()  # a save that never finished
    assert "bytes" in checkpoint_problem(tmp_path, "step8") and "missing" in checkpoint_problem(tmp_path, "step6")
    with caplog.at_level(logging.WARNING):
        assert latest_tag(tmp_path) == "step2"
    assert "damaged checkpoint" in caplog.text and "resuming from step2" in caplog.text
    assert intact_tags(tmp_path) == ["step2"]
    same_size = tmp_path / "step2" / "mp_rank_00_model_states.pt"
    same_size.write_bytes(b"\0" * same_size.stat().st_size)  # right size, not a torch file
    assert "unreadable" in checkpoint_problem(tmp_path, "step2")


def test_a_stage_resumes_from_its_newest_intact_step_and_refuses_to_start_over_on_damaged_ones(tmp_path):
    """SFT and PM resume by the rule PPO does (`driver/resume.py`): one role, no driver state."""
    ckpt, log = tmp_path / "sft", tmp_path / "metrics.jsonl"
    for step in (3, 6):
        _fake_tag(ckpt, f"step{step}")
    assert last_complete(ckpt, fresh=False) == "step6"
    (ckpt / "step6" / "extra.bin").write_bytes(b"y")
    assert last_complete(ckpt, fresh=False) == "step3"
    (ckpt / "step3" / "extra.bin").unlink()
    with pytest.raises(ResumeError, match="no step with intact weights.*--fresh"):
        last_complete(ckpt, fresh=False)
    log.write_text("{}\n")
    assert last_complete(ckpt, fresh=True, clear=(log,)) is None and not ckpt.exists() and not log.exists()
    assert last_complete(ckpt, fresh=False) is None  # nothing there: a new stage


def test_ppo_resume_point_needs_policy_critic_and_state_together(tmp_path):
    ckpt = tmp_path / "ppo"
    for step in (2, 4):
        for part in ("policy", "critic"):
            _fake_tag(ckpt / part, f"step{step}")
        state_file(ckpt, f"step{step}").write_text(json.dumps({"step": step, "tag": f"step{step}",
                                                               "kl_controller": {"coef": 0.1}}))
    assert resume_point(ckpt, fresh=False)["step"] == 4
    (ckpt / "critic" / "step4" / "extra.bin").write_bytes(b"y")  # critic of step 4 damaged: fall back to 2
    assert resume_point(ckpt, fresh=False)["step"] == 2
    for f in ckpt.glob("state-*.json"):
        f.unlink()  # driver state gone, checkpoints still there: refuse to start over on top of them
    with pytest.raises(ResumeError, match="--fresh"):
        resume_point(ckpt, fresh=False)
    assert resume_point(ckpt, fresh=True) is None and not ckpt.exists()
    ckpt.mkdir()
    state_file(ckpt, "step2").write_text(json.dumps({"step": 2, "tag": "step2", "kl_controller": {"coef": 0.1}}))
    with pytest.raises(ResumeError, match="--fresh"):  # a driver state without its checkpoints: refused too
        resume_point(ckpt, fresh=False)


def test_a_real_deepspeed_checkpoint_cut_short_falls_back(ray_local, tiny_model_dir, tokenizer, tmp_path):
    from hh_ray.data.tokenize import pm_input_ids

    batch = PairBatch([pm_input_ids(tokenizer, "\n\nHuman: hi\n\nAssistant:", " hello", 32)] * 4,
                      [pm_input_ids(tokenizer, "\n\nHuman: hi\n\nAssistant:", " go away", 32)] * 4)
    g = TrainerGroup("ckpt-damage", str(tiny_model_dir), "pm", TrainerConfig(micro_batch_size=4, lr=1e-3))
    try:
        g.train(batch, PMObjective())
        g.save_checkpoint(str(tmp_path), "step1", {"step": 1})
        v1 = g.param_vector()
        g.train(batch, PMObjective())
        g.save_checkpoint(str(tmp_path), "step2", {"step": 2})
        states = next((tmp_path / "step2").rglob("*model_states.pt"))
        states.write_bytes(states.read_bytes()[: states.stat().st_size // 2])
        assert latest_tag(str(tmp_path)) == "step1"
        assert g.load_checkpoint(str(tmp_path))["step"] == 1  # no tag given: the newest intact one
        assert torch.equal(g.param_vector(), v1)
        with pytest.raises(Exception, match="cannot be loaded"):
            g.load_checkpoint(str(tmp_path), "step2")
    finally:
        g.shutdown()
