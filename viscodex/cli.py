"""The `viscodex` command line (typer). Each command is a thin layer over a library function."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from ._util.sizes import human_size
from ._version import __version__
from .cli_options import derive, parse_key_values
from .app.options import AppOptions
from .engine.options import DEFAULT_SHARD_SIZE, MergeOptions
from .engine.options import FLAG_NAMES as MERGE_FLAGS
from .errors import RecipeError, ViscodexError
from .evaluation.options import EvalOptions, SweepOptions
from .hub.options import SPACE_FLAGS, CardOptions, PublishOptions, SpaceOptions
from .training.flags import FLAG_NAMES as TRAIN_FLAGS
from .training.trainer import TrainConfig  # the train options' model (imports torch)

# `viscodex --help` lists the commands in the order a user needs them: try the demo, look at the
# sources, merge (and choose lambda), fine-tune, evaluate, publish, serve.
ORDER = ["demo", "tiny", "inspect", "methods", "merge", "sweep", "train", "eval", "card", "publish", "space", "app"]


class _Ordered(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        return sorted(super().list_commands(ctx), key=lambda c: ORDER.index(c) if c in ORDER else len(ORDER))


app = typer.Typer(
    name="viscodex",
    cls=_Ordered,
    help="Merge a code LLM into a Qwen2.5-VL language backbone (VisCodex), fine-tune, publish and demo it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # plain click help: rich markup would eat `[@revision]` and print flags as `<bool>`
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
log = logging.getLogger(__name__)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "httpx2", "httpcore"):  # one line per request otherwise (huggingface_hub 2 logs via httpx2)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # huggingface_hub has its own stderr handler: propagating to ours printed every retry line twice
    logging.getLogger("huggingface_hub").propagate = False


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"viscodex {__version__}")
        raise typer.Exit()


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
          version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                                callback=_print_version)] = False) -> None:
    _setup_logging(verbose)


MERGE_HELP = {
    "device": "Where the math runs: cpu, cuda, cuda:1 ...",
    "shard_size": "Max shard size, e.g. 5GB, 500MB or a byte count.",
    "threads": "Threads reading the sources.",
    "compute_threads": "torch threads for the math (default: all cores for whole-matrix methods; for element-wise "
                       "ones the cores the read/hash/write pipeline leaves free, at least 1).",
    "force": "Overwrite --out if it exists.",
    "hash_inputs": "Record the sha256 of local input files in the recipe (--no-hash-inputs to skip).",
}


@app.command()
@derive(MergeOptions, help=MERGE_HELP, skip=("progress",), names=MERGE_FLAGS,
        show_default={"shard_size": str(DEFAULT_SHARD_SIZE)})
def merge(
    recipe: Annotated[Optional[Path], typer.Argument(help="Recipe YAML (or a merged folder holding viscodex_recipe.yaml).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (must not exist unless --force).")] = ...,
    vlm: Annotated[Optional[str], typer.Option(help="VLM: local folder or Hub id[@revision].")] = None,
    coder: Annotated[Optional[str], typer.Option(help="Code LLM: local folder or Hub id[@revision].")] = None,
    base: Annotated[Optional[str], typer.Option(help="Base LLM both were fine-tuned from.")] = None,
    lam: Annotated[Optional[float], typer.Option("--lam", "--lambda", help="Weight of the VLM's task vector (coder gets 1 - lam).")] = None,
    method: Annotated[Optional[str], typer.Option(help="Merge method (see `viscodex methods`).")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Method parameter key=value (repeatable).")] = None,
    variant: Annotated[Optional[str], typer.Option(help="merged (default) or swapped (the coder-swapped baseline).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="auto (the VLM's), bfloat16, float16 or float32.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for stochastic methods (DARE).")] = None,
    allow_extrapolation: Annotated[bool, typer.Option("--allow-extrapolation", help="Allow lambda outside [0, 1].")] = False,
    no_hash: Annotated[bool, typer.Option("--no-hash", help="Same as --no-hash-inputs.")] = False,
    options: MergeOptions = MergeOptions(),
) -> None:
    """Merge a VLM and a code LLM (task arithmetic on the language backbone by default)."""
    from .engine.merge import run_merge
    from .engine.recipe import Recipe

    def run():
        if recipe is not None:
            r = Recipe.load(recipe)
        else:
            if not vlm or not coder:
                raise RecipeError("give a recipe file, or at least --vlm and --coder")
            r = Recipe(vlm=vlm, coder=coder)
        flag_params = parse_key_values(param, "--param")
        if method is not None and method != r.method:
            r.params = {}  # the recipe's parameters belong to its own method
        r = r.with_overrides(vlm=vlm, coder=coder, base=base, lam=lam, method=method, variant=variant, dtype=dtype,
                             seed=seed, allow_extrapolation=allow_extrapolation or None)
        r.params = {**r.params, **flag_params}
        if no_hash:
            options.hash_inputs = False
        res = run_merge(r, out, **options.kwargs())
        gb = res.bytes_written / 1e9
        what = f"{r.method}, lambda={r.lam}" if r.variant == "merged" else "the coder's backbone in the VLM"
        typer.echo(f"wrote {res.out} ({r.variant}: {what}) - {len(res.files)} shard(s), {gb:.3f} GB in {res.seconds:.1f}s")

    _guard(run)


@app.command()
def inspect(
    sources: Annotated[list[str], typer.Argument(help="Local folders or Hub ids; give VLM, coder, base to check a trio.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show each source's architecture, backbone dims, key layout, dtype and size, and trio compatibility."""
    from .engine.inspect_sources import inspect_sources

    _guard(lambda: typer.echo(inspect_sources(sources, as_json=as_json)))


