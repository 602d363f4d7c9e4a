"""The paper's analyses over run folders and worker groups: best-of-N, trade-off, alignment tax, OOD."""
