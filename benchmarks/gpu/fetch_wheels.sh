#!/usr/bin/env bash
# Here (a CPU machine with PyPI): the wheels the GPU machine lacks for benchmarks/gpu/run.sh, into
# .whl/ (git-ignored; the device tool carries it). The GPU image has torch, transformers,
# safetensors, huggingface_hub, typer, pyyaml, tqdm, peft, scipy and click, but not these.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl mergekit==0.1.5 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 \
  typing-inspection==0.4.2 immutables==0.21 platformdirs==4.14.9 dill==0.4.1
ls .whl
du -sh .whl
