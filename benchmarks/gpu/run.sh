#!/usr/bin/env bash
# The GPU measurements of issue 20, as one device call. Here first (a CPU machine with PyPI):
#   bash benchmarks/gpu/fetch_wheels.sh          # the wheels the GPU image lacks, into .whl/ (git-ignored)
# then, with the device tool, from the repo root:
#   run(command="bash benchmarks/gpu/run.sh", carry=[".whl"], timeout_s=540)
# STAGES picks what runs (default: merge sft app): STAGES="sft parity" bash benchmarks/gpu/run.sh
#   merge  - merge_bench.py --shape 7b --device cuda: viscodex vs mergekit on the GPU vs the I/O floor
#   parity - parity.py: viscodex's CUDA merge against its CPU merge, tensor by tensor, three methods
#   sft    - sft_7b.py: 7B-shape Qwen2.5-VL SFT steps, padded vs packed, tokens/s, MFU, peak memory
#            (SFT_ARGS=--profile adds a profile of one step of each mode)
#   app    - app_7b.py: three 7B-shape variants as the app loads them, TTFT and tokens/s, memory vs ZeroGPU
# Each stage has its own time limit and its own log; one failing stage does not stop the others.
# Everything lands in $OUT (logs, JSON, device.txt) and the script stops by itself.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/viscodex-gpu-out}
STAGES=${STAGES:-merge sft app}
SFT_ARGS=${SFT_ARGS:-}
MERGE_LAYERS=${MERGE_LAYERS:-8}
mkdir -p "$OUT"
site=/tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
  # the same transformers / huggingface_hub as the development machine (the image's transformers 5.17
  # lacks TrainingArguments(activation_checkpointing=...)), plus mergekit and what it needs
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/bin:$PATH"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c "import torch, transformers, huggingface_hub, viscodex; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'hub', huggingface_hub.__version__, 'viscodex', viscodex.__version__)"
  nproc; free -g | head -2; df -h /tmp | tail -1
} 2>&1 | tee "$OUT/device.txt"

stage() {  # name, seconds, command...
  local name=$1 secs=$2; shift 2
  case " $STAGES " in *" $name "*) ;; *) return 0 ;; esac
  echo "=== $name (limit ${secs}s) $(date -u +%T)" | tee -a "$OUT/device.txt"
  local t0=$SECONDS
  timeout --kill-after=10 "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name rc=$rc in $((SECONDS - t0))s" | tee -a "$OUT/device.txt"
  tail -n 25 "$OUT/$name.log"
}

stage sft 200 python3 benchmarks/gpu/sft_7b.py --shape 7b --steps 5 --warm 2 --json "$OUT/sft_7b.json" $SFT_ARGS
stage app 200 python3 benchmarks/gpu/app_7b.py --shape 7b --max-new-tokens 64 --repeats 2 --json "$OUT/app_7b.json"
rm -rf /tmp/vx-app7b
stage parity 160 python3 benchmarks/gpu/parity.py --shape 7b --layers 2 --json "$OUT/parity_7b.json"
rm -rf /tmp/vx-parity
# 7B shapes (hidden 3584, MLP 18944, 28/4 heads, untied): the real 28 layers need ~79 GB of scratch
# (inputs 47 GB + both outputs) against the machine's 64 GiB disk, so MERGE_LAYERS of them.
stage merge 200 python3 benchmarks/merge_bench.py --shape 7b --layers "$MERGE_LAYERS" --device cuda --discard-inputs \
  --scratch /tmp/vx-bench --mergekit "$site/bin/mergekit-yaml" --json "$OUT/merge_7b_cuda.json"
rm -rf /tmp/vx-bench
echo "done $(date -u +%T)" | tee -a "$OUT/device.txt"
