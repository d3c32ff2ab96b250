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
import io
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import gradio as gr
import spaces  # a no-op decorator off ZeroGPU; on a Space, app.py imports it before anything touches CUDA

from .. import sandbox
from .._util import zerogpu
from ..errors import AppError
from . import compare, html_preview, sources, tasks, uploads
from .variants import VariantSet, load_variants
from .assets import ASSETS_DIR, example_paths
from .sources import LABELS
from .tasks import TASKS

log = logging.getLogger(__name__)
CONCURRENCY = int(os.environ.get("VISCODEX_CONCURRENCY", "2"))
CHART_MAX_PIXELS = 4_000_000
DEFAULT_MAX_NEW_TOKENS = int(os.environ.get("VISCODEX_MAX_NEW_TOKENS", "1024"))


CSS = ".viscodex-code .cm-scroller{max-height:560px;overflow:auto} .gradio-container iframe{max-width:100%}"


def parse_args(argv=None) -> argparse.Namespace:
    """`python app.py` flags (a Space passes none: it configures the models by variables)."""
    p = argparse.ArgumentParser(description="VisCodex side-by-side demo")
    for name, env in sources.ENV_VARS.items():
        p.add_argument(f"--{name}", help=f"{LABELS[name]}: model id or folder (env {env})")
    p.add_argument("--port", type=int, help="server port (env GRADIO_SERVER_PORT)")
    p.add_argument("--host", help="server address, e.g. 0.0.0.0 (env GRADIO_SERVER_NAME)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    return p.parse_args(argv)


@dataclass
class ComparisonApp:
    """The built UI and what it serves: `demo` (gr.Blocks), the loaded `variants`, their `specs`, and
    `generate` (the GPU function streaming the answers; the UI looks it up per request, so a test
    can replace it)."""

    variants: VariantSet
    specs: dict[str, str]
    footprint: Any
    generate: Callable[..., Iterator[tuple[str, ...]]]
    demo: gr.Blocks | None = None

    @property
    def names(self) -> list[str]:
        return self.variants.names

    @property
    def launch_kwargs(self) -> dict:
        """What `demo.launch` needs besides the address: the examples' folder and the CSS."""
        return dict(allowed_paths=[str(ASSETS_DIR)], css=CSS)

    def launch(self, *, port: int | None = None, host: str | None = None, share: bool = False, **kw) -> None:
        """Serve until interrupted (unset port/host: GRADIO_SERVER_PORT/NAME, else gradio's defaults)."""
        self.demo.launch(server_port=port, server_name=host, share=share or None, **self.launch_kwargs, **kw)


def create_app(variants: dict[str, str | os.PathLike | None] | None = None, *, device: str | None = None,
               dtype: str | None = None) -> ComparisonApp:
    """Load the variants (ids or folders by vlm/swapped/merged; unset ones: `resolve_variants`'
    defaults) and build the UI. On ZeroGPU, CUDA tensors made here are moved onto the GPU per call."""
    unknown = set(variants or {}) - set(sources.ENV_VARS)
    if unknown:
        raise AppError(f"unknown variant(s) {sorted(unknown)}: expected some of {list(sources.ENV_VARS)}")
    specs = sources.resolve_variants(**{k: str(v) for k, v in (variants or {}).items() if v})
    vs = load_variants(specs, device=device or os.environ.get("VISCODEX_DEVICE") or None,
                       dtype=dtype or os.environ.get("VISCODEX_DTYPE", "auto"))
    footprint = vs.footprint()
    print(footprint.report(), file=sys.stderr, flush=True)

    def gpu_duration(image, instruction, max_new_tokens, temperature):
        return zerogpu.gpu_duration(max_new_tokens, image.width * image.height)

    @spaces.GPU(duration=gpu_duration, size=zerogpu.zerogpu_size(footprint.total))
    def generate(image, instruction, max_new_tokens, temperature):
        """The only function that computes on the GPU: one vision pass, three streams."""
        yield from vs.stream(image, instruction, max_new_tokens=int(max_new_tokens),
                             temperature=float(temperature), min_interval=0.05)

    app = ComparisonApp(vs, specs, footprint, generate)
    app.demo = build_demo(vs, specs, footprint, lambda *args: app.generate(*args))
    return app


def run_app(variants: dict[str, str | os.PathLike | None] | None = None, *, port: int | None = None,
            host: str | None = None) -> None:
    """Serve the comparison app on these variants (ids or folders by vlm/swapped/merged; unset ones
    keep `resolve_variants`' defaults) until interrupted (`viscodex app`, `viscodex demo`)."""
    create_app(variants).launch(port=port, host=host)


def serve(launch: bool = True, argv: list[str] | None = None) -> ComparisonApp:
    """The Space's app.py: build the app from the environment (and, run as a script, the flags)
    and serve it; `launch=False` only builds it (a test imports app.py that way)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv) if launch else None
    app = create_app({k: getattr(args, k) for k in sources.ENV_VARS} if args else None)
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


def chart_markup(png: bytes | None, message: str) -> str:
    """The preview slot for chart code: the PNG (checked like an upload, then re-encoded by us) or
    the message saying why there is none."""
    if png is None:
        return html_preview.placeholder(message) if message else ""
    try:
        im = uploads.load_image(png, max_pixels=CHART_MAX_PIXELS).image
    except uploads.UploadError as e:
        return html_preview.placeholder(f"the chart image cannot be shown: {e}")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return html_preview.png_img(buf.getvalue())


def run(generate, names, image, task, instruction, max_new_tokens, temperature, max_pixels):
    """Validate the upload, stream the three answers (`generate`), then render the previews."""
    t = TASKS.get(task) or TASKS["Free text"]
    try:
        img = uploads.load_image(image, max_pixels=int(max_pixels))
    except uploads.UploadError as e:
        raise gr.Error(str(e), title="Unusable image") from None
    instruction = (instruction or "").strip() or t.instruction
    status = f"**Input:** {img.summary()}"
    t0 = time.perf_counter()
    texts = ("",) * len(names)
    yield (*texts, *texts, status + " · starting…")  # clear the previous result
    skip = [gr.skip()] * len(names)
    for texts in generate(img.image, instruction, max_new_tokens, temperature):
        codes = [tasks.extract_code(x, t.language)[0] for x in texts]
        yield (*codes, *skip, status + f" · generating… {time.perf_counter() - t0:.1f} s")
    gen_s = time.perf_counter() - t0
    codes = [tasks.extract_code(x, t.language)[0] for x in texts]
    previews = compare.render_previews(texts, t)
    htmls = [p.html or chart_markup(p.png, p.message) for p in previews]
    yield (*codes, *htmls, status + f" · generated in {gen_s:.1f} s")


def build_demo(variants: VariantSet, specs: dict[str, str], footprint, generate) -> gr.Blocks:
    """The Blocks UI over loaded variants; `generate` streams their answers (the GPU function)."""
    names = variants.names

    def run_request(image, task, instruction, max_new_tokens, temperature, max_pixels):
        yield from run(generate, names, image, task, instruction, max_new_tokens, temperature, max_pixels)

    def run_example(image, task, instruction):
        yield from run_request(image, task, instruction, min(DEFAULT_MAX_NEW_TOKENS, 512), 0.0,
                               uploads.DEFAULT_MAX_PIXELS)

    def on_task(task):
        t = TASKS[task]
        return (gr.update(value=t.instruction), *[gr.update(language=t.language) for _ in names])

    first_task = next(iter(TASKS))
    with gr.Blocks(title="VisCodex: base VLM vs coder-swapped vs merged") as demo:
        gr.Markdown("# VisCodex side by side\nUpload a screenshot, chart or diagram and compare the **base VLM**, "
                    "the VLM with its language model **swapped** for a code LLM, and the **merged** VisCodex model "
                    "(task-vector merge of both backbones).")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=340)
                image.preprocess = raw_upload
            with gr.Column(scale=1):
                task = gr.Dropdown(list(TASKS), value=first_task, label="Task")
                instruction = gr.Textbox(TASKS[first_task].instruction, label="Instruction", lines=3)
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
        codes, htmls = [], []
        with gr.Row(equal_height=False):
            for name in names:
                with gr.Column(elem_id=f"col-{name}"):
                    gr.Markdown(f"### {LABELS[name]}")
                    codes.append(gr.Code(language=TASKS[first_task].language, label=f"{LABELS[name]}: code",
                                         buttons=["copy", "download"], lines=12, max_lines=30, interactive=False,
                                         elem_id=f"code-{name}", elem_classes=["viscodex-code"]))
                    # HTML preview (sandboxed iframe), rendered chart (<img>) or a message
                    htmls.append(gr.HTML(label="Preview", elem_id=f"preview-{name}"))
        outputs = [*codes, *htmls, status]
        cache = os.environ.get("VISCODEX_CACHE_EXAMPLES", "lazy").lower()
        gr.Examples(
            examples=[[str(p), t, TASKS[t].instruction] for p, t in example_paths()],
            inputs=[image, task, instruction], outputs=outputs, fn=run_example,
            cache_examples=cache in ("lazy", "eager"), cache_mode=cache if cache in ("lazy", "eager") else None,
            label="Examples (drawn by viscodex.app.assets)",
        )
        with gr.Accordion("Models and memory", open=False):
            gr.Markdown("\n".join(f"- **{LABELS[n]}**: `{s}`" for n, s in specs.items())
                        + f"\n\n```\n{footprint.report()}\n```\n\n**Chart code** {sandbox.status().line}")
        task.change(on_task, [task], [instruction, *codes], api_visibility="private")
        run_event = run_btn.click(run_request, [image, task, instruction, max_new_tokens, temperature, max_pixels], outputs,
                                  api_name="run", concurrency_limit=CONCURRENCY)
        stop_btn.click(None, None, None, cancels=[run_event], api_visibility="private")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo

