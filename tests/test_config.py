"""Config loading: YAML, overrides, unknown keys and wrong types rejected with named keys."""

from __future__ import annotations

import json
from operator import attrgetter
from pathlib import Path

import pytest

from hh_ray.config import PPO_MOVED_KEYS, ConfigError, JobConfig, PPOConfig, load_config

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def test_defaults_and_overrides():
    cfg = load_config(None, ["ppo.reward.kl_coef=0.01", "sft.trainer.num_ranks=2", "data.subsets=[helpful-base]",
                             "ppo.rollout.temperature=1", "ppo.policy_trainer.lr=3e-4"])
    assert isinstance(cfg, JobConfig)
    assert cfg.ppo.reward.kl_coef == 0.01 and cfg.sft.trainer.num_ranks == 2
    assert cfg.data.subsets == ["helpful-base"] and cfg.ppo.policy_trainer.lr == 3e-4
    assert cfg.ppo.rollout.temperature == 1.0 and isinstance(cfg.ppo.rollout.temperature, float)
    assert load_config(None).ppo.reward.kl_coef == 0.001  # the paper's lambda_KL


def test_unknown_key_names_nearest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'ppo.kl_coeff'; did you mean 'ppo.reward.kl_coef'\?"):
        load_config(None, ["ppo.kl_coeff=0.1"])
    p = tmp_path / "job.yaml"
    p.write_text("ppo:\n  rollout:\n    temprature: 0.7\n")
    with pytest.raises(ConfigError, match=r"'ppo.rollout.temprature'; did you mean 'ppo.rollout.temperature'"):
        load_config(p)


@pytest.mark.parametrize("old", sorted(PPO_MOVED_KEYS))
def test_moved_ppo_keys_are_refused_with_their_new_place(old, tmp_path):
    """The flat PPO keys that moved into ppo.reward / algo / placement / sync: an old config fails loudly, naming the
    new key, whether the key comes from a YAML file, an override, or an online config's `job.ppo`."""
    new = PPO_MOVED_KEYS[old]
    value = json.dumps(attrgetter(new)(PPOConfig()))  # its default, as YAML
    with pytest.raises(ConfigError, match=rf"^ppo\.{old} moved: use ppo\.{new}$"):
        load_config(None, [f"ppo.{old}={value}"])
    p = tmp_path / "job.yaml"
    p.write_text(f"ppo:\n  steps: 3\n  {old}: {value}\n")
    with pytest.raises(ConfigError, match=rf"^ppo\.{old} moved: use ppo\.{new}$"):
        load_config(p)
    # the new key takes the same value
    assert attrgetter(new)(load_config(None, [f"ppo.{new}={value}"]).ppo) == json.loads(value)


def test_moved_key_in_online_job_section():
    from hh_ray.driver.online import load_online_config

    with pytest.raises(ConfigError, match=r"^job\.ppo\.kl_coef moved: use job\.ppo\.reward\.kl_coef$"):
        load_online_config(None, ["job.ppo.kl_coef=0.01"])  # an old key
    # a typo of a moved key points at its new place
    with pytest.raises(ConfigError, match=r"'ppo.sync_bucket_m'; did you mean 'ppo.sync.bucket_mb'\?"):
        load_config(None, ["ppo.sync_bucket_m=8"])


def test_wrong_types_name_key_and_expected_type(tmp_path):
    with pytest.raises(ConfigError, match=r"ppo.steps: expected int, got str 'many'"):
        load_config(None, ["ppo.steps=many"])
    with pytest.raises(ConfigError, match=r"sft.trainer.lr: expected float, got bool"):
        load_config(None, ["sft.trainer.lr=true"])
    with pytest.raises(ConfigError, match=r"data.subsets: expected a list of str"):
        load_config(None, ["data.subsets=helpful-base"])
    with pytest.raises(ConfigError, match=r"ppo: expected a mapping for section PPOConfig"):
        load_config(None, ["ppo=3"])
    with pytest.raises(ConfigError, match=r"ppo.reward.kl_estimator: expected 'k1' or 'k3'"):
        load_config(None, ["ppo.reward.kl_estimator=k2"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")



def test_algorithm_is_chosen_by_name_and_grpo_needs_a_group_per_prompt():
    assert load_config(None, []).ppo.algorithm == "ppo"
    with pytest.raises(ConfigError, match=r"ppo.algorithm: expected 'ppo' or 'grpo'"):
        load_config(None, ["ppo.algorithm=rloo"])
    with pytest.raises(ConfigError, match=r"ppo.algorithm=grpo: needs ppo.rollout.samples_per_prompt >= 2 .* got 1"):
        load_config(None, ["ppo.algorithm=grpo", "ppo.rollout.samples_per_prompt=1"])
    # no critic: its trainer settings are not checked against the batch (the policy's still are)
    cfg = load_config(None, ["ppo.algorithm=grpo", "ppo.rollout.samples_per_prompt=4",
                             "ppo.critic_trainer.num_ranks=1000"])
    assert cfg.ppo.algorithm == "grpo" and cfg.ppo.rollout.samples_per_prompt == 4


NOT_JOBS = ("runtime_env.yaml", "label.yaml", "online-quickstart.yaml", "online-cluster.yaml",
            "online-smollm2.yaml")  # a runtime env;
# the labeling service's LabelConfig (tests/label); OnlineConfig jobs (tests/driver/test_online_config.py)


@pytest.mark.parametrize("path", sorted(p for p in JOBS.glob("*.yaml") if p.name not in NOT_JOBS),
                         ids=lambda p: p.name)
def test_every_job_config_loads(path):
    load_config(path)
