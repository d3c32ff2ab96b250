"""Time and peak memory of each merge method on one weight-matrix trio (base + two experts).

    python benchmarks/methods_bench.py                          # CPU: a 1/7-scale 7B MLP shape (512 x 2704)
    python benchmarks/methods_bench.py --device cuda            # GPU: the 7B MLP shape, 3584 x 18944
    python benchmarks/methods_bench.py --device cuda --rows 18944 --cols 3584   # the other orientation
    python benchmarks/methods_bench.py --device cuda --backbone # whole Qwen2.5-7B backbone estimate
    python benchmarks/methods_bench.py --methods optmerge,optmerge_closed_form --steps 50

Prints, per method: seconds, peak extra memory (CUDA allocator peak, or the process's peak RSS on
CPU) over the inputs, and the ratio to task arithmetic. `--reference` also times the MLLMerging
formulation of WUDI/OptMerge (m x m products, full_matrices SVD, autograd) for a few steps and
prints the per-step ratio, measured in the same run. `--backbone` times each distinct matrix shape
of a Qwen2.5-7B decoder layer once and sums them over 28 layers (1-D tensors and embeddings go to
task arithmetic and are left out: they take well under a second).
"""
from __future__ import annotations

import argparse
import ctypes
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from viscodex.engine.methods import METHODS, get_method

MLP_7B = (3584, 18944)
CPU_DEFAULT = (512, 2704)  # same aspect ratio, 1/7 of each side
QWEN25_7B_LAYER = {  # shape -> matrices of that shape per decoder layer
    (3584, 3584): 2,  # q_proj, o_proj
    (512, 3584): 2,  # k_proj, v_proj
    (18944, 3584): 2,  # gate_proj, up_proj
    (3584, 18944): 1,  # down_proj
}
LAYERS_7B = 28
ITERATIVE = ("wudi", "optmerge")


# ---------------------------------------------------------------- measurement
def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


class Peak:
    """Peak extra memory during a block: CUDA allocator peak, or the process's RSS high-water mark."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
            self.start = _rss_kib("VmRSS") * 1024
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
            except OSError:
                pass
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self.start
        else:
            self.bytes = _rss_kib("VmHWM") * 1024 - self.start
        return False


def make_trio(rows: int, cols: int, device: torch.device, seed: int = 0):
    """Base and two experts whose task vectors share a component (as fine-tunes of one base do)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(rows, cols, generator=g).mul_(0.02)
    shared = torch.randn(rows, cols, generator=g).mul_(5e-4)
    experts = [base + shared + torch.randn(rows, cols, generator=g).mul_(1e-3) for _ in range(2)]
    return base.to(device), [e.to(device) for e in experts]


def method_params(name: str, steps: int) -> dict:
    m = get_method(name)
    given = {"steps": steps} if any(p.name == "steps" for p in m.params) else {}
    return m.validate_params(given)


def run_method(name: str, base, experts, weights, steps: int, device) -> Peak:
    m = get_method(name)
    gen = torch.Generator().manual_seed(0) if m.seeded else None
    with Peak(device) as pk:
        out = m.fn(base, experts, weights, generator=gen, **method_params(name, steps))
        del out
    return pk


# ---------------------------------------------------------------- the reference formulation
def reference_step_seconds(name: str, base, experts, steps: int, device) -> Peak:
    """MLLMerging's WUDI / OptMerge (LoRA variant) as written there: stacked task vectors,
    full_matrices SVD, m x n S matrices and m x m inner products through autograd. Runs `steps`
    steps; the caller divides."""
    vectors = torch.stack([e - base for e in experts])
    with Peak(device) as pk:
        if name == "wudi":
            x = torch.nn.Parameter(vectors.sum(0))
            opt = torch.optim.Adam([x], lr=1e-5)
            norms = vectors.reshape(2, -1).norm(dim=-1).square()
            targets, low = vectors, vectors
        else:
            low_l, tv_l = [], []
            for v in vectors:
                u, s, vh = torch.linalg.svd(v, full_matrices=True)
                r = int(s.shape[0] / vectors.shape[0])
                s = s * (torch.arange(s.shape[0], device=s.device) < r)
                vh = vh * (torch.arange(vh.shape[0], device=vh.device) < r)[:, None]
                smat = torch.zeros(v.shape, device=v.device)
                smat[: s.shape[0], : s.shape[0]] = torch.diag(s)
                low_l.append(smat @ vh)
                u2, s2, v2 = torch.linalg.svd(v, full_matrices=False)
                tv_l.append(u2[:, :r] @ torch.diag(s2[:r]) @ v2[:r])
                del u, s, vh, smat, u2, s2, v2
            low, targets = torch.stack(low_l), torch.stack(tv_l)
            x = torch.nn.Parameter(vectors.mean(0))
            opt = torch.optim.SGD([x], lr=1e-4, momentum=0.9)
            norms = vectors.reshape(2, -1).norm(dim=-1).square()
        pk.setup = time.perf_counter() - pk.t0
        for _ in range(steps):
            inner = torch.matmul(x.unsqueeze(0) - targets, low.transpose(1, 2))
            loss = torch.sum(inner.square() / norms[:, None, None])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return pk


