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

from . import __version__, arch
from .errors import MergeError, SourceError, ViscodexError
from .plan import MergePlan, PlanItem, build_plan
from .recipe import RECIPE_FILE, Recipe
from .safetensors_io import DTYPES, PlannedTensor, ShardWriter, bytes_to_tensor, plan_shards, read_bytes, shard_names
from .sources import Source, display_name, open_source

log = logging.getLogger("viscodex")
DEFAULT_SHARD_SIZE = 5 * 1024**3
INDEX_FILE = "model.safetensors.index.json"


def parse_size(s: str | int) -> int:
    if isinstance(s, int):
        return s
    t = s.strip().upper().replace("IB", "B")
    for suf, mul in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000), ("B", 1)):
        if t.endswith(suf):
            try:
                return int(float(t[: -len(suf)]) * mul)
            except ValueError:
                break
    try:
        return int(t)
    except ValueError:
        raise ViscodexError(f"cannot parse size {s!r} (examples: 5GB, 500MB, 1048576)") from None


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
        rev = (pinned.get(role) or {}).get("revision")
        if rev and "@" not in spec and not Path(spec).expanduser().exists():
            spec = f"{spec}@{rev}"  # re-running a written recipe pins the revisions it resolved
        weights = True
        if role == "base":
            m = get_method(recipe.method)
            weights = recipe.variant == "merged" and m.needs_base(recipe.weights, recipe.params)
        out[role] = open_source(spec, role, weights=weights)
    return out


class _Prefetcher:
    """Reads plan items' inputs ahead of compute, bounded by bytes in flight."""

    def __init__(self, items: list[PlanItem], threads: int, window_bytes: int):
        self.items = items
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

    def _read(self, item: PlanItem) -> dict[str, torch.Tensor]:
        return {r: read_bytes(t, self._fd(t.file)) for r, t in item.inputs.items()}

    def _fill(self) -> None:
        while self.next < len(self.items) and (self.inflight < self.window or not self.futures):
            it = self.items[self.next]
            self.futures[self.next] = self.pool.submit(self._read, it)
            self.inflight += it.read_bytes
            self.next += 1

    def get(self, i: int) -> dict[str, torch.Tensor]:
        self._fill()
        data = self.futures.pop(i).result()
        self.inflight -= self.items[i].read_bytes
        self._fill()
        return data

    def close(self) -> None:
        for f in self.futures.values():
            f.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for fd in self.fds.values():
            os.close(fd)


def compute_item(item: PlanItem, raw: dict[str, torch.Tensor], recipe: Recipe, device: torch.device,
                 generator: torch.Generator | None = None) -> torch.Tensor | torch.Tensor:
    """Output bytes-or-tensor for one plan item. Copies stay byte copies when the dtype allows."""
    out_dt = DTYPES[item.out_dtype]
    if item.is_copy:
        src = item.inputs[item.policy if item.policy in item.inputs else "vlm"]
        buf = raw[item.policy if item.policy in raw else "vlm"]
        if src.dtype == item.out_dtype:
            t = bytes_to_tensor(buf, src)
            _check_finite(item.name, t)
            return buf  # byte-for-byte
        return _finish(item, bytes_to_tensor(buf, src).to(out_dt))
    tensors = {r: bytes_to_tensor(raw[r], item.inputs[r]) for r in item.inputs}
    vlm_full = tensors["vlm"]
    n = item.rows_shared if item.role == "embedding" else None

    def prep(t: torch.Tensor) -> torch.Tensor:
        t = t[:n] if n is not None else t
        return t.to(device=device, dtype=torch.float32, non_blocking=True)

    if item.policy == "merge":
        params = item.params if item.params is not None else recipe.params
        base = prep(tensors["base"]) if "base" in tensors else None
        experts = [prep(tensors["vlm"]), prep(tensors["coder"])]
        merged = item.method.fn(base, experts, recipe.weights, generator=generator, **params)
        if merged.shape != experts[0].shape:
            raise MergeError(f"{item.name}: method {item.method.name} returned shape {list(merged.shape)}, expected {list(experts[0].shape)}")
    else:
        merged = prep(tensors[item.policy])
    merged = merged.to(dtype=out_dt).cpu()
    if item.role == "embedding":
        full = vlm_full.to(out_dt).clone()
        full[: merged.shape[0]] = merged
        if item.keep_rows:
            idx = torch.tensor(item.keep_rows, dtype=torch.long)
            full[idx] = vlm_full[idx].to(out_dt)
        merged = full
    return _finish(item, merged)


def _finish(item: PlanItem, t: torch.Tensor) -> torch.Tensor:
    _check_finite(item.name, t)
    return t


def _check_finite(name: str, t: torch.Tensor) -> None:
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise MergeError(f"output tensor {name} has {bad} NaN/Inf value(s); nothing was written to --out")


