"""Which files a complete DeepSpeed checkpoint holds, so rank 0 marks a checkpoint COMPLETE only when it is.

Under ZeRO every rank writes its own shard. When the checkpoint folder is not on storage all nodes share, the
ranks on other nodes write to their local disks and rank 0's folder lacks their files; a COMPLETE marker written
then would name a checkpoint that cannot be loaded. Names follow DeepSpeed's engine (`_get_ckpt_name`,
`_get_rank_zero_ckpt_name`), for one model-parallel rank (mp_rank_00) as hh-ray trains.
"""

from __future__ import annotations

from pathlib import Path


def expected_checkpoint_files(world: int, zero_stage: int, bf16: bool) -> list[str | tuple[str, ...]]:
    """Per file, its name (or the names it may have) in a checkpoint of `world` data-parallel ranks.

    Model states: one file (`mp_rank_00_model_states.pt`) below ZeRO-3, one per rank at ZeRO-3. Optimizer
    states: one per rank at ZeRO 1-3, and at stage 0 in bf16 (DeepSpeed's bf16 optimizer shards them too);
    DeepSpeed prefixes them `bf16_` in bf16 mode.
    """
    if zero_stage == 3:
        files: list[str | tuple[str, ...]] = [f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(world)]
    else:
        files = ["mp_rank_00_model_states.pt"]
    if zero_stage >= 1 or bf16:
        for r in range(world):
            plain = f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt"
            files.append((f"bf16_{plain}", plain) if bf16 else plain)
    return files


def missing_checkpoint_files(folder: str | Path, world: int, zero_stage: int, bf16: bool = False) -> list[str]:
    """The expected files `folder` lacks (empty when the checkpoint is whole); names as DeepSpeed writes them."""
    folder = Path(folder)
    missing = []
    for entry in expected_checkpoint_files(world, zero_stage, bf16):
        names = entry if isinstance(entry, tuple) else (entry,)
        if not any((folder / n).is_file() for n in names):
            missing.append(names[0])
    return missing
