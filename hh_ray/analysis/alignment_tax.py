"""Alignment tax: zero-shot accuracy of the policy before and after RLHF (Bai et al. sec. 3.4), measured with
EleutherAI's lm-evaluation-harness on hh-ray's HF exports (folders with save_pretrained weights + tokenizer).

On a cluster the task list names lm-eval's stock tasks (e.g. arc_easy, piqa, lambada_openai, hellaswag). Where
the hub is unreachable, `write_choice_task` writes a task in lm-eval's own format (a YAML config with
`dataset_path: json` and local `data_files`, `output_type: multiple_choice`) into a folder that lm-eval's
`TaskManager(include_path=...)` registers; `hh_choice_docs` builds one from local HH data (which of two
responses, the one people chose or the other, the model finds likelier).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from hh_ray.files import write_text_atomic
from hh_ray.report.plots import before_after_bars
from hh_ray.report.results import AlignmentTax, TaskScore, result_path, write_result


@dataclass
class AlignmentTaxConfig:
    """`hh-ray alignment-tax`: which two model folders, which lm-eval tasks, where the result goes."""

    before: str = ""  # HF folder of the policy before RLHF (e.g. <run>/sft)
    after: str = ""  # HF folder after RLHF (e.g. <run>/ppo/policy)
    run_dir: str = ""  # the result goes to <run_dir>/analysis/alignment_tax.json
    tasks: list[str] = field(default_factory=lambda: ["arc_easy", "piqa", "lambada_openai"])
    include_path: str = ""  # a folder of extra task YAMLs (local tasks); lm-eval's stock tasks stay available
    metric: str = "acc"
    num_fewshot: int = 0
    limit: int = 0  # 0 = every example; else the first `limit` per task
    batch_size: int = 8
    device: str = "cpu"


@dataclass(frozen=True)
class ChoiceDoc:
    """One multiple-choice question: the context, the options, and the index of the right one."""

    context: str
    choices: list[str]
    answer: int


def write_choice_task(folder: str | Path, name: str, docs: list[ChoiceDoc]) -> Path:
    """A local lm-eval multiple-choice task: `<folder>/<name>.jsonl` and `<folder>/<name>.yaml`.

    Accuracy is by log-likelihood of each choice after the context (`acc`) and per character (`acc_norm`).
    """
    if not docs:
        raise ValueError(f"task {name}: no documents")
    for i, d in enumerate(docs):
        if not 0 <= d.answer < len(d.choices):
            raise ValueError(f"task {name}, doc {i}: answer {d.answer} outside its {len(d.choices)} choices")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"{name}.jsonl"
    write_text_atomic(data, "".join(json.dumps({"context": d.context, "choices": d.choices, "answer": d.answer}) + "\n"
                                for d in docs))
    config = {
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}", "target_delimiter": "",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")],
        "metadata": {"version": 1.0},
    }
    return write_text_atomic(out / f"{name}.yaml", yaml.safe_dump(config, sort_keys=False))


def hh_choice_docs(data_dir: str, subset: str, count: int, seed: int = 0) -> list[ChoiceDoc]:
    """From HH comparisons: the dialogue so far, and the chosen vs the rejected reply in shuffled order."""
    from hh_ray.data.hh import load_comparisons

    items, _ = load_comparisons(data_dir, [subset])
    rng = random.Random(seed)
    rng.shuffle(items)
    docs = []
    for c in items[:count]:
        chosen_first = rng.random() < 0.5
        choices = [c.chosen, c.rejected] if chosen_first else [c.rejected, c.chosen]
        docs.append(ChoiceDoc(context=c.prompt, choices=choices, answer=0 if chosen_first else 1))
    return docs


def hh_task_folder(run_dir: str | Path, data_dir: str, questions: int) -> tuple[str, list[str]]:
    """Local HH choice tasks (helpful-base and harmless-base, `questions` each) written under
    `<run_dir>/analysis/lm_eval_tasks`: (the include path, the task names)."""
    folder = Path(run_dir) / "analysis" / "lm_eval_tasks"
    names = []
    for subset in ("helpful-base", "harmless-base"):
        names.append(f"hh_{subset.replace('-', '_')}_choice")
        write_choice_task(folder, names[-1], hh_choice_docs(data_dir, subset, questions))
    return str(folder), names


def evaluate_model(model_dir: str, tasks: list[str], include_path: str = "", metric: str = "acc",
                   num_fewshot: int = 0, limit: int = 0, batch_size: int = 8,
                   device: str = "cpu") -> dict[str, tuple[float, float, int]]:
    """lm-eval on one HF folder: task -> (metric value, its standard error, examples evaluated)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"no HF model at {model_dir} (config.json missing)")
    manager = TaskManager(include_path=include_path or None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown lm-eval tasks {unknown}" + (f" (include_path {include_path})" if include_path else
                                                               "; pass include_path for local tasks"))
    out = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32"}, tasks=tasks,
        num_fewshot=num_fewshot, batch_size=batch_size, device=device, limit=limit or None,
        task_manager=manager, log_samples=False, bootstrap_iters=1000, random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, fewshot_random_seed=0,
    )
    scores = {}
    for task in tasks:
        res = out["results"][task]
        key = f"{metric},none"
        if key not in res:
            raise ValueError(f"task {task} reports no '{metric}' (it has {sorted(k for k in res if ',' in k)})")
        n = out.get("n-samples", {}).get(task, {}).get("effective", 0)
        se = res.get(f"{metric}_stderr,none")
        scores[task] = (float(res[key]), float(se) if isinstance(se, (int, float)) else float("nan"), int(n))
    return scores


def alignment_tax(cfg: AlignmentTaxConfig) -> AlignmentTax:
    """Evaluate both folders on the same tasks; write `analysis/alignment_tax.json` and its PNG."""
    if not cfg.before or not cfg.after or not cfg.run_dir:
        raise ValueError("alignment-tax needs before, after and run_dir")
    kw = dict(tasks=cfg.tasks, include_path=cfg.include_path, metric=cfg.metric, num_fewshot=cfg.num_fewshot,
              limit=cfg.limit, batch_size=cfg.batch_size, device=cfg.device)
    before, after = evaluate_model(cfg.before, **kw), evaluate_model(cfg.after, **kw)
    result = AlignmentTax(
        before_model=cfg.before, after_model=cfg.after, limit=cfg.limit or None, num_fewshot=cfg.num_fewshot,
        tasks=[TaskScore(task=t, metric=cfg.metric, before=before[t][0], before_se=before[t][1], after=after[t][0],
                         after_se=after[t][1], samples=before[t][2]) for t in cfg.tasks],
    )
    path = write_result(result, result_path(cfg.run_dir, AlignmentTax))
    before_after_bars([t.task for t in result.tasks], [t.before for t in result.tasks], [t.after for t in result.tasks],
                      [t.before_se for t in result.tasks], [t.after_se for t in result.tasks],
                      path.with_suffix(".png"), cfg.metric, "Zero-shot accuracy before and after RLHF")
    return result
