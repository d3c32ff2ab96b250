"""viscodex eval / sweep (issue 9): scorers on known-good and known-bad answers (a correct program
passes, a wrong one fails, an infinite loop times out), benchmark-format loaders, a resumable
evaluation of the tiny VLM, a 3-lambda sweep writing table, plot and JSON, and results flowing
into the model card's model-index."""
from __future__ import annotations

import dataclasses
import gzip
import http.server
import io
import json
import shutil
import threading

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from markers import needs_browser

from viscodex.cli import app
from viscodex.evaluation import EvalError, get_task, task_names
from viscodex.evaluation.design2code import (
    HtmlRenderer,
    block_similarity,
    browser_available,
    score_html,
    text_blocks,
    text_similarity,
)
from viscodex.evaluation.chartmimic import ChartMimic
from viscodex.evaluation.mmcode import MMCode
from viscodex.evaluation.records import card_entry, merge_entries
from viscodex.evaluation.similarity import image_similarity
from viscodex.evaluation.tasks import SAMPLES_DIR, extract_code
from viscodex.engine.recipe import RECIPE_FILE, Recipe

LOOP = "```python\nwhile True:\n    pass\n```"
TOY = "toy_grounding"  # the cheapest toy task to generate for (12 tokens)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------- registry and helpers
def test_registry_and_code_extraction():
    assert {"mmcode", "chartmimic", "design2code", "toy_grounding", "toy_coding", "toy_image_code"} <= set(task_names())
    assert get_task("Chart-Mimic").name == "chartmimic" and get_task("toy-image-code").name == "toy_image_code"
    with pytest.raises(EvalError, match="unknown task 'mmbench'; choose from chartmimic, design2code, mmcode"):
        get_task("mmbench")
    text = "Here:\n```html\n<p>x</p>\n```\nand\n```python\nprint(1)\n```\n"
    assert extract_code(text, "python") == "print(1)" and extract_code(text, "html") == "<p>x</p>"
    assert extract_code("```\nprint(2)\n```", "python") == "print(2)"  # untagged block
    assert extract_code("print(3)", "python") == "print(3)"  # bare code
    assert extract_code("```py\nprint(4)", "python") == "print(4)"  # unterminated block


# ---------------------------------------------------------------- mmcode
@pytest.fixture(scope="module")
def mm():
    task = MMCode()
    return task, task.load("sample")


def test_mmcode_reads_the_benchmark_format(mm, tmp_path):
    task, samples = mm
    assert [s.id for s in samples] == ["viscodex_grid_1", "viscodex_triangle_1", "viscodex_lattice_1"]
    assert all(len(s.images) == 1 and s.images[0].mode == "RGB" for s in samples)
    grid, tri = samples[0], samples[1]
    assert grid.reference["fn_name"] is None and len(grid.reference["inputs"]) == 3
    assert "Standard IO" in grid.prompt and "![image](1.png)" in grid.prompt
    assert tri.reference["fn_name"] == "area" and "Call-Based" in tri.prompt and "def area(a, b):" in tri.prompt
    # the real file is gzip-compressed JSONL; other data splits are skipped; input_output may be a dict
    lines = (SAMPLES_DIR / "mmcode_sample.jsonl").read_text().splitlines()
    extra = json.loads(lines[0])
    extra.update(problem_id="other_split", data_split="extra", input_output=json.loads(extra["input_output"]))
    as_dict = json.loads(lines[2])
    as_dict["input_output"] = json.loads(as_dict["input_output"])
    gz = tmp_path / "mmcode_test.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.write("\n".join([lines[0], json.dumps(extra), json.dumps(as_dict)]) + "\n")
    got = task.load(str(tmp_path), limit=5)  # a folder holding the Hub's file name works too
    assert [s.id for s in got] == ["viscodex_grid_1", "viscodex_lattice_1"]
    assert got[1].reference["inputs"] == samples[2].reference["inputs"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**json.loads(lines[0]), "input_output": "{not json"}) + "\n")
    with pytest.raises(EvalError, match="viscodex_grid_1: input_output is not JSON"):
        task.load(str(bad))
    with pytest.raises(EvalError, match="no MMCode file"):
        task.load(str(tmp_path / "missing"))