@app.command()
def methods() -> None:
    """List the merge methods with their parameters and references."""
    from .engine.methods import METHODS
    from .engine.methods.paper import paper_flags

    for m in METHODS.values():
        ps = ", ".join(f"{p.name}={p.default!r}" for p in m.params) or "-"
        typer.echo(f"{m.name:22s} params: {ps}\n{'':22s} {m.reference}\n{'':22s} as published: {paper_flags(m.name)}")


@app.command()
def tiny(
    out: Annotated[Path, typer.Argument(help="Folder to write base/, coder/ and vlm/ into.")],
    seed: Annotated[int, typer.Option(help="Seed (same seed, same bytes).")] = 0,
    tied: Annotated[bool, typer.Option("--tied", help="Tie lm_head to the embeddings (like Qwen2.5 0.5B-3B).")] = False,
) -> None:
    """Build a tiny untrained trio (real Qwen2 / Qwen2.5-VL classes, tokenizer, processor) to try commands offline."""
    from .toy.models import TinyConfig, build_trio

    def run():
        paths = build_trio(out, TinyConfig(seed=seed, tie_word_embeddings=tied))
        for role, p in paths.items():
            typer.echo(f"{role:6s} {p}")

    _guard(run)


TRAIN_HELP = {
    "model": "Merged model: local folder or Hub id (a Qwen2.5-VL model).",
    "data": "Records: .json/.jsonl file, folder, or Hub dataset id (e.g. lingjie23/MultimodalCodingDataset).",
    "out": "Output model folder (must not exist unless --force).",
    "images": "Folder that image paths in the records are relative to.",
    "epochs": "Epochs over the data (paper: 2).",
    "learning_rate": "AdamW learning rate (paper: 1e-5).",
    "global_batch": "Sequences per optimizer step, over all GPUs (paper: 128); reached by gradient accumulation.",
    "batch_size": "Sequences per GPU per forward pass.",
    "max_len": "Max tokens per sequence, image tokens included (paper: 8192).",
    "max_steps": "Stop after this many optimizer steps (overrides --epochs).",
    "min_pixels": "Smallest image area after resizing (default: the processor's).",
    "max_pixels": "Largest image area after resizing (default: the processor's).",
    "truncation": "Over-long records: truncate (cut the answer's tail) or drop.",
    "freeze_embeddings": "Also freeze embed_tokens and lm_head.",
    "warmup_ratio": "Fraction of steps for linear warm-up.",
    "lr_scheduler": "transformers scheduler name (cosine, linear, constant...).",
    "weight_decay": "AdamW weight decay.",
    "max_grad_norm": "Gradient clipping norm.",
    "seed": "Seed for data order and initialisation.",
    "bf16": "bfloat16 autocast (default: on when the GPU supports it).",
    "dtype": "Weights and optimizer state while training: float32 (fp32 master weights) or bfloat16 (halves memory).",
    "gradient_checkpointing": "Recompute activations in backward to save memory.",
    "save_steps": "Checkpoint every N optimizer steps.",
    "save_total_limit": "Keep at most N checkpoints.",
    "logging_steps": "Log every N optimizer steps.",
    "resume": "'auto' (latest checkpoint in --checkpoint-dir) or a checkpoint folder.",
    "checkpoint_dir": "Where checkpoints go (default: <out>-checkpoints).",
    "max_records": "Use only the first N records.",
    "workers": "Data loader worker processes.",
    "attn_implementation": "sdpa (default), flash_attention_2, eager.",
    "report_to": "Experiment tracker: none, tensorboard, wandb, trackio...",
    "force": "Overwrite --out if it exists.",
    "extra_args": "Any other transformers TrainingArguments field, e.g. --extra-arg adam_beta2=0.95.",
    "packing": "Padding-free: each micro-batch's records in one row, no attention across records.",
    "fsdp": "FSDP2 full sharding without an accelerate config (torchrun --nproc-per-node N -m viscodex train ... --fsdp).",
    "prepare_only": "Check the records, write the cached index into the checkpoint folder, and stop.",
    "prepare_procs": "Processes per rank checking records (default: CPU cores / local ranks).",
    "prepare_chunk": "Records per cached part of the data check (what a killed run keeps).",
    "lora_r": "LoRA rank: train adapters on the language backbone's linear layers only (peft).",
    "lora_alpha": "LoRA alpha (default 2 x rank).",
    "lora_dropout": "LoRA dropout.",
    "qlora": "QLoRA: load the model in 4-bit NF4 (bitsandbytes, CUDA); needs --lora-r.",
    "merge_lora": "Write a full checkpoint (adapter merged in) instead of the adapter.",
    "eval_split": "Validation: a fraction of the records (0.01) or a separate data file; eval loss goes into the recipe.",
    "eval_steps": "Evaluate every N optimizer steps (default: --save-steps) and at the end.",
    "optim": "transformers optimizer name: adamw_torch, adamw_torch_fused, adamw_8bit (bitsandbytes), adafactor...",
    "train_projector": "Also train the projector (visual.merger); the vision encoder stays frozen.",
    "projector_lr": "Learning rate of the projector with --train-projector (default: --lr).",
}


