"""OOD detection end to end on real HH requests: MiniLM activations, Mahalanobis fit, AUROC, ood.json."""

from __future__ import annotations

import pytest
import torch

from hh_ray.analysis.ood import OODConfig, activations, load_backbone, ood_detection, request_texts
from hh_ray.report.results import OOD, read_result, result_path


def test_pooling_excludes_padding(tiny_model_dir):
    model, tok = load_backbone(str(tiny_model_dir))
    texts = ["How do I bake bread?", "Hi"]
    batched = activations(model, tok, texts, -1, "mean", 64, batch_size=2)  # "Hi" is padded in the batch
    alone = activations(model, tok, texts[1:], -1, "mean", 64, batch_size=1)
    assert torch.allclose(batched[1], alone[0], atol=1e-5)
    last = activations(model, tok, texts, 1, "last", 64, batch_size=2)
    assert torch.allclose(last[1], activations(model, tok, texts[1:], 1, "last", 64, batch_size=1)[0], atol=1e-5)
    with pytest.raises(ValueError, match="outside the model's"):
        activations(model, tok, texts, 99, "mean", 64, 2)


def test_minilm_separates_harmful_requests(tmp_path, hh_dir):
    from hh_ray.models.presets import resolve_model

    firsts = request_texts(str(hh_dir), "harmless-base", "first_turn")
    assert firsts and not any("\n\nHuman:" in t or "Assistant:" in t for t in firsts[:50])
    cfg = OODConfig(model=resolve_model("all-MiniLM-L6-v2"), run_dir=str(tmp_path), data_dir=str(hh_dir),
                    layer=4, fit_prompts=600, test_prompts=150, shrinkage=0.1, max_tokens=64, batch_size=32)
    result = ood_detection(cfg)
    assert read_result(OOD, result_path(tmp_path, OOD)) == result
    assert len(result.test_in) == len(result.test_ood) == 150
    # MiniLM's middle layers separate red-team from helpful requests better than chance (measured: 0.68-0.70
    # at layers 3-4 with 600-1000 fit requests; its final, similarity-trained layer only 0.53-0.56)
    assert result.auroc > 0.62, result.auroc
    assert (tmp_path / "analysis" / "ood.png").stat().st_size > 1000


def test_cli_ood_names_a_bad_layer(tmp_path, tiny_model_dir, hh_dir, capsys):
    from hh_ray.cli import main

    args = ["ood", "--model", str(tiny_model_dir), "--run", str(tmp_path), "--data-dir", str(hh_dir),
            "--fit-prompts", "20", "--test-prompts", "10"]
    assert main(args + ["--layer", "40"]) == 2
    assert "layer 40 outside the model's" in capsys.readouterr().err
    assert main(args + ["--layer", "1"]) == 0
    assert "AUROC" in capsys.readouterr().out and (tmp_path / "analysis" / "ood.json").is_file()