@pytest.mark.slow
def test_mmcode_correct_programs_pass_wrong_fail_loops_time_out(mm):
    task, samples = mm
    problems = [json.loads(x) for x in (SAMPLES_DIR / "mmcode_sample.jsonl").read_text().splitlines()]
    for p, s in zip(problems, samples):  # every reference solution, fenced as a model would answer
        r = task.score(f"Sure.\n```python\n{p['solutions'][0]}```\n", s)
        assert r == {"score": 1.0, "passed": 1.0, "tests": 3.0, "timeout": 0.0, "verdicts": [1, 1, 1], "message": ""}, s.id
    grid, tri, lattice = samples
    wrong = task.score("```python\nn, m = map(int, input().split())\nfor _ in range(n): input()\nprint(19)\n```", grid)
    assert wrong["score"] == 0.0 and wrong["passed"] == pytest.approx(1 / 3) and wrong["message"] == "test 2: wrong answer"
    loop = MMCode(timeout=2.0).score(LOOP, grid)  # the whole problem's deadline (the benchmark's 21 s, here 2 s)
    assert loop["score"] == 0.0 and loop["timeout"] == 1.0 and loop["verdicts"] == [-1, -1, -1]
    assert loop["message"].startswith("the code ran longer than 3 s")
    crash = task.score("```python\nprint(1/0)\n```", lattice)
    assert crash["score"] == 0.0 and crash["message"].startswith("test 1: ZeroDivisionError")
    net = task.score("```python\nimport socket\nsocket.create_connection(('127.0.0.1', 9))\n```", lattice)
    assert net["score"] == 0.0 and "network access is blocked" in net["message"]
    # call-based: a plain function, a LeetCode-style class; a wrong formula fails
    assert task.score("class Solution:\n    def area(self, a, b):\n        return a * b / 2\n", tri)["score"] == 1.0
    bad = task.score("def area(a, b):\n    return a + b\n", tri)
    assert bad["score"] == 0.0 and bad["message"] == "test 1: wrong answer"
    missing = task.score("def surface(a, b):\n    return a * b / 2\n", tri)
    assert missing["score"] == 0.0 and missing["message"] == "the program did not load: AttributeError: module 'tmp_sol' has no attribute 'area'"
    assert task.score("I cannot solve this.", grid)["score"] == 0.0


# ---------------------------------------------------------------- image similarity and chartmimic
def test_image_similarity_components():
    chart = Image.open(SAMPLES_DIR / "chartmimic" / "bar_1.png")
    same = image_similarity(chart, png(chart))
    assert same == {"visual": 1.0, "layout": 1.0, "color": 1.0, "structure": 1.0, "aspect": 1.0}
    blank = image_similarity(Image.new("RGB", chart.size, "white"), chart)
    assert blank["layout"] == 0.0 and blank["color"] == 0.0 and blank["visual"] < 0.15
    wide = image_similarity(chart.resize((chart.width * 2, chart.height)), chart)
    assert wide["aspect"] == pytest.approx(0.5) and wide["visual"] <= 0.5
    recolored = np.asarray(chart.convert("RGB")).copy()
    recolored[..., [0, 2]] = recolored[..., [2, 0]]  # swap red and blue: same layout, other colours
    sw = image_similarity(Image.fromarray(recolored), chart)
    assert sw["layout"] == 1.0 and sw["color"] < 0.9 and sw["visual"] < 1.0


@pytest.fixture(scope="module")
def charts():
    task = get_task("chartmimic")
    task.timeout = 30.0  # matplotlib's import alone takes seconds on a busy machine
    return task, task.load("sample")


