"""`viscodex demo`'s default thread count: wall and CPU time of the FAST base's pre-training steps
with 1, 2, ... torch threads, each count in its own subprocess, interleaved over `--repeats`.

    python benchmarks/demo_threads_bench.py --steps 150 --threads 1,2 --repeats 2

Prints one JSON line per run (threads, steps, wall s, CPU s, the 1-minute load average at the
start) and the median wall time per thread count. The demo defaults to the fastest count measured
here (benchmarks/README.md); the count is part of its cache key, as other counts round differently.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(threads: int, steps: int) -> dict:
    import dataclasses
    import tempfile

    import torch

    from viscodex.toy import world as tt
    from viscodex.toy.demo import FAST
    from viscodex.toy.models import build_processor, build_tokenizer, new_base
    from viscodex.training.data import Encoder, SFTCollator
    from viscodex.training.examples import chat_sample, encode_raw, fit

    torch.set_num_threads(threads)
    demo = dataclasses.replace(FAST, threads=threads)
    cfg = demo.tiny()
    tok = build_tokenizer(cfg)
    model = new_base(cfg, tok).train()
    docs = tt.pretraining_docs(0, steps * demo.batch_size)
    enc = Encoder(build_processor(tok, cfg), max_len=512)
    data = [enc.encode(chat_sample(*d)) if isinstance(d, tuple) else encode_raw(tok, d) for d in docs]
    load = os.getloadavg()[0]
    c0, t0 = time.process_time(), time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        fit("bench", model, data, SFTCollator(tok.convert_tokens_to_ids("<|endoftext|>"), token_types=False), lr=demo.pretrain_lr,
            batch_size=demo.batch_size, seed=0, steps=steps, workdir=Path(work))
    return {"threads": threads, "steps": steps, "wall_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(time.process_time() - c0, 2), "load1": round(load, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one count in this process
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.steps)))
        return
    counts = [int(x) for x in a.threads.split(",")]
    runs: dict[int, list[float]] = {n: [] for n in counts}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for _ in range(a.repeats):
        for n in counts:
            out = subprocess.run([sys.executable, __file__, "--one", str(n), "--steps", str(a.steps)], env=env,
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            print(out, flush=True)
            runs[n].append(json.loads(out)["wall_s"])
    print("median wall s: " + ", ".join(f"{n} thread(s) {statistics.median(v):.1f}" for n, v in runs.items()))


if __name__ == "__main__":
    main()
