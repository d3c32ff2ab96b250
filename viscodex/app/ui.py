"""VisCodex demo: the base VLM, the coder-swapped model and the merged model, side by side.

Runs on a Hugging Face ZeroGPU Space (its app.py calls `serve`) and locally (`viscodex app`, or
`python app.py` in a checkout). This module is the UI only; loading, shared-vision generation and the
renderers live in viscodex.app.compare, viscodex.sandbox, viscodex.app.html_preview and
viscodex.app.uploads.

Models: arguments of `create_app`, else VISCODEX_BASE_VLM, VISCODEX_SWAPPED, VISCODEX_MERGED (ids or
folders); nothing set and no Hub: the tiny offline demo trio. See docs/app.md.
"""
from __future__ import annotations

import argparse
import base64
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import gradio as gr
import spaces  # a no-op decorator off ZeroGPU; on a Space, app.py imports it before anything touches CUDA

from .. import sandbox
from .._util import zerogpu
from ..errors import AppError
from . import request, sources, toy_examples, uploads
from .assets import ASSETS_DIR, example_paths
from .sources import LABELS
from .tasks import TASKS
from .variants import COMPARE_KEY, StreamStats, VariantSet, load_variants

log = logging.getLogger(__name__)
CONCURRENCY = int(os.environ.get("VISCODEX_CONCURRENCY", "2"))
DEFAULT_MAX_NEW_TOKENS = int(os.environ.get("VISCODEX_MAX_NEW_TOKENS", "1024"))
LAUNCH_TRIES = 3  # gradio's start-up self-check gives up after one 3 s timeout; a busy machine gets more tries
COMPARE_LABEL = "Merged at the second λ"

# code scrolls inside its box; long lines and long messages wrap inside their column
CSS = (".viscodex-code .cm-scroller{max-height:560px;overflow:auto} .gradio-container iframe{max-width:100%} "
       ".viscodex-col{min-width:0} .viscodex-col .prose, #viscodex-status{overflow-wrap:anywhere}")


def parse_args(argv=None) -> argparse.Namespace:
    """`python app.py` flags (a Space passes none: it configures the models by variables)."""
    p = argparse.ArgumentParser(description="VisCodex side-by-side demo")
    for name, env in sources.ENV_VARS.items():
        p.add_argument(f"--{name}", help=f"{LABELS[name]}: model id or folder (env {env})")
    p.add_argument("--port", type=int, help="server port (env GRADIO_SERVER_PORT)")
    p.add_argument("--host", help="server address, e.g. 0.0.0.0 (env GRADIO_SERVER_NAME)")
    p.add_argument("--recipe", help=f"build and serve a recipe's swapped/merged variants (env {sources.RECIPE_ENV}); "
                                    "a path or a packaged name such as viscodex-8b")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    return p.parse_args(argv)


@dataclass
class ComparisonApp:
    """The built UI and what it serves: `demo` (gr.Blocks), the loaded `variants`, their `specs`,
    and `generate`, the GPU generator each Run calls (looked up per request: tests replace it)."""

    demo: gr.Blocks | None
    variants: VariantSet
    specs: dict[str, str]
    footprint: Any
    generate: Any = None

    @property
    def names(self) -> list[str]:
        return self.variants.names

    @property
    def launch_kwargs(self) -> dict:
        """What `demo.launch` needs besides the address: the examples' folders, the CSS, and the
        upload limit enforced by the server while receiving (not only when Run is pressed)."""
        return dict(allowed_paths=[str(ASSETS_DIR), str(toy_examples.example_dir())], css=CSS,
                    max_file_size=uploads.MAX_FILE_BYTES)

    def launch(self, *, port: int | None = None, host: str | None = None, share: bool = False, **kw) -> None:
        """Serve until interrupted (unset port/host: GRADIO_SERVER_PORT/NAME, else gradio's defaults)."""
        launch_with_retries(self.demo, dict(server_port=port, server_name=host, share=share or None,
                                            **self.launch_kwargs, **kw))