@pytest.mark.slow
def test_chartmimic_scores_traced_code(charts):
    from concurrent.futures import ThreadPoolExecutor

    task, (bar, line) = charts
    assert bar.id == "bar_1" and "figsize=(4, 3)" in bar.prompt and bar.images[0].size == (400, 300)
    answers = {
        "good": f"```python\n{bar.reference['code']}```",
        "other": f"```python\n{line.reference['code']}```",
        "empty": "```python\nimport matplotlib.pyplot as plt\nplt.figure(figsize=(4, 3))\nplt.axis('off')\n```",
        "error": "```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 2], [3])\n```",
        "prose": "I would draw a bar chart.",
    }
    with ThreadPoolExecutor(3) as pool:  # each score is its own sandboxed process, as in `viscodex eval`
        loop_f = pool.submit(ChartMimic(timeout=2.0).score, LOOP, bar)
        got = dict(zip(answers, pool.map(lambda a: task.score(a, bar), answers.values())))
        loop = loop_f.result()
    assert got["good"] == {"score": 1.0, "executed": 1.0, "text": 1.0, "layout": 1.0, "type": 1.0, "color": 1.0}
    assert got["other"]["executed"] == 1.0 and got["other"]["type"] == 0.0 and got["other"]["score"] < 0.5
    # no ```python block: the benchmark runs a script that only imports pyplot (no axes: all four 0)
    assert got["prose"]["score"] == 0.0 and got["prose"]["message"].startswith("no ```python block in the answer")
    # a figure with nothing drawn keeps only the layout F1 (one 1x1 axes on both sides), as in the benchmark
    assert {k: got["empty"][k] for k in ("text", "layout", "type", "color", "score")} == \
        {"text": 0.0, "layout": 1.0, "type": 0.0, "color": 0.0, "score": 0.25}
    # the benchmark runs the answer inside try/except: plt.plot raised after making the axes (layout
    # 1x1 matches), and counted as a plot call before raising (the reference has a bar: type 0)
    err = got["error"]
    assert (err["score"], err["executed"], err["layout"], err["type"]) == (0.25, 1.0, 1.0, 0.0)
    assert err["message"].startswith("the code raised ValueError") and err["message"].endswith("(caught, as the benchmark's wrapper does)")
    assert loop["score"] == 0.0 and "longer than 2 s" in loop["message"]


def test_chartmimic_reads_the_release_archive(tmp_path, monkeypatch):
    import tarfile

    monkeypatch.setenv("VISCODEX_CACHE", str(tmp_path / "cache"))
    sub = tmp_path / "release" / "dataset" / "ori_500"
    sub.mkdir(parents=True)
    for f in ("line_1.py", "line_1.png", "bar_1.py", "bar_1.png"):
        shutil.copy(SAMPLES_DIR / "chartmimic" / f, sub / f)
    archive = tmp_path / "dataset-iclr.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "release" / "dataset", arcname="dataset")
    got = get_task("chartmimic").load(str(archive))
    assert [s.id for s in got] == ["bar_1", "line_1"]  # subset ori_500 (the default) found inside the archive
    assert got[1].reference["image"] == (SAMPLES_DIR / "chartmimic" / "line_1.png").read_bytes()
    assert len(list((tmp_path / "cache" / "eval").glob("chartmimic-*/.complete"))) == 1  # extracted once


def test_chartmimic_folder_without_figures_renders_the_ground_truth(tmp_path):
    shutil.copy(SAMPLES_DIR / "chartmimic" / "bar_1.py", tmp_path / "bar_1.py")
    (tmp_path / "broken_1.py").write_text("raise RuntimeError('no chart')\n")
    task = get_task("chartmimic")
    got = task.load(str(tmp_path), limit=1)
    assert got[0].id == "bar_1" and (tmp_path / "bar_1.viscodex.png").is_file()
    assert task.describe()["split"] == tmp_path.name  # the result names the folder actually read
    assert image_similarity(got[0].reference["image"], (SAMPLES_DIR / "chartmimic" / "bar_1.png").read_bytes())["visual"] > 0.97
    with pytest.raises(EvalError, match="broken_1.py: the ground-truth script does not render"):
        task.load(str(tmp_path))
    with pytest.raises(EvalError, match="no folder 'ori_500' in the ChartMimic data"):
        empty = tmp_path / "release"
        (empty / "direct_600").mkdir(parents=True)
        task.load(str(empty))


# ---------------------------------------------------------------- design2code


def test_text_and_block_similarity():
    doc = "<html><head><title>T</title><style>p{}</style></head><body><h1>Hello</h1><p>one <b>two</b></p>" \
          "<script>var x='hidden'</script><div>three</div></body></html>"
    assert text_blocks(doc) == ["Hello", "one two", "three"]
    assert text_similarity(["a b"], ["a b"]) == 1.0 and text_similarity(["a b"], ["c d"]) == 0.0
    assert text_similarity([], []) == 1.0 and text_similarity(["a b c d"], ["a b"]) == pytest.approx(2 * 2 / 6)
    assert block_similarity(["Hello", "one two"], ["one two", "Hello"]) == 1.0
    assert block_similarity([], ["x"]) == 0.0 and 0 < block_similarity(["Hello world"], ["Hello"]) < 1


