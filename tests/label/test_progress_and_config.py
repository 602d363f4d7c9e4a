"""No Ray: the admin page's numbers against hand-worked values, the config's checks, response cleaning."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from hh_ray.config import ConfigError
from hh_ray.label.config import load_label_config
from hh_ray.label.progress import progress_png, summarize
from hh_ray.label.serve import clean_response, resolve_model
from hh_ray.label.store import ComparisonRecord

JOBS = Path(__file__).resolve().parents[2] / "jobs"


def _rec(i, context, a, b, choice, strength, seconds, labeler="ann", sources=("v0", "v1")):
    chosen, rejected = (a, b) if choice == "A" else (b, a)
    return ComparisonRecord(i, f"{i:032x}", "camp", "helpful", labeler, context, chosen, rejected, choice, strength,
                            a, b, sources[0], sources[1], 0, 1, datetime(2026, 1, 1, 0, i), float(seconds))


def test_summary_hand_worked():
    records = [
        _rec(1, "c1", "x", "y", "A", 3, 1),             # picks x
        _rec(2, "c1", "y", "x", "B", 1, 2, "bob",       # picks x again (A/B swapped): agrees with 1
             sources=("v1", "v0")),
        _rec(3, "c1", "x", "y", "B", 1, 3, "cy"),       # picks y: disagrees with 1 and 2
        _rec(4, "c2", "p", "q", "A", 2, 4),             # shown once: not a repeated task
    ]
    p = summarize(records)
    assert p.total == 4 and p.by_labeler == {"ann": 2, "bob": 1, "cy": 1}
    assert p.by_source_pair == {"v0@0 vs v1@1": 3, "v0@1 vs v1@0": 1}
    assert p.strength_share == {1: 0.5, 2: 0.25, 3: 0.25}
    assert (p.repeated_tasks, p.agreement_pairs) == (1, 3) and p.agreement == pytest.approx(1 / 3)
    assert p.median_decide_seconds == 2.5
    assert summarize([]).agreement is None and summarize([]).strength_share == {1: 0.0, 2: 0.0, 3: 0.0}
    assert progress_png(records)[:4] == b"\x89PNG"


def test_shipped_label_config_loads_and_bad_ones_name_the_key(tmp_path):
    cfg = load_label_config(JOBS / "label.yaml")
    assert [c.mode for c in cfg.campaigns] == ["helpful", "red-team"] and cfg.db_url.endswith("runs/label/label.db")
    with pytest.raises(ConfigError, match="unknown config key 'server.prot'; did you mean 'server.port'"):
        load_label_config(JOBS / "label.yaml", ["server.prot=1"])
    bad = tmp_path / "bad.yaml"
    cases = {
        "campaigns: [{name: c, mode: helpfull, sources: [v0, v0]}]": "mode: expected one of helpful, red-team",
        "campaigns: [{name: c, sources: [v0, nope]}]": "unknown source 'nope'",
        "campaigns: [{name: c, sources: [v0]}]": "expected two source names",
        "sources: [{name: v0, model: ''}]": "model: empty",
        "sources: [{name: v0, model: x, min_replicas: 3, max_replicas: 2}]": "min_replicas <= max_replicas",
    }
    for text, message in cases.items():
        bad.write_text(text + ("\nsources: [{name: v0, model: 'echo:hi'}]" if not text.startswith("sources") else ""))
        with pytest.raises(ConfigError, match=message):
            load_label_config(bad)


def test_clean_response_and_model_resolution(tmp_path):
    assert clean_response(" Sure, here it is.\n\nHuman: next") == "Sure, here it is."
    assert clean_response("a\n\nAssistant: b") == "a" and clean_response("  \n") == ""
    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    (run / "sft" / "config.json").write_text("{}")
    assert resolve_model(str(run)) == str(run / "sft")
    (run / "ppo" / "policy").mkdir(parents=True)
    (run / "ppo" / "policy" / "config.json").write_text("{}")
    assert resolve_model(str(run)) == str(run / "ppo" / "policy")  # the newest policy of a run
    assert resolve_model("org/model") == "org/model"


def test_label_floor_imports_no_driver():
    import subprocess
    import sys

    code = ("import sys, hh_ray.label.app, hh_ray.label.serve, hh_ray.label.commands, hh_ray.label.export, "
            "hh_ray.label.client; bad = [m for m in sys.modules if m.startswith('hh_ray.driver')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(Path(__file__).resolve().parents[2]))


def test_submit_runs_label_serve_on_a_cluster():
    from hh_ray.cli import build_parser
    from hh_ray.ops.submit import entrypoint_for

    assert entrypoint_for("label", "jobs/label.yaml", ["server.port=8080"]) == (
        "hh-ray label serve --config jobs/label.yaml server.port=8080")
    args = build_parser().parse_args(["submit", "--address", "http://h:8265", "--entrypoint", "label",
                                      "--config", "jobs/label.yaml"])
    assert args.entrypoint == "label"


def test_label_engine_shares_the_rollout_engine_settings():
    """One function (placement.engine_kwargs) configures both engines: eager and dtype follow the config and the
    device, never a constant; only the executor, weight sync and logprobs are the rollout's own."""
    from hh_ray.config import RolloutConfig
    from hh_ray.label.config import SourceConfig
    from hh_ray.label.serve import engine_args
    from hh_ray.models.forward import cpu_has_native_bf16
    from hh_ray.workers.placement import vllm_engine_kwargs

    source = SourceConfig(model="/m", max_model_len=300, kv_cache_gb=0.5, max_batch_size=12)
    cpu, gpu = engine_args(source, "/m", on_gpu=False), engine_args(source, "/m", on_gpu=True)
    assert cpu["enforce_eager"] is True and gpu["enforce_eager"] is False  # CUDA graphs on a GPU by default
    assert engine_args(SourceConfig(model="/m", enforce_eager=True), "/m", on_gpu=True)["enforce_eager"] is True
    assert gpu["dtype"] == "bfloat16" and cpu["dtype"] == ("bfloat16" if cpu_has_native_bf16() else "float32")
    assert engine_args(SourceConfig(model="/m", dtype="float32"), "/m", on_gpu=True)["dtype"] == "float32"
    assert (cpu["kv_cache_memory_bytes"], cpu["enable_chunked_prefill"], cpu["max_num_seqs"]) == (2**29, False, 12)
    assert gpu["gpu_memory_utilization"] == source.gpu_memory_utilization and "kv_cache_memory_bytes" not in gpu
    rollout = RolloutConfig(kv_cache_gb=0.5)
    shared = vllm_engine_kwargs(rollout, False, "/m", 300, 0, "bfloat16")
    own = {"tensor_parallel_size", "distributed_executor_backend", "worker_extension_cls", "logprobs_mode"}
    assert {k: v for k, v in shared.items() if k not in own} == {k: v for k, v in cpu.items()
                                                                  if k not in ("max_num_seqs", "disable_log_stats")}