def launch_with_retries(demo: gr.Blocks, kwargs: dict, tries: int = LAUNCH_TRIES) -> None:
    """demo.launch, again when gradio's self-check of the new server timed out. Its message
    ("When localhost is not accessible, a shareable link must be created") points at sharing;
    the usual causes are a machine too busy to answer within 3 s or a proxy catching localhost."""
    for attempt in range(1, tries + 1):
        try:
            return demo.launch(**kwargs)
        except ValueError as e:
            if "shareable link must be created" not in str(e):
                raise
            demo.close()
            log.warning("the app's server did not answer gradio's start-up check in time (try %d of %d)", attempt, tries)
            time.sleep(attempt)
    raise AppError(
        f"the app's server started but did not answer its own start-up check {tries} times (gradio waits 3 s): the "
        f"machine is too busy, or an HTTP proxy intercepts localhost (set NO_PROXY=localhost,127.0.0.1); "
        f"share=True is not needed")


def create_app(variants: dict[str, str | os.PathLike | None] | None = None, *, device: str | None = None,
               dtype: str | None = None, recipe: str | os.PathLike | None = None) -> ComparisonApp:
    """Load the variants (ids or folders by vlm/swapped/merged; unset ones: `resolve_variants`'
    defaults, or a `recipe`'s) and build the UI. On ZeroGPU, CUDA tensors made here are moved onto
    the GPU per call."""
    unknown = set(variants or {}) - set(sources.ENV_VARS)
    if unknown:
        raise AppError(f"unknown variant(s) {sorted(unknown)}: expected some of {list(sources.ENV_VARS)}")
    specs = sources.resolve_variants(**{k: str(v) for k, v in (variants or {}).items() if v}, recipe=recipe)
    vs = load_variants(specs, device=device or os.environ.get("VISCODEX_DEVICE") or None,
                       dtype=dtype or os.environ.get("VISCODEX_DTYPE", "auto"))
    footprint = vs.footprint()
    print(footprint.report(), file=sys.stderr, flush=True)
    if vs.live.enabled and not os.environ.get("SPACES_ZERO_GPU"):
        vs.set_lambda(vs.live.recipe_lam)  # measured once for the panel (same weights: the recipe's λ)
        print(vs.live.last.line(), file=sys.stderr, flush=True)

    def gpu_duration(image, instruction, max_new_tokens, temperature, lam, lam_b):
        runs = 2 if lam_b is not None else 1  # compare mode: the merged column answers twice
        return zerogpu.gpu_duration(max_new_tokens * runs, image.width * image.height)

    @spaces.GPU(duration=gpu_duration, size=zerogpu.zerogpu_size(footprint.total))
    def generate(image, instruction, max_new_tokens, temperature, lam, lam_b):
        """The only function that computes on the GPU: one vision pass, the streams, and the merged
        weights at the requested λ (recomputed here: on ZeroGPU nothing says they persist)."""
        vs.live.forget()
        stats = StreamStats()
        for texts in vs.stream(image, instruction, max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                               min_interval=0.05, lam=lam, lam_b=lam_b, stats=stats):
            yield texts, "".join(f" (λ {r.lam:g} recomputed in {r.seconds * 1e3:.1f} ms)" for r in stats.recomputes)

    app = ComparisonApp(None, vs, specs, footprint, generate)
    app.demo = build_demo(vs, specs, footprint, lambda *a: app.generate(*a))
    return app


def run_app(variants: dict[str, str | os.PathLike | None] | None = None, *, port: int | None = None,
            host: str | None = None, recipe: str | os.PathLike | None = None) -> None:
    """Serve the comparison app on these variants (ids or folders by vlm/swapped/merged; unset ones
    keep `resolve_variants`' defaults) until interrupted (`viscodex app`, `viscodex demo`)."""
    create_app(variants, recipe=recipe).launch(port=port, host=host)


def serve(launch: bool = True, argv: list[str] | None = None) -> ComparisonApp:
    """The Space's app.py: build the app from the environment (and, run as a script, the flags)
    and serve it; `launch=False` only builds it (a test imports app.py that way)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv) if launch else None
    app = create_app({k: getattr(args, k) for k in sources.ENV_VARS} if args else None,
                     recipe=args.recipe if args else None)
    if args:
        app.launch(port=args.port, host=args.host, share=args.share)
    return app


def raw_upload(payload):
    """Replaces gr.Image.preprocess (which decodes with PIL itself, so a bad file would end as a
    generic error): hand the raw upload to viscodex.app.uploads, which names every problem. Set on the
    instance; a gr.Image subclass would make gradio write an app.pyi stub next to this file."""
    if payload is None:
        return None
    if payload.url and payload.url.startswith("data:"):
        try:
            return base64.b64decode(payload.url.split(",", 1)[1], validate=False)
        except (ValueError, IndexError):
            raise gr.Error("the pasted image data is not valid base64") from None
    return payload.path


def example_query(request: gr.Request, rows: list[list]):
    """`?example=<image name>` (e.g. bar_chart) pre-selects that example's image, task and
    instruction, so a "look at this chart" link opens ready to run; otherwise nothing changes (a
    shared result's restored inputs stay)."""
    want = (request.query_params.get("example") or "").strip().lower() if request else ""
    for path, task, instruction in rows:
        if want and os.path.splitext(os.path.basename(path))[0].lower() == want:
            return path, task, instruction
    return gr.skip(), gr.skip(), gr.skip()


def build_demo(variants: VariantSet, specs: dict[str, str], footprint, generate) -> gr.Blocks:
    """The Blocks UI over loaded variants; `generate` streams their answers (the GPU function)."""
    names = variants.names
    live = variants.live
    merged = "merged" in names
    keys = names + ([COMPARE_KEY] if merged else [])  # the compare column exists, hidden, when there is a merged one
    labels = {**LABELS, COMPARE_KEY: COMPARE_LABEL}

    def run_request(image, task, instruction, max_new_tokens, temperature, max_pixels, lam=None, compare=False,
                    lam_b=None):
        lam = float(lam) if live.enabled and lam is not None else None
        lam_b = float(lam_b) if live.enabled and compare and lam_b is not None else None
        yield from request.run(generate, len(keys), image, task, instruction, max_new_tokens, temperature, max_pixels,
                               lam, lam_b)

    def run_example(image, task, instruction):
        yield from run_request(image, task, instruction, min(DEFAULT_MAX_NEW_TOKENS, 512), 0.0,
                               uploads.DEFAULT_MAX_PIXELS)

    def on_task(task):
        t = TASKS[task]
        return (gr.update(value=t.instruction), *[gr.update(language=t.language) for _ in keys])

    first_task = next(iter(TASKS))
    rows = [[str(p), t, TASKS[t].instruction] for p, t in example_paths()]
    toy = footprint.total < toy_examples.TOY_MODEL_BYTES
    toy_rows = toy_examples.toy_examples("Free text") if toy else []
    with gr.Blocks(title="VisCodex: base VLM vs coder-swapped vs merged") as demo:
        gr.Markdown("# VisCodex side by side\nUpload a screenshot, chart or diagram and compare the **base VLM**, "
                    "the VLM with its language model **swapped** for a code LLM, and the **merged** VisCodex model "
                    "(task-vector merge of both backbones).")
        if sources.is_untrained_demo_trio(specs):
            gr.Markdown("**These are the tiny untrained demo models: their answers are noise.** They show the plumbing "
                        "offline. `viscodex demo` trains the tiny trio on a toy world of coloured shapes: it answers the "
                        "toy examples below. Real models: `viscodex app --vlm ... --swapped ... --merged ...` or "
                        "`--recipe viscodex-8b` (docs/app.md).", elem_id="viscodex-untrained")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=340)
                image.preprocess = raw_upload
            with gr.Column(scale=1):
                task = gr.Dropdown(list(TASKS), value=first_task, label="Task")
                instruction = gr.Textbox(TASKS[first_task].instruction, label="Instruction", lines=3)
                lam, compare, lam_b = lambda_controls(live, merged)
                with gr.Accordion("Generation settings", open=False):
                    max_new_tokens = gr.Slider(1, 4096, value=DEFAULT_MAX_NEW_TOKENS, step=1, label="Max new tokens")
                    temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
                    max_pixels = gr.Slider(28 * 28 * 4, 4096 * 28 * 28, value=uploads.DEFAULT_MAX_PIXELS, step=28 * 28,
                                           label="Image max pixels (larger images are downscaled)")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary")
                    stop_btn = gr.Button("Stop", variant="stop")
                gr.DeepLinkButton("Share this result")
                status = gr.Markdown(elem_id="viscodex-status")
        codes, htmls, columns = [], [], {}
        with gr.Row(equal_height=False):
            for key in keys:
                with gr.Column(elem_id=f"col-{key}", elem_classes=["viscodex-col"],
                               visible=key != COMPARE_KEY) as columns[key]:
                    gr.Markdown(f"### {labels[key]}")
                    codes.append(gr.Code(language=TASKS[first_task].language, label=f"{labels[key]}: code",
                                         buttons=["copy", "download"], lines=12, max_lines=30, interactive=False,
                                         wrap_lines=True, elem_id=f"code-{key}", elem_classes=["viscodex-code"]))
                    # HTML preview (sandboxed iframe), rendered chart (<img>) or a message
                    htmls.append(gr.HTML(label="Preview", elem_id=f"preview-{key}"))
        outputs = [*codes, *htmls, status]
        cache = os.environ.get("VISCODEX_CACHE_EXAMPLES", "lazy").lower()
        caching = dict(cache_examples=cache in ("lazy", "eager"), cache_mode=cache if cache in ("lazy", "eager") else None)
        if toy_rows:
            gr.Examples(examples=toy_rows, inputs=[image, task, instruction], outputs=outputs, fn=run_example,
                        label="Toy examples (what `viscodex demo`'s trained tiny trio answers: viscodex.toy.world)",
                        **caching)
        gr.Examples(examples=rows, inputs=[image, task, instruction], outputs=outputs, fn=run_example,
                    label="Examples (drawn by viscodex.app.assets; open one directly with ?example=<name>, e.g. "
                          "?example=bar_chart)", **caching)
        with gr.Accordion("Models and memory", open=False):
            gr.Markdown("\n".join(f"- **{LABELS[n]}**: `{s}`" for n, s in specs.items())
                        + f"\n\n```\n{footprint.report()}\n```\n\n**Live λ** {live_line(live)}"
                        + f"\n\n**Chart code** {sandbox.status().line}", elem_id="viscodex-models")
        task.change(on_task, [task], [instruction, *codes], api_visibility="private")
        if merged:
            compare.change(lambda c: (gr.update(visible=c), gr.update(visible=c)), [compare],
                           [lam_b, columns[COMPARE_KEY]], api_visibility="private")
        def on_load(req: gr.Request):
            return example_query(req, rows + toy_rows)

        demo.load(on_load, None, [image, task, instruction], api_visibility="private")
        inputs = [image, task, instruction, max_new_tokens, temperature, max_pixels] + (
            [lam, compare, lam_b] if merged else [])
        run_event = run_btn.click(run_request, inputs, outputs, api_name="run", concurrency_limit=CONCURRENCY)
        stop_btn.click(request.stopped, [status], [status], cancels=[run_event], api_visibility="private", queue=False)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo


def lambda_controls(live, merged: bool):
    """The merged column's λ slider, the compare switch and the second λ (None without a merged
    column). When λ cannot move, the slider is shown fixed at the recipe's λ with the reason."""
    if not merged:
        return None, None, None
    value = live.recipe_lam if live.recipe_lam is not None else sources.DEMO_LAMBDA
    on = live.enabled
    info = ("the merged column is recomputed at this λ before it answers (the VLM's task vector weight; the coder "
            "gets 1 − λ)") if on else f"fixed: {live.reason}"
    label = "λ (merged column)" if live.recipe_lam is not None else "λ (merged column: not known, no recipe)"
    lam = gr.Slider(0.0, 1.0, value=value, step=0.01, label=label, info=info, interactive=on,
                    elem_id="viscodex-lambda")
    compare = gr.Checkbox(False, label="Compare λ: the merged column answers again at a second λ", interactive=on,
                          elem_id="viscodex-compare")
    lam_b = gr.Slider(0.0, 1.0, value=1.0 if value < 0.5 else 0.0, step=0.01, label="Second λ", visible=False,
                      interactive=on, elem_id="viscodex-lambda-b")
    return lam, compare, lam_b


def live_line(live) -> str:
    if not live.enabled:
        return f"off: {live.reason}"
    line = (f"on: the merged backbone is lerp(coder-swapped, VLM, λ) of the two resident backbones, "
            f"{len(live.targets)} tensors recomputed in place")
    return line + (f"; {live.last.line()}" if live.last else "; timed on the first request (ZeroGPU)")
