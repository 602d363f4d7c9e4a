"""hh-ray: distributed RLHF on Ray reproducing Bai et al. 2022 (Anthropic HH)."""

__version__ = "0.1.0"