# ---------------------------------------------------------------- reports
def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def bench_shape(rows, cols, methods, steps, device, reference: bool, ref_steps: int) -> dict[str, Peak]:
    base, experts = make_trio(rows, cols, device)
    weights = [0.7, 0.3]
    input_bytes = 3 * base.numel() * base.element_size()
    print(f"\n== {rows} x {cols} on {device} ({fmt_bytes(input_bytes)} of float32 inputs), steps={steps} ==")
    print(f"{'method':22s} {'seconds':>9s} {'peak extra':>12s} {'x inputs':>9s} {'x task_arith':>13s}")
    res: dict[str, Peak] = {}
    for name in methods:
        res[name] = pk = run_method(name, base, experts, weights, steps, device)
        ta = res.get("task_arithmetic")
        ratio = f"{pk.seconds / ta.seconds:13.1f}" if ta and ta.seconds > 0 else f"{'-':>13s}"
        print(f"{name:22s} {pk.seconds:9.3f} {fmt_bytes(pk.bytes):>12s} {pk.bytes / input_bytes:9.2f} {ratio}", flush=True)
    if "optmerge" in res and "optmerge_closed_form" in res:
        print(f"optmerge ({steps} steps) / optmerge_closed_form time: "
              f"{res['optmerge'].seconds / res['optmerge_closed_form'].seconds:.2f}")
    if reference:
        for name in ITERATIVE:
            if name not in res:
                continue
            try:
                ref = reference_step_seconds(name, base, experts, ref_steps, device)
            except (RuntimeError, MemoryError) as e:  # the m x m products may not fit
                print(f"reference {name}: failed ({str(e).splitlines()[0][:120]})")
                continue
            ours_setup = run_method(name, base, experts, weights, 0, device)
            ours_step = (res[name].seconds - ours_setup.seconds) / max(steps, 1)
            ref_step = (ref.seconds - ref.setup) / ref_steps
            print(f"reference {name}: setup {ref.setup:.3f}s, {ref_step * 1e3:.2f} ms/step, peak {fmt_bytes(ref.bytes)} | "
                  f"ours: setup {ours_setup.seconds:.3f}s, {ours_step * 1e3:.2f} ms/step, peak {fmt_bytes(res[name].bytes)} | "
                  f"step time ratio ref/ours {ref_step / max(ours_step, 1e-9):.1f}, "
                  f"peak ratio {ref.bytes / max(res[name].bytes, 1):.1f}", flush=True)
    del base, experts
    return res


def warmup(methods, device) -> None:
    base, experts = make_trio(32, 48, device, seed=1)
    for name in methods:
        run_method(name, base, experts, [0.7, 0.3], 2, device)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", type=int, default=None, help="matrix rows (out features)")
    ap.add_argument("--cols", type=int, default=None, help="matrix columns (in features)")
    ap.add_argument("--steps", type=int, default=300, help="steps of the iterative methods (wudi, optmerge)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    ap.add_argument("--backbone", action="store_true", help="estimate a whole Qwen2.5-7B backbone (28 layers)")
    ap.add_argument("--reference", action="store_true", help="also time MLLMerging's WUDI/OptMerge formulation")
    ap.add_argument("--ref-steps", type=int, default=3, help="steps of the reference formulation to time")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device available")
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    for m in methods:
        get_method(m)
    if "task_arithmetic" in methods:  # first, so the others have a reference time
        methods.remove("task_arithmetic")
        methods.insert(0, "task_arithmetic")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}")
    warmup(methods, device)
    if a.backbone:
        totals = {m: 0.0 for m in methods}
        for (r, c), count in QWEN25_7B_LAYER.items():
            res = bench_shape(r, c, methods, a.steps, device, False, a.ref_steps)
            for m, pk in res.items():
                totals[m] += pk.seconds * count * LAYERS_7B
        print(f"\n== estimated whole Qwen2.5-7B backbone ({LAYERS_7B} layers x 7 matrices), math only ==")
        for m, s in totals.items():
            print(f"{m:22s} {s:9.1f} s  ({s / 60:.1f} min)")
        return
    default = MLP_7B if device.type == "cuda" else CPU_DEFAULT
    rows, cols = a.rows or default[0], a.cols or default[1]
    bench_shape(rows, cols, methods, a.steps, device, a.reference, a.ref_steps)


if __name__ == "__main__":
    main()
