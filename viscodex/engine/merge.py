"""The merge engine: executes a plan as a three-stage pipeline.

    reader threads (pread, prefetch window bounded in bytes)
      -> compute (method per tensor, float32 on --device, cast to the output dtype, NaN/Inf check)
      -> writer thread (streaming safetensors shards, hashed as written)

Output goes to a hidden temporary folder next to --out and is renamed into place only when
everything, the recipe included, has been written: a killed merge leaves nothing at --out.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._version import __version__
from . import arch
from .._util.atomic import OutputFolder
from .._util.hubref import HubRef
from ..errors import MergeError, RecipeError, SourceError
from .options import arg
from .plan import MergePlan, PlanItem, build_plan
from .recipe import RECIPE_FILE, Recipe
from .hashing import InputHasher
from .safetensors_io import DTYPES, BufferPool, PlannedTensor, ShardWriter, plan_shards, read_range, shard_names
from .._util.sizes import DEFAULT_SHARD_SIZE, parse_size
from .sources import Source, display_name, open_source, parse_spec

log = logging.getLogger(__name__)
INDEX_FILE = "model.safetensors.index.json"


@dataclass
class MergeResult:
    out: Path
    plan: MergePlan
    recipe: Recipe
    files: dict[str, str]  # shard -> sha256
    seconds: float
    bytes_read: int
    bytes_written: int


def open_sources(recipe: Recipe) -> dict[str, Source]:
    """Open the sources a recipe names; the base only with weights when its method reads it."""
    from .methods import get_method

    pinned = (recipe.records.get("sources") or {})
    specs = {"vlm": recipe.vlm, "coder": recipe.coder}
    if recipe.base:
        specs["base"] = recipe.base
    out = {}
    for role, spec in specs.items():
        spec = str(HubRef.parse(spec).pinned((pinned.get(role) or {}).get("revision")))
        weights = True
        if role == "base":
            m = get_method(recipe.method)
            weights = recipe.variant == "merged" and m.needs_base(recipe.weights, recipe.params)
        out[role] = open_source(spec, role, weights=weights)
    return out


@dataclass(frozen=True)
class Chunk:
    """Rows [r0, r1) of one plan item: the unit that is read, computed and written."""

    item: PlanItem
    r0: int
    r1: int

    def ranges(self) -> dict[str, tuple]:
        """role -> (TensorInfo, byte offset, byte count, rows) to read for this chunk."""
        out = {}
        for role, info in self.item.inputs.items():
            rows = info.shape[0] if info.shape else 1
            row_bytes = info.nbytes // rows if rows else 0
            if self.item.role == "embedding" and role != "vlm" and self.item.rows_shared is not None:
                rows = min(rows, self.item.rows_shared)  # rows past the shared vocabulary come from the VLM
            hi = min(self.r1, rows)
            if hi > self.r0:
                out[role] = (info, info.start + self.r0 * row_bytes, (hi - self.r0) * row_bytes, hi - self.r0)
        return out

    @property
    def read_bytes(self) -> int:
        return sum(r[2] for r in self.ranges().values())


def chunks_of(items: list[PlanItem], chunk_bytes: int) -> list[Chunk]:
    """Split element-wise work (copies, element-wise methods) into row chunks of about chunk_bytes."""
    out = []
    for it in items:
        rows = it.shape[0] if it.shape else 1
        whole = it.policy == "merge" and not it.method.elementwise
        nbytes = max((t.nbytes for t in it.inputs.values()), default=0)
        if whole or rows <= 1 or nbytes <= chunk_bytes:
            out.append(Chunk(it, 0, rows))
            continue
        step = max(1, rows * chunk_bytes // nbytes)
        out += [Chunk(it, r, min(rows, r + step)) for r in range(0, rows, step)]
    return out


class _Prefetcher:
    """Reads chunks' input bytes ahead of compute with positioned reads, bounded by bytes in flight."""

    def __init__(self, chunks: list[Chunk], threads: int, window_bytes: int, buffers: BufferPool | None = None):
        self.chunks = chunks
        self.buffers = buffers
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="viscodex-read")
        self.window = window_bytes
        self.futures: dict[int, Future] = {}
        self.next = 0
        self.inflight = 0
        self.fds: dict[Path, int] = {}
        self.lock = threading.Lock()

    def _fd(self, path: Path) -> int:
        with self.lock:
            if path not in self.fds:
                try:
                    self.fds[path] = os.open(path, os.O_RDONLY)
                except OSError as e:
                    raise SourceError(f"{path}: cannot open ({e.strerror})") from e
            return self.fds[path]

    def _read(self, ch: Chunk) -> dict[str, tuple]:
        return {r: (info, off, read_range(info.file, off, n, self._fd(info.file),
                                          out=self.buffers.take(n) if self.buffers else None))
                for r, (info, off, n, _) in ch.ranges().items()}

    def _fill(self) -> None:
        while self.next < len(self.chunks) and (self.inflight < self.window or not self.futures):
            ch = self.chunks[self.next]
            self.futures[self.next] = self.pool.submit(self._read, ch)
            self.inflight += ch.read_bytes
            self.next += 1

    def get(self, i: int) -> dict[str, tuple]:
        self._fill()
        data = self.futures.pop(i).result()
        self.inflight -= self.chunks[i].read_bytes
        self._fill()
        return data

    def close(self) -> None:
        for f in self.futures.values():
            f.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for fd in self.fds.values():
            os.close(fd)


