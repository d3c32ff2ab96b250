"""Three variants side by side: the base VLM, the coder-swapped model and the merged (VisCodex) model.

`load_variants` loads the three, checks (does not assume) which of them have identical vision
towers, vision configs and processors, and keeps one vision module per identical group, so a
request costs one vision pass per group (one in the usual case) and three language backbones.
`VariantSet.stream` runs the three `generate` calls at once (one thread each, fed the shared image
features through transformers' `mm_encoder_outputs`) and yields the three texts as they grow.

Where models come from: `resolve_variants` (arguments, then VISCODEX_BASE_VLM / VISCODEX_SWAPPED /
VISCODEX_MERGED, then defaults: offline the tiny demo trio from `default_variants`, online a recipe).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from ..engine import arch
from .._util.cache import cache_root
from .._util.zerogpu import zerogpu_slice
from .._util.sizes import human_size
from ..errors import AppError, SourceError

log = logging.getLogger(__name__)

VARIANTS = ("vlm", "swapped", "merged")
LABELS = {"vlm": "Base VLM", "swapped": "Coder-swapped", "merged": "Merged (VisCodex)"}
ENV_VARS = {"vlm": "VISCODEX_BASE_VLM", "swapped": "VISCODEX_SWAPPED", "merged": "VISCODEX_MERGED"}
RECIPE_ENV = "VISCODEX_RECIPE"
GPU_SIZE_ENV = "VISCODEX_GPU_SIZE"  # ZeroGPU slice (large/xlarge), set by `viscodex space`
DEFAULT_RECIPE = "recipes/viscodex-8b.yaml"
DEMO_LAMBDA = 0.7


# ---------------------------------------------------------------- tasks and output handling
@dataclass(frozen=True)
class Task:
    instruction: str
    language: str | None  # gr.Code language of the extracted code
    preview: str  # "html", "chart" or "auto" (decided from the code block)


TASKS = {
    "HTML page": Task("Write the HTML for this page. Reply with one complete HTML document in a ```html code block.",
                      "html", "html"),
    "Matplotlib chart": Task("Write matplotlib code that reproduces this chart. Reply with one complete Python "
                             "script in a ```python code block.", "python", "chart"),
    "Free text": Task("Describe this image, then write code that reproduces it.", None, "auto"),
}

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_LANG_ALIASES = {"py": "python", "python3": "python", "htm": "html", "xhtml": "html"}


def extract_code(text: str, prefer: str | None = None) -> tuple[str, str | None]:
    """The code block to show for a model answer: the first fenced block in the `prefer`red
    language, else the first fenced block, else the whole answer. Works on partial (streaming) text."""
    blocks = [(_LANG_ALIASES.get(m.group(1).lower(), m.group(1).lower()) or None, m.group(2))
              for m in _FENCE.finditer(text)]
    if prefer:
        for lang, code in blocks:
            if lang == prefer:
                return code.rstrip("\n"), lang
    if blocks:
        lang, code = blocks[0]
        return code.rstrip("\n"), lang or _guess_language(code)
    return text, _guess_language(text)


def _guess_language(code: str) -> str | None:
    head = code.lstrip()[:200].lower()
    if head.startswith(("<!doctype", "<html", "<head", "<body", "<div", "<svg")):
        return "html"
    if re.search(r"^\s*(import|from)\s+matplotlib|plt\.", code, re.M):
        return "python"
    return None


# ---------------------------------------------------------------- where the models come from
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


# ---------------------------------------------------------------- loading
@dataclass
class Variant:
    name: str
    spec: str
    model: torch.nn.Module
    processor: object
    group: int = 0  # variants of one group share a vision module and a processor

    @property
    def visual(self) -> torch.nn.Module:
        return self.model.model.visual


@dataclass
class Footprint:
    """Bytes of parameters and buffers: what each variant holds alone, and what is shared."""

    own: dict[str, int]
    shared: int
    total: int
    groups: list[list[str]]
    device: str
    dtype: str
    cuda_allocated: int | None = None

    def report(self) -> str:
        lines = [f"models on {self.device} ({self.dtype}): {human_size(self.total)} in all"]
        for n, b in self.own.items():
            lines.append(f"  {LABELS.get(n, n):18s} {human_size(b):>10s} own")
        lines.append(f"  {'shared (vision)':18s} {human_size(self.shared):>10s}")
        shared_groups = [g for g in self.groups if len(g) > 1]
        lines.append("  vision passes per request: " + str(len(self.groups)) + (
            " (shared by " + "; ".join(", ".join(LABELS.get(n, n) for n in g) for g in shared_groups) + ")"
            if shared_groups else ""))
        if self.cuda_allocated is not None:
            lines.append(f"  torch.cuda.memory_allocated: {human_size(self.cuda_allocated)}")
        return "\n".join(lines)


def _load_one(name: str, spec: str, dtype: str):
    """Model and processor of one variant: a folder, or a Hub id with an optional @revision."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from ..engine.sources import parse_spec

    env = ENV_VARS.get(name, name)
    ref, rev = parse_spec(spec)
    try:
        cfg = AutoConfig.from_pretrained(ref, revision=rev)
    except (OSError, ValueError) as e:
        raise SourceError(f"{env}={spec}: cannot load a model config ({e})") from e
    if cfg.model_type not in arch.VLM_MODEL_TYPES:
        raise SourceError(
            f"{env}={spec}: is a {cfg.model_type!r} model, not a vision-language model "
            f"({', '.join(arch.VLM_MODEL_TYPES)}); a code LLM becomes one with `viscodex merge --variant swapped`")
    model = AutoModelForImageTextToText.from_pretrained(ref, revision=rev, dtype=dtype).eval()
    try:
        processor = AutoProcessor.from_pretrained(ref, revision=rev)
    except (OSError, ValueError) as e:
        raise SourceError(f"{env}={spec}: has no usable processor ({e})") from e
    return model, processor


def processor_fingerprint(processor) -> str:
    """sha256 over everything that turns (image, prompt) into model inputs."""
    h = hashlib.sha256()
    h.update(json.dumps(processor.image_processor.to_dict(), sort_keys=True, default=str).encode())
    tok = processor.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    h.update((backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)).encode())
    h.update(str(getattr(processor, "chat_template", None) or tok.chat_template).encode())
    return h.hexdigest()


def same_vision(a: torch.nn.Module, b: torch.nn.Module, cfg_a, cfg_b) -> bool:
    """True when two vision towers are interchangeable: same config, same tensors bit for bit."""
    if cfg_a.vision_config.to_dict() != cfg_b.vision_config.to_dict():
        return False
    for f in arch.VISION_TOKEN_ID_FIELDS:
        if getattr(cfg_a, f, None) != getattr(cfg_b, f, None):
            return False
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return False
    return all(sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def load_variants(specs: dict[str, str], *, device: str | None = None, dtype: str = "auto") -> "VariantSet":
    """Load the variants (CPU first, in VARIANTS order), put each group with identical vision towers
    and processors onto one shared vision module, then move everything to `device` (default: cuda
    when available)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    variants: dict[str, Variant] = {}
    leaders: list[Variant] = []
    fps: list[str] = []
    if not specs:
        raise AppError("no variants to load")
    order = [n for n in VARIANTS if n in specs] + [n for n in specs if n not in VARIANTS]
    for name in order:
        spec = specs[name]
        model, processor = _load_one(name, str(spec), dtype)
        v = Variant(name, str(spec), model, processor)
        fp = processor_fingerprint(processor)
        for gi, lead in enumerate(leaders):
            if fps[gi] == fp and same_vision(lead.visual, v.visual, lead.model.config, model.config):
                v.model.model.visual = lead.visual  # share: one vision pass per request, one copy in memory
                v.processor = lead.processor
                v.group = gi
                break
        else:
            v.group = len(leaders)
            leaders.append(v)
            fps.append(fp)
        variants[name] = v
    for v in variants.values():
        v.model.to(device)
    return VariantSet(variants, torch.device(device))


# ---------------------------------------------------------------- generation
class _QueueStreamer:
    """A generate() streamer that forwards new token ids to a queue shared by all variants."""

    def __init__(self, name: str, q: queue.Queue):
        self.name, self.q, self.prompt_seen = name, q, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first pushes the prompt
            self.prompt_seen = True
            return
        self.q.put((self.name, "tokens", value.reshape(-1).tolist()))

    def end(self) -> None:
        pass


class _StopOnEvent:
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass
class StreamStats:
    """Per-variant timings of one `stream` call (seconds from its start)."""

    vision_s: float = 0.0
    first_token_s: dict[str, float] = field(default_factory=dict)
    end_s: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    vision_calls: int = 0

    def tokens_per_s(self, name: str) -> float:
        n, t0, t1 = self.tokens.get(name, 0), self.first_token_s.get(name), self.end_s.get(name)
        return (n - 1) / (t1 - t0) if n > 1 and t0 is not None and t1 and t1 > t0 else 0.0


def generation_config(model, max_new_tokens: int, temperature: float):
    """The same decoding settings for every variant (each keeps its own stop/pad tokens)."""
    from transformers import GenerationConfig

    g = model.generation_config
    eos = g.eos_token_id if g.eos_token_id is not None else model.config.get_text_config().eos_token_id
    kw = dict(max_new_tokens=int(max_new_tokens), eos_token_id=eos,
              pad_token_id=g.pad_token_id if g.pad_token_id is not None else eos,
              repetition_penalty=g.repetition_penalty or 1.0)
    if temperature and temperature > 0:
        kw.update(do_sample=True, temperature=float(temperature), top_p=0.95, top_k=0)
    else:
        kw.update(do_sample=False)
    return GenerationConfig(**kw)


def messages_for(instruction: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]


class VariantSet:
    """The loaded variants plus the request-level logic: shared preprocessing and vision pass,
    three generations at once."""

    def __init__(self, variants: dict[str, Variant], device: torch.device):
        self.variants = variants
        self.device = device
        groups: dict[int, list[str]] = {}
        for v in variants.values():
            groups.setdefault(v.group, []).append(v.name)
        self.groups = [groups[g] for g in sorted(groups)]

    @property
    def names(self) -> list[str]:
        return list(self.variants)

    def leader(self, group: int) -> Variant:
        return self.variants[self.groups[group][0]]

    def footprint(self) -> Footprint:
        """Counts each tensor object once (a shared module's tensors are the same objects in every
        model that uses it). Only sizes are read: safe at import on ZeroGPU, where CUDA is not set up."""
        seen: dict[int, tuple[int, set[str]]] = {}
        for v in self.variants.values():
            for t in [*v.model.parameters(), *v.model.buffers()]:
                seen.setdefault(id(t), (t.numel() * t.element_size(), set()))[1].add(v.name)
        own = {n: 0 for n in self.variants}
        shared = 0
        for size, users in seen.values():
            if len(users) > 1:
                shared += size
            else:
                own[next(iter(users))] += size
        first = next(iter(self.variants.values())).model
        real_cuda = self.device.type == "cuda" and not os.environ.get("SPACES_ZERO_GPU")
        return Footprint(own, shared, shared + sum(own.values()), self.groups, str(self.device),
                         str(first.dtype).removeprefix("torch."), torch.cuda.memory_allocated() if real_cuda else None)

    # -- per request
    def prepare(self, image, instruction: str) -> dict[int, dict[str, torch.Tensor]]:
        """Model inputs per group: one processor call per group."""
        out = {}
        for gi in range(len(self.groups)):
            proc = self.leader(gi).processor
            prompt = proc.apply_chat_template(messages_for(instruction), add_generation_prompt=True, tokenize=False)
            inputs = proc(text=[prompt], images=[image], return_tensors="pt")
            out[gi] = {k: v.to(self.device) for k, v in inputs.items()}
        return out

    @torch.inference_mode()
    def encode(self, prepared: dict[int, dict[str, torch.Tensor]]) -> dict[int, object]:
        """One vision forward per group; the result is what generate() would compute itself."""
        feats = {}
        for gi, inputs in prepared.items():
            base = self.leader(gi).model.model
            feats[gi] = base.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
        return feats

    def stream(self, image, instruction: str, *, max_new_tokens: int = 512, temperature: float = 0.0,
               stop: threading.Event | None = None, stats: StreamStats | None = None,
               min_interval: float = 0.0) -> Iterator[tuple[str, ...]]:
        """Yield a tuple of the variants' texts (in `names` order) each time any of them grows.
        Closing the generator (or setting `stop`) stops all three generations."""
        stop = stop or threading.Event()
        stats = stats if stats is not None else StreamStats()
        t0 = time.perf_counter()
        prepared = self.prepare(image, instruction)
        feats = self.encode(prepared)
        stats.vision_calls = len(feats)
        stats.vision_s = time.perf_counter() - t0
        q: queue.Queue = queue.Queue()
        threads = []
        for v in self.variants.values():
            kwargs = {k: t for k, t in prepared[v.group].items() if k != "pixel_values"}
            cfg = generation_config(v.model, max_new_tokens, temperature)
            th = threading.Thread(target=self._worker, args=(v, kwargs, feats[v.group], cfg, q, stop),
                                  name=f"viscodex-gen-{v.name}", daemon=True)
            threads.append(th)
        ids: dict[str, list[int]] = {n: [] for n in self.variants}
        errors: dict[str, str] = {}
        done: set[str] = set()
        for th in threads:
            th.start()
        last = 0.0
        try:
            while len(done) < len(self.variants):
                items = [q.get()]
                while True:  # coalesce whatever else is ready into one tick
                    try:
                        items.append(q.get_nowait())
                    except queue.Empty:
                        break
                now = time.perf_counter() - t0
                for name, kind, payload in items:
                    if kind == "tokens":
                        if not ids[name]:
                            stats.first_token_s[name] = now
                        ids[name].extend(payload)
                    elif kind == "error":
                        errors[name] = payload
                    else:
                        done.add(name)
                        stats.end_s[name] = now
                        stats.tokens[name] = len(ids[name])
                if len(done) < len(self.variants) and min_interval and now - last < min_interval:
                    continue
                last = now
                yield self._texts(ids, errors)
        finally:
            stop.set()
            for th in threads:
                th.join(timeout=60)

    def _texts(self, ids: dict[str, list[int]], errors: dict[str, str]) -> tuple[str, ...]:
        out = []
        for name, v in self.variants.items():
            text = v.processor.tokenizer.decode(ids[name], skip_special_tokens=True)
            if name in errors:
                text += f"\n[generation failed: {errors[name]}]"
            out.append(text)
        return tuple(out)

    @staticmethod
    def _worker(v: Variant, kwargs, feats, cfg, q: queue.Queue, stop: threading.Event) -> None:
        from transformers import StoppingCriteriaList

        try:
            with torch.inference_mode():
                v.model.generate(**kwargs, mm_encoder_outputs={"image": feats}, generation_config=cfg,
                                 streamer=_QueueStreamer(v.name, q),
                                 stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]))
        except Exception as e:  # noqa: BLE001 - one failing variant must not take the others down
            log.exception("generation failed for %s", v.name)
            q.put((v.name, "error", f"{type(e).__name__}: {e}"))
        finally:
            q.put((v.name, "end", None))

    def generate_plain(self, name: str, image, instruction: str, *, max_new_tokens: int = 512,
                       temperature: float = 0.0) -> tuple[str, list[int]]:
        """The reference: a bare `generate` of one variant with its own vision pass."""
        v = self.variants[name]
        prompt = v.processor.apply_chat_template(messages_for(instruction), add_generation_prompt=True, tokenize=False)
        inputs = v.processor(text=[prompt], images=[image], return_tensors="pt")
        inputs = {k: t.to(self.device) for k, t in inputs.items()}
        with torch.inference_mode():
            out = v.model.generate(**inputs, generation_config=generation_config(v.model, max_new_tokens, temperature))
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        return v.processor.tokenizer.decode(new, skip_special_tokens=True), new


# ---------------------------------------------------------------- ZeroGPU sizing
def gpu_duration(max_new_tokens: int, pixels: int) -> int:
    """Seconds to ask ZeroGPU for: three 7B backbones decoding side by side (~40 tokens/s each on
    a shared H200 slice), one vision pass, plus start-up slack. Clamped to [20, 300]."""
    est = 15 + int(max_new_tokens) / 40 * 1.5 + pixels / 1e6 * 3
    return int(min(300, max(20, est)))


def zerogpu_size(total_bytes: int) -> str:
    """The ZeroGPU slice: VISCODEX_GPU_SIZE when set, else from the measured footprint."""
    size = os.environ.get(GPU_SIZE_ENV, "").strip().lower()
    if size:
        if size not in ("large", "xlarge"):
            raise AppError(f"{GPU_SIZE_ENV}={size!r}: expected large or xlarge")
        return size
    return zerogpu_slice(total_bytes)


# ---------------------------------------------------------------- previews
@dataclass
class Preview:
    html: str | None  # sandboxed iframe markup
    png: bytes | None  # rendered chart
    message: str  # why there is no preview, or ""


def render_preview(text: str, task: Task, *, chart_timeout: float = 20.0, chart_mem_mb: int = 1024) -> Preview:
    """HTML -> sandboxed iframe; matplotlib code -> PNG rendered in the sandbox subprocess."""
    from . import html_preview
    from ..sandbox import render_chart

    code, lang = extract_code(text, task.language)
    kind = task.preview if task.preview != "auto" else {"html": "html", "python": "chart"}.get(lang or "", "")
    if not code.strip():
        return Preview(None, None, "no output to preview")
    if kind == "html":
        return Preview(html_preview.iframe(code), None, "")
    if kind == "chart":
        r = render_chart(code, timeout=chart_timeout, mem_mb=chart_mem_mb)
        return Preview(None, r.png, r.message)
    return Preview(None, None, "no HTML or matplotlib code to preview")


def render_previews(texts: tuple[str, ...] | list[str], task: Task, **kw) -> list[Preview]:
    """Previews for all variants at once (chart subprocesses run in parallel)."""
    with ThreadPoolExecutor(max_workers=max(1, len(texts))) as ex:
        return list(ex.map(lambda t: render_preview(t, task, **kw), texts))