@app.command()
@derive(TrainConfig, help=TRAIN_HELP, arguments=("model",), skip=("progress",),
        names=TRAIN_FLAGS)
def train(cfg: TrainConfig) -> None:
    """Fine-tune a merged model (SFT) with the vision encoder and projector frozen. The options are
    TrainConfig's fields (`viscodex.train(model, data, out, **fields)` from Python)."""
    from .training.trainer import run_train

    def run():
        res = run_train(cfg)
        if cfg.prepare_only:
            d = res.training["data"]
            typer.echo(f"checked {d['records']} records: {d['used']} used, skipped {d['skipped'] or 'none'}")
            return
        if res.training:  # rank 0
            d = res.training["data"]
            typer.echo(f"wrote {res.out} - {res.global_step} steps, final loss {res.final_loss}, "
                       f"{d['used']}/{d['records']} records used in {res.seconds:.1f}s")

    _guard(run)


@app.command()
@derive(CardOptions)
def card(
    folder: Annotated[Path, typer.Argument(help="Merged model folder (holds viscodex_recipe.yaml).")],
    validate: Annotated[bool, typer.Option("--validate", help="Also validate the metadata with the Hub (network).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Write README.md without printing it.")] = False,
    options: CardOptions = CardOptions(),
) -> None:
    """Write (or refresh) the folder's README.md model card from its recipe, and print it."""
    from .hub.card import validate_card, write_card

    def run():
        path, build = write_card(folder, **options.kwargs())
        if validate:
            validate_card(build.card, remote=True)
        if not quiet:
            typer.echo(str(build.card))
        typer.echo(f"wrote {path}", err=True)

    _guard(run)


@app.command()
@derive(PublishOptions)
def publish(
    folder: Annotated[Path, typer.Argument(help="Merged model folder to upload.")],
    repo: Annotated[str, typer.Option("--repo", help="Hub repo id, namespace/name (created if needed).")] = ...,
    options: PublishOptions = PublishOptions(),
) -> None:
    """Upload a merged folder to the Hub with a model card generated from its recipe."""
    from .hub.publish import format_files
    from .hub.publish import publish as run_publish

    def run():
        res = run_publish(folder, repo, **options.kwargs())
        if options.dry_run:
            typer.echo(res.card)
            typer.echo(f"--- dry run: would commit to {res.repo_id}@{res.revision}: {res.commit_message}")
            typer.echo(format_files(res.files))
            typer.echo("nothing was uploaded")
        elif not res.changed:
            typer.echo(f"nothing changed: {res.url} (revision {res.revision}) already holds these {len(res.files)} "
                       f"files (commit {res.commit})")
        else:
            typer.echo(f"published {len(res.files)} files ({human_size(res.total_bytes)}) to {res.url} "
                       f"(revision {res.revision}, commit {res.commit})")

    _guard(run)