def nonfinite_count(t: torch.Tensor) -> int:
    """NaN/Inf count. Fast path: one fused min/max reduction (NaN propagates to both, +-Inf shows
    in one), about 10x cheaper than abs().amax() on bf16; counts only on failure."""
    if not t.is_floating_point() or not t.numel():
        return 0
    lo, hi = torch.aminmax(t.reshape(-1))
    if bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)):
        return 0
    return int((~torch.isfinite(t)).sum())


def _typed(raw: dict[str, tuple], role: str) -> torch.Tensor:
    """A chunk's raw bytes for one source, viewed with that tensor's dtype and trailing shape."""
    info, _, buf = raw[role]
    if not info.shape:
        return buf.view(info.torch_dtype).reshape(())
    return buf.view(info.torch_dtype).reshape(-1, *info.shape[1:])


def _merged_rows(ch: Chunk) -> int:
    """How many leading rows of the chunk are computed (embeddings: only rows all sources share)."""
    item = ch.item
    if item.role == "embedding" and item.rows_shared is not None:
        return max(0, min(ch.r1, item.rows_shared) - ch.r0)
    return ch.r1 - ch.r0


def _method_inputs(ch: Chunk, raw: dict[str, tuple], device: torch.device) -> dict[str, torch.Tensor]:
    """Source tensors a merge/copy policy computes from, on `device`: float32 unless the method
    computes in float32 itself (low_precision_ok) and the sources share one dtype."""
    item, m = ch.item, _merged_rows(ch)
    roles = [r for r in (["base", "vlm", "coder"] if item.policy == "merge" else [item.policy]) if r in raw]
    native = item.policy != "merge" or (item.method.low_precision_ok and len({raw[r][0].dtype for r in roles}) == 1)
    return {r: _typed(raw, r)[:m].to(device=device, dtype=None if native else torch.float32) for r in roles} if m else {}


def compute_chunk(ch: Chunk, raw: dict[str, tuple], recipe: Recipe, device: torch.device,
                  generator: torch.Generator | None = None, extra: dict | None = None) -> torch.Tensor:
    """Output for rows [r0, r1) of one item. Same-dtype copies stay byte copies."""
    item = ch.item
    out_dt = DTYPES[item.out_dtype]
    n_rows = ch.r1 - ch.r0
    shape = (n_rows, *item.shape[1:]) if item.shape else ()

    if item.is_copy:
        info, _, buf = raw[item.policy]
        if info.dtype == item.out_dtype:
            _check(item.name, _typed(raw, item.policy))
            return buf  # byte-for-byte
        out = _typed(raw, item.policy).to(out_dt)
        _check(item.name, out)
        return out

    vlm = _typed(raw, "vlm")
    m = _merged_rows(ch)
    ins = _method_inputs(ch, raw, device)
    if m and item.policy == "merge":
        params = item.params if item.params is not None else {**recipe.params, **(extra or {})}
        try:
            merged = item.method.fn(ins.get("base"), [ins["vlm"], ins["coder"]], recipe.weights, generator=generator, **params)
        except MergeError as e:  # methods do not know tensor names
            raise MergeError(f"{item.name}: {e}") from None
        if merged.shape != ins["vlm"].shape:
            raise MergeError(f"{item.name}: method {item.method.name} returned shape {list(merged.shape)}, "
                             f"expected {list(ins['vlm'].shape)}")
    elif m:
        merged = ins[item.policy]
    if m == n_rows and not item.keep_rows:
        out = merged.to(dtype=out_dt).cpu().reshape(shape)
    else:
        out = vlm.to(out_dt, copy=True)
        if m:
            out[:m] = merged.to(dtype=out_dt).cpu()
        keep = [k - ch.r0 for k in item.keep_rows if ch.r0 <= k < ch.r1]
        if keep:
            idx = torch.tensor(keep, dtype=torch.long)
            out[idx] = vlm[idx].to(out_dt)
    _check(item.name, out)
    return out


