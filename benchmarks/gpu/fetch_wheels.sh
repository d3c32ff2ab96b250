#!/usr/bin/env bash
# Here (a CPU machine with PyPI): the wheels the GPU machine lacks for benchmarks/gpu/run.sh, into
# .whl/ (git-ignored; the device tool carries it). The GPU image has torch, safetensors, typer, pyyaml,
# tqdm, peft and scipy, but not mergekit and its few extra needs; its transformers (5.17) and
# huggingface_hub (1.33) are older than viscodex needs, so the tested versions travel too (28 MB).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl mergekit==0.1.5 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 \
  typing-inspection==0.4.2 immutables==0.21 platformdirs==4.14.9 dill==0.4.1 \
  transformers==5.25.0 huggingface_hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.4 kernels==0.19.1 \
  tomlkit==0.14.0 hf-xet==1.8.0 click==8.5.1 tokenizers==0.23.3
ls .whl
du -sh .whl
