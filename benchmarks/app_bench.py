"""App benchmark (issue 6): what the side-by-side app costs on top of a bare `generate`.

Measured in one run, on the same image, prompt and greedy settings:
  bare    - each variant's own `model.generate` (its own vision pass), one after the other
  stream  - viscodex.app.variants.VariantSet.stream: one shared vision pass, three generations at once
  app     - the launched Gradio app (viscodex.app.ui) over HTTP as a browser talks to it: upload, queue,
            the SSE stream (timed from before the upload)
Per variant: time to first token (TTFT) and decode tokens/s; ratios against bare. Then the
vision encoder alone: one shared pass vs one pass per variant.

    python benchmarks/app_bench.py                       # tiny offline trio, CPU
    python benchmarks/app_bench.py --vlm ... --swapped ... --merged ... --max-new-tokens 256
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

from viscodex.app.assets import ASSETS_DIR


def ttft_and_rate(t_submit: float, first: float, end: float, tokens: int) -> tuple[float, float]:
    rate = (tokens - 1) / (end - first) if tokens > 1 and end > first else 0.0
    return first - t_submit, rate


class _Timer:
    """A generate() streamer that records when the first new token and the last arrive."""

    def __init__(self):
        self.calls, self.first, self.last = 0, None, None

    def put(self, value):
        self.calls += 1
        if self.calls == 2:  # the first put is the prompt
            self.first = time.perf_counter()
        self.last = time.perf_counter()

    def end(self):
        self.last = time.perf_counter()


def bench_bare(vs, image, instruction, max_new):
    import torch

    from viscodex.app.variants import generation_config, messages_for

    out = {}
    for name, v in vs.variants.items():
        prompt = v.processor.apply_chat_template(messages_for(instruction), add_generation_prompt=True, tokenize=False)
        t0 = time.perf_counter()
        inputs = {k: t.to(vs.device) for k, t in v.processor(text=[prompt], images=[image], return_tensors="pt").items()}
        timer = _Timer()
        with torch.inference_mode():
            ids = v.model.generate(**inputs, generation_config=generation_config(v.model, max_new, 0.0), streamer=timer)
        n = ids.shape[1] - inputs["input_ids"].shape[1]
        text = v.processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        out[name] = (*ttft_and_rate(t0, timer.first, timer.last, n), n, text, time.perf_counter() - t0)
    return out


def bench_stream(vs, image, instruction, max_new):
    from viscodex.app.variants import StreamStats

    st = StreamStats()  # times are from the start of the call, preprocessing and vision included
    t0 = time.perf_counter()
    *_, last = vs.stream(image, instruction, max_new_tokens=max_new, stats=st)
    wall = time.perf_counter() - t0
    return {n: (st.first_token_s[n], st.tokens_per_s(n), st.tokens[n], last[i], wall) for i, n in enumerate(vs.names)}


def load_app(variants: dict[str, str | None]):
    from viscodex.app.ui import create_app

    ui = create_app(variants)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ui.demo.launch(prevent_thread_lock=True, server_port=port, server_name="127.0.0.1", quiet=True, **ui.launch_kwargs)
    return ui, f"http://127.0.0.1:{port}/"


class RawClient:
    """The app's HTTP protocol as the browser speaks it (upload, queue/join, the SSE stream with
    diffs), without gradio_client: its Job iterator and per-message processing added 30-100 ms to
    every first token here, which is the client's cost, not the app's."""

    def __init__(self, url: str, demo):
        import httpx

        self.http = httpx.Client(base_url=url, timeout=120)
        self.fn_index = next(i for i, d in demo.fns.items() if d.api_name == "run")

    def run(self, image_path, *args):
        """Yield (seconds since the call, outputs) for every streamed update, the upload included."""
        import json
        import uuid

        from gradio_client.utils import apply_diff

        t0 = time.perf_counter()
        with open(image_path, "rb") as f:
            path = self.http.post("gradio_api/upload", files={"files": f}).json()[0]
        session = uuid.uuid4().hex[:12]
        data = [{"path": path, "meta": {"_type": "gradio.FileData"}}, *args]
        self.http.post("gradio_api/queue/join", json={"data": data, "fn_index": self.fn_index, "session_hash": session,
                                                      "event_data": None, "trigger_id": None}).raise_for_status()
        outputs = None
        with self.http.stream("GET", f"gradio_api/queue/data?session_hash={session}") as sse:
            for line in sse.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg["msg"] == "process_generating":
                    data = msg["output"]["data"]
                    outputs = list(data) if outputs is None else [apply_diff(o, d) for o, d in zip(outputs, data)]
                    yield time.perf_counter() - t0, outputs
                elif msg["msg"] == "process_completed":
                    if not msg.get("success", True):
                        raise RuntimeError(f"the app failed: {msg.get('output')}")
                    yield time.perf_counter() - t0, msg["output"]["data"]
                    return


def bench_app(client: RawClient, image_path, task, instruction, max_new, names, tokens, lam=None):
    from viscodex.app.tasks import TASKS, extract_code
    from viscodex.app.uploads import DEFAULT_MAX_PIXELS

    first: dict[str, float] = {}
    last: dict[str, float] = {}
    prev: dict[str, str] = {}
    final, wall = None, 0.0
    extra = [lam, False, 0.0] if lam is not None else []
    for now, out in client.run(image_path, task, instruction, max_new, 0.0, DEFAULT_MAX_PIXELS, *extra):
        for i, n in enumerate(names):
            code = out[i] if isinstance(out[i], str) else prev.get(n, "")
            if code and n not in first:
                first[n] = now
            if code != prev.get(n):
                last[n] = now
                prev[n] = code
        final, wall = out, now
    lang = TASKS[task].language
    res = {}
    for n in names:
        ttft, rate = ttft_and_rate(0.0, first.get(n, 0.0), last.get(n, 0.0), tokens[n])
        res[n] = (ttft, rate, tokens[n], final[names.index(n)] if final else "", wall)
    return res, lang, extract_code


def bench_lambda(vs, repeats: int = 5) -> str:
    """The live λ recompute (VariantSet.set_lambda): median seconds over `repeats`, memory cost."""
    if not vs.live.enabled:
        return f"live λ: off ({vs.live.reason})"
    times = [vs.set_lambda(lam) for lam in [0.3, 0.9] * repeats]
    vs.set_lambda(vs.live.recipe_lam)
    last = vs.live.last
    return (f"live λ recompute: median {statistics.median(times) * 1e3:.2f} ms over {len(times)} "
            f"({human_size(last.traffic_bytes)} read + written; extra memory {human_size(last.peak_extra_bytes)}, "
            f"{'measured' if last.measured_peak else 'largest chunk'})")


def bench_vision(vs, image, instruction, repeats):
    """The vision encoder alone: one shared pass per request vs one per variant."""
    import torch

    prepared = vs.prepare(image, instruction)
    pv, thw = prepared[0]["pixel_values"], prepared[0]["image_grid_thw"]

    def timed(passes):
        with torch.inference_mode():  # warm-up
            vs.leader(0).model.model.get_image_features(pv, thw, return_dict=True)
        ts = []
        for _ in range(repeats):
            if vs.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.inference_mode():
                for v in passes:
                    v.model.model.get_image_features(pv, thw, return_dict=True)
            if vs.device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    return timed([vs.leader(0)]), timed(list(vs.variants.values())), int(pv.shape[0])


from viscodex._util.sizes import human_size  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vlm"), p.add_argument("--swapped"), p.add_argument("--merged")
    p.add_argument("--image", default=str(ASSETS_DIR / "landing_page.png"))
    p.add_argument("--task", default="HTML page")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="runs per path; the median is reported")
    args = p.parse_args(argv)

    from viscodex.app import sources
    from viscodex.app.sources import LABELS
    from viscodex.app.tasks import TASKS
    from viscodex.app.uploads import load_image

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("VISCODEX_CACHE_EXAMPLES", "0")  # the benchmark never clicks an example
    instruction = TASKS[args.task].instruction
    image = load_image(args.image).image
    ui, url = load_app({name: getattr(args, name) for name in sources.ENV_VARS})
    vs = ui.variants
    client = RawClient(url, ui.demo)
    names = vs.names
    print(f"device {vs.device}, {len(names)} variants, image {image.size}, max_new_tokens {args.max_new_tokens}, "
          f"median of {args.repeats} runs, torch threads {__import__('torch').get_num_threads()}")

    runs = {"bare": [], "stream": [], "app": []}
    bench_bare(vs, image, instruction, 4)  # warm-up
    for _ in range(args.repeats):
        runs["bare"].append(bench_bare(vs, image, instruction, args.max_new_tokens))
        runs["stream"].append(bench_stream(vs, image, instruction, args.max_new_tokens))
        tokens = {n: runs["bare"][-1][n][2] for n in names}
        res, lang, extract = bench_app(client, args.image, args.task, instruction, args.max_new_tokens, names, tokens,
                                       lam=vs.live.recipe_lam if "merged" in names else None)
        runs["app"].append(res)
        for n in names:  # the same answers on every path (greedy)
            bare_text = runs["bare"][-1][n][3]
            assert runs["stream"][-1][n][3] == bare_text, f"{n}: stream differs from bare generate"
            assert res[n][3] == extract(bare_text, lang)[0].strip(), f"{n}: app differs from bare generate"

    def med(path, n, i):
        return statistics.median(r[n][i] for r in runs[path])

    print(f"\n{'variant':18s} {'path':7s} {'TTFT s':>8s} {'tok/s':>8s} {'tokens':>6s}  TTFT/bare  tok/s/bare")
    for n in names:
        b_t, b_r = med("bare", n, 0), med("bare", n, 1)
        for path in ("bare", "stream", "app"):
            t, r = med(path, n, 0), med(path, n, 1)
            print(f"{LABELS[n]:18s} {path:7s} {t:8.3f} {r:8.1f} {int(med(path, n, 2)):6d}  "
                  f"{t / b_t if b_t else 0:9.2f}  {r / b_r if b_r else 0:10.2f}")
    walls = {"bare": statistics.median(sum(r[n][4] for n in names) for r in runs["bare"]),
             "stream": statistics.median(r[names[0]][4] for r in runs["stream"]),
             "app": statistics.median(r[names[0]][4] for r in runs["app"])}
    total = sum(int(med("bare", n, 2)) for n in names)
    print(f"\nall {len(names)} answers ({total} tokens): bare one after another {walls['bare']:.3f} s, "
          f"stream {walls['stream']:.3f} s (x{walls['stream'] / walls['bare']:.2f}), "
          f"app {walls['app']:.3f} s (x{walls['app'] / walls['bare']:.2f}; app/stream x{walls['app'] / walls['stream']:.2f})")
    shared, per_variant, patches = bench_vision(vs, image, instruction, max(10, args.repeats))
    print(f"vision encoder ({patches} patches): shared {shared * 1e3:.2f} ms/request vs per-variant "
          f"{per_variant * 1e3:.2f} ms/request (x{per_variant / shared:.2f}); "
          f"memory: {human_size(vs.footprint().shared)} shared instead of "
          f"{human_size(vs.footprint().shared * len(names))}")
    print(bench_lambda(vs))
    ui.demo.close()


if __name__ == "__main__":
    main()
