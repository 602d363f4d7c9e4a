#!/usr/bin/env bash
# Wheels that benchmarks/device.py needs and the one-GPU device image lacks (DeepSpeed and what it imports),
# saved into .whl/ (git-ignored locally) for the device tool to carry. Python 3.12 x86-64, as on that machine.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing-extensions==4.16.0
# DeepSpeed publishes only an sdist; its wheel is pure Python (ops compile where they run), built here.
.venv/bin/pip wheel -q --no-deps --no-build-isolation -w .whl "deepspeed==$(.venv/bin/python -c 'from importlib.metadata import version; print(version("deepspeed"))')"
ls -la .whl
