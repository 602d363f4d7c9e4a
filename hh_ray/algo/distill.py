"""Context distillation (Askell et al. 2021; Bai et al. 2022 sec. 2): the model *without* an HHH prompt learns to
match its own next-token distribution *with* the prompt in front, on ordinary dialogue text.

Alignment: tokenize the prompt and the text separately and run the teacher on `prompt_ids + text_ids` and the
student on `text_ids`. Then teacher position P + t (P = prompt length) and student position t both predict text
token t + 1, so the teacher's logits are sliced from P on (`teacher_positions`). Tokenizing the concatenated
string instead could merge tokens across the boundary and shift the alignment.
"""

from __future__ import annotations

import torch

HHH_PROMPT = (
    "The assistant in these conversations is helpful, honest and harmless. It answers the question that was asked, "
    "clearly and to the point, and gives practical detail when that is what the person needs. It says so when it "
    "does not know something or is unsure, rather than making things up. It will not help anyone hurt themselves "
    "or others, break the law, or deceive people; when a request is dangerous it declines kindly, explains why in "
    "a sentence, and offers a safer alternative where one exists. It is polite, patient and respectful, and it "
    "never insults the person it talks to.\n\n"
)
"""The helpful-honest-harmless prompt distilled into the initial policy, written for this project in the spirit of
Askell et al. 2021's; the dialogue follows it (in chat format it is a system turn)."""


def teacher_positions(teacher_logits: torch.Tensor, prompt_len: int, text_len: int) -> torch.Tensor:
    """The teacher's logits at the text positions: [B, P + T, V] -> [B, T, V] starting at the prompt's end."""
    if teacher_logits.shape[1] < prompt_len + text_len:
        raise ValueError(f"teacher logits cover {teacher_logits.shape[1]} positions, fewer than prompt "
                         f"{prompt_len} + text {text_len}")
    return teacher_logits[:, prompt_len : prompt_len + text_len]


def token_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) = sum_v p_t(v) (log p_t(v) - log p_s(v)) at every position: [B, T, V] -> [B, T].

    The teacher is detached: only the student learns (it is the same network, run without the prompt).
    """
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                         f"{tuple(student_logits.shape)} differ; align them with teacher_positions first")
    log_pt = torch.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    log_ps = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1)


def context_distill_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor,
                         temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token KL over masked positions and the token count (callers sharding a batch normalize globally).

    `teacher_logits` and `student_logits` are aligned [B, T, V]; `mask` [B, T] is 1 where the position's next
    token is real text (0 on padding and on the final position, which predicts nothing).
    """
    kl = token_kl(teacher_logits, student_logits, temperature)
    mask = mask.to(kl.dtype)
    return (kl * mask).sum(), mask.sum()
