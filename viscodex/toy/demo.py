"""The embedded default: a tiny trio trained locally, and the paper's claim reproduced at toy scale.

`train_trio` builds, from a seed and on a few CPU cores:
  base   a tiny Qwen2ForCausalLM pre-trained on a synthetic corpus (world.pretraining_docs);
  coder  the base fine-tuned on the coding task (description -> SVG);
  vlm    a tiny Qwen2_5_VLForConditionalGeneration whose backbone starts from the base, trained
         (vision tower, projector and backbone together) on the grounding task (image -> description).
`run_demo` then merges (the merge engine), evaluates base VLM / coder-swapped / merged and a lambda
sweep (evaluation.sweep) on the toy tasks (evaluation.toy: the samples `viscodex eval --task toy_*`
scores), fine-tunes each of the three variants briefly on image -> code (grounding mixed in),
decides the paper's claims with paired bootstrap intervals (toy.claims) and writes a table (JSON,
Markdown) and a plot (toy.report).

This module only orchestrates: the training is training.examples (transformers' Trainer), the
vision freezing training.trainer's, the evaluation evaluation.runner's. Models are cached under
the user cache dir, keyed by a hash of the configuration and the code version, built in a temporary
folder and renamed into place.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .._util.cache import cache_root
from .._util.quiet import quiet_transformers
from .._util.threads import torch_threads
from .._version import __version__
from ..errors import DemoError
from ..training.data import Encoder, SFTCollator
from ..training.examples import chat_sample, encode_raw, fit, task_sample
from . import world as tt
from .models import TRIO_VERSION, TinyConfig
from .claims import decide, paper_claims
from .report import VARIANT_NAMES, lam_dir, model_names, plot, table_markdown

log = logging.getLogger(__name__)
DEMO_VERSION = 5  # bump when training data or procedure change: invalidates cached trios
EVAL_BATCH = 32  # prompts per generate() call


@dataclass(frozen=True)
class DemoConfig:
    """Model size and training budget of the demo trio, plus the evaluation settings."""

    seed: int = 0
    # torch CPU threads for every training and evaluation run. Part of the keys: CPU kernels sum in
    # another order with another thread count, so the trained weights (and a close verdict) change.
    # 1 by default: 2 threads saved ~10 % on a 2-core machine with a core free, and were 14x slower
    # in the next run when the other core got busy (benchmarks/README.md); and a count adapted to
    # the load would make the models depend on the load.
    threads: int = 1
    # the architecture (TinyConfig's fields; its seed is this config's `seed`). Larger than TinyConfig's
    # default: with hidden size 64 the coder never learnt to copy the colour (docs/demo.md).
    model: TinyConfig = TinyConfig(hidden_size=96, intermediate_size=256, vision_hidden_size=48, shard_size="5GB")
    # training (steps of batch_size samples)
    batch_size: int = 8
    # Most of FAST's budget goes to pre-training: copying the caption's words into the SVG is learnt
    # there (by plain language modelling on captioned SVG), and a coder's skill that the base
    # mostly has already survives the merge at 30 % of its task vector. FULL pre-trains no longer:
    # with 5000 steps the base coded 1.00 and the VLM kept 0.96 of it, so the merge had nothing to
    # add (docs/demo.md, "FULL").
    pretrain_steps: int = 2500
    pretrain_lr: float = 1e-3
    # One pre-training document in this many is the coding task (a weak skill, as a real base LLM
    # has). Without it the merged model did not follow the instruction at all (coding 0.00-0.03).
    pretrain_code_every: int = 50
    coder_steps: int = 1600
    # twice the base's: the coder's task vector must still carry the instruction at 30 % of its
    # size; 1e-3 wrote SVG for fewer images zero-shot (merged - coder-swapped inconclusive on 3 of
    # 5 seeds instead of 1, docs/demo.md)
    coder_lr: float = 2e-3
    vlm_steps: int = 1500
    vlm_lr: float = 1e-3  # language backbone
    vision_lr: float = 3e-3  # vision tower + projector, trained from scratch
    replay: float = 0.25  # fraction of base-corpus chat turns mixed into the coder's and the VLM's data
    # Fraction of those turns' coding turns kept in the VLM's replay (a real VLM's text data is
    # general chat more than code). With all of them (DEMO_VERSION 4) the VLM kept most of the
    # base's coding (0.83-0.95) and the merge had little to add; with none it forgot the coding
    # instruction altogether (0.00) and so, on some seeds, did the merge (docs/demo.md).
    vlm_replay_coding: float = 0.25
    # evaluation
    eval_samples: int = 64
    lam: float = 0.7
    lambdas: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.85, 1.0)
    # short SFT of each variant on image -> code (vision tower and projector frozen)
    sft_samples: int = 300
    sft_epochs: int = 2
    sft_lr: float = 1e-3
    # fraction of grounding samples mixed into that SFT (as the paper's MCD mixes general
    # instruction data), so that fine-tuning on code does not erase grounding
    sft_grounding: float = 0.3

    def tiny(self) -> TinyConfig:
        return dataclasses.replace(self.model, seed=self.seed)

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def trio_key(self) -> str:
        """Hash of everything the trio depends on (not the evaluation settings)."""
        train = {k: v for k, v in asdict(self).items() if not k.startswith(("eval", "lam", "sft"))}
        return _hash(json.dumps(train, sort_keys=True), _code_version())

    def key(self) -> str:
        """Hash of the whole configuration: names a demo's output folder."""
        return _hash(json.dumps(asdict(self), sort_keys=True), _code_version())