def test_design2code_without_chromium_says_how_to_install(monkeypatch):
    monkeypatch.setenv("VISCODEX_CHROMIUM", "/nonexistent/chromium")
    with pytest.raises(EvalError, match=r"no Chromium found: .*tests/setup_browser.sh"):
        HtmlRenderer()


@needs_browser
def test_design2code_scores_rendered_pages_without_js_or_network():
    task = get_task("design2code")
    first, second = task.load("sample")
    assert first.images[0].size == (640, 480) and first.reference["html"].startswith("<!DOCTYPE html>")
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}"
    ref, ref_html = first.reference["image"], first.reference["html"]
    try:
        with HtmlRenderer() as r:
            good = score_html(extract_code(f"Here it is:\n```html\n{ref_html}```", "html"), ref, ref_html, r)
            assert good["rendered"] == 1.0 and good["text"] == 1.0 and good["blocks"] == 1.0 and good["score"] > 0.97
            other = score_html(second.reference["html"], ref, ref_html, r)
            assert other["score"] < 0.4 and other["text"] < 0.2
            empty = score_html("<html><body></body></html>", ref, ref_html, r)
            assert empty["score"] < 0.1 and empty["text"] == 0.0
            hostile = (f'<html><head><link rel="stylesheet" href="{url}/style.css"></head><body style="background:#fff">'
                       f'<img src="{url}/img.png"><script>document.body.style.background = "rgb(255,0,0)";'
                       f'fetch("{url}/js")</script><iframe src="{url}/frame"></iframe></body></html>')
            shot = r.render(hostile, width=320, height=240)
        a = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
        assert a.shape[1] == 320
        assert ((a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)).sum() == 0, "JavaScript ran"
        assert hits == [], f"the page reached the network: {hits}"
    finally:
        srv.shutdown()


@pytest.mark.slow
def test_empty_or_prose_answers_score_zero_on_every_task():
    """No metric floor (issue 15): an empty answer, prose, or 13 characters of garbage score 0."""
    for name in task_names():
        if name == "design2code" and not browser_available():
            continue
        task = get_task(name)
        sample = task.load("sample", limit=1)[0]
        with task.scorer() as score:
            for answer in ("", "I am not sure.", "qwzx plmk rty"):
                assert score(answer, sample)["score"] == 0.0, (name, answer)
    if browser_available():  # garbage inside a tag: no block of the reference, no credit for colours
        page = get_task("design2code").load("sample", limit=1)[0]
        with get_task("design2code").scorer() as score:
            got = score("<p>qwzx plmk rty</p>", page)
        assert got["score"] == 0.0 and got["blocks"] == 0.0 and got["message"] == \
            "none of the reference page's text was reproduced"


# ---------------------------------------------------------------- toy tasks
def test_toy_tasks_score_targets():
    for name in ("toy_grounding", "toy_coding", "toy_image_code"):
        task = get_task(name)
        samples = task.load(limit=4)
        assert len(samples) == 4 and len({s.id for s in samples}) == 4
        assert all(len(s.images) == (0 if name == "toy_coding" else 1) for s in samples)
        assert task.load(limit=4)[0].prompt == samples[0].prompt  # deterministic
        s = samples[0]
        assert task.score(s.reference["target"], s)["score"] == 1.0
        assert task.score("nothing useful", s)["score"] == 0.0
        msgs = task.messages(s)
        # the image takes the description's place: "Write SVG for:" + image (docs/demo.md)
        kinds = [c["type"] for c in msgs[0]["content"]]
        assert msgs[0]["role"] == "user" and kinds == (["text"] if name == "toy_coding" else ["text", "image"])
    with pytest.raises(EvalError, match="samples are generated from a seed"):
        get_task("toy_coding").load("/some/file")


