#!/usr/bin/env bash
# There (the lent GPU machine, one call of the device tool, from the repo root):
#   run(command="bash benchmarks/gpu/run.sh", carry=[".whl"], timeout_s=540)
# after `bash benchmarks/gpu/fetch_wheels.sh` here. The merge benchmark of issue 8 at 7B shape on
# the GPU, viscodex against mergekit on the same device; logs and JSON under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/viscodex-gpu-out}
mkdir -p "$OUT"
site=/tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, transformers, viscodex, mergekit; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)" \
  2>&1 | tee -a "$OUT/device.txt" || exit 1
df -h /tmp | tee -a "$OUT/device.txt"
# 7B shapes (hidden 3584, MLP 18944, 28/4 heads, untied): 8 and 16 of the 28 layers fit the 64 GiB disk
# with inputs discarded between sizes; the real depth does not (inputs + both outputs ~ 79 GB).
python3 benchmarks/merge_bench.py --shape 7b --layers 8,16 --device cuda --discard-inputs --scratch /tmp/vx-bench \
  --mergekit "$site/bin/mergekit-yaml" --json "$OUT/merge_7b_cuda.json" 2>&1 | tee "$OUT/merge_7b_cuda.log"
