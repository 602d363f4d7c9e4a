"""Which RL algorithm a run trains with: a spec that names its trainer roles and its advantage estimator.

The loop around it (generate, score, update, sync, evaluate, checkpoint, resume, fault recovery) does not depend
on the algorithm; it asks the spec which trainer groups to start, train, save and restore, and which estimator
(`hh_ray.algo.advantages.ADVANTAGE_ESTIMATORS`) turns a scored batch into advantages. Each role trains one
objective: `policy` the clipped surrogate (`models.objectives.PolicyObjective`), `critic` the clipped value loss
(`ValueObjective`). Under GRPO the surrogate, like PPO's, is averaged over every response token of the batch
(veRL's default "token-mean"), not per sequence first as in the GRPO paper, so long and short responses weigh
per token alike and the PPO path stays the same code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlgorithmSpec:
    """An algorithm as the loop sees it. `min_samples_per_prompt`: GRPO compares each sample with the others drawn
    for the same prompt, so it needs a group of at least two."""

    name: str
    estimator: str  # a key of ADVANTAGE_ESTIMATORS
    needs_critic: bool  # a value-head trainer group: started, trained, checkpointed and resumed beside the policy
    min_samples_per_prompt: int = 1

    @property
    def roles(self) -> tuple[str, ...]:
        """The trainer groups of a run, policy first; each role's checkpoints live under a folder of its name."""
        return ("policy", "critic") if self.needs_critic else ("policy",)


ALGORITHMS = {
    "ppo": AlgorithmSpec("ppo", estimator="gae", needs_critic=True),
    "grpo": AlgorithmSpec("grpo", estimator="grpo", needs_critic=False, min_samples_per_prompt=2),
}
