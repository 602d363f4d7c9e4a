"""Context-distillation loss against hand-worked KL values."""

from __future__ import annotations

import math

import pytest
import torch

from hh_ray.algo.distill import HHH_PROMPT, context_distill_loss, teacher_positions, token_kl


def test_token_kl_by_hand():
    teacher = torch.tensor([[[0.0, 0.0]]])  # p_t = (1/2, 1/2)
    student = torch.tensor([[[0.0, math.log(3.0)]]])  # p_s = (1/4, 3/4)
    # 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3)
    assert float(token_kl(teacher, student)) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    assert float(token_kl(student, student)) == pytest.approx(0.0, abs=1e-7)
    # temperature 2 halves the logits: teacher (0, 2 ln 3) becomes (1/4, 3/4); student (0, 0) stays uniform
    t2 = torch.tensor([[[0.0, 2 * math.log(3.0)]]])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert float(token_kl(t2, teacher, temperature=2.0)) == pytest.approx(kl, abs=1e-6)


def test_loss_masks_positions_and_trains_only_the_student():
    teacher = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]]], requires_grad=True)
    student = torch.tensor([[[0.0, math.log(3.0)], [0.0, 0.0], [0.0, 5.0]]], requires_grad=True)
    total, count = context_distill_loss(teacher, student, torch.tensor([[1.0, 1.0, 0.0]]))
    assert float(count) == 2.0
    assert float(total.detach()) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)  # position 2 is masked out
    total.backward()
    assert teacher.grad is None and student.grad is not None
    assert student.grad[0, 2].abs().sum() == 0  # nothing flows from the masked position


def test_teacher_positions_align_after_the_prompt():
    # teacher saw 3 prompt tokens then 2 text tokens; its logits at positions 3, 4 predict text tokens 1, 2
    teacher = torch.arange(5.0).view(1, 5, 1).expand(1, 5, 2)
    assert teacher_positions(teacher, 3, 2)[0, :, 0].tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="fewer than prompt 3"):
        teacher_positions(teacher, 3, 3)
    with pytest.raises(ValueError, match="differ"):
        token_kl(teacher, teacher[:, :2])
    assert HHH_PROMPT.endswith("\n\n") and "helpful" in HHH_PROMPT
