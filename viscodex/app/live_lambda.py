"""Live λ: the merged column recomputed in place from the two backbones the app already holds.

With task arithmetic and weights (λ, 1 − λ) the merged backbone is `lerp(coder, vlm, λ)`; the app
holds the VLM (base column) and the coder's backbone inside the VLM (coder-swapped column), so the
merged model at any λ is computed from resident tensors, chunk by chunk into the merged model's own
parameters (no second copy of the model). The arithmetic is the engine's: the registered
task_arithmetic function on the same inputs, the output cast like `run_merge` casts it, the vision
token rows and rows past the shared vocabulary left as the VLM's. Which tensors depend on λ comes
from the merged model's recipe (its tensor rules and roles), and at load time a recompute at the
recipe's λ must reproduce the loaded merged weights bit for bit, or the slider is disabled with the
reason (different sources, a different dtype, weights changed after merging).
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._util.sizes import human_size
from ..engine import arch
from ..errors import ViscodexError

log = logging.getLogger(__name__)
CHUNK_BYTES = 64 * 1024**2  # bound on the temporary of one recompute step
VERIFY_ALL_BYTES = 256 * 1024**2  # below this the load-time check covers every row; above, sampled rows


@dataclass
class Target:
    """One λ-dependent tensor: the merged model's parameter and its two sources, by reference."""

    name: str  # canonical name
    merged: torch.nn.Parameter
    vlm: torch.nn.Parameter
    coder: torch.nn.Parameter  # the coder-swapped model's tensor: the coder's, in the output dtype
    rows: int  # leading rows that are merged (embeddings: the shared vocabulary); the rest stay the VLM's
    keep: tuple[int, ...] = ()  # rows always the VLM's (vision special tokens)


@dataclass
class Recompute:
    """What the last recompute cost: seconds, bytes read + written, the extra memory it needed."""

    lam: float
    seconds: float
    traffic_bytes: int
    peak_extra_bytes: int
    measured_peak: bool  # True: the device's allocator counter; False: the largest chunk's temporaries

    def line(self) -> str:
        how = "measured" if self.measured_peak else "largest chunk"
        return (f"λ recompute: {self.seconds * 1e3:.1f} ms for λ={self.lam:g} ({human_size(self.traffic_bytes)} read + "
                f"written), extra memory {human_size(self.peak_extra_bytes)} ({how})")