def run_prepass(plan: MergePlan, device: torch.device, threads: int, window_bytes: int) -> dict:
    """Whole-model statistics a method needs before merging any tensor (e.g. global TIES
    thresholds): the method's pre-pass object observes every tensor it merges, once per pass."""
    from .methods import get_method

    recipe = plan.recipe
    method = get_method(recipe.method)
    pre = method.prepass(recipe.params) if method.prepass else None
    if pre is None:
        return {}
    chunks = chunks_of([it for it in plan.items if it.method is method and it.params is None], 1 << 62)
    for p in range(pre.passes):
        fetch = _Prefetcher(chunks, threads=threads, window_bytes=window_bytes)
        try:
            for i, ch in enumerate(tqdm(chunks, desc=f"{method.name} pre-pass {p + 1}/{pre.passes}", leave=False,
                                        disable=not log.isEnabledFor(logging.INFO))):
                ins = _method_inputs(ch, fetch.get(i), device)
                if ins:
                    pre.observe(p, ins.get("base"), [ins["vlm"], ins["coder"]], recipe.weights)
        finally:
            fetch.close()
    return pre.result()


def _check(name: str, t: torch.Tensor) -> None:
    bad = nonfinite_count(t)
    if bad:
        raise MergeError(f"output tensor {name} has {bad} NaN/Inf value(s); nothing was written to --out")


