"""Where the app's models come from: `resolve_variants` (arguments, then VISCODEX_BASE_VLM /
VISCODEX_SWAPPED / VISCODEX_MERGED, then defaults: offline the tiny demo trio from
`default_variants`, online a recipe's swapped/merged variants, merged once into the cache)."""
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
DEFAULT_RECIPE = "recipes/viscodex-8b.yaml"
DEMO_LAMBDA = 0.7


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
    out = root / f"demo-trio-{cfg.key()}"
    paths = {"vlm": out / "vlm", "swapped": out / "swapped", "merged": out / "merged"}
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


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub answers (HF_HUB_OFFLINE counts as no)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return False
    import httpx

    try:
        httpx.head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
        return True
    except httpx.HTTPError:
        return False


def _find_recipe(recipe: str | os.PathLike | None) -> Path:
    cand = [Path(recipe)] if recipe else []
    if not cand and os.environ.get(RECIPE_ENV):
        cand = [Path(os.environ[RECIPE_ENV])]
    if not cand:
        cand = [Path.cwd() / DEFAULT_RECIPE, Path(__file__).resolve().parents[1] / DEFAULT_RECIPE]  # viscodex/recipes/
    for p in cand:
        if p.is_file():
            return p
    raise AppError(
        "no models configured: set " + ", ".join(ENV_VARS.values()) + f" (model ids or folders), or {RECIPE_ENV} "
        f"to a recipe whose swapped/merged variants should be built (looked for {', '.join(map(str, cand))})")


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


def resolve_variants(vlm: str | None = None, swapped: str | None = None, merged: str | None = None, *,
                     recipe: str | os.PathLike | None = None, offline: bool | None = None) -> dict[str, str]:
    """Model id or folder per variant: arguments, then environment variables. Variants left unset
    are left out (a Space may publish no swapped model). Nothing set at all: offline, the tiny demo
    trio; online, the recipe's VLM and its swapped/merged variants, merged into the cache."""
    given = {"vlm": vlm, "swapped": swapped, "merged": merged}
    specs = {k: v or os.environ.get(ENV_VARS[k]) or None for k, v in given.items()}
    if any(specs.values()):
        missing = [ENV_VARS[k] for k, v in specs.items() if not v]
        if missing:
            log.warning("not set: %s; showing only the configured variants", ", ".join(missing))
        return {k: v for k, v in specs.items() if v}
    if offline is None:
        offline = not hub_reachable()
    if offline:
        log.info("no models configured and the Hub is unreachable: using the tiny offline demo trio")
        return {k: str(v) for k, v in default_variants().items()}
    from ..engine.recipe import Recipe

    rp = _find_recipe(recipe)
    return {"vlm": Recipe.load(rp).vlm, "swapped": str(build_variant(rp, "swapped")),
            "merged": str(build_variant(rp, "merged"))}


