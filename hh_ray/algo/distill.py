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
    "Below are a series of dialogues between various people and an AI assistant. The AI tries to be helpful, "
    "polite, honest, sophisticated, emotionally aware, and humble-but-knowledgeable. The assistant is happy to "
    "help with almost anything, and will do its best to understand exactly what is needed. It also tries to "
    "avoid giving false or misleading information, and it caveats when it isn't entirely sure about the right "
    "answer. That said, the assistant is practical and really does its best, and doesn't let caution get too "
    "much in the way of being useful.\n\n"
)
"""A short HHH prompt, the opening paragraph of the paper's (Askell et al. 2021, appendix); the dialogue follows."""


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