def _hash(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _code_version() -> str:
    """Versions plus the source of the modules that define the toy data, the models and their training."""
    import transformers

    from ..training import examples
    from . import models as tiny

    src = "".join(Path(m.__file__).read_text() for m in (tiny, tt, examples))
    return f"viscodex{__version__}|trio{TRIO_VERSION}|demo{DEMO_VERSION}|tf{transformers.__version__}|torch{torch.__version__}|{_hash(src)}"


FULL = DemoConfig()
# The same base, fine-tunes half as long, a shorter sweep and SFT: the README's main command
# and the test suite's end-to-end runs. (Smaller models were tried: with hidden size 64 the coder
# never learnt to copy the colour, docs/demo.md.) Same number of evaluation samples as FULL, so the
# claims' intervals are as narrow.
FAST = DemoConfig(pretrain_steps=2500, coder_steps=800, vlm_steps=600, lambdas=(0.0, 0.5, 0.7, 1.0), sft_samples=96,
                  sft_epochs=1)


# ---------------------------------------------------------------- the trio
def _replay(enc: Encoder, demo: DemoConfig, seed: str, n_task: int, coding: float = 1.0) -> list[dict]:
    """Chat turns from the base's corpus mixed into a fine-tune (as real fine-tunes mix general
    instruction data), so the answer's form follows the prompt rather than the fine-tune; of the
    corpus's coding turns, the fraction `coding` is kept (every 1/coding-th one)."""
    n = int(n_task * demo.replay / (1 - demo.replay))
    turns, k = [], 0
    for d in tt.pretraining_docs(f"replay-{seed}", n * 2):
        if not isinstance(d, tuple):
            continue
        if d[0].startswith(tt.CODE_PROMPT):
            k += 1
            if int(k * coding) == int((k - 1) * coding):
                continue
        turns.append(d)
    return [enc.encode(chat_sample(*d)) for d in turns[:n]]


def train_trio(out: str | os.PathLike, cfg: TinyConfig | None = None, demo: DemoConfig | None = None) -> dict[str, Path]:
    """Train base, coder and VLM (see module docstring) and write them under `out`.

    `cfg` gives the architecture (and seed) when `demo` is not given; training settings then come
    from the FULL demo configuration. Deterministic for a given configuration (thread count included).
    """
    from ..engine.arch import param_role
    from .models import build_processor, build_tokenizer, new_base, new_vlm_from, save_trio

    if demo is None:
        cfg = cfg or TinyConfig()
        demo = dataclasses.replace(FULL, model=cfg, seed=cfg.seed)
    cfg = demo.tiny()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed, bs = demo.seed, demo.batch_size
    scenes = tt.all_scenes()
    record: dict[str, Any] = {"config": asdict(demo), "key": demo.trio_key(), "threads": demo.threads}
    t_all = time.perf_counter()
    with torch_threads(demo.threads), quiet_transformers(), tempfile.TemporaryDirectory(prefix="viscodex-train-") as work:
        work = Path(work)
        tok = build_tokenizer(cfg)
        proc = build_processor(tok, cfg)
        # the SFT pipeline's encoder (chat template, image expansion, loss on assistant turns) for
        # every model: the base and the coder share the VLM's tokenizer and chat template
        enc = Encoder(proc, max_len=512)
        text_batch, vl_batch = SFTCollator(enc.pad_id, token_types=False), SFTCollator(enc.pad_id)

        # 1. base: pre-training on raw and chat text
        base = new_base(cfg, tok).train()
        docs = tt.pretraining_docs(seed, demo.pretrain_steps * bs, code_every=demo.pretrain_code_every)
        data = [enc.encode(chat_sample(*d)) if isinstance(d, tuple) else encode_raw(tok, d) for d in docs]
        record["base"] = fit("base", base, data, text_batch, lr=demo.pretrain_lr, batch_size=bs, seed=seed,
                             steps=demo.pretrain_steps, workdir=work / "base")

        # 2. coder: the base fine-tuned on description -> SVG
        coder = new_base(cfg, tok)
        coder.load_state_dict(base.state_dict())
        coder.train()
        samples = tt.make_samples(tt.CODING, scenes, demo.coder_steps * bs, f"coder-{seed}")
        data = [enc.encode(task_sample(tt.CODING, s)) for s in samples] + _replay(enc, demo, f"coder-{seed}", len(samples))
        record["coder"] = fit("coder", coder, data, text_batch, lr=demo.coder_lr, batch_size=bs, seed=seed + 1,
                              steps=demo.coder_steps, workdir=work / "coder")

        # 3. vlm: base backbone + fresh vision tower, trained together on image -> description
        vlm = new_vlm_from(base, cfg, tok).train()
        samples = tt.make_samples(tt.GROUNDING, scenes, min(demo.vlm_steps * bs, 2048), f"vlm-{seed}",
                                  image_size=cfg.image_size)
        data = [enc.encode(task_sample(tt.GROUNDING, s)) for s in samples] + _replay(enc, demo, f"vlm-{seed}", len(samples), demo.vlm_replay_coding)
        vision = {n for n, _ in vlm.named_parameters() if param_role(n) == "vision"}  # tower + projector
        vis = [p for n, p in vlm.named_parameters() if n in vision]
        lm = [p for n, p in vlm.named_parameters() if n not in vision]
        groups = [{"params": vis, "lr": demo.vision_lr}, {"params": lm, "lr": demo.vlm_lr}]
        record["vlm"] = fit("vlm", vlm, data, vl_batch, lr=demo.vlm_lr, batch_size=bs,
                            seed=seed + 2, steps=demo.vlm_steps, workdir=work / "vlm", param_groups=groups)

        paths = save_trio(out, base, coder, vlm, tok, proc, cfg)
    record["seconds"] = round(time.perf_counter() - t_all, 1)
    (out / "trio.json").write_text(json.dumps(record, indent=2) + "\n")
    return paths


def cached_trio(demo: DemoConfig = FULL, cache: Path | None = None, rebuild: bool = False) -> dict[str, Path]:
    """The trained trio for `demo`, built once under <cache>/trio-<key> (temp folder, then rename)."""
    root = Path(cache) if cache else cache_root()
    final = root / f"trio-{demo.trio_key()}"
    names = ("base", "coder", "vlm")
    if final.exists() and (final / "trio.json").exists() and not rebuild:
        return {n: final / n for n in names}
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        log.info("building the tiny trio (seed %d) in %s ...", demo.seed, final)
        train_trio(tmp, demo=demo)
        if final.exists() and rebuild:
            shutil.rmtree(final)
        if not final.exists():  # else another process finished the same build first: keep its copy
            os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {n: final / n for n in names}


# ---------------------------------------------------------------- evaluation and SFT
def eval_tasks(demo: DemoConfig) -> list:
    """The three toy tasks as evaluation tasks (what `viscodex eval --task toy_*` runs)."""
    from ..evaluation.toy import ToyTask

    return [ToyTask(task, seed=demo.seed, image_size=demo.image_size) for task in tt.TASKS.values()]


def _scores(report: dict, samples: list) -> dict:
    """A runner report in the results' form: the mean of each score, the first answers, and each
    sample's attribute accuracy in sample order (what the claims' paired intervals resample),
    read back from the runner's per-sample file."""
    res = {k: round(v, 4) for k, v in report["metrics"].items() if k != "score"}
    scenes = [tt.Scene(*s.reference["scene"]).description() for s in samples]
    res["examples"] = [{"scene": scene, "output": ex["output"]} for scene, ex in zip(scenes, report["examples"])]
    if not report.get("samples_file"):
        raise DemoError(f"{report['task']}: the evaluation kept no per-sample results; the claims need them")
    by_id = {}
    for line in Path(report["samples_file"]).read_text().splitlines():
        rec = json.loads(line)
        by_id[rec["id"]] = rec["scores"]["attr_acc"]
    res["per_sample"] = [by_id[s.id] for s in samples]
    return res


def _eval_kwargs(demo: DemoConfig) -> dict:
    # on CPU like the training; one scoring thread (parsing an answer takes microseconds)
    return dict(limit=demo.eval_samples, batch_size=EVAL_BATCH, device="cpu", progress=False, workers=1)


def evaluate_variant(path: Path, demo: DemoConfig, reports: list[dict] | None = None,
                     cache_dir: Path | None = None) -> dict[str, dict]:
    """Scores per toy task (image tasks only for VLMs) of the model at `path`, by evaluation.runner,
    which writes each sample's answer and scores under `cache_dir`; `reports` (a sweep's, which
    wrote theirs) are taken as they are instead of evaluating again."""
    from ..engine import arch
    from ..evaluation.runner import evaluate_many

    tasks = eval_tasks(demo)
    if reports is None:
        is_vlm = json.loads((Path(path) / "config.json").read_text()).get("model_type") in arch.VLM_MODEL_TYPES
        tasks = [t for t in tasks if is_vlm or not t.uses_images]
        reports = evaluate_many(path, tasks, resume=False, keep_outputs=3, cache_dir=cache_dir, **_eval_kwargs(demo))
    by_task = {t.name: t for t in tasks}
    return {r["task"][len("toy_"):]: _scores(r, by_task[r["task"]].load(None, demo.eval_samples)) for r in reports}


def sft_image_code(src: Path, dst: Path, demo: DemoConfig) -> dict:
    """Short SFT of a VL model on image -> code with grounding samples mixed in (`sft_grounding` of
    the data, as the paper's MCD mixes general instruction data): the toy samples written as an
    SFT dataset (training.toy_data) and trained by `viscodex train`'s own run_train, which freezes
    the vision tower and projector, writes `dst` atomically and records the training in the
    recipe of a merged variant. Returns that training record."""
    from ..training.toy_data import write_samples
    from ..training.trainer import TrainConfig, run_train

    samples = tt.make_samples(tt.IMAGE_CODE, tt.all_scenes(), demo.sft_samples, f"sft-{demo.seed}",
                              image_size=demo.image_size)
    n_ground = round(demo.sft_samples * demo.sft_grounding / (1 - demo.sft_grounding))
    ground = tt.make_samples(tt.GROUNDING, tt.all_scenes(), n_ground, f"sft-{demo.seed}", image_size=demo.image_size)
    batch = min(demo.batch_size, 16)
    with tempfile.TemporaryDirectory(prefix="viscodex-sft-") as work:
        data = write_samples(Path(work) / "data", [(tt.IMAGE_CODE, x) for x in samples] +
                             [(tt.GROUNDING, x) for x in ground])
        cfg = TrainConfig(
            model=str(src), data=str(data), out=str(dst), checkpoint_dir=str(Path(work) / "checkpoints"),
            epochs=demo.sft_epochs, learning_rate=demo.sft_lr, global_batch=batch, batch_size=batch,
            max_len=512, seed=demo.seed + 3, gradient_checkpointing=False, save_steps=10**6, save_total_limit=None,
            logging_steps=max(1, demo.sft_epochs * (len(samples) + len(ground)) // batch // 4), prepare_procs=1,
            warmup_ratio=0.05)  # as the trio's training (training.examples.fit)
        with quiet_transformers():
            res = run_train(cfg)
    t = res.training
    return {"steps": t["steps"], "final_loss": t["final_loss"], "loss_history": t["loss_history"],
            "seconds": round(res.seconds, 1), "samples": demo.sft_samples, "grounding_samples": n_ground,
            "epochs": demo.sft_epochs, "lr": demo.sft_lr, "frozen": "; ".join(t["frozen"]["modules"])}


# ---------------------------------------------------------------- the demo
def _recipe(paths: dict[str, Path], lam: float, variant: str = "merged"):
    from ..engine.recipe import Recipe

    return Recipe(vlm=str(paths["vlm"]), coder=str(paths["coder"]), base=str(paths["base"]), lam=lam, variant=variant,
                  name=f"toy-{variant}")


def merge_and_sweep(paths: dict[str, Path], demo: DemoConfig, work: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    """The coder-swapped variant (merge engine) and the lambda sweep (evaluation.sweep: merge, then
    evaluate, at each lambda), the merges kept under work/variants/. Returns the folders and the
    scores by results key (swapped, merged-lam<x>)."""
    from ..engine.merge import run_merge
    from ..evaluation.sweep import lam_dir as sweep_dir
    from ..evaluation.sweep import run_sweep

    variants = work / "variants"
    var = {"swapped": run_merge(_recipe(paths, 0.0, "swapped"), variants / "swapped", progress=False,
                                hash_inputs=False).out}
    merges = work / ".sweep-merges"
    sweep = run_sweep(_recipe(paths, demo.lam), _lams(demo), eval_tasks(demo), work / "sweep", keep=True,
                      scratch=merges, merge_device="cpu", **_eval_kwargs(demo))
    scores = {}
    for lam in _lams(demo):
        var[lam_dir(lam)] = variants / lam_dir(lam)
        os.rename(merges / sweep_dir(lam), var[lam_dir(lam)])
        scores[lam_dir(lam)] = evaluate_variant(var[lam_dir(lam)], demo, reports=sweep.reports[lam])
    merges.rmdir()
    return var, scores


def run_demo(out: str | os.PathLike | None = None, demo: DemoConfig = FULL, *, cache: Path | None = None,
             force: bool = False, threads: int | None = None) -> dict:
    """Build (or reuse) the trio, merge, evaluate, fine-tune the three variants, write the table.

    Writes into `out` (default <cache>/demo-<key>): results.json, results.md, accuracy_vs_lambda.png,
    variants/ (merged and swapped models), sweep/ (the lambda sweep: table, plot, per-sample results)
    and sft/ (the three variants after the image -> code SFT).
    An existing `out` from the same configuration is reused as is unless `force`. `threads`
    overrides `demo.threads` (and so names other cached models and another demo folder).
    """
    from .._util.atomic import OutputFolder

    if threads:
        demo = dataclasses.replace(demo, threads=threads)
    out = Path(out).expanduser().absolute() if out else cache_root() / f"demo-{demo.key()}"
    old = _read_results(out)
    if old is not None and not force:
        if old.get("key") == demo.key():
            log.info("reusing %s (same configuration; --force to redo)", out)
            return old
        raise DemoError(f"{out} holds results of another configuration; pass --force to overwrite it")
    empty = out.is_dir() and not any(out.iterdir())
    if out.exists() and old is None and not empty:  # --force never replaces what the demo did not write
        raise DemoError(f"{out} exists and is not a demo folder; choose another --out")
    folder = OutputFolder(out, force=force or empty, markers=(RESULTS_FILE,))  # never replaces foreign files
    t0 = time.perf_counter()
    with torch_threads(demo.threads):
        with folder as tmp:
            t = time.perf_counter()
            built = not ((Path(cache) if cache else cache_root()) / f"trio-{demo.trio_key()}" / "trio.json").exists()
            paths = cached_trio(demo, cache=cache)
            timings = {"trio": round(time.perf_counter() - t, 1), "trio_built": built}
            trio_record = json.loads((paths["base"].parent / "trio.json").read_text())

            t = time.perf_counter()
            log.info("merging: coder-swapped, and the lambda sweep over %s ...", ", ".join(f"{x:g}" for x in _lams(demo)))
            var, sweep_scores = merge_and_sweep(paths, demo, tmp)
            timings["merge"] = round(time.perf_counter() - t, 1)  # with the sweep's evaluations

            t = time.perf_counter()
            models = {"base": paths["base"], "coder": paths["coder"], "vlm": paths["vlm"], "swapped": var["swapped"]}
            scores = {}
            for name, path in models.items():
                log.info("evaluating %s ...", name)
                scores[name] = evaluate_variant(path, demo, cache_dir=tmp / "evals" / name)
            scores.update(sweep_scores)
            timings["eval"] = round(time.perf_counter() - t, 1)

            t = time.perf_counter()
            three = {"vlm": paths["vlm"], "swapped": var["swapped"], "merged": var[lam_dir(demo.lam)]}
            sft, sft_scores = {}, {}
            for name, path in three.items():
                log.info("SFT of %s on %d image -> code samples (+ %.0f %% grounding) ...", VARIANT_NAMES[name],
                         demo.sft_samples, 100 * demo.sft_grounding)
                dst = tmp / "sft" / name
                sft[name] = sft_image_code(path, dst, demo)
                sft_scores[name] = evaluate_variant(dst, demo, cache_dir=tmp / "evals" / f"sft-{name}")
            timings["sft"] = round(time.perf_counter() - t, 1)
            timings["total"] = round(time.perf_counter() - t0, 1)

            results = {
                "key": demo.key(), "config": asdict(demo), "threads": demo.threads,
                "trio": {k: trio_record.get(k) for k in ("key", "base", "coder", "vlm", "seconds", "threads")},
                "chance": round(tt.chance_attr_acc(), 4), "eval_samples": demo.eval_samples,
                "scores": scores, "sft": {"training": sft, "scores": sft_scores}, "timings": timings,
            }
            results["claims"] = decide(results, paper_claims(lam_dir(demo.lam)), model_names(demo.lam))
            (tmp / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
            (tmp / "results.md").write_text(table_markdown(results))
            plot(results, tmp / "accuracy_vs_lambda.png")
    return _read_results(out)


RESULTS_FILE = "results.json"


def _lams(demo: DemoConfig) -> list[float]:
    return sorted(set(demo.lambdas) | {demo.lam})


def _read_results(out: Path) -> dict | None:
    p = out / RESULTS_FILE
    if not p.is_file():
        return None
    try:
        r = json.loads(p.read_text())
    except json.JSONDecodeError:
        return None
    r["out"] = str(out)
    return r


def variant_paths(results: dict) -> dict[str, Path]:
    """The three variants after the image -> code SFT, keyed as the app keys them (vlm, swapped, merged)."""
    out = Path(results["out"])
    return {k: out / "sft" / k for k in VARIANT_NAMES}