# ---------------------------------------------------------------- records -> card
def test_card_entries_replace_older_ones():
    rep = {"task": "mmcode", "dataset": "likaixin/MMCode", "dataset_name": "MMCode", "split": "test", "metric": "pass@1",
           "metric_name": "pass@1", "official": True, "score": 0.1234, "n": 200, "limit": 200, "source": "hub",
           "max_new_tokens": 2048}
    e = card_entry(rep)
    assert (e["dataset_type"], e["dataset_name"], e["dataset_split"], e["metric_type"], e["metric_value"]) == \
        ("likaixin/MMCode", "MMCode (first 200 samples of test)", "test[:200]", "pass@1", 12.34)
    s = card_entry({**rep, "source": "sample", "limit": None, "n": 3})
    assert s["dataset_type"] == "viscodex/mmcode-sample" and s["dataset_name"] == "MMCode (viscodex tiny sample, 3 samples)"
    assert s["metric_type"] == "viscodex/mmcode/pass@1" and s["dataset_split"] == "sample"
    assert card_entry({**rep, "source": "/home/me/data/mmcode_test.jsonl.gz"})["viscodex"]["source"] == "mmcode_test.jsonl.gz"
    old = [{**e, "metric_value": 1.0}, {"benchmark": "ChartMimic", "value": 70}, {**e, "variant": "swapped"}]
    merged = merge_entries(old, [e])
    assert merged == [old[1], old[2], e]
    assert merge_entries({"ChartMimic": 70}, [e])[0] == {"dataset_name": "ChartMimic", "metric_type": "score", "metric_value": 70}


