"""The side-by-side app (issue 6): model loading and vision sharing, streaming generation equal to
plain `generate`, previews, and the launched app driven by gradio_client with the tiny trio."""
from __future__ import annotations

import importlib.util
import io
import json
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import free_port
from viscodex._util import zerogpu
from viscodex.app import compare, html_preview, sources, variants
from viscodex.app.tasks import TASKS, extract_code
from viscodex.app.variants import StreamStats, load_variants
from viscodex.errors import SourceError, ViscodexError

ROOT = Path(__file__).resolve().parents[1]
MAX_NEW = 12


@contextmanager
def launched_app(tmp_path_factory, name: str):
    """Import app.py as a fresh module with the offline defaults (tiny trio built into a cache shared
    by the session) and launch it on a free port. Yields (the ComparisonApp it built, url)."""
    base = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as mp:
        for env in sources.ENV_VARS.values():
            mp.delenv(env, raising=False)
        mp.setenv("VISCODEX_CACHE", str(base / "viscodex-cache"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path_factory.mktemp(f"{name}-examples")))
        mp.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        mp.setenv("VISCODEX_MAX_NEW_TOKENS", str(MAX_NEW * 2))
        mp.chdir(tmp_path_factory.mktemp(f"{name}-cwd"))  # gradio may write .gradio/ into the cwd
        spec = importlib.util.spec_from_file_location(f"viscodex_app_{name}", ROOT / "app.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        port = free_port()
        ui = mod.app  # app.py only builds the app when imported (it launches when run as a script)
        ui.demo.launch(prevent_thread_lock=True, server_port=port, server_name="127.0.0.1", **ui.launch_kwargs)
        try:
            yield ui, f"http://127.0.0.1:{port}/"
        finally:
            ui.demo.close()
            sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with launched_app(tmp_path_factory, "client") as (mod, url):
        yield mod, url


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[1], verbose=False)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("img") / "page.png"
    from viscodex.app.assets import ASSETS_DIR

    shutil.copy(ASSETS_DIR / "landing_page.png", p)
    return p


def image() -> Image.Image:
    return Image.open(Path(compare.__file__).parent / "assets" / "bar_chart.png").convert("RGB")


class VisionCounter:
    def __init__(self, module: torch.nn.Module):
        self.n = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *a):
        self.n += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ---------------------------------------------------------------- library level
def test_offline_default_is_the_tiny_trio_merged_by_run_merge(app):
    mod, _ = app
    assert set(mod.specs) == {"vlm", "swapped", "merged"}
    paths = {k: Path(v) for k, v in mod.specs.items()}
    assert paths == sources.default_variants()  # cached: the same folders, not rebuilt
    import yaml

    for variant in ("swapped", "merged"):
        rec = yaml.safe_load((paths[variant] / "viscodex_recipe.yaml").read_text())
        assert rec["variant"] == variant and rec["lambda"] == sources.DEMO_LAMBDA
        assert Path(rec["vlm"]) == paths["vlm"] and (paths["vlm"] / "config.json").exists()  # no stale temp paths
    assert json.loads((paths["vlm"] / "config.json").read_text())["model_type"] == "qwen2_5_vl"


def test_vision_tower_is_shared_and_footprint_counts_it_once(app):
    vs = app[0].variants
    assert vs.groups == [["vlm", "swapped", "merged"]]
    vis = [v.visual for v in vs.variants.values()]
    assert vis[0] is vis[1] is vis[2]
    fp = vs.footprint()
    vis_bytes = sum(p.numel() * p.element_size() for p in vis[0].parameters()) + sum(
        b.numel() * b.element_size() for b in vis[0].buffers())
    assert fp.shared == vis_bytes
    for name, v in vs.variants.items():
        own = sum(t.numel() * t.element_size() for n, t in list(v.model.named_parameters()) + list(v.model.named_buffers())
                  if not n.startswith("model.visual."))
        assert fp.own[name] == own
    assert fp.total == vis_bytes + sum(fp.own.values())
    assert "vision passes per request: 1 (shared by Base VLM, Coder-swapped, Merged (VisCodex))" in fp.report()