@app.command()
@derive(SpaceOptions, names=SPACE_FLAGS)
def space(options: SpaceOptions) -> None:
    """Publish the demo Space: app, package, requirements and a README generated from space_config/."""
    from .hub.publish import format_files
    from .hub.space import publish_space

    def run():
        plan = publish_space(**options.kwargs())
        fp = plan.footprint
        if options.dry_run:
            typer.echo(plan.readme)
            typer.echo(f"--- dry run: would publish Space {plan.repo_id}")
            typer.echo(format_files(plan.files))
        for k, v in plan.variables.items():
            typer.echo(f"variable {k}={v}")
        typer.echo(f"GPU footprint {human_size(fp.total)} -> hardware {plan.hardware}"
                   + (f", ZeroGPU slice {fp.slice}" if plan.hardware == "zero-a10g" else ""))
        typer.echo("nothing was uploaded" if options.dry_run else f"published {plan.url} (commit {plan.commit})")
        typer.echo(f"app {plan.app_url} (an example: {plan.app_url}/?example=bar_chart)")

    _guard(run)


@app.command("app")
@derive(AppOptions)
def app_cmd(options: AppOptions) -> None:
    """Launch the side-by-side demo (app.py): base VLM, coder-swapped and merged. Nothing given:
    the tiny offline demo trio (no downloads)."""
    from .app.ui import run_app

    _guard(lambda: run_app(options.variants(), **options.kwargs()))


@app.command("eval")
@derive(EvalOptions, skip=("progress",),
        help={"cache_dir": "Per-sample results for resuming (default: <out>.samples/)."})
def eval_cmd(
    model: Annotated[Optional[str], typer.Argument(help="Model to evaluate: local folder or Hub id (omit with --predictions).")] = None,
    task: Annotated[list[str], typer.Option("--task", "-t", help="mmcode, chartmimic, design2code, toy_grounding, toy_coding, toy_image_code (repeatable).")] = ...,
    predictions: Annotated[Optional[Path], typer.Option("--predictions", help="Score answers made elsewhere, no model: JSONL of {\"id\": <benchmark sample id>, \"response\": <full text>} (one --task).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Results JSON.")] = Path("results.json"),
    write_recipe: Annotated[bool, typer.Option("--write-recipe", help="Record the results in MODEL's viscodex_recipe.yaml (shown by `viscodex card`).")] = False,
    unsafe_executor: Annotated[bool, typer.Option("--unsafe-executor", help="Run generated code even where the sandbox's seccomp/Landlock layers are unavailable (weaker protection; same as VISCODEX_UNSAFE_EXECUTOR=1).")] = False,
    options: EvalOptions = EvalOptions(),
) -> None:
    """Score a model on multimodal code benchmarks (generated code runs only in the sandbox)."""
    from .evaluation.records import card_entries, write_to_recipe
    from .evaluation.runner import check_model_spec, evaluate_many, score_predictions, write_json
    from .errors import EvalError

    def run():
        if (model is None) == (predictions is None):
            raise EvalError("give a MODEL to evaluate or --predictions FILE to score answers made elsewhere (one of the two)")
        if predictions is not None and (len(task) != 1 or write_recipe):
            raise EvalError("--predictions scores one --task (ids are per benchmark) and records nothing in a recipe")
        if model is not None:
            check_model_spec(model)  # a mistyped folder is the one line the user sees, before any header
        tasks = options.tasks(task)
        _sandbox_header(unsafe_executor)
        if predictions is not None:
            reports = [score_predictions(tasks[0], predictions, **options.score_kwargs())]
        else:
            kw = options.kwargs()
            kw["cache_dir"] = kw["cache_dir"] or out.with_name(out.stem + ".samples")
            reports = evaluate_many(model, tasks, **kw)
        write_json(out, {"model": model if model is not None else f"predictions: {predictions}", "results": reports})
        for r in reports:
            if r.get("missing_predictions"):
                miss = r["missing_predictions"]
                typer.echo(f"{len(miss)} sample{'s' if len(miss) > 1 else ''} without a prediction (counted as failed): "
                           + ", ".join(miss[:20]) + (" ..." if len(miss) > 20 else ""))
            if r.get("unknown_predictions"):
                typer.echo(f"{len(r['unknown_predictions'])} prediction id(s) are not {r['task']} samples and were ignored: "
                           + ", ".join(r["unknown_predictions"][:20]))
            if r.get("note"):
                typer.echo(f"note: {r['note']}")
            how = "predictions made elsewhere" if predictions is not None else f"{r['generated']} generated, {r['cached']} cached"
            typer.echo(f"{r['task']:16s} {100 * r['score']:6.2f}%  {r['metric_name'] or r['metric']} over {r['n']} samples ({how})")
        typer.echo(f"wrote {out}")
        if write_recipe:
            path = write_to_recipe(model, [e for r in reports for e in card_entries(r)])
            typer.echo(f"recorded the results in {path} (run `viscodex card {model}` to refresh the model card)")

    _guard(run)