# ---------------------------------------------------------------- models: eval, sweep, card
@pytest.fixture(scope="module")
def sweep_run(trio, tmp_path_factory):
    """`viscodex sweep` over 3 lambdas on the tiny trio, recording into a folder merged at 0.5."""
    from viscodex.engine.merge import run_merge

    root = tmp_path_factory.mktemp("sweep")
    recipe = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]), name="tiny-sweep")
    (root / "recipe.yaml").write_text(recipe.dump())
    folder = root / "tiny-0.5"
    run_merge(dataclasses.replace(recipe, lam=0.5, name="tiny-0.5"), folder, progress=False)
    args = ["sweep", str(root / "recipe.yaml"), "--lambdas", "0.0,0.5,1.0", "--task", TOY, "--limit", "3",
            "--max-new-tokens", "6", "--out", str(root / "out"), "--device", "cpu", "--write-recipe", str(folder)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return root, folder, args, res.output


def test_sweep_writes_table_plot_results(sweep_run, trio, tmp_path):
    from viscodex.evaluation.runner import evaluate

    root, _, _, output = sweep_run
    out = root / "out"
    data = json.loads((out / "results.json").read_text())
    assert data["lambdas"] == [0.0, 0.5, 1.0] and data["tasks"] == [TOY] and data["selected_by"] == TOY
    scores = {k: v[TOY] for k, v in data["scores"].items()}
    tied = [x for x in (0.0, 0.5, 1.0) if scores[f"{x:g}"] == max(scores.values())]
    assert data["best_lambda"] == (tied[0] if len(tied) == 1 else None)  # a tie at the top is "no signal"
    assert (data["no_signal"] is None) == (len(tied) == 1)
    table = (out / "table.md").read_text().splitlines()
    assert table[0] == f"| λ | {TOY} attribute accuracy (%) |"
    assert [row.split("|")[1].strip(" *") for row in table[2:5]] == ["0", "0.5", "1"]
    assert (f"best lambda: {data['best_lambda']:g} (by {TOY})" if data["best_lambda"] is not None
            else f"best lambda: none ({data['no_signal']})") in output
    with Image.open(out / "plot.png") as im:
        assert im.format == "PNG" and im.size == (600, 400)
    assert not (out / ".merges").exists(), "scratch merges are deleted"
    outputs = {}
    for lam in ("0", "0.5", "1"):
        lines = [json.loads(x) for x in (out / f"lam-{lam}" / f"{TOY}.jsonl").read_text().splitlines()]
        assert len(lines) == 3
        rep = data["reports"][lam][0]
        assert rep["score"] == pytest.approx(np.mean([x["scores"]["score"] for x in lines]))
        outputs[lam] = [x["output"] for x in sorted(lines, key=lambda x: x["id"])]
    assert outputs["0"] != outputs["1"], "different lambdas, different models"
    # lambda = 1 is the VLM itself (task arithmetic's exact endpoint): same answers as evaluating it directly
    direct = evaluate(trio["vlm"], TOY, limit=3, max_new_tokens=6, cache_dir=tmp_path, device="cpu", progress=False)
    lines = [json.loads(x) for x in (tmp_path / f"{TOY}.jsonl").read_text().splitlines()]
    assert [x["output"] for x in sorted(lines, key=lambda x: x["id"])] == outputs["1"]
    assert direct["score"] == data["reports"]["1"][0]["score"]


def test_batched_generation_matches_one_by_one(trio):
    """Left padding with prompts of different lengths and images of different sizes changes nothing."""
    from viscodex.evaluation.generate import Generator

    task = get_task("mmcode")
    samples = task.load("sample")
    assert len({s.images[0].size for s in samples}) == 3 and len({len(s.prompt) for s in samples}) == 3
    gen = Generator(trio["vlm"], device="cpu", batch_size=3)
    args = ([task.messages(s) for s in samples], [s.images for s in samples])
    batched = gen.generate(*args, max_new_tokens=6)
    gen.batch_size = 1
    assert gen.generate(*args, max_new_tokens=6) == batched and len(batched) == 3
    with pytest.raises(EvalError, match="text-only model; this task needs a vision-language model"):
        Generator(trio["coder"], device="cpu").generate(*args, max_new_tokens=2)


def test_sweep_rerun_reuses_results_without_merging(sweep_run, monkeypatch):
    import viscodex.engine.merge

    root, folder, args, _ = sweep_run

    def no_merge(*a, **k):
        raise AssertionError("a completed lambda was merged again")

    monkeypatch.setattr(viscodex.engine.merge, "run_merge", no_merge)
    before = json.loads((root / "out" / "results.json").read_text())
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    after = json.loads((root / "out" / "results.json").read_text())
    assert after["scores"] == before["scores"]
    assert all(r[0]["generated"] == 0 and r[0]["cached"] == 3 for r in after["reports"].values())


def test_sweep_results_flow_into_the_card(sweep_run, tmp_path):
    from viscodex.hub.card import build_card
    from viscodex.evaluation.sweep import parse_lambdas

    root, folder, args, _ = sweep_run
    rec = yaml.safe_load((folder / RECIPE_FILE).read_text())
    [entry] = rec["eval_results"]
    data = json.loads((root / "out" / "results.json").read_text())
    assert entry["dataset_type"] == f"viscodex/{TOY}" and entry["viscodex"]["lambda"] == 0.5
    assert entry["metric_value"] == round(100 * data["scores"]["0.5"][TOY], 2)
    assert entry["viscodex"]["sweep"]["best_lambda"] == data["best_lambda"]
    Recipe.load(folder)  # still a valid recipe
    build = build_card(folder, offline=True)
    meta = build.card.data.to_dict()
    [res] = meta["model-index"][0]["results"]
    assert res["dataset"]["type"] == f"viscodex/{TOY}" and res["metrics"][0]["value"] == entry["metric_value"]
    assert "## Evaluation" in build.card.text and f"{entry['metric_value']}" in build.card.text
    assert entry["metric_type"] == f"viscodex/{TOY}/attribute_accuracy" and "are viscodex's own scores" in build.card.text
    # a folder merged at a lambda the sweep did not evaluate is refused, with the way out
    other = tmp_path / "tiny-0.7"
    shutil.copytree(folder, other)
    d = yaml.safe_load((other / RECIPE_FILE).read_text())
    d["lambda"] = 0.7
    (other / RECIPE_FILE).write_text(yaml.safe_dump(d, sort_keys=False))
    res = CliRunner().invoke(app, [*args[:-1], str(other)])
    assert res.exit_code == 2 and "merged with lambda 0.7, which the sweep does not evaluate (0, 0.5, 1)" in res.output
    with pytest.raises(Exception, match="--lambdas: 'x' is not a number"):
        parse_lambdas("0.5,x")


def test_eval_cli_resumes_and_records(sweep_run, tmp_path, monkeypatch):
    import viscodex.evaluation.runner as runner

    _, folder, _, _ = sweep_run
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    out = tmp_path / "results.json"
    args = ["eval", str(model), "--task", TOY, "--task", "mmcode", "--source", "sample",
            "--max-new-tokens", "6", "--out", str(out), "--device", "cpu"]  # toy tasks accept --source sample too
    res = CliRunner().invoke(app, [*args, "--limit", "2"])
    assert res.exit_code == 0, res.output
    first = json.loads(out.read_text())
    assert [r["task"] for r in first["results"]] == [TOY, "mmcode"]
    assert all(r["n"] == 2 and r["generated"] == 2 for r in first["results"])
    cache = tmp_path / "results.samples" / "mmcode.jsonl"
    assert len(cache.read_text().splitlines()) == 2
    # an interrupted run resumes: only the missing sample is generated
    res = CliRunner().invoke(app, [*args, "--limit", "3"])
    assert res.exit_code == 0, res.output
    second = json.loads(out.read_text())
    assert all(r["n"] == 3 and r["generated"] == 1 and r["cached"] == 2 for r in second["results"])
    assert len(cache.read_text().splitlines()) == 3

    class Boom:
        def __init__(self, *a, **k):
            raise AssertionError("the model was loaded although every sample was cached")

    monkeypatch.setattr(runner, "Generator", Boom)
    res = CliRunner().invoke(app, [*args, "--limit", "3", "--write-recipe"])
    assert res.exit_code == 0, res.output
    third = json.loads(out.read_text())
    assert [r["score"] for r in third["results"]] == [r["score"] for r in second["results"]]
    assert all(r["generated"] == 0 and r["cached"] == 3 for r in third["results"])
    entries = yaml.safe_load((model / RECIPE_FILE).read_text())["eval_results"]
    kinds = [e["dataset_type"] for e in entries]
    assert kinds == [f"viscodex/{TOY}", "viscodex/mmcode-sample"]  # the sweep's entry for the same benchmark replaced
    assert entries[0]["viscodex"]["samples"] == 3 and "lambda" not in entries[0]["viscodex"]
    res = CliRunner().invoke(app, ["eval", str(model), "--task", "nope", "--out", str(out)])
    assert res.exit_code == 2 and "unknown task 'nope'" in res.output


def test_eval_refuses_before_loading_the_model_when_the_sandbox_is_unavailable(no_seccomp, monkeypatch, tmp_path):
    """Issue 13: the header says how generated code is isolated; without seccomp (probe forced off)
    the code-running tasks refuse before the model loads, unless --unsafe-executor opts in."""
    import viscodex.evaluation.runner as runner

    class Boom:
        def __init__(self, *a, **k):
            raise AssertionError("the model was loaded")

    monkeypatch.setattr(runner, "Generator", Boom)
    args = ["eval", "someone/model", "--task", "mmcode", "--source", "sample", "--out", str(tmp_path / "r.json")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "sandbox unavailable: rlimits on, landlock ABI 7, seccomp off" in res.output
    assert "error: generated code was not run: this machine cannot sandbox it (seccomp off" in res.output
    res = CliRunner().invoke(app, [*args, "--unsafe-executor"])  # the operator's explicit opt-in
    assert "UNSAFE: running generated code anyway" in res.output
    assert isinstance(res.exception, AssertionError) and "the model was loaded" in str(res.exception)


def test_demo_and_eval_score_the_same_toy_samples():
    """`viscodex demo` evaluates with the registered toy tasks: `viscodex eval --task toy_* --limit N`
    (N = the demo's eval_samples) draws the very samples of the demo's table."""
    from viscodex.toy.demo import FAST, FULL, eval_tasks

    for cfg in (FAST, FULL):
        for demo_task in eval_tasks(cfg):
            a = demo_task.load(None, cfg.eval_samples)
            b = get_task(demo_task.name).load(None, cfg.eval_samples)
            assert [s.id for s in a] == [s.id for s in b] and len(a) == cfg.eval_samples
            assert [s.prompt for s in a] == [s.prompt for s in b]
            assert all(x.tobytes() == y.tobytes() for s, t in zip(a, b) for x, y in zip(s.images, t.images))
    fast = get_task("toy_grounding").load(None, FAST.eval_samples)
    full = get_task("toy_grounding").load(None, FULL.eval_samples)
    assert [s.id for s in full[:len(fast)]] == [s.id for s in fast]  # --fast scores a prefix of the full set
