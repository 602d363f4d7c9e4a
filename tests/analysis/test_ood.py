"""OOD detection end to end on real HH requests: MiniLM activations, Mahalanobis fit, AUROC, ood.json."""

from __future__ import annotations

import pytest
import torch

from hh_ray.analysis.ood import OODConfig, activations, load_backbone, ood_detection, request_texts
from hh_ray.report.results import OOD, read_result, result_path


def test_pooling_excludes_padding_and_one_pass_serves_every_layer(tiny_model_dir):
    model, tok = load_backbone(str(tiny_model_dir))
    texts = ["How do I bake bread?", "Hi"]
    batched = activations(model, tok, texts, [-1], "mean", 64, batch_size=2)[0]  # "Hi" is padded in the batch
    alone = activations(model, tok, texts[1:], [-1], "mean", 64, batch_size=1)[0]
    assert torch.allclose(batched[1], alone[0], atol=1e-5)
    last = activations(model, tok, texts, [1], "last", 64, batch_size=2)[0]
    assert torch.allclose(last[1], activations(model, tok, texts[1:], [1], "last", 64, batch_size=1)[0, 0], atol=1e-5)
    both = activations(model, tok, texts, [1, -1], "mean", 64, batch_size=2)
    assert both.shape[:2] == (2, 2) and torch.allclose(both[1], batched, atol=1e-6)
    with pytest.raises(ValueError, match="outside the model's"):
        activations(model, tok, texts, [0, 99], "mean", 64, 2)


def test_a_layer_sweep_chooses_on_validation_and_reports_the_test_split(tmp_path, tiny_model_dir, hh_dir):
    layers = [0, 1, -1]
    cfg = OODConfig(model=str(tiny_model_dir), run_dir=str(tmp_path), data_dir=str(hh_dir), layers=layers,
                    fit_prompts=40, val_prompts=20, test_prompts=30, max_tokens=32, batch_size=16)
    r = ood_detection(cfg)
    assert r.layers == layers and len(r.val_auroc) == len(r.test_auroc) == 3 and r.val_prompts == 20
    best = max(range(3), key=lambda k: r.val_auroc[k])
    assert r.layer == layers[best] and r.auroc == r.test_auroc[best]  # chosen on validation, measured on test
    assert len(r.test_in) == len(r.test_ood) == 30 and 0 < r.auroc_se < 0.2
    assert (tmp_path / "analysis" / "ood_layers.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="val_prompts"):
        ood_detection(OODConfig(**{**vars(cfg), "val_prompts": 0}))


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