@dataclass
class LiveLambda:
    """The merged column's λ. `enabled` False: `reason` says why the slider is off."""

    recipe_lam: float | None = None
    reason: str = ""
    targets: list[Target] = field(default_factory=list)
    method: object = None
    params: dict = field(default_factory=dict)
    # False on ZeroGPU: a GPU call's in-place writes are not known to survive into the next call
    # (each runs in a worker forked from the packed weights), so every call recomputes.
    persistent: bool = True
    last: Recompute | None = None

    def __post_init__(self):
        self.current = self.recipe_lam if self.enabled else None
        self._cond = threading.Condition()
        self._users = 0

    @property
    def enabled(self) -> bool:
        return not self.reason and bool(self.targets)

    # -- the arithmetic
    def _rows(self, t: Target, lam: float, r0: int, r1: int) -> torch.Tensor:
        """Rows [r0, r1) of the merged tensor at `lam`: the engine's method on the engine's inputs
        (native dtype when the method computes in float32 itself, else float32 copies)."""
        vlm, coder = t.vlm.data[r0:r1], t.coder.data[r0:r1]
        if not (self.method.low_precision_ok and vlm.dtype == coder.dtype):
            vlm, coder = vlm.float(), coder.float()
        return self.method.fn(None, [vlm, coder], [lam, 1.0 - lam], **self.params)

    def _chunks(self, t: Target):
        row_bytes = max(1, t.merged.data[:1].numel() * 4)  # float32 temporaries bound the step
        step = max(1, CHUNK_BYTES // row_bytes)
        for r0 in range(0, t.rows, step):
            yield r0, min(t.rows, r0 + step)

    @torch.no_grad()
    def set_lambda(self, lam: float) -> float:
        """Recompute the merged weights at `lam` in place; returns the seconds it took (the
        benchmark's handle). Not synchronised with generation: use `at(lam)` while serving."""
        if not self.enabled:
            from ..errors import AppError

            raise AppError(f"λ cannot be changed: {self.reason}")
        lam = float(lam)
        self.current = None  # until every tensor is written: a failure half-way forces a full recompute
        dev = self.targets[0].merged.device
        cuda = dev.type == "cuda"
        if cuda:
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
        t0 = time.perf_counter()
        traffic = biggest = 0
        for t in self.targets:
            for r0, r1 in self._chunks(t):
                out = self._rows(t, lam, r0, r1)
                t.merged.data[r0:r1].copy_(out)  # the cast run_merge does (out dtype = merged dtype)
                biggest = max(biggest, out.numel() * out.element_size() * (1 if out.dtype == t.vlm.dtype else 3))
            if t.keep:
                idx = torch.tensor(t.keep, device=dev)
                t.merged.data.index_copy_(0, idx, t.vlm.data.index_select(0, idx))
            traffic += 3 * t.rows * t.merged.data[:1].numel() * t.merged.element_size()
        if cuda:
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(dev) - base if cuda else biggest
        self.current = lam
        self.last = Recompute(lam, seconds, traffic, peak, cuda)
        return seconds

    def _expected(self, t: Target, lam: float, r0: int, r1: int) -> torch.Tensor:
        out = self._rows(t, lam, r0, r1).to(t.merged.dtype)
        for r in t.keep:
            if r0 <= r < r1:
                out[r - r0] = t.vlm.data[r]
        return out

    @torch.no_grad()
    def verify(self, lam: float | None = None) -> str:
        """'' when recomputing at `lam` (default: the recipe's) reproduces the merged weights now
        held, bit for bit; else which rows differ. Checks every row of small models, and eight
        spread rows plus the kept rows of each tensor of large ones."""
        lam = self.recipe_lam if lam is None else lam
        total = sum(t.merged.numel() * t.merged.element_size() for t in self.targets)
        for t in self.targets:
            if total <= VERIFY_ALL_BYTES:
                spans = list(self._chunks(t))
            else:
                rows = {int(r) for r in torch.linspace(0, t.rows - 1, 8).tolist()} | set(t.keep)
                spans = [(r, r + 1) for r in sorted(rows)]
            for r0, r1 in spans:
                if not torch.equal(self._expected(t, lam, r0, r1), t.merged.data[r0:r1]):
                    return f"{t.name} rows {r0}-{r1 - 1} differ from lerp(coder-swapped, VLM, {lam:g})"
        return ""

    # -- serving
    def forget(self) -> None:
        """On ZeroGPU, called at the start of each GPU call: the weights there are not known."""
        if not self.persistent:
            with self._cond:
                if not self._users:
                    self.current = None

    @contextmanager
    def at(self, lam: float | None, stop: threading.Event | None = None):
        """Hold the merged weights at `lam` (None: the recipe's) while the body runs. Requests at
        the same λ share them; a request at another λ waits until they finish."""
        lam = self.recipe_lam if lam is None or not self.enabled else float(lam)
        if not self.enabled:
            yield None
            return
        with self._cond:
            while self._users and self.current != lam:
                if stop is not None and stop.is_set():
                    raise InterruptedError("stopped while waiting for the merged weights")
                self._cond.wait(0.1)
            recomputed = None
            if self.current != lam:
                self.set_lambda(lam)
                recomputed = self.last
            self._users += 1
        try:
            yield recomputed
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()


def read_recipe(spec: str):
    """The merged model's viscodex_recipe.yaml (a folder, or a Hub id from the local cache), or None."""
    from ..engine.recipe import RECIPE_FILE, Recipe
    from ..engine.sources import parse_spec

    ref, rev = parse_spec(spec)
    p = Path(ref).expanduser()
    if p.is_dir():
        f = p / RECIPE_FILE
    else:
        from transformers.utils import cached_file

        try:
            f = cached_file(ref, RECIPE_FILE, revision=rev, _raise_exceptions_for_missing_entries=False)
        except OSError:
            f = None
        f = Path(f) if f else None
    if f is None or not f.is_file():
        return None
    try:
        return Recipe.load(f)
    except ViscodexError as e:
        raise ViscodexError(f"its {RECIPE_FILE} cannot be read ({e})") from None


def _canonical(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    params = dict(model.named_parameters())
    layout = arch.detect_layout(params)
    return {arch.to_canonical(k, layout): p for k, p in params.items()}


def live_lambda(variants: dict, persistent: bool = True, recipe=None) -> LiveLambda:
    """The merged variant's live λ from the loaded `variants` (name -> Variant), or a disabled one
    whose `reason` the slider shows. `recipe`: how the merged model was made (default: its
    viscodex_recipe.yaml). Call before the models move to a ZeroGPU device: the load-time check
    runs on whatever device the weights are on."""
    from ..engine.methods import get_method
    from ..engine.plan import tensor_policy

    if "merged" not in variants:
        return LiveLambda(reason="no merged variant is loaded")
    try:
        recipe = recipe or read_recipe(variants["merged"].spec)
    except ViscodexError as e:  # the app still serves the merged model, at its own weights
        return LiveLambda(reason=str(e))
    if recipe is None:
        return LiveLambda(reason="the merged model has no viscodex_recipe.yaml, so how it was merged is unknown")
    lam = float(recipe.lam)
    if recipe.method != "task_arithmetic":
        return LiveLambda(lam, f"it was merged with {recipe.method}, whose weights are precomputed (only task "
                               f"arithmetic is a lerp of the two backbones)")
    if recipe.records.get("training"):
        return LiveLambda(lam, "the merged model was fine-tuned after merging (its recipe has a training "
                               "record): a lerp of the two backbones cannot reproduce it")
    missing = [n for n in ("vlm", "swapped") if n not in variants]
    if missing:
        return LiveLambda(lam, "it needs the base VLM and the coder-swapped model loaded (missing: "
                               + ", ".join(missing) + ")")
    method = get_method(recipe.method)
    params = method.validate_params(recipe.params)
    if method.needs_base(recipe.weights, params):
        return LiveLambda(lam, f"its task arithmetic reads the base LLM (scale {params.get('scale')}), which the "
                               f"app does not hold")
    used = recipe.records.get("policy_used") or {}
    shared_rows = used.get("shared_vocab_rows")
    keep = tuple(used.get("vision_token_rows_from_vlm") or ())
    merged, vlm, coder = (_canonical(variants[n].model) for n in ("merged", "vlm", "swapped"))
    targets = []
    for name, p in merged.items():
        role, policy = tensor_policy(recipe, name)
        if policy != "merge":
            continue  # the same at every λ
        if name not in vlm or name not in coder:
            return LiveLambda(lam, f"{name} is missing from the base VLM or the coder-swapped model")
        if not (p.shape == vlm[name].shape == coder[name].shape):
            return LiveLambda(lam, f"{name} has shapes {list(p.shape)} / {list(vlm[name].shape)} / "
                                   f"{list(coder[name].shape)} in the merged / VLM / coder-swapped models")
        rows = p.shape[0] if p.dim() else 1
        if role == "embedding" and shared_rows is not None:
            rows = min(rows, int(shared_rows))
        targets.append(Target(name, p, vlm[name], coder[name], rows,
                              tuple(k for k in keep if k < rows) if role == "embedding" else ()))
    live = LiveLambda(lam, "" if targets else "no tensor of the merged model is merged", targets, method, params,
                      persistent)
    if live.enabled:
        problem = live.verify()
        if problem:
            return LiveLambda(lam, f"recomputing λ={lam:g} from the loaded VLM and coder-swapped weights does not "
                                   f"reproduce the merged model ({problem}): other sources or dtype, or weights "
                                   f"changed after merging")
    return live