def test_stream_equals_plain_generate_with_one_vision_pass(app):
    vs = app[0].variants
    img, instr = image(), TASKS["Matplotlib chart"].instruction
    stats = StreamStats()
    with VisionCounter(vs.leader(0).visual) as c:
        ticks = list(vs.stream(img, instr, max_new_tokens=MAX_NEW, stats=stats))
        assert c.n == 1 and stats.vision_calls == 1
        refs = [vs.generate_plain(n, img, instr, max_new_tokens=MAX_NEW) for n in vs.names]
        assert c.n == 1 + 3  # each bare generate encodes the image itself
    assert len(ticks) > 1
    assert list(ticks[-1]) == [text for text, _ in refs]
    assert all(stats.tokens[n] == len(ids) for n, (_, ids) in zip(vs.names, refs))
    assert len({t for t in ticks[-1]}) == 3  # three different models, three different answers


def test_sampling_settings_are_the_same_for_every_variant(app):
    vs = app[0].variants
    for v in vs.variants.values():
        greedy = variants.generation_config(v.model, 7, 0.0)
        assert (greedy.do_sample, greedy.max_new_tokens) == (False, 7)
        assert greedy.eos_token_id == v.model.generation_config.eos_token_id is not None
        hot = variants.generation_config(v.model, 7, 0.8)
        assert (hot.do_sample, hot.temperature, hot.top_p) == (True, 0.8, 0.95)
    torch.manual_seed(0)
    stats = StreamStats()
    last = list(vs.stream(image(), "Write the HTML", max_new_tokens=6, temperature=0.8, stats=stats))[-1]
    assert len(last) == 3 and all(1 <= stats.tokens[n] <= 6 for n in vs.names)


def test_closing_the_stream_stops_all_generations(app):
    vs = app[0].variants
    stats = StreamStats()
    gen = vs.stream(image(), "Write the HTML", max_new_tokens=2000, stats=stats)
    next(gen)
    gen.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("viscodex-gen-")]
    assert len(stats.end_s) == 0 or max(stats.tokens.values(), default=0) < 2000


def test_stop_event_ends_generation_early(app):
    vs = app[0].variants
    stop = threading.Event()
    stats = StreamStats()
    n = 0
    for _ in vs.stream(image(), "Write the HTML", max_new_tokens=2000, stop=stop, stats=stats):
        n += 1
        if n == 2:
            stop.set()
    assert set(stats.tokens) == set(vs.names) and max(stats.tokens.values()) < 2000


def test_different_vision_towers_are_not_shared(app, tmp_path):
    """Identity is checked, not assumed: change one vision tensor in a copy of the merged model."""
    from safetensors.torch import load_file, save_file

    specs = dict(app[0].specs)
    changed = tmp_path / "merged-other-vision"
    shutil.copytree(specs["merged"], changed)
    for f in sorted(changed.glob("*.safetensors")):
        sd = load_file(f)
        keys = [k for k in sd if k.startswith(("visual.", "model.visual."))]
        if keys:
            sd[keys[0]] = sd[keys[0]] + 1e-3
            save_file(sd, f, metadata={"format": "pt"})
            break
    else:
        pytest.fail("no vision tensor found")
    vs = load_variants({**specs, "merged": str(changed)}, device="cpu")
    assert vs.groups == [["vlm", "swapped"], ["merged"]]
    assert vs.variants["merged"].visual is not vs.variants["vlm"].visual
    stats = StreamStats()
    img = image()
    with VisionCounter(vs.leader(0).visual) as a, VisionCounter(vs.leader(1).visual) as b:
        last = list(vs.stream(img, "Write the HTML", max_new_tokens=MAX_NEW, stats=stats))[-1]
        assert (a.n, b.n, stats.vision_calls) == (1, 1, 2)
    assert last[2] == vs.generate_plain("merged", img, "Write the HTML", max_new_tokens=MAX_NEW)[0]


