"""`hh-ray online` without a cluster: its config checks, the labelers' shares, the report section."""

from __future__ import annotations

import pytest

from hh_ray.config import ConfigError
from hh_ray.driver.online import load_online_config, round_work, split_quota
from hh_ray.report.online import OnlineSummary, RoundResult, VersionRating, read_summary, write_summary


def test_shipped_configs_load():
    quick = load_online_config("jobs/online-quickstart.yaml")
    assert quick.rounds == 2 and quick.job.model.policy == "tiny"
    assert not set(quick.labelers.judge_subsets) & set(quick.job.data.subsets)
    cluster = load_online_config("jobs/online-cluster.yaml")
    assert cluster.server.host == "0.0.0.0" and cluster.server.port == 8000
    smol = load_online_config("jobs/online-smollm2.yaml")
    assert smol.job.model.policy == "smollm2-135m" and smol.job.ppo.policy_trainer.lora.rank > 0
    assert not set(smol.labelers.judge_subsets) & set(smol.job.data.subsets)


@pytest.mark.parametrize("override, message", [
    ("opponent=worst", "opponent"),
    ("pm_init=lukewarm", "pm_init"),
    ("labelers.judge_subsets=[helpful-base]", "judge"),
    ("labelers.temperature=0", "temperature"),
    ("job.ppo.stepz=3", "job.ppo.stepz"),
])
def test_bad_online_config_names_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_online_config("jobs/online-quickstart.yaml", [override])
    with pytest.raises(ConfigError, match="deadline_s"):  # people only: a round needs a deadline
        load_online_config("jobs/online-quickstart.yaml", ["labelers.helpful=0"])


def test_cli_reports_a_bad_online_config(capsys):
    from hh_ray.cli import main

    assert main(["online", "--config", "jobs/online-quickstart.yaml", "rounds=0"]) == 2
    assert "rounds: must be >= 1" in capsys.readouterr().err


def test_round_work_splits_n_over_labelers():
    assert split_quota(7, 3) == [3, 2, 2] and sum(split_quota(48, 5)) == 48
    cfg = load_online_config("jobs/online-quickstart.yaml", ["labelers.helpful=2", "labelers.red_team=1",
                                                              "comparisons_per_round=7"])
    campaigns, work = round_work(cfg, 1, 0)
    assert [(c.name, c.mode, c.sources) for c in campaigns] == [
        ("r1-helpful", "helpful", ["v1", "v0"]), ("r1-redteam", "red-team", ["v1", "v1"])]
    assert [(w.name, w.campaign, w.red_team, w.quota) for w in work] == [
        ("sim-r1-h0", "r1-helpful", False, 3), ("sim-r1-h1", "r1-helpful", False, 2),
        ("sim-r1-t2", "r1-redteam", True, 2)]


def test_online_section_in_report(tmp_path):
    from hh_ray.report.report import write_report

    rounds = [RoundResult(k, k, max(k - 1, 0), {"helpful": 32}, True, 60.0, 900, 0.61 + k / 100, 0.55, 32, -0.1, 0.4,
                          [{"prompt": "\n\nHuman: hi\n\nAssistant:", "response": "hello | there", "pm_score": 0.3}])
              for k in range(2)]
    elo = [VersionRating(0, 0.0, 0.0, 0.0, 48), VersionRating(1, 35.0, -20.0, 90.0, 24),
           VersionRating(2, 60.0, 5.0, 120.0, 24)]
    write_summary(OnlineSummary(rounds=rounds, elo_head_to_head=elo, bootstraps=200), tmp_path)
    assert read_summary(tmp_path).rounds[1].pm_static_accuracy == pytest.approx(0.62)
    text = write_report(tmp_path).read_text()
    assert "## Online rounds" in text
    assert "| 1 | v1 vs v0 | helpful 32 in 60 s | 900 | 0.620 | 0.550 (32) | -0.100 -> +0.400 |" in text
    assert "| 2 | +60 | [+5, +120] | 24 |" in text
    assert "hello \\| there" in text  # a pipe in a sample cannot break the table
