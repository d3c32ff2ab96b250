"""Three variants side by side: the base VLM, the coder-swapped model and the merged (VisCodex) model.

`load_variants` loads the three, checks (does not assume) which of them have identical vision
towers, vision configs and processors, and keeps one vision module per identical group, so a
request costs one vision pass per group (one in the usual case) and three language backbones.
`VariantSet.stream` runs the three `generate` calls at once (one thread each, fed the shared image
features through transformers' `mm_encoder_outputs`) and yields the three texts as they grow.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Iterator

import torch

from .._util.sizes import human_size
from ..engine import arch
from ..errors import AppError, SourceError
from .live_lambda import LiveLambda, live_lambda
from .sources import ENV_VARS, LABELS, VARIANTS

log = logging.getLogger(__name__)
COMPARE_KEY = "merged_b"  # compare mode: the merged variant's second answer, at the second λ

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
class MemoryFootprint:
    """Bytes of parameters and buffers of the loaded variants: what each holds alone, and what is
    shared. (`viscodex.hub.space.Footprint` is the estimate from the checkpoints, before a Space
    exists; both size the ZeroGPU slice with `_util.zerogpu`.)"""

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
    # before the move: on ZeroGPU the load-time check cannot compute on the (not yet real) GPU
    live = live_lambda(variants, persistent=not os.environ.get("SPACES_ZERO_GPU"))
    if live.reason:
        log.info("live λ off: %s", live.reason)
    for v in variants.values():
        v.model.to(device)
    return VariantSet(variants, torch.device(device), live)


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
    recomputes: list = field(default_factory=list)  # live_lambda.Recompute of each λ change it caused

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

    def __init__(self, variants: dict[str, Variant], device: torch.device, live: LiveLambda | None = None):
        self.variants = variants
        self.device = device
        self.live = live or LiveLambda(reason="not set up")
        groups: dict[int, list[str]] = {}
        for v in variants.values():
            groups.setdefault(v.group, []).append(v.name)
        self.groups = [groups[g] for g in sorted(groups)]

    @property
    def names(self) -> list[str]:
        return list(self.variants)

    def set_lambda(self, lam: float) -> float:
        """Recompute the merged variant's weights at `lam` in place; seconds taken (benchmarks)."""
        return self.live.set_lambda(lam)

    def leader(self, group: int) -> Variant:
        return self.variants[self.groups[group][0]]

    def footprint(self) -> MemoryFootprint:
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
        return MemoryFootprint(own, shared, shared + sum(own.values()), self.groups, str(self.device),
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
               min_interval: float = 0.0, lam: float | None = None,
               lam_b: float | None = None) -> Iterator[tuple[str, ...]]:
        """Yield a tuple of the variants' texts (in `names` order) each time any of them grows.
        `lam`: the merged variant's λ (None: its recipe's); `lam_b`: compare mode, the merged
        variant runs again at this λ once its first answer is done, as one more text at the end.
        Closing the generator (or setting `stop`) stops all generations."""
        runs = self._runs(lam, lam_b)
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
            th = threading.Thread(target=self._worker, args=(v, runs[v.name], kwargs, feats[v.group], cfg, q, stop, stats),
                                  name=f"viscodex-gen-{v.name}", daemon=True)
            threads.append(th)
        keys = [k for v in self.variants.values() for k, _ in runs[v.name]]
        ids: dict[str, list[int]] = {k: [] for k in keys}
        errors: dict[str, str] = {}
        done: set[str] = set()
        for th in threads:
            th.start()
        last = 0.0  # growing text is shown at most every min_interval
        visible: set[str] = set()
        try:
            while len(done) < len(keys):
                items = [q.get()]
                while True:  # coalesce whatever else is ready into one tick
                    try:
                        items.append(q.get_nowait())
                    except queue.Empty:
                        break
                now = time.perf_counter() - t0
                # shown at once, not at the next tick: the first visible text of a column (its first
                # tokens may decode to nothing), an error, an end
                news = False
                for name, kind, payload in items:
                    if kind == "tokens":
                        if not ids[name]:
                            stats.first_token_s[name] = now
                        ids[name].extend(payload)
                        news = news or name not in visible
                    elif kind == "error":
                        errors[name] = payload
                        news = True
                    else:
                        done.add(name)
                        stats.end_s[name] = now
                        stats.tokens[name] = len(ids[name])
                        news = True
                if not news and min_interval and now - last < min_interval:
                    continue
                last = now
                texts = self._texts(keys, ids, errors)
                visible = {k for k, t in zip(keys, texts) if t.strip()}
                yield texts
        finally:
            stop.set()
            for th in threads:
                th.join(timeout=60)

    def _runs(self, lam: float | None, lam_b: float | None) -> dict[str, list[tuple[str, float | None]]]:
        """Per variant, the (stream key, λ) of each generate it runs: one each, two for the merged
        variant in compare mode. A λ the app cannot apply is refused with the reason."""
        live = self.live
        asked = [x for x in (lam, lam_b) if x is not None and x != live.recipe_lam]
        if asked and not live.enabled:
            raise AppError(f"λ cannot be changed: {live.reason}")
        for x in (lam, lam_b):
            if x is not None and not 0.0 <= float(x) <= 1.0:
                raise AppError(f"λ={x} is outside [0, 1]")
        runs: dict[str, list[tuple[str, float | None]]] = {n: [(n, None)] for n in self.variants}
        if "merged" in runs:
            runs["merged"] = [("merged", lam)] + ([(COMPARE_KEY, lam_b)] if lam_b is not None else [])
        elif lam_b is not None:
            raise AppError("compare λ needs a merged variant")
        return runs

    def _texts(self, keys: list[str], ids: dict[str, list[int]], errors: dict[str, str]) -> tuple[str, ...]:
        out = []
        for key in keys:
            v = self.variants[key if key in self.variants else "merged"]
            text = v.processor.tokenizer.decode(ids[key], skip_special_tokens=True)
            if key in errors:
                text += f"\n[generation failed: {errors[key]}]"
            out.append(text)
        return tuple(out)

    def _worker(self, v: Variant, runs, kwargs, feats, cfg, q: queue.Queue, stop: threading.Event,
                stats: StreamStats) -> None:
        from transformers import StoppingCriteriaList

        for key, lam in runs:
            try:
                # the merged variant holds its weights at the requested λ (recomputed if another λ is there)
                with self.live.at(lam, stop) if v.name == "merged" else nullcontext() as recomputed:
                    if recomputed is not None:
                        stats.recomputes.append(recomputed)
                    with torch.inference_mode():
                        v.model.generate(**kwargs, mm_encoder_outputs={"image": feats}, generation_config=cfg,
                                         streamer=_QueueStreamer(key, q),
                                         stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]))
            except InterruptedError:
                pass
            except Exception as e:  # noqa: BLE001 - one failing variant must not take the others down
                log.exception("generation failed for %s", key)
                q.put((key, "error", f"{type(e).__name__}: {e}"))
            finally:
                q.put((key, "end", None))

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