def test_a_code_llm_or_missing_model_is_refused_as_a_variant(trio, tmp_path):
    with pytest.raises(SourceError, match=r"VISCODEX_SWAPPED=.*is a 'qwen2' model, not a vision-language model"):
        load_variants({"swapped": str(trio["coder"])}, device="cpu")
    with pytest.raises(SourceError, match=r"VISCODEX_MERGED=.*/nothing-here: cannot load a model config"):
        load_variants({"merged": str(tmp_path / "nothing-here")}, device="cpu")


def test_resolve_variants_precedence(monkeypatch, tmp_path):
    for env in sources.ENV_VARS.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("VISCODEX_SWAPPED", "org/swapped")
    assert sources.resolve_variants("a/vlm", None, "c/merged") == {"vlm": "a/vlm", "swapped": "org/swapped",
                                                                   "merged": "c/merged"}
    monkeypatch.delenv("VISCODEX_SWAPPED")
    # a Space may publish no swapped model: the configured variants only, no default filled in
    assert sources.resolve_variants(vlm="a/vlm", merged="c/merged") == {"vlm": "a/vlm", "merged": "c/merged"}
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ViscodexError, match=r"recipe '.*missing.yaml': no such file .* packaged recipe name "
                                            r"\(viscodex-33b, viscodex-8b\)"):
        sources.resolve_variants(recipe=tmp_path / "missing.yaml")


def test_nothing_configured_is_the_offline_trio_even_with_the_hub_reachable(monkeypatch, tmp_path):
    """Issue 19: no silent 32 GB download; real models only when asked, sizes printed first."""
    for env in [*sources.ENV_VARS.values(), sources.RECIPE_ENV, "HF_HUB_OFFLINE"]:
        monkeypatch.delenv(env, raising=False)
    built = {}
    monkeypatch.setattr(sources, "default_variants", lambda: built.setdefault("trio", {"vlm": tmp_path / "v"}))
    monkeypatch.setattr(sources, "build_variant", lambda *a: pytest.fail("a recipe was built unasked"))
    assert sources.resolve_variants() == {"vlm": str(tmp_path / "v")} and built
    # asked for by name: the packaged recipe; its sizes (from safetensors headers) are logged before any merge
    calls = []
    monkeypatch.setattr(sources, "recipe_sizes", lambda rp: calls.append(("sizes", Path(rp).name)) or "sizes")
    monkeypatch.setattr(sources, "build_variant", lambda rp, v: calls.append(("build", v)) or tmp_path / v)
    monkeypatch.setenv(sources.RECIPE_ENV, "viscodex-8b")
    got = sources.resolve_variants()
    assert calls == [("sizes", "viscodex-8b.yaml"), ("build", "swapped"), ("build", "merged")]
    assert got["vlm"] == "Qwen/Qwen2.5-VL-7B-Instruct" and got["merged"] == str(tmp_path / "merged")


