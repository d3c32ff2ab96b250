"""Where the app's models come from: `resolve_variants` (arguments, then VISCODEX_BASE_VLM /
VISCODEX_SWAPPED / VISCODEX_MERGED, then a recipe when one is asked for (its swapped/merged
variants merged once into the cache), else the tiny offline demo trio from `default_variants`)."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from .._util.cache import cache_root
from ..errors import AppError

log = logging.getLogger(__name__)

VARIANTS = ("vlm", "swapped", "merged")
LABELS = {"vlm": "Base VLM", "swapped": "Coder-swapped", "merged": "Merged (VisCodex)"}
ENV_VARS = {"vlm": "VISCODEX_BASE_VLM", "swapped": "VISCODEX_SWAPPED", "merged": "VISCODEX_MERGED"}
RECIPE_ENV = "VISCODEX_RECIPE"
DEMO_LAMBDA = 0.7


def demo_trio_paths(cache: str | os.PathLike | None = None, seed: int = 0) -> dict[str, Path]:
    """Where `default_variants` builds the offline trio (nothing is built here)."""
    from ..toy.models import TinyConfig

    out = (Path(cache) if cache is not None else cache_root()) / f"demo-trio-{TinyConfig(seed=seed).key()}"
    return {"vlm": out / "vlm", "swapped": out / "swapped", "merged": out / "merged"}


def default_variants(cache: str | os.PathLike | None = None, seed: int = 0) -> dict[str, Path]:
    """The offline default: the tiny demo trio, plus its coder-swapped and merged (lambda 0.7)
    variants made with `run_merge`. Built once into the cache (under a lock), then reused."""
    import fcntl
    import shutil

    from ..engine.merge import run_merge
    from ..engine.recipe import Recipe
    from ..toy.models import TinyConfig, build_trio

    cfg = TinyConfig(seed=seed)
    root = Path(cache) if cache is not None else cache_root()
    paths = demo_trio_paths(cache, seed)
    out = paths["vlm"].parent
    done = out / "complete"
    if done.exists():
        return paths
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds it built
        if done.exists():
            return paths
        shutil.rmtree(out, ignore_errors=True)  # a build that was killed half-way
        log.info("building the offline demo trio in %s (once)", out)
        trio = build_trio(out, cfg)
        for variant in ("swapped", "merged"):
            r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), lam=DEMO_LAMBDA,
                       variant=variant, name=f"tiny-{variant}")
            run_merge(r, paths[variant], progress=False, hash_inputs=False)
        done.write_text("ok\n")
    return paths


def _find_recipe(recipe: str | os.PathLike | None) -> Path:
    """A recipe file: the path given (or VISCODEX_RECIPE), else that name among the packaged recipes."""
    given = str(recipe or os.environ.get(RECIPE_ENV, ""))
    packaged = Path(__file__).resolve().parents[1] / "recipes"
    cand = [Path(given).expanduser(), packaged / given, packaged / f"{given}.yaml"]
    for p in cand:
        if p.is_file():
            return p
    names = ", ".join(sorted(f.stem for f in packaged.glob("*.yaml")))
    raise AppError(f"recipe {given!r}: no such file (looked for {', '.join(map(str, cand))}); give a recipe path "
                   f"or a packaged recipe name ({names})")


def build_variant(recipe_path: str | os.PathLike, variant: str, cache: Path | None = None) -> Path:
    """A swapped or merged model for a recipe, merged once into the cache."""
    from ..engine.merge import run_merge
    from ..engine.recipe import Recipe

    r = Recipe.load(recipe_path).with_overrides(variant=variant)
    key = hashlib.sha256(r.dump().encode()).hexdigest()[:12]
    slug = re.sub(r"[^\w.-]+", "-", r.name or "recipe")
    out = (cache or cache_root()) / "variants" / f"{slug}-{variant}-{key}"
    if not out.exists():
        log.info("merging the %s variant of %s into %s (once)", variant, recipe_path, out)
        run_merge(r, out)
    return out


def recipe_sizes(recipe_path: str | os.PathLike) -> str:
    """What building a recipe's variants costs, from safetensors headers (local, or ranged reads of
    the Hub's; nothing downloaded): the two models read and the two merged models written."""
    from .._util.sizes import human_size
    from ..engine.recipe import Recipe
    from ..hub.space import tensor_bytes

    r = Recipe.load(recipe_path)
    vlm, coder = sum(tensor_bytes(r.vlm).values()), sum(tensor_bytes(r.coder).values())
    return (f"recipe {recipe_path}: reads the VLM {r.vlm} ({human_size(vlm)}) and the coder {r.coder} "
            f"({human_size(coder)}), downloaded unless cached, and writes the coder-swapped and merged models "
            f"(about {human_size(vlm)} each) into {cache_root() / 'variants'} once")


def resolve_variants(vlm: str | None = None, swapped: str | None = None, merged: str | None = None, *,
                     recipe: str | os.PathLike | None = None) -> dict[str, str]:
    """Model id or folder per variant: arguments, then environment variables. Variants left unset
    are left out (a Space may publish no swapped model). A recipe (argument, else VISCODEX_RECIPE):
    its VLM and its swapped/merged variants, merged into the cache once, sizes logged first.
    Nothing asked for at all: the tiny offline demo trio (never a download)."""
    given = {"vlm": vlm, "swapped": swapped, "merged": merged}
    specs = {k: v or os.environ.get(ENV_VARS[k]) or None for k, v in given.items()}
    if any(specs.values()):
        missing = [ENV_VARS[k] for k, v in specs.items() if not v]
        if missing:
            log.warning("not set: %s; showing only the configured variants", ", ".join(missing))
        return {k: v for k, v in specs.items() if v}
    if recipe is None and not os.environ.get(RECIPE_ENV):
        log.info("no models configured: the tiny offline demo trio (its answers are noise; real models: "
                 "--vlm/--swapped/--merged, %s, or --recipe)", ", ".join(ENV_VARS.values()))
        return {k: str(v) for k, v in default_variants().items()}
    from ..engine.recipe import Recipe

    rp = _find_recipe(recipe)
    log.warning("%s", recipe_sizes(rp))
    return {"vlm": Recipe.load(rp).vlm, "swapped": str(build_variant(rp, "swapped")),
            "merged": str(build_variant(rp, "merged"))}


def is_untrained_demo_trio(specs: dict[str, str]) -> bool:
    """Whether `specs` are the offline default: the untrained tiny trio (no building done here)."""
    return {k: str(v) for k, v in demo_trio_paths().items()} == {k: str(v) for k, v in specs.items()}