def _versions() -> dict[str, str]:
    import huggingface_hub
    import safetensors
    import transformers

    return {"viscodex": __version__, "torch": str(torch.__version__), "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "huggingface_hub": huggingface_hub.__version__}


def _copy_licenses(sources: dict[str, Source], used: set[str], tmp: Path) -> list[str]:
    """The licence texts of the other sources the weights derive from, as LICENSE-<role>[.ext]
    (the VLM's LICENSE comes with its sidecars): they ship with the weights."""
    from .sources import LICENSE_GLOBS

    copied = []
    for role in ("coder", "base"):
        if role not in used or role not in sources:
            continue
        for g in LICENSE_GLOBS:
            for f in sorted(sources[role].path.glob(g)):
                if f.is_file():
                    stem, dot, ext = f.name.partition(".")
                    name = f"{stem}-{role}{dot}{ext}"
                    shutil.copyfile(f, tmp / name)
                    copied.append(name)
    return copied


def _copy_sidecars(vlm: Source, tmp: Path, out_dtype: str) -> list[str]:
    """Config (dtype updated), processor, tokenizer, chat template and generation config from the VLM."""
    import fnmatch

    copied = []
    for f in sorted(vlm.path.iterdir()):
        if not f.is_file() or f.name in arch.SIDECAR_SKIP:
            continue
        if any(fnmatch.fnmatch(f.name, p) for p in arch.WEIGHT_FILE_PATTERNS):
            continue
        shutil.copyfile(f, tmp / f.name)
        copied.append(f.name)
    cfg = dict(vlm.config)
    name = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[out_dtype]
    cfg["dtype"] = name
    cfg.pop("torch_dtype", None)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    missing = [p for p in arch.PROCESSOR_FILES if not (tmp / p).exists()]
    if "preprocessor_config.json" in missing and (tmp / "processor_config.json").exists():
        missing.remove("preprocessor_config.json")
    if missing:
        log.warning("vlm %s has no %s: the output will lack them (copy a processor in before publishing)",
                    vlm.name, ", ".join(missing))
    return copied


def _return_freed_buffers_to_the_os() -> None:
    """Chunk buffers (tens of MB) are allocated in reader threads and freed in others; glibc then
    keeps them in per-thread arenas and resident memory grows with model size. Serving every
    allocation above 1 MiB from mmap returns each freed buffer to the OS at once."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def merge_device(device: str) -> torch.device:
    """The torch device for --device, checked: a typo or a missing GPU is a one-line error."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise RecipeError(f"{arg('device')} {device!r}: not a torch device ({str(e).splitlines()[0]}); use cpu, cuda, "
                          f"cuda:N or mps") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise RecipeError(f"{arg('device')} {device!r}: no CUDA device is available; use --device cpu (device='cpu')")
        if dev.index is not None and dev.index >= n:
            raise RecipeError(f"{arg('device')} {device!r}: only {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise RecipeError(f"{arg('device')} {device!r}: MPS is not available; use --device cpu (device='cpu')")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise RecipeError(f"{arg('device')} {device!r}: merges run on cpu, cuda or mps")
    return dev


def default_compute_threads(elementwise: bool = True) -> int:
    """torch's intra-op threads for the merge math. Element-wise methods stream: the pipeline's
    hasher, writer and readers keep about three cores busy, and more OpenMP threads than the cores
    left over spin at their barriers (on the 2-core dev VM two threads spent 30% more CPU time
    than one and made a 24-layer merge 20% slower: 29.3 s vs 24.3 s, benchmarks/README.md).
    Whole-matrix methods (SVD, optimisation) are compute-bound: they get every core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - 3) if elementwise else cores


def run_merge(recipe: Recipe, out: str | os.PathLike, *, device: str = "cpu", shard_size: str | int = DEFAULT_SHARD_SIZE,
              threads: int = 4, force: bool = False, progress: bool = True, window_bytes: int = 256 * 1024**2,
              chunk_bytes: int = 16 * 1024**2, hash_inputs: bool = True, sources: dict[str, Source] | None = None,
              compute_threads: int | None = None) -> MergeResult:
    """Merge per `recipe` into folder `out`. Everything is checked before anything is written.
    `threads` read; `compute_threads` are torch's intra-op threads for the math while the merge
    runs (default: `default_compute_threads()`; restored afterwards)."""
    t0 = time.perf_counter()
    _return_freed_buffers_to_the_os()
    recipe = recipe.validate()
    local = [parse_spec(spec)[0] for spec in (recipe.vlm, recipe.coder, recipe.base) if spec]
    folder = OutputFolder(out, force=force, sources=local)  # refuses unsafe --out before any work
    out = folder.out
    dev = merge_device(device)
    if threads is None or isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise RecipeError(f"{arg('threads')} {threads!r}: give the number of reader threads, at least 1")
    if compute_threads is not None and (isinstance(compute_threads, bool) or not isinstance(compute_threads, int)
                                        or compute_threads < 1):
        raise RecipeError(f"{arg('compute_threads')} {compute_threads!r}: give at least 1, or omit it "
                          f"for the default")
    shard_bytes = parse_size(shard_size)
    sources = sources or open_sources(recipe)
    plan = build_plan(recipe, sources)
    for n in plan.notes:
        log.info("%s", n)

    planned = [PlannedTensor(it.name, it.out_dtype, it.shape) for it in plan.items]
    shards = plan_shards(planned, shard_bytes)
    names = shard_names(len(shards))
    shard_of = {t.name: i for i, shard in enumerate(shards) for t in shard}
    chunks = chunks_of(plan.items, chunk_bytes)
    gen = torch.Generator(device=dev).manual_seed(recipe.seed) if any(
        it.method is not None and it.method.seeded for it in plan.items) else None
    from .methods import get_method

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(compute_threads or default_compute_threads(get_method(recipe.method).elementwise))
    try:
        extra = run_prepass(plan, dev, threads, window_bytes)
        folder.need_bytes = plan.out_bytes
        # after the pre-pass: a pre-pass that fails leaves nothing behind
        with folder as tmp:
            written = _write(plan, sources, tmp, shards, names, shard_of, chunks, gen, extra, dev,
                             threads, window_bytes, chunk_bytes, hash_inputs, progress)
    finally:
        torch.set_num_threads(prev_threads)
    dt = time.perf_counter() - t0
    return MergeResult(out, plan, written, written.records["output"]["files"], dt,
                       sum(c.read_bytes for c in chunks), plan.out_bytes)


def _write(plan: MergePlan, sources: dict[str, Source], tmp: Path, shards, names, shard_of, chunks, gen, extra, dev,
           threads: int, window_bytes: int, chunk_bytes: int, hash_inputs: bool, progress: bool) -> Recipe:
    """Stream every chunk through read -> compute -> write into `tmp`; returns the recipe written."""
    recipe = plan.recipe
    hasher = InputHasher(sources, plan.used_sources()) if hash_inputs else None
    write_q: queue.Queue = queue.Queue(maxsize=4)
    files: dict[str, str] = {}
    werr: list[BaseException] = []
    total = plan.out_bytes
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"merge ({recipe.variant})",
               disable=not progress, dynamic_ncols=True)

    def writer():
        w, cur = None, -1
        try:
            for _ in chunks:
                name, data = write_q.get()
                if name is None:  # the producer gave up
                    return
                if shard_of[name] != cur:
                    if w is not None:
                        files[names[cur]] = w.close()
                    cur = shard_of[name]
                    w = ShardWriter(tmp / names[cur], shards[cur])
                w.write(name, data)
                bar.update(data.numel() * data.element_size())
            if w is not None:
                files[names[cur]] = w.close()
                w = None
        except BaseException as e:  # re-raised by the main thread
            werr.append(e)
            while write_q.get()[0] is not None:  # drain until the producer's sentinel
                pass
        finally:
            if w is not None:
                w.abort()

    wt = threading.Thread(target=writer, name="viscodex-write", daemon=True)
    wt.start()
    # enough blocks for the reads in flight plus those being computed, hashed and written
    buffers = BufferPool(chunk_bytes, max_blocks=window_bytes // chunk_bytes + 12, min_bytes=min(1 << 20, chunk_bytes // 4))
    pre = _Prefetcher(chunks, threads=threads, window_bytes=window_bytes, buffers=buffers)
    try:
        try:
            for i, ch in enumerate(chunks):
                if werr:
                    break
                raw = pre.get(i)
                if hasher is not None:
                    for info, off, buf in raw.values():
                        hasher.feed(info.file, off, buf)
                write_q.put((ch.item.name, compute_chunk(ch, raw, recipe, dev, gen, extra)))
        finally:
            write_q.put((None, None))
            wt.join()
        if werr:
            raise werr[0]
        if len(names) > 1:
            index = {"metadata": {"total_size": total},
                     "weight_map": {t.name: fname for shard, fname in zip(shards, names) for t in shard}}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        _copy_sidecars(sources["vlm"], tmp, plan.out_dtype)
        _copy_licenses(sources, plan.used_sources(), tmp)
        hashes = hasher.result() if hasher is not None else {}
        hasher = None
        written = _record(recipe, plan, sources, hashes, files, extra)
        (tmp / RECIPE_FILE).write_text(written.dump())
        return written
    finally:
        log.debug("read buffers: %d from the pool (%d blocks), %d fresh", buffers.lent, len(buffers.blocks), buffers.fresh)
        pre.close()
        bar.close()
        if hasher is not None:
            hasher.abort()


def _record(recipe: Recipe, plan: MergePlan, sources: dict[str, Source], hashes, files, extra: dict) -> Recipe:
    import dataclasses

    srcs = {}
    for r, s in sources.items():
        srcs[r] = {"name": display_name(s.spec), "repo_id": s.repo_id, "revision": s.revision,
                   "model_type": s.model_type, "layout": s.layout, "read": r in plan.used_sources(),
                   "license": s.license}
        if r in hashes:
            srcs[r]["files"] = hashes[r]
    records = dict(recipe.records)
    records.pop("output", None)
    records.update(
        sources=srcs,
        policy_used=plan.policy_record() | ({"prepass": extra} if extra else {}),
        output={"dtype": plan.out_dtype, "total_bytes": plan.out_bytes, "files": dict(sorted(files.items()))},
        versions=_versions(),
    )
    return dataclasses.replace(recipe, records=records)


__all__ = ["run_merge", "open_sources", "build_plan", "MergeResult", "parse_size"]