def test_recipe_sizes_reads_headers_only(trio, tmp_path):
    from viscodex.engine.recipe import Recipe

    rp = tmp_path / "r.yaml"
    rp.write_text(Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"])).dump())
    line = sources.recipe_sizes(rp)
    assert line.startswith(f"recipe {rp}: reads the VLM {trio['vlm']} (") and "writes the coder-swapped and merged" in line


def test_two_variants_load_and_stream(app):
    specs = {k: v for k, v in app[0].specs.items() if k != "swapped"}
    vs = load_variants(specs, device="cpu")
    assert vs.names == ["vlm", "merged"] and vs.groups == [["vlm", "merged"]]
    last = list(vs.stream(image(), "Write the HTML", max_new_tokens=4))[-1]
    assert len(last) == 2 and all(last)


def test_extract_code():
    ans = "Here:\n```python\nimport matplotlib.pyplot as plt\nplt.plot([1])\n```\nand\n```html\n<p>x</p>\n```"
    assert extract_code(ans, "html") == ("<p>x</p>", "html")
    assert extract_code(ans, "python") == ("import matplotlib.pyplot as plt\nplt.plot([1])", "python")
    assert extract_code(ans) == ("import matplotlib.pyplot as plt\nplt.plot([1])", "python")
    assert extract_code("```html\n<div>partial") == ("<div>partial", "html")  # still streaming
    assert extract_code("<!DOCTYPE html><p>x</p>") == ("<!DOCTYPE html><p>x</p>", "html")
    assert extract_code("just words") == ("just words", None)


def test_previews_render_html_in_a_sandboxed_iframe_and_charts_in_the_sandbox():
    chart = "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\n```"
    html_doc = '```html\n<p onclick="x">"quoted" & <b>bold</b></p>\n```'
    c, h = compare.render_previews([chart, html_doc], TASKS["Matplotlib chart"], chart_timeout=60)
    assert c.png.startswith(b"\x89PNG") and c.message == ""
    assert h.png is None and h.message.startswith("the code raised SyntaxError")  # HTML is not Python
    p = compare.render_preview(html_doc, TASKS["HTML page"])
    assert p.html.startswith('<iframe sandbox="allow-scripts" ') and "allow-same-origin" not in p.html
    assert "&lt;p onclick=&quot;x&quot;&gt;&quot;quoted&quot; &amp; &lt;b&gt;" in p.html
    assert "<p" not in p.html.split("srcdoc=", 1)[1]  # nothing in the document is live markup of the app page
    auto = compare.render_preview(html_doc, TASKS["Free text"])
    assert auto.html and auto.html.startswith("<iframe sandbox=")
    img = html_preview.png_img(c.png, alt='a "chart"')
    assert img.startswith('<img alt="a &quot;chart&quot;" src="data:image/png;base64,iVBORw0KGgo')
    with pytest.raises(ValueError, match="not a PNG"):
        html_preview.png_img(b"<script>alert(1)</script>")


def test_gpu_duration_and_slice_size():
    assert zerogpu.gpu_duration(16, 1000) == 20
    assert zerogpu.gpu_duration(1024, 1_000_000) > zerogpu.gpu_duration(512, 1_000_000) > zerogpu.gpu_duration(512, 0)
    assert zerogpu.gpu_duration(100_000, 10**8) == 300
    # Measured on an H200 (benchmarks/gpu/app_7b.py): three 7B-shape columns streaming at once
    # decode 7.5 tokens/s each, so 512 tokens take ~68 s; the request must not be cut short.
    assert zerogpu.gpu_duration(512, 448 * 448) >= 512 / 7.5 + 5
    assert zerogpu.zerogpu_size(41 * 1024**3) == "large" and zerogpu.zerogpu_size(46 * 1024**3) == "xlarge"


def test_gpu_size_variable_overrides(monkeypatch):
    monkeypatch.setenv("VISCODEX_GPU_SIZE", "xlarge")
    assert zerogpu.zerogpu_size(1) == "xlarge"
    monkeypatch.setenv("VISCODEX_GPU_SIZE", "huge")
    with pytest.raises(ViscodexError, match="VISCODEX_GPU_SIZE='huge': expected large or xlarge"):
        zerogpu.zerogpu_size(1)


# ---------------------------------------------------------------- the launched app, via gradio_client
def columns(out, n: int = 3) -> tuple[list, list, str]:
    """(codes, previews, status) of a /run output: n variant columns plus the hidden compare column."""
    k = n + 1
    return list(out[:n]), list(out[k:k + n]), out[2 * k]


def predict(client, path, task="HTML page", max_new=MAX_NEW, **kw):
    from gradio_client import handle_file

    args = dict(image=handle_file(str(path)), task=task, instruction=TASKS[task].instruction, max_new_tokens=max_new,
                temperature=0.0, max_pixels=200_000)
    args.update(kw)
    return client.submit(**args, api_name="/run")


def test_request_streams_three_nonempty_outputs_with_one_vision_pass(app, client, image_file):
    vs = app[0].variants
    with VisionCounter(vs.leader(0).visual) as c:
        job = predict(client, image_file)
        final = job.result(timeout=120)
        assert c.n == 1
    codes, htmls, status = columns(final)
    assert all(code.strip() for code in codes)
    assert len(job.outputs()) > 2  # streamed: several updates before the final one
    # some column was seen part-written (which one depends on the machine's load: on two busy cores
    # the first column can finish before the client's first poll)
    assert any(0 < len(o[i]) < len(codes[i]) for o in job.outputs()[:-1] for i in range(len(codes)))
    assert all(h.startswith('<iframe sandbox="allow-scripts" ') for h in htmls)
    assert status.startswith("**Input:** PNG 640x420 RGB; resized from 640x420")
    from viscodex.app.uploads import load_image

    ref = [vs.generate_plain(n, load_image(image_file, max_pixels=200_000).image, TASKS["HTML page"].instruction,
                             max_new_tokens=MAX_NEW)[0] for n in vs.names]
    assert list(codes) == [extract_code(r, "html")[0].strip() for r in ref]  # gr.Code strips its value


def _bad_files(d: Path) -> dict[str, tuple[Path, str]]:
    from test_uploads import png_header_only

    out = {}
    (d / "notes.png").write_text("not an image at all")
    out["non-image"] = (d / "notes.png", "not an image file this app can read")
    (d / "empty.png").write_bytes(b"")
    out["empty"] = (d / "empty.png", "the file is empty")
    buf = io.BytesIO()
    Image.effect_noise((300, 300), 60).convert("RGB").save(buf, "PNG")
    (d / "cut.png").write_bytes(buf.getvalue()[:3000])
    out["truncated"] = (d / "cut.png", "corrupt or truncated")
    (d / "bomb.png").write_bytes(png_header_only(60_000, 60_000))
    out["bomb"] = (d / "bomb.png", "decompression bomb")
    Image.new("RGB", (3, 3)).save(d / "tiny.png")
    out["tiny"] = (d / "tiny.png", "at least 8 px on each side")
    return out


@pytest.mark.parametrize("case", ["non-image", "empty", "truncated", "bomb", "tiny"])
def test_bad_uploads_get_their_message(client, tmp_path, case):
    from gradio_client.exceptions import AppError

    path, needle = _bad_files(tmp_path)[case]
    with pytest.raises(AppError, match=needle):
        predict(client, path).result(timeout=60)


@pytest.mark.parametrize("mode,note", [("CMYK", "CMYK converted to RGB"), ("RGBA", "transparency composited on white"),
                                       ("P", "palette image converted to RGB"), ("GIF", "animated (2 frames)")])
def test_unusual_images_are_normalised_and_run(client, tmp_path, mode, note):
    base = Image.open(Path(compare.__file__).parent / "assets" / "bar_chart.png").convert("RGB").resize((160, 100))
    if mode == "GIF":
        p = tmp_path / "anim.gif"
        base.save(p, save_all=True, append_images=[base.rotate(90)], duration=50, loop=0)
    elif mode == "CMYK":
        p = tmp_path / "cmyk.jpg"
        base.convert("CMYK").save(p)
    else:
        p = tmp_path / f"{mode}.png"
        (base.convert("RGBA") if mode == "RGBA" else base.convert("P")).save(p)
    final = predict(client, p, task="Free text", max_new=4).result(timeout=120)
    assert note in columns(final)[2]


def test_concurrent_clients_all_complete_with_the_same_answers(app, image_file):
    from gradio_client import Client

    n = 4
    clients = [Client(app[1], verbose=False) for _ in range(n)]
    with ThreadPoolExecutor(n) as ex:
        results = list(ex.map(lambda c: predict(c, image_file).result(timeout=300), clients))
    assert len(results) == n
    first = columns(results[0])[0]
    assert all(code.strip() for code in first)
    assert all(columns(r)[0] == first for r in results)  # greedy: concurrency must not mix up requests


def test_cancelling_a_request_stops_its_generations(client, image_file):
    """What the Stop button does (cancels=[run]): the server closes the stream, which stops all three."""
    import time

    job = predict(client, image_file, max_new=3000)
    deadline = time.monotonic() + 60
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.outputs(), "no streamed output before cancelling"
    assert any(t.name.startswith("viscodex-gen-") for t in threading.enumerate())
    job.cancel()
    deadline = time.monotonic() + 20
    while any(t.name.startswith("viscodex-gen-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("viscodex-gen-")]


def test_api_exposes_only_run(client):
    assert list(client.view_api(return_format="dict")["named_endpoints"]) == ["/run"]


def test_cli_app_command_builds_the_app_on_the_given_variants(monkeypatch):
    """`viscodex app` passes the variants to create_app as arguments: no os.environ / sys.argv edits."""
    import os

    from typer.testing import CliRunner

    from viscodex.app import ui
    from viscodex.cli import app as cli

    seen = {}

    class Fake:
        def launch(self, **kw):
            seen["launch"] = kw

    monkeypatch.setattr(ui, "create_app", lambda variants, recipe=None: seen.update(variants=variants) or Fake())
    env, argv = dict(os.environ), list(sys.argv)
    r = CliRunner().invoke(cli, ["app", "--vlm", "a/v", "--swapped", "b/s", "--merged", "c/m", "--port", "7999"])
    assert r.exit_code == 0, r.output
    assert seen == {"variants": {"vlm": "a/v", "swapped": "b/s", "merged": "c/m"},
                    "launch": {"port": 7999, "host": None}}
    assert dict(os.environ) == env and sys.argv == argv


def test_space_entry_point_is_the_packaged_one():
    """The checkout's app.py is the Space template's app.py (a wheel's `viscodex space` ships the latter)."""
    from viscodex.hub.space import TEMPLATE_DIR

    assert (ROOT / "app.py").read_bytes() == (TEMPLATE_DIR / "app.py").read_bytes()
    assert (ROOT / "requirements.txt").resolve() == (TEMPLATE_DIR / "requirements.txt").resolve()


def test_without_seccomp_chart_code_is_refused_in_the_preview_slot(app, client, image_file, monkeypatch, request):
    """Issue 13: where the sandbox's strong layers are missing (here: the capability probe forced
    off), chart code is not run and each preview slot says why; the "Models and memory" panel shows
    the sandbox line found at start."""
    import gradio as gr

    from viscodex import sandbox

    ui = app[0]
    panel = [b.value for b in ui.demo.blocks.values() if isinstance(b, gr.Markdown) and "Chart code" in str(b.value)]
    assert panel and panel[0].endswith(f"**Chart code** {sandbox.status().line}") and "seccomp on" in panel[0]
    answer = "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n```"

    def fake_stream(image, instruction, **kw):
        yield (answer,) * len(ui.names)

    monkeypatch.setattr(ui.variants, "stream", fake_stream)  # what the app's GPU function streams from
    request.getfixturevalue("no_seccomp")  # after reading the panel, which shows the real probe
    out = predict(client, image_file, task="Matplotlib chart").result(timeout=120)
    previews = columns(out)[1]
    for h in previews:
        assert "generated code was not run: this machine cannot sandbox it (seccomp off" in h
        assert "<img" not in h


# ---------------------------------------------------------------- issue 19: request status, limits, start-up
def test_status_counts_preview_rendering_and_updates_while_it_runs(monkeypatch):
    import time

    from viscodex.app import request

    def generate(image, instruction, max_new_tokens, temperature, lam, lam_b):
        yield ("a",), ""
        yield ("ab",), " (λ 0.3 recomputed in 1 ms)"

    def slow_render(texts, task):
        time.sleep(1.3)
        return [compare.Preview(None, None, "no code")]

    monkeypatch.setattr(compare, "render_previews", slow_render)
    outs = list(request.run(generate, 2, image(), "Free text", "", 8, 0.0, 200_000, 0.3, None))
    statuses = [o[-1] for o in outs]
    assert statuses[0].endswith("· λ 0.3 · starting…")
    assert any("generating…" in s for s in statuses)
    rendering = [s for s in statuses if "rendering previews…" in s]
    assert len(rendering) >= 2  # ticks while the charts render
    final = statuses[-1]
    m = __import__("re").search(r"done in ([\d.]+) s \(generation ([\d.]+) s, previews ([\d.]+) s\)$", final)
    assert m and float(m.group(3)) >= 1.2 and float(m.group(1)) >= 1.2
    assert "recomputed in 1 ms" in final
    assert outs[-1][:2] == ("ab", "") and "no code" in outs[-1][2]  # second column (compare, unused) empty
    # every update carries a value for every preview (a share link saves what was last sent)
    assert all(len(o) == 5 and all(isinstance(x, str) for x in o) for o in outs)
    assert request.stopped(rendering[0]).endswith("· **stopped** while rendering previews")
    assert request.stopped(statuses[1]).endswith("· **stopped** during generation")
    assert request.stopped(final) == final


def test_the_server_refuses_uploads_over_the_limit(app, tmp_path):
    """The limit applies while the file is received, not only when Run is pressed."""
    import httpx

    from viscodex.app.uploads import MAX_FILE_BYTES

    from gradio.utils import get_upload_folder

    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1024**2)
    with open(big, "rb") as f:
        r = httpx.post(app[1] + "gradio_api/upload", files={"files": f}, timeout=60)
    assert r.status_code == 413, r.text
    assert not [p for p in Path(get_upload_folder()).rglob("big.png")]  # nothing stored on disk
    with open(ROOT / "viscodex/app/assets/bar_chart.png", "rb") as f:
        ok = httpx.post(app[1] + "gradio_api/upload", files={"files": f}, timeout=60)
    assert ok.status_code == 200 and Path(ok.json()[0]).is_file()


def test_launch_retries_a_failed_start_up_check_then_explains(monkeypatch):
    import gradio as gr
    from gradio import networking

    from viscodex.app import ui

    answers = iter([False, True])
    monkeypatch.setattr(networking, "url_ok", lambda url: next(answers))
    monkeypatch.setattr(ui.time, "sleep", lambda s: None)
    with gr.Blocks() as demo:
        gr.Markdown("hi")
    ui.launch_with_retries(demo, dict(server_port=free_port(), server_name="127.0.0.1", prevent_thread_lock=True,
                                      quiet=True))
    assert demo.is_running
    demo.close()
    monkeypatch.setattr(networking, "url_ok", lambda url: False)
    with pytest.raises(ViscodexError, match=r"did not answer its own start-up check 3 times .* NO_PROXY=localhost"):
        ui.launch_with_retries(demo, dict(server_port=free_port(), server_name="127.0.0.1", prevent_thread_lock=True,
                                          quiet=True))


def test_tiny_models_get_toy_examples_and_the_untrained_notice(app):
    import gradio as gr

    from viscodex.app import toy_examples
    from viscodex.toy import world

    ui = app[0]
    md = [str(b.value) for b in ui.demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert any("tiny untrained demo models: their answers are noise" in m for m in md)
    rows = toy_examples.toy_examples("Free text")
    assert {r[2] for r in rows} == {world.GROUNDING.prompt(None), world.IMAGE_CODE.prompt(None)}
    assert all(Image.open(r[0]).size == (toy_examples.IMAGE_PX,) * 2 for r in rows)
    datasets = [b for b in ui.demo.blocks.values() if isinstance(b, gr.Dataset)]
    assert any("Toy examples" in (d.label or "") for d in datasets)


def test_example_query_preselects_an_example():
    from types import SimpleNamespace

    from viscodex.app.ui import example_query

    rows = [["/x/bar_chart.png", "Matplotlib chart", "chart it"], ["/x/landing_page.png", "HTML page", "page"]]
    req = SimpleNamespace(query_params={"example": "Bar_Chart"})
    assert example_query(req, rows) == ("/x/bar_chart.png", "Matplotlib chart", "chart it")
    skipped = example_query(SimpleNamespace(query_params={}), rows)
    assert all(s == __import__("gradio").skip() for s in skipped)  # a shared link's restored inputs stay


def test_models_panel_shows_the_live_lambda_cost(app):
    import gradio as gr

    panel = [str(b.value) for b in app[0].demo.blocks.values() if isinstance(b, gr.Markdown) and "Live λ" in str(b.value)]
    assert panel and "**Live λ** on: the merged backbone is lerp(coder-swapped, VLM, λ)" in panel[0]
    assert "λ recompute: " in panel[0] and "extra memory" in panel[0]