@app.command()
@derive(SweepOptions, skip=("progress",))
def sweep(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (or a merged folder holding viscodex_recipe.yaml).")],
    lambdas: Annotated[str, typer.Option("--lambdas", help="Comma-separated lambdas, e.g. 0.5,0.6,0.7,0.8,0.9.")] = ...,
    task: Annotated[list[str], typer.Option("--task", "-t", help="Task(s) to evaluate (see --select).")] = ...,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for table.md, plot.png, results.json and per-lambda caches.")] = ...,
    options: SweepOptions = SweepOptions(),
) -> None:
    """Merge at each lambda, evaluate, and report the best lambda (table, plot, JSON)."""
    from .evaluation.sweep import parse_lambdas, run_sweep
    from .engine.recipe import Recipe

    def run():
        res = run_sweep(Recipe.load(recipe), parse_lambdas(lambdas), task, out, **options.kwargs())
        typer.echo(res.table.read_text(), nl=False)
        if res.best_lambda is None:
            typer.echo(f"best lambda: none ({res.no_signal})")
        else:
            typer.echo(f"best lambda: {res.best_lambda:g} (by {res.selected_by})")
        typer.echo(f"wrote {res.table}, {res.plot}, {res.results}")
        if res.recipe_written:
            typer.echo(f"recorded the results in {res.recipe_written}")

    _guard(run)


@app.command()
def demo(
    no_app: Annotated[bool, typer.Option("--no-app", help="Print the table and stop (do not launch the app).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the toy trio, data and training (same seed, same models).")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the table, plot and models (default: in the user cache).")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="The same models trained about half as long, a shorter sweep (about 1.5 minutes on an idle 2-core machine).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Redo the merges, evaluation and SFT even if --out holds them.")] = False,
    compute_threads: Annotated[Optional[int], typer.Option(help="torch threads for training and evaluation (default 1: the fastest measured on 2 cores; another count trains other models, cached apart).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="The app's server port (default 7860).")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="The app's server address (default 127.0.0.1).")] = None,
) -> None:
    """Toy VisCodex, offline: train a tiny base/coder/VLM trio (cached), merge, evaluate base VLM vs
    coder-swapped vs merged (and a lambda sweep), fine-tune the three briefly on image -> code, print
    the table, then launch the app on them."""
    import dataclasses

    from .toy.demo import FAST, FULL, run_demo, variant_paths

    def run():
        cfg = dataclasses.replace(FAST if fast else FULL, seed=seed)
        res = run_demo(out, cfg, force=force, threads=compute_threads)
        folder = Path(res["out"])
        typer.echo((folder / "results.md").read_text(), nl=False)
        typer.echo(f"wrote {folder / 'results.md'}, {folder / 'results.json'}, {folder / 'accuracy_vs_lambda.png'}")
        if not no_app:
            from .app.ui import run_app

            paths = variant_paths(res)
            log.info("opening the comparison app on %s", ", ".join(f"{k}={v}" for k, v in paths.items()))
            run_app(paths, port=port, host=host)

    _guard(run)


def _sandbox_header(unsafe: bool) -> None:
    """Say once how generated code will be isolated (the tasks that run code refuse when it cannot be)."""
    from . import sandbox

    if unsafe:
        sandbox.allow_unsafe()
    typer.echo(sandbox.status().line, err=True)


def _guard(fn) -> None:
    """Run a command body; a ViscodexError becomes one clear message and exit code 2."""
    try:
        fn()
    except ViscodexError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt as e:
        from ._util.atomic import Terminated

        why = f"terminated ({e})" if isinstance(e, Terminated) else "interrupted"
        typer.echo(f"{why}; nothing was written to the output folder", err=True)
        raise typer.Exit(128 + (e.signum if isinstance(e, Terminated) else 2)) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