def _versions() -> dict[str, str]:
    import huggingface_hub
    import safetensors
    import transformers

    return {"viscodex": __version__, "torch": str(torch.__version__), "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "huggingface_hub": huggingface_hub.__version__}


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


def _tmp_dir(out: Path) -> Path:
    tmp = out.parent / f".{out.name}.viscodex-tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise ViscodexError(f"{out} already exists; pass --force to overwrite it")


def finalize(tmp: Path, out: Path) -> None:
    """Atomically move a finished folder into place (replacing an old one only when forced)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.viscodex-old-{os.getpid()}"
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_merge(recipe: Recipe, out: str | os.PathLike, *, device: str = "cpu", shard_size: str | int = DEFAULT_SHARD_SIZE,
              threads: int = 4, force: bool = False, progress: bool = True, window_bytes: int = 512 * 1024**2,
              hash_inputs: bool = True, sources: dict[str, Source] | None = None) -> MergeResult:
    """Merge per `recipe` into folder `out`. Everything is checked before anything is written."""
    t0 = time.perf_counter()
    recipe.validate()
    out = Path(out).expanduser().absolute()
    check_out(out, force)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ViscodexError("--device cuda requested but no CUDA device is available")
    sources = sources or open_sources(recipe)
    plan = build_plan(recipe, sources)
    for n in plan.notes:
        log.info("%s", n)

    planned = [PlannedTensor(it.name, it.out_dtype, it.shape) for it in plan.items]
    shards = plan_shards(planned, parse_size(shard_size))
    names = shard_names(len(shards))
    tmp = _tmp_dir(out)
    gen = torch.Generator(device=dev).manual_seed(recipe.seed) if any(
        it.method is not None and it.method.seeded for it in plan.items) else None
    hashes: dict[str, dict[str, str]] = {}
    hash_thread = None
    if hash_inputs:
        def _hash():
            for r in plan.used_sources() | set(sources):
                if sources[r].has_weights:
                    hashes[r] = sources[r].file_hashes()
        hash_thread = threading.Thread(target=_hash, name="viscodex-hash", daemon=True)
        hash_thread.start()
    write_q: queue.Queue = queue.Queue(maxsize=4)
    files: dict[str, str] = {}
    werr: list[BaseException] = []
    total = plan.out_bytes
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"merge ({recipe.variant})",
               disable=not progress, dynamic_ncols=True)

    def writer():
        try:
            for shard, fname in zip(shards, names):
                w = ShardWriter(tmp / fname, shard)
                try:
                    for _ in shard:
                        name, data = write_q.get()
                        if name is None:  # the producer gave up
                            w.abort()
                            return
                        w.write(name, data)
                        bar.update(data.numel() * data.element_size())
                    files[fname] = w.close()
                except BaseException:
                    w.abort()
                    raise
        except BaseException as e:  # re-raised by the main thread
            werr.append(e)
            while write_q.get()[0] is not None:  # drain until the producer's sentinel
                pass

    wt = threading.Thread(target=writer, name="viscodex-write", daemon=True)
    wt.start()
    pre = _Prefetcher(plan.items, threads=threads, window_bytes=window_bytes)
    ok = False
    try:
        try:
            for i, item in enumerate(plan.items):
                if werr:
                    break
                write_q.put((item.name, compute_item(item, pre.get(i), recipe, dev, gen)))
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
        if hash_thread is not None:
            hash_thread.join()
        written = _record(recipe, plan, sources, hashes, files)
        (tmp / RECIPE_FILE).write_text(written.dump())
        finalize(tmp, out)
        ok = True
    finally:
        pre.close()
        bar.close()
        if not ok:
            shutil.rmtree(tmp, ignore_errors=True)
    dt = time.perf_counter() - t0
    return MergeResult(out, plan, written, files, dt, sum(it.read_bytes for it in plan.items), total)


def _record(recipe: Recipe, plan: MergePlan, sources: dict[str, Source], hashes, files) -> Recipe:
    import dataclasses

    srcs = {}
    for r, s in sources.items():
        srcs[r] = {"name": display_name(s.spec), "repo_id": s.repo_id, "revision": s.revision,
                   "model_type": s.model_type, "layout": s.layout, "read": r in plan.used_sources()}
        if r in hashes:
            srcs[r]["files"] = hashes[r]
    records = dict(recipe.records)
    records.pop("output", None)
    records.update(
        sources=srcs,
        policy_used=plan.policy_record(),
        output={"dtype": plan.out_dtype, "total_bytes": plan.out_bytes, "files": dict(sorted(files.items()))},
        versions=_versions(),
    )
    return dataclasses.replace(recipe, records=records)


def merge_from_recipe(recipe: Recipe, out, **kw) -> MergeResult:
    """Convenience wrapper used by the CLI, sweep and demo."""
    return run_merge(recipe, out, **kw)


__all__ = ["run_merge", "open_sources", "build_plan", "MergeResult", "parse_size"]
