"""The capacity plan: memory by hand-worked arithmetic, node types from the shipped cluster configs, the shipped
GPU jobs fit the hardware they name, and an impossible job is refused before submission."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hh_ray.config import TrainerConfig, load_config
from hh_ray.ops.plan import PlanError, memory_against_ppo, model_shape, plan_job, read_node_types, trainer_memory

ROOT = Path(__file__).resolve().parents[2]
LLAMA2_7B_PARAMS = 6_738_415_616


def test_llama2_7b_shape_counts_its_parameters():
    shape = model_shape("meta-llama/Llama-2-7b-hf")  # built-in table, matched by the id's last part
    # embeddings 32000*4096 = 131,072,000; per layer q,k,v,o 4*4096^2 = 67,108,864 + MLP 3*4096*11008 =
    # 135,266,304 + two norms 8,192 = 202,383,360; x32 = 6,476,267,520; final norm 4,096; LM head 131,072,000
    assert shape.params("lm") == 131_072_000 + 6_476_267_520 + 4_096 + 131_072_000 == LLAMA2_7B_PARAMS
    # value model / PM: a 4096 -> 1 head instead of the LM head
    assert shape.params("scalar") == LLAMA2_7B_PARAMS - 131_072_000 + 4_096


def test_zero3_over_8_ranks_7b_by_hand():
    shape = model_shape("Llama-2-7b")
    t = TrainerConfig(num_ranks=8, zero_stage=3, gpus_per_rank=1.0)
    # P = 6,738,415,616; 2P/8 = 1,684,603,904 B bf16 weights, the same for bf16 gradients;
    # 12P/8 = 10,107,623,424 B fp32 master + Adam m, v; ZeRO-3 gathers 2 B x min(P, 1e9) = 2.0 GB
    # activations, 4 rows x 1536 tokens = 6144 tokens, per token and layer 2 B x (6*4096 + 2*4096 + 4*11008)
    # = 153,600 B: 6144 x 32 x 153,600 = 30,198,988,800 B; LM head 4 x 512 x 32000 x 12 B = 786,432,000 B
    # total 1.6846 + 1.6846 + 10.1076 + 2.0 + 30.9854 + 3.0 (runtime) = 49.462 GB
    off = trainer_memory(shape, "lm", t, train_rows=4, seq=1536, response=512, forward_tokens=1536)
    assert off["weights"] == pytest.approx(1.684603904) and off["gradients"] == pytest.approx(1.684603904)
    assert off["optimizer"] == pytest.approx(10.107623424) and off["zero3_gathered"] == pytest.approx(2.0)
    assert off["activations"] == pytest.approx(30.9854208)
    assert sum(off.values()) == pytest.approx(49.4622, abs=1e-3)
    # gradient checkpointing keeps each layer's input (2 B x 4096) plus one layer's full set while recomputing:
    # 6144 x (32 x 8192 + 153,600) = 2,554,331,136 B + LM head 786,432,000 B = 3.3408 GB; total 21.818 GB
    on = trainer_memory(shape, "lm", TrainerConfig(num_ranks=8, zero_stage=3, gradient_checkpointing=True),
                        train_rows=4, seq=1536, response=512, forward_tokens=1536)
    assert on["activations"] == pytest.approx(3.340763136)
    assert sum(on.values()) == pytest.approx(21.8176, abs=1e-3)
    # ZeRO stages: stage 2 keeps whole bf16 weights (2P = 13.48 GB), stage 0 keeps everything whole (16P)
    z2 = trainer_memory(shape, "lm", TrainerConfig(num_ranks=8, zero_stage=2), 4, 1536, 512, 1536)
    assert z2["weights"] == pytest.approx(13.476831232) and z2["gradients"] == pytest.approx(1.684603904)
    z0 = trainer_memory(shape, "lm", TrainerConfig(num_ranks=8, zero_stage=0), 4, 1536, 512, 1536)
    assert z0["weights"] + z0["gradients"] + z0["optimizer"] == pytest.approx(16 * LLAMA2_7B_PARAMS / 1e9)


def test_shapes_from_presets_and_config_json(tmp_path):
    tiny = model_shape("tiny", vocab_size=8192)
    assert (tiny.hidden, tiny.layers, tiny.vocab) == (128, 2, 8192)
    cfg = {"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 14336, "vocab_size": 32000,
           "num_attention_heads": 32, "num_key_value_heads": 8}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    mistral = model_shape(str(tmp_path))
    assert mistral == model_shape("mistralai/Mistral-7B-v0.1") and mistral.kv_width == 1024
    with pytest.raises(PlanError, match="cannot size model '/nowhere/sft-7b'.*set model.shape"):
        model_shape("/nowhere/sft-7b")


def test_node_types_from_the_shipped_cluster_configs():
    launcher = {t.name: t for t in read_node_types(ROOT / "cluster" / "aws-gpu.yaml")}
    assert launcher["gpu-8x-h100"].resources == {"CPU": 192, "GPU": 8, "hh_trainer_node": 1}
    assert launcher["gpu-8x-h100"].max_count == 2 and launcher["gpu-8x-h100"].gpu_gb == 80
    assert launcher["gpu-1x-rollout"].resources["hh_rollout_node"] == 1 and launcher["gpu-1x-rollout"].gpu_gb == 48
    kuberay = {t.name: t for t in read_node_types(ROOT / "cluster" / "raycluster.yaml")}
    assert kuberay["head"].resources == {"CPU": 0.0}
    assert kuberay["trainer-8gpu"].resources == {"CPU": 96, "GPU": 8, "hh_trainer_node": 1}
    assert kuberay["rollout-1gpu"].resources == {"CPU": 8, "GPU": 1, "hh_rollout_node": 1}
    assert kuberay["rollout-1gpu"].max_count == 8 and kuberay["rollout-1gpu"].gpu_gb == 48


@pytest.mark.parametrize("job,cluster", [("ppo-7b-8gpu.yaml", None), ("ppo-multinode.yaml", None),
                                         ("ppo-multinode.yaml", "cluster/raycluster.yaml")])
def test_shipped_gpu_jobs_fit_the_hardware_they_name(job, cluster):
    cfg = load_config(ROOT / "jobs" / job)
    plan = plan_job(cfg, str(ROOT / (cluster or cfg.ray.cluster)))
    assert plan.fits, plan.problems
    groups = {g.name: g for g in plan.groups}
    if job == "ppo-7b-8gpu.yaml":  # one 8-GPU node holds everything
        assert {n for g in plan.groups for n in g.nodes} == {"trainer-8gpu#0"} and len(plan.gpus) == 8
        assert groups["rollout-0"].strategy == "STRICT_PACK" and len(groups["rollout-0"].bundles) == 2
    else:  # trainers on the 8-GPU nodes, engines on the single-GPU nodes
        assert all(n.startswith("rollout-1gpu") or n.startswith("gpu-1x") for g in plan.groups
                   if g.kind == "engine" for n in g.nodes)
        assert all("8" in n for name in ("policy-trainer", "critic-trainer") for n in groups[name].nodes)
    assert all(s.used_gb <= s.capacity_gb for s in plan.gpus)


def test_one_rank_zero3_critic_is_refused_naming_group_gpu_and_numbers():
    cfg = load_config(ROOT / "jobs" / "ppo-7b-8gpu.yaml", ["ppo.critic_trainer.num_ranks=1"])
    plan = plan_job(cfg, str(ROOT / cfg.ray.cluster))
    assert not plan.fits
    (problem,) = plan.problems
    # 16 B x 6,607,347,712 = 105.7 GB of weights (13.2), gradients (13.2) and Adam state (79.3) on one GPU
    assert problem.startswith("critic-trainer on trainer-8gpu#0 GPU ")
    assert "> 80 GB" in problem and "weights 13.2 + gradients 13.2 + optimizer 79.3" in problem


def test_node_markers_steer_groups_to_their_node_type():
    cfg = load_config(ROOT / "jobs" / "ppo-multinode.yaml")
    plan = plan_job(cfg, str(ROOT / "cluster" / "raycluster.yaml"))
    assert {n.split("#")[0] for g in plan.groups if g.kind == "engine" for n in g.nodes} == {"rollout-1gpu"}
    # a tensor-parallel-2 engine marked for the single-GPU nodes cannot be placed (STRICT_PACK: 2 GPUs, 1 node)
    tp2 = load_config(ROOT / "jobs" / "ppo-7b-8gpu.yaml", ["ppo.rollout.node_resource=hh_rollout_node"])
    refused = plan_job(tp2, str(ROOT / "cluster" / "rayjob.yaml"))
    assert any(p.startswith("group 'rollout-0' cannot be placed") and "STRICT_PACK" in p for p in refused.problems)
    # unmarked, the engine goes wherever GPUs are free: here the trainer node, beside the trainers
    free = plan_job(load_config(ROOT / "jobs" / "ppo-7b-8gpu.yaml", ["ppo.rollout.node_resource="]),
                    str(ROOT / "cluster" / "rayjob.yaml"))
    assert free.fits and [g.nodes for g in free.groups if g.name == "rollout-0"] == [["trainer-8gpu#0"]]


def test_cpu_jobs_have_nothing_to_plan():
    for job in ("quickstart.yaml", "pm-minilm.yaml"):
        plan = plan_job(load_config(ROOT / "jobs" / job))
        assert plan.fits and plan.groups == []


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hh_ray.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_plan_and_submit_commands():
    ok = _cli("plan", "--config", "jobs/ppo-7b-8gpu.yaml", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["fits"] is True
    bad = _cli("plan", "--config", "jobs/ppo-7b-8gpu.yaml", "ppo.critic_trainer.num_ranks=1")
    assert bad.returncode == 2 and "DOES NOT FIT" in bad.stdout
    # submit plans first and refuses in one line, before it ever contacts the (here unreachable) cluster
    refused = _cli("submit", "--address", "http://127.0.0.1:9", "--config", "jobs/ppo-7b-8gpu.yaml",
                   "ppo.critic_trainer.num_ranks=1")
    assert refused.returncode == 2
    line = [x for x in refused.stderr.splitlines() if x.startswith("hh-ray: error:")]
    assert len(line) == 1 and "critic-trainer on trainer-8gpu#0 GPU" in line[0] and "> 80 GB" in line[0]


def test_grpo_plans_no_critic_and_reports_its_memory_against_ppo():
    grpo_args = ["ppo.algorithm=grpo", "ppo.rollout.samples_per_prompt=2"]
    cluster = str(ROOT / "cluster" / "rayjob.yaml")
    grpo = load_config(ROOT / "jobs" / "ppo-7b-8gpu.yaml", grpo_args)
    plan = plan_job(grpo, cluster)
    assert plan.fits and "critic-trainer" not in [g.name for g in plan.groups]
    ppo = plan_job(load_config(ROOT / "jobs" / "ppo-7b-8gpu.yaml", ["ppo.rollout.samples_per_prompt=2"]), cluster)
    critic = next(g for g in ppo.groups if g.name == "critic-trainer")
    against = memory_against_ppo(grpo, plan, cluster)
    # the difference is exactly the critic group: its per-GPU figure on each of its ranks
    assert against.ppo_total_gb == pytest.approx(ppo.total_gb)
    assert against.ppo_total_gb - against.total_gb == pytest.approx(critic.per_gpu_gb * len(critic.bundles))
    assert against.ratio == pytest.approx(plan.total_gb / ppo.total_gb) and against.ratio < 1
    assert memory_against_ppo(load_config(ROOT / "jobs" / "ppo-7b-8gpu.yaml"), ppo, cluster) is None
    shown = _cli("plan", "--config", "jobs/ppo-7b-8gpu.yaml", *grpo_args)
    assert shown.returncode == 0, shown.stderr
    line = f"grpo, no critic: {plan.total_gb:.1f} GB of GPU memory planned, {against.ratio:.2f} x PPO's"
    assert line in shown.stdout
    as_json = json.loads(_cli("plan", "--config", "jobs/ppo-7b-8gpu.yaml", "--json", *grpo_args).stdout)
    assert as_json["memory_against_ppo"]["ratio"] == pytest.approx(against.ratio)
