"""The `viscodex` command line (typer). Each command is a thin layer over a library function."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml

from .errors import ViscodexError

app = typer.Typer(
    name="viscodex",
    help="Merge a code LLM into a Qwen2.5-VL language backbone (VisCodex), fine-tune, publish and demo it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
log = logging.getLogger("viscodex")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    _setup_logging(verbose)


@app.command()
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
    device: Annotated[str, typer.Option(help="Where the math runs: cpu, cuda, cuda:1 ...")] = "cpu",
    shard_size: Annotated[str, typer.Option(help="Max shard size, e.g. 5GB.")] = "5GB",
    threads: Annotated[int, typer.Option(help="Reader threads.")] = 4,
    allow_extrapolation: Annotated[bool, typer.Option("--allow-extrapolation", help="Allow lambda outside [0, 1].")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    no_hash: Annotated[bool, typer.Option("--no-hash", help="Skip sha256 of local input files in the recipe.")] = False,
) -> None:
    """Merge a VLM and a code LLM (task arithmetic on the language backbone by default)."""
    from .merge import run_merge
    from .recipe import Recipe

    def run():
        if recipe is not None:
            r = Recipe.load(recipe)
        else:
            if not vlm or not coder:
                raise ViscodexError("give a recipe file, or at least --vlm and --coder")
            r = Recipe(vlm=vlm, coder=coder)
        flag_params = {}
        for kv in param or []:
            k, sep, v = kv.partition("=")
            if not sep:
                raise ViscodexError(f"--param {kv!r}: expected key=value")
            flag_params[k.strip()] = yaml.safe_load(v)
        if method is not None and method != r.method:
            r.params = {}  # the recipe's parameters belong to its own method
        r = r.with_overrides(vlm=vlm, coder=coder, base=base, lam=lam, method=method, variant=variant, dtype=dtype,
                             seed=seed, allow_extrapolation=allow_extrapolation or None)
        r.params = {**r.params, **flag_params}
        res = run_merge(r, out, device=device, shard_size=shard_size, threads=threads, force=force, hash_inputs=not no_hash)
        gb = res.bytes_written / 1e9
        typer.echo(
            f"wrote {res.out} ({r.variant}, {r.method}, lambda={r.lam}) - {len(res.files)} shard(s), {gb:.3f} GB "
            f"in {res.seconds:.1f}s"
        )

    _guard(run)


@app.command()
def inspect(
    sources: Annotated[list[str], typer.Argument(help="Local folders or Hub ids; give VLM, coder, base to check a trio.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show each source's architecture, backbone dims, key layout, dtype and size, and trio compatibility."""
    from .inspect_sources import inspect_sources

    _guard(lambda: typer.echo(inspect_sources(sources, as_json=as_json)))


@app.command()
def methods() -> None:
    """List the merge methods with their parameters and references."""
    from .methods import METHODS

    for m in METHODS.values():
        ps = ", ".join(f"{p.name}={p.default!r}" for p in m.params) or "-"
        typer.echo(f"{m.name:22s} params: {ps}\n{'':22s} {m.reference}")


def _guard(fn) -> None:
    """Run a command body; a ViscodexError becomes one clear message and exit code 2."""
    try:
        fn()
    except ViscodexError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted; nothing was written to the output folder", err=True)
        raise typer.Exit(130) from None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
