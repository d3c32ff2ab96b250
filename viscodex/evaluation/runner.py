"""Run tasks on a model: load samples, generate in batches, score, summarise; resumable.

Every scored sample is appended (and flushed) to a JSONL file, `<cache_dir>/<task>.jsonl`, keyed
by the model's weights, the task (and its version), the decoding settings and the prompt. A rerun
with the same settings reuses those lines and only generates what is missing, so an interrupted
evaluation continues where it stopped; the model is not even loaded when nothing is missing.
Scoring (sandboxed subprocesses) runs in a few threads while the next batch generates.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from .generate import Generator, model_key
from .catalog import get_task
from .tasks import SAMPLE_SOURCE, EvalError, EvalSample, Task, iter_jsonl

log = logging.getLogger(__name__)
RESULTS_VERSION = 1


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def prompt_hash(task: Task, s: EvalSample) -> str:
    imgs = [(im.size, hashlib.sha256(im.tobytes()).hexdigest()[:16]) for im in s.images]
    return _sha([task.messages(s), s.prompt, imgs])


class ResultCache:
    """Append-only JSONL of scored samples; lines from other settings are kept but ignored.

    A kill can cut the last line short. `load` skips such a line, and the first `append` of a run
    ends it with a newline first: otherwise the next record would be glued to the torn one and be
    lost with it on every later resume. Each line is fsynced (one per scored sample: cheap next to
    generating it)."""

    def __init__(self, path: Path | None, key: str):
        self.path, self.key = path, key
        self.lock = threading.Lock()
        self._checked_tail = False

    def load(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        if self.path is None or not self.path.is_file():
            return out
        with open(self.path, "rb") as f:  # bytes: a torn line may end inside a UTF-8 character
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:  # UnicodeDecodeError included
                    continue  # a line cut short by an interruption
                if isinstance(rec, dict) and rec.get("key") == self.key and "id" in rec:
                    out[str(rec["id"])] = rec
        return out

    def append(self, rec: dict) -> None:
        if self.path is None:
            return
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a+b") as f:
                line = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
                if not self._checked_tail:
                    self._checked_tail = True
                    if f.seek(0, os.SEEK_END) > 0:
                        f.seek(-1, os.SEEK_END)
                        if f.read(1) != b"\n":
                            line = b"\n" + line  # close the torn line; load() ignores it
                f.write(line)
                f.flush()
                os.fsync(f.fileno())


def summarize(records: list[dict]) -> dict[str, float]:
    """Mean of every numeric score over the samples that report it."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for r in records:
        for k, v in (r.get("scores") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                sums[k] = sums.get(k, 0.0) + float(v)
                counts[k] = counts.get(k, 0) + 1
    return {k: round(sums[k] / counts[k], 6) for k in sums}


def _safe_score(fn, output: str, s: EvalSample) -> dict:
    try:
        return fn(output, s)
    except EvalError:
        raise
    except Exception as e:  # noqa: BLE001 - one bad sample must not end a long run; it scores 0 and says why
        log.warning("scoring sample %s failed: %s: %s", s.id, type(e).__name__, e)
        return {"score": 0.0, "message": f"scoring failed: {type(e).__name__}: {e}"}


def check_model_spec(model: str | os.PathLike) -> None:
    """A model that is neither an existing folder nor shaped like a Hub id is a typo, not a download."""
    from .._util.hubref import HubRef

    spec = str(model)
    if Path(spec).expanduser().exists():
        if not Path(spec).expanduser().is_dir():
            raise EvalError(f"{spec}: a model must be a folder (or a Hub id), got a file")
        return
    if not HubRef.parse(spec).is_hub_id or spec.startswith((".", "/", "~")):
        raise EvalError(f"{spec}: no such model folder; check the path (or give a Hub id namespace/name)")


def load_samples(task: Task, source: str | None, limit: int | None) -> list[EvalSample]:
    """task.load, with a missing network said as such and the offline alternatives named."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return task.load(source, limit)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, ConnectionError) as e:
        if source:
            raise
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise EvalError(f"{task.name}: cannot fetch the benchmark from the Hub ({type(e).__name__}: {cause}); "
                        f"evaluate offline with --source sample (a tiny bundled sample) or --source PATH "
                        f"(a local copy)") from None


def evaluate(model: str | os.PathLike | Generator, task: str | Task, *, source: str | None = None,
             limit: int | None = None, cache_dir: str | os.PathLike | None = None, batch_size: int = 8,
             max_new_tokens: int | None = None, device: str | None = None, progress: bool = True,
             workers: int = 2, key: str | None = None, resume: bool = True, keep_outputs: int = 3) -> dict[str, Any]:
    """Evaluate one task on `model` (a folder, a Hub id or a loaded Generator); returns the report."""
    return evaluate_many(model, [task], source=source, limit=limit, cache_dir=cache_dir, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, device=device, progress=progress, workers=workers, key=key,
                         resume=resume, keep_outputs=keep_outputs)[0]


def evaluate_many(model: str | os.PathLike | Generator, tasks: list[str | Task], *, source: str | None = None,
                  limit: int | None = None, cache_dir: str | os.PathLike | None = None, batch_size: int = 8,
                  max_new_tokens: int | None = None, device: str | None = None, progress: bool = True,
                  workers: int = 2, key: str | None = None, resume: bool = True,
                  keep_outputs: int = 3, prepare: Callable[[], str | os.PathLike] | None = None) -> list[dict[str, Any]]:
    """Evaluate several tasks with one loaded model (loaded only if some sample is not cached).

    `prepare`, when given, is called once before the model is first needed and returns the folder to
    load (the sweep merges there); `key` then names the weights for the cache."""
    tasks = [get_task(t) if isinstance(t, str) else t for t in tasks]
    gen: Generator | None = model if isinstance(model, Generator) else None
    if prepare is not None and not key:
        raise EvalError("evaluate_many: `prepare` needs an explicit `key` for the weights it will produce")
    if gen is None and prepare is None:
        check_model_spec(model)
    mkey = key or (gen.key if gen else model_key(model))
    reports = []
    try:
        for task in tasks:
            t0 = time.perf_counter()
            samples = load_samples(task, source, limit)
            if not samples:
                raise EvalError(f"{task.name}: no samples")
            ids = [s.id for s in samples]
            if len(set(ids)) != len(ids):
                raise EvalError(f"{task.name}: sample ids are not unique")
            mnt = int(max_new_tokens or task.max_new_tokens)
            run_key = _sha({"model": mkey, "task": task.name, "version": task.version, "split": task.split,
                            "source": None if task.generated else source, "max_new_tokens": mnt,
                            "decoding": "greedy", "v": RESULTS_VERSION, **task.cache_settings()})
            cache = ResultCache(Path(cache_dir) / f"{task.name}.jsonl" if cache_dir else None, run_key)
            done = cache.load() if resume else {}
            hashes = {s.id: prompt_hash(task, s) for s in samples}
            results: dict[str, dict] = {i: r for i, r in done.items() if i in hashes and r.get("prompt") == hashes[i]}
            pending = [s for s in samples if s.id not in results]
            n_cached = len(samples) - len(pending)
            if pending:
                with task.scorer() as score_fn:  # fails early (e.g. no browser) before the model loads
                    if gen is None:
                        if prepare is not None:
                            model = prepare()
                        log.info("loading %s", model)
                        gen = Generator(model, device=device, batch_size=batch_size)
                    _run_pending(gen, task, pending, score_fn, cache, results, hashes, mnt, progress, workers)
            records = [results[s.id] for s in samples]
            shown = model.path if isinstance(model, Generator) else model
            report = build_report(task, records, source=source, limit=limit, keep_outputs=keep_outputs,
                                  model=str(shown), model_key=mkey, max_new_tokens=mnt, generated=len(pending),
                                  cached=n_cached, seconds=time.perf_counter() - t0,
                                  samples_file=str(cache.path) if cache.path else None)
            reports.append(report)
    finally:
        if gen is not None and not isinstance(model, Generator):
            gen.close()
    return reports


def source_kind(task: Task, source: str | None) -> str:
    """hub | sample | local | generated: what the numbers were computed on (the card needs it)."""
    if task.generated:
        return "generated"
    return "hub" if not source else SAMPLE_SOURCE if source == SAMPLE_SOURCE else "local"


def build_report(task: Task, records: list[dict], *, source: str | None, limit: int | None, keep_outputs: int = 3,
                 **extra) -> dict[str, Any]:
    """The report of one task: its description (after loading: e.g. the subset actually read),
    the headline `score` (mean of the per-sample scores; pass@1 for MMCode, as a fraction), every
    metric's mean, the number of samples run and each sample's outcome."""
    metrics = summarize(records)
    return {
        **task.describe(), "source": "generated" if task.generated else (source or "hub"),
        "source_kind": source_kind(task, source), "n": len(records),
        "limit": limit if limit and limit > 0 else None, "score": metrics.get("score", 0.0), "metrics": metrics,
        "decoding": "greedy", **{k: (round(v, 2) if k == "seconds" else v) for k, v in extra.items()},
        "examples": [{"id": r["id"], "output": r["output"][:2000], "scores": r["scores"]} for r in records[:keep_outputs]],
        "samples": [{"id": r["id"], "scores": r["scores"]} for r in records],
    }


def read_predictions(path: str | os.PathLike) -> dict[str, str]:
    """preds.jsonl: one {"id": <the benchmark's sample id>, "response": <the model's full text>} per line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EvalError(f"{path}: no predictions file (a JSONL of {{\"id\": ..., \"response\": ...}} lines)")
    out: dict[str, str] = {}
    for n, rec in iter_jsonl(path):
        if not isinstance(rec, dict) or "id" not in rec or not isinstance(rec.get("response"), str):
            raise EvalError(f"{path}:{n}: a prediction needs \"id\" and a string \"response\" "
                            f"(got keys {sorted(rec) if isinstance(rec, dict) else type(rec).__name__})")
        key = str(rec["id"])
        if key in out:
            raise EvalError(f"{path}:{n}: a second prediction for id {key!r}; keep one per sample (pass@1)")
        out[key] = rec["response"]
    if not out:
        raise EvalError(f"{path}: no predictions")
    return out


def score_predictions(task: str | Task, predictions: str | os.PathLike, *, source: str | None = None,
                      limit: int | None = None, workers: int = 2, keep_outputs: int = 3) -> dict[str, Any]:
    """Score answers made elsewhere (vLLM, lmms-eval, an API) on a task, with no model. Samples
    without a prediction score 0 and are listed in `missing_predictions`; predictions whose id is
    not a sample are listed in `unknown_predictions`."""
    task = get_task(task) if isinstance(task, str) else task
    if task.generated:
        raise EvalError(f"{task.name}: its samples are generated per run; score predictions on a benchmark task")
    t0 = time.perf_counter()
    preds = read_predictions(predictions)
    samples = load_samples(task, source, limit)
    ids = {s.id for s in samples}
    if not ids & set(preds):
        raise EvalError(f"{predictions}: none of its {len(preds)} ids is a {task.name} sample id "
                        f"(e.g. {sorted(preds)[0]!r}; the benchmark's are like {samples[0].id!r})")
    missing = [s.id for s in samples if s.id not in preds]
    records: dict[str, dict] = {}
    todo = [s for s in samples if s.id in preds]
    with task.scorer() as score_fn:
        if task.parallel_scoring:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                got = dict(zip([s.id for s in todo], pool.map(lambda s: _safe_score(score_fn, preds[s.id], s), todo)))
        else:  # the scorer holds a resource bound to this thread (design2code's sync Playwright browser)
            got = {s.id: _safe_score(score_fn, preds[s.id], s) for s in todo}
    for s in samples:
        scores = got.get(s.id) or {"score": 0.0, "message": "no prediction for this sample"}
        records[s.id] = {"id": s.id, "output": preds.get(s.id, ""), "scores": scores}
    report = build_report(task, [records[s.id] for s in samples], source=source, limit=limit,
                          keep_outputs=keep_outputs, model=f"predictions: {Path(predictions).name}",
                          predictions=str(predictions), decoding="made elsewhere", max_new_tokens=None,
                          generated=0, cached=0, seconds=time.perf_counter() - t0)
    report["missing_predictions"] = missing
    report["unknown_predictions"] = sorted(set(preds) - ids)
    return report


def _run_pending(gen: Generator, task: Task, pending: list[EvalSample], score_fn, cache: ResultCache,
                 results: dict[str, dict], hashes: dict[str, str], max_new_tokens: int, progress: bool,
                 workers: int) -> None:
    bar = tqdm(total=len(pending), desc=f"eval {task.name}", unit="sample", disable=not progress, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="viscodex-score") \
        if task.parallel_scoring else None
    futures: list[Future] = []
    lock = threading.Lock()

    def finish(s: EvalSample, output: str, scores: dict) -> None:
        rec = {"key": cache.key, "id": s.id, "prompt": hashes[s.id], "output": output, "scores": scores}
        cache.append(rec)
        with lock:
            results[s.id] = rec
            done = list(results.values())
        bar.set_postfix(score=f"{summarize(done).get('score', 0.0):.3f}", refresh=False)

    # longest prompts first: similar lengths batch together and an OOM shows up at once
    order = sorted(pending, key=lambda s: (len(s.images), len(s.prompt)), reverse=True)
    try:
        step = max(1, gen.batch_size)
        for i in range(0, len(order), step):
            chunk = order[i:i + step]
            outs = gen.generate([task.messages(s) for s in chunk], [s.images for s in chunk], max_new_tokens=max_new_tokens)
            for s, o in zip(chunk, outs):
                if pool is not None:
                    futures.append(pool.submit(lambda s=s, o=o: finish(s, o, _safe_score(score_fn, o, s))))
                else:
                    finish(s, o, _safe_score(score_fn, o, s))
            bar.update(len(chunk))
        for f in futures:
            f.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def write_json(path: str | os.PathLike, data) -> Path:
    """Write JSON atomically and durably (a kill leaves the previous file or the new one)."""
    from .._util.atomic import write_atomic

    return write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


__all__ = ["evaluate", "evaluate_many", "score_predictions", "read_predictions", "build_report", "summarize",
           "ResultCache", "write_json"]
