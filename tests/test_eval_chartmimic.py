"""ChartMimic's low-level metrics (issue 15) as the benchmark's evaluators compute them, on the chart
pairs of tests/chartmimic_cases.py with F1s worked out by hand. The same pairs give the same four
F1s through the benchmark's own code (benchmarks/chartmimic_conformance.py)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from chartmimic_cases import ANSWERS, GOLDEN

from viscodex.evaluation import chart_metrics, chartmimic
from viscodex.evaluation.chart_metrics import color_f1, color_similarity, thin
from viscodex.evaluation.chart_programs import combined_plan, generated_program, text_program
from viscodex.evaluation.chartmimic import PINNED, ChartMimic
from viscodex.evaluation.cie import ciede2000, srgb_to_lab
from viscodex.evaluation.records import card_entry
from viscodex.evaluation.tasks import EvalSample

BLUE_GREEN = 0.16815385757058865  # 1 - colormath's CIEDE2000 / 100 for #0000FF vs #00FF00
BLUE_SEAGREEN = 0.3430873969431869  # ... for #0000FF vs #2CA02C
INIT, AXES, NXP = "matplotlib/__init__.py", "matplotlib/axes/_axes.py", "networkx/drawing/nx_pylab.py"


@pytest.fixture(scope="module")
def scored():
    """Every ground truth traced once, then every answer scored, two sandboxed runs at a time."""
    task = ChartMimic(timeout=120)
    samples = {n: EvalSample(id=n, prompt="", reference={"code": c}) for n, c in GOLDEN.items()}

    def ref(name):
        samples[name].reference["trace"] = chart_metrics.trace(GOLDEN[name], graph=name.startswith("graph"),
                                                                timeout=120, mem_mb=1536)
        return samples[name].reference["trace"]

    with ThreadPoolExecutor(2) as pool:
        refs = dict(zip(GOLDEN, pool.map(ref, GOLDEN)))
        got = dict(zip(ANSWERS, pool.map(lambda c: task.score(ANSWERS[c][1], samples[ANSWERS[c][0]]), ANSWERS)))
    return refs, got


def f1s(score):
    return tuple(round(score[k], 6) for k in ("text", "layout", "type", "color"))


@pytest.mark.slow
def test_ground_truths_are_traced_as_the_benchmark_traces_them(scored):
    refs, _ = scored
    assert all(r["error"] is None and r["runs"] == 1 for r in refs.values())
    bar = refs["bar_1"]
    assert bar["types"] == {f"{INIT}-bar": 1, f"{AXES}-plot": 1}
    assert bar["colors"] == [f"{INIT}/bar--#1F77B4", f"{INIT}/bar--#2CA02C", f"{INIT}/bar--#FF7F0E",
                             "matplotlib/axes/_base.py/_makeline--#D62728"]
    assert sorted(bar["texts"]) == ["Sales", "year"]  # tick labels removed before the script's own save
    assert bar["layout"] == [dict(nrows=1, ncols=1, row_start=0, row_end=0, col_start=0, col_end=0)]
    # networkx: the three drawing functions, not the matplotlib calls inside them; node colours all
    # read at the end, labels keyed by colour (three black labels: one entry); a graph_* layout is 1x1
    # with row_end = col_end = 1, as layout_evaluator's graph suffix writes it
    g = refs["graph_1"]
    assert g["types"] == {f"{NXP}/draw_networkx_{f}-draw_networkx_{f}": 1 for f in ("nodes", "edges", "labels")}
    assert g["colors"] == [f"{NXP}/draw_networkx_edges--#0000FF", f"{NXP}/draw_networkx_labels--#000000",
                           f"{NXP}/draw_networkx_nodes--#00FF00", f"{NXP}/draw_networkx_nodes--#FF0000"]
    assert g["layout"] == [dict(nrows=1, ncols=1, row_start=0, row_end=1, col_start=0, col_end=1)]
    assert g["texts"] == ["1", "2", "3"]
    assert refs["treemap_1"]["types"] == {"squarify/__init__.py-plot": 1}  # its ax.bar is inside the call
    assert refs["treemap_1"]["colors"] == [f"squarify/__init__.py/plot_squarify--#{c}" for c in
                                           ("0000FF", "00FF00", "FF0000")]
    venn = refs["venn_1"]  # the two sets and their intersection (red and blue mixed by matplotlib-venn)
    assert venn["types"] == {"matplotlib_venn/_common.py-__init__": 1}
    assert venn["colors"] == [f"matplotlib_venn/_common.py/__init__--#{c}" for c in ("0000FF", "B200B2", "FF0000")]
    assert sorted(venn["texts"]) == ["1", "2", "3", "A", "B"]
    # 3-D: "_3d" at the call and again at the end; a colormap by name; the z tick labels stay (only
    # x and y ticks are removed)
    d3 = refs["3d_1"]
    assert d3["types"] == {f"{INIT}-bar3d": 1, "mpl_toolkits/mplot3d/axes3d.py-plot_surface": 1}
    assert d3["colors"] == [f"{INIT}/bar3d_3d_3d--#FF0000", "mpl_toolkits/mplot3d/axes3d.py/plot_surface_3d_3d--viridis"]
    assert refs["3d_2"]["types"] == {f"{INIT}-bar": 1} and refs["3d_2"]["colors"] == [f"{INIT}/bar_3d_3d--#FF0000"]
    # boxes and violin bodies are keyed by their colour when drawn (both the default blue), so only
    # the last one's final colour is left; two hist calls, one with two data sets
    assert refs["box_1"]["colors"] == [f"{INIT}/boxplot--#00FF00"] and refs["box_1"]["texts"] == []
    assert refs["violin_1"]["colors"] == [f"{INIT}/violinplot--#00FF00"]
    assert refs["hist_1"]["types"] == {f"{INIT}-hist": 2}
    assert refs["hist_1"]["colors"] == [f"{INIT}/hist--#{c}" for c in ("0000FF", "00FF00", "FF0000")]
    assert refs["line_2"]["texts"] == ["Twice", "Twice"]  # each of its own PDF saves is logged


# (text, layout, type, colour) F1, worked out by hand
EXPECTED = {
    "identical": (1, 1, 1, 1),
    "recoloured": (1, 1, 1, (3 + BLUE_SEAGREEN) / 4),  # 4 colours each side, one pair blue vs #2CA02C
    "extra_title": (0.8, 1, 1, 1),  # 3 texts vs 2: P = 2/3, R = 1
    "two_axes": (1, 0, 1, 1),  # two 1x2 cells vs one 1x1 axes
    "extra_line": (1, 1, 0.8, 1),  # plot 2 vs 1: P = 2/3, R = 1; both lines red: one colour key
    "early_save": (0, 1, 1, 1),  # cut at plt.savefig(: no title, no label
    "raises": (0, 1, 2 / 3, 6 / 7),  # bars only: type P = 1, R = 1/2; colours 3 of 4
    "np_unimported": (0, 1, 2 / 3, 1),  # only the colour run has `np`: the others stop at the line
    "no_block": (0, 0, 0, 0),  # an empty figure: no axes either
    "syntax_error": (0, 0, 0, 0),
    "graph_same": (1, 1, 1, 1),
    "graph_draw": (1, 1, 1, (3 + BLUE_GREEN) / 4),  # nx.draw = the three calls; one node blue for green
    # type: nodes, edges, bar vs nodes, edges, labels (P = R = 2/3); colour: the colour run stopped
    # at the edges, one node colour left (P = 1, R = 1/4)
    "graph_no_edges": (0, 1, 2 / 3, 0.4),
    "treemap_same": (1, 1, 1, 1),
    "treemap_as_bars": (0, 1, 0, 0),  # bar is not squarify.plot, in types and in colour groups
    "venn_same": (1, 1, 1, 1),
    "3d_same": (1, 1, 1, 1),
    "3d_bars_as_2d": (0, 1, 1, 0),  # one chart type for 2-D and 3-D bar; colours grouped apart ("_3d")
    "box_same": (0, 1, 1, 1),  # no text on either side: 0
    "box_plain": (0, 1, 1, 0),  # without patch_artist the boxes are lines: no colour recorded
    "violin_same": (0, 1, 1, 1),
    "hist_same": (0, 1, 1, 1),
    "hist_step": (0, 1, 1, 1),  # a step histogram's polygons keep their facecolour
    "line_2_once": (2 / 3, 1, 1, 1),  # 1 text vs the reference's 2 (it saved twice)
}


@pytest.mark.slow
def test_low_level_f1s_worked_out_by_hand(scored):
    _, got = scored
    assert set(EXPECTED) == set(ANSWERS)
    for case, want in EXPECTED.items():
        assert f1s(got[case]) == tuple(round(w, 6) for w in want), case
        assert got[case]["score"] == pytest.approx(sum(want) / 4, abs=2e-6), case
    assert got["identical"] == {"score": 1.0, "executed": 1.0, "text": 1.0, "layout": 1.0, "type": 1.0, "color": 1.0}
    assert got["raises"]["message"] == "the code raised ValueError: late (caught, as the benchmark's wrapper does)"
    assert got["raises"]["executed"] == 1.0
    assert got["no_block"]["message"].startswith("no ```python block in the answer")
    assert got["syntax_error"]["executed"] == 0.0 and "SyntaxError" in got["syntax_error"]["message"]
    assert got["graph_no_edges"]["message"].startswith("the code raised UnboundLocalError")


def test_the_answer_becomes_the_benchmarks_script():
    answer = ("Sure:\n```python\nimport matplotlib.pyplot as plt\nplt.bar([1], [2])\nplt.show()\nplt.title('x')\n"
              "```\n```python\nignored\n```")
    assert generated_program(answer, "bar_7") == ("try:\n    import matplotlib.pyplot as plt\n    plt.bar([1], [2])\n"
                                                  "except Exception as e:\n    __viscodex_caught__(e)\n"
                                                  "plt.savefig(\"bar_7.pdf\")")
    assert generated_program(answer, "bar_7", report=False).endswith("except Exception as e:\n    pass\nplt.savefig(\"bar_7.pdf\")")
    assert "    import matplotlib.pyplot as plt\n" in generated_program("no fence at all", "x")  # no block: an empty figure
    assert "x = 1" not in generated_program("```py\nx = 1\n```", "x")  # only a block opened by ```python counts
    # the text run inserts the tick removal before the first "plt.savefig", wherever it is
    assert text_program("a = 1\nplt.savefig('a.pdf')\n").startswith("a = 1\n\nall_axes = plt.gcf().get_axes()\n")
    assert text_program("a = 1\n") == "a = 1\n"
    # one run is exact for a script with its own `plt`, no prefix name used unbound and a clean insertion point
    assert combined_plan("import matplotlib.pyplot as plt\nplt.plot([1])\nplt.savefig('a.pdf')\n") == (True, 46)
    assert combined_plan("import matplotlib.pyplot as plt\nplt.plot(np.arange(3))\n") == (False, None)
    assert combined_plan("import matplotlib.pyplot as plt\nif 1:\n    plt.savefig('a.pdf')\n") == (False, None)
    assert combined_plan("from pylab import *\nplt.plot([1])\n") == (False, None)


def test_colour_similarity_is_colormaths_ciede2000():
    # colormath 3.0.0's numbers (the benchmark's color_utils): its sRGB matrix and 7.787 slope
    assert srgb_to_lab((0x2C, 0xA0, 0x2C)) == pytest.approx((57.90160070988688, -54.08525827551919, 48.723286694039004), abs=1e-12)
    assert color_similarity("#0000FF", "#00FF00") == pytest.approx(BLUE_GREEN, abs=1e-12)
    assert color_similarity("#0000FF", "#2CA02C") == pytest.approx(BLUE_SEAGREEN, abs=1e-12)
    # the CIEDE2000 test data of Sharma, Wu & Dalal (2005), pairs 1 and 25
    assert ciede2000((50, 2.6772, -79.7751), (50, 0, -82.7485)) == pytest.approx(2.0425, abs=1e-4)
    assert ciede2000((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387)) == pytest.approx(1.2644, abs=1e-4)
    assert color_similarity("viridis", "viridis") == 1.0 and color_similarity("viridis", "#FF0000") == 0.0
    assert color_f1(["bar--#FF0000"], ["line--#FF0000"]) == 0.0 and color_f1([], ["bar--#FF0000"]) == 0.0


def test_thinning_keeps_colours_further_than_0_7_apart_in_sorted_order():
    # greys: #000000~#404040 0.824, #404040~#808080 0.766, #000000~#808080 0.601. The benchmark
    # walks a set: starting at #404040 it keeps that one alone; sorted order keeps the two ends.
    assert color_similarity("#000000", "#404040") > 0.7 and color_similarity("#404040", "#808080") > 0.7
    assert color_similarity("#000000", "#808080") < 0.7
    assert thin(["a--#000000", "a--#404040", "a--#808080"]) == ["a--#000000", "a--#808080"]
    assert thin(["a--#404040", "a--#000000", "a--#808080"]) == ["a--#404040"]
    # applied to more than 10 colours only: 11 reds 1/255 apart thin to one, whose pair is exact
    reds = [f"bar--#{v:02X}0000" for v in range(245, 256)]
    assert color_f1(reds, ["bar--#F50000"]) == 1.0 and color_f1(reds[:10], ["bar--#F50000"]) < 0.2


def test_card_names_the_official_low_level_only_with_the_pinned_libraries_on_the_benchmark(monkeypatch):
    report = {"n": 500, "score": 0.5, "source": None, "limit": None}
    task = ChartMimic()
    installed = chartmimic.installed_libraries()
    if installed != PINNED:  # this machine's libraries: viscodex's own name
        entry = card_entry({**task.describe(), **report})
        assert entry["metric_type"] == "viscodex/chartmimic/low-level" and not entry["viscodex"]["official_metric"]
    monkeypatch.setattr(chartmimic, "installed_libraries", lambda: dict(PINNED))
    assert task.official
    entry = card_entry({**task.describe(), **report})
    assert (entry["dataset_type"], entry["dataset_split"], entry["metric_type"]) == ("ChartMimic/ChartMimic", "ori_500", "low-level")
    sample = card_entry({**task.describe(), **report, "source": "sample", "n": 2})
    assert sample["metric_type"] == "viscodex/chartmimic/low-level" and sample["dataset_type"] == "viscodex/chartmimic-sample"
    task.libraries_seen.add((("matplotlib", "3.8.4"), ("networkx", "3.2.1")))  # what the traced runs imported
    assert task.official
    task.libraries_seen.add((("matplotlib", "3.11.2"),))  # a traced run imported another matplotlib
    assert not task.official and card_entry({**task.describe(), **report})["metric_type"] == "viscodex/chartmimic/low-level"


@pytest.mark.slow
def test_high_level_score_comes_from_a_judge_at_the_given_endpoint(monkeypatch):
    """--judge-url/--judge-model: the benchmark's judge request (its instruction, the reference
    figure first, then the drawn chart) to an OpenAI-compatible endpoint; absent by default."""
    import base64
    import http.server
    import json
    import threading

    from viscodex.errors import EvalError
    from viscodex.evaluation import get_task
    from viscodex.evaluation.chartmimic import ChartMimic, with_judge
    from viscodex.evaluation.judge import ChartJudge, parse_score

    seen = []

    class Judge(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), body))
            answer = {"choices": [{"message": {"content": "Comments:\n- Layout: fine, subscore 10\n\nScore: 85\n"}}]}
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    try:
        task = ChartMimic()
        sample = task.load("sample", limit=1)[0]
        assert "high_level" not in task.score(f"```python\n{sample.reference['code']}```", sample)
        [task] = with_judge([get_task("chartmimic")], f"http://127.0.0.1:{srv.server_port}/v1", "judge-model", "JUDGE_KEY")
        got = task.score(f"```python\n{sample.reference['code']}```", sample)
        assert got["high_level"] == 0.85 and got["judge_failed"] == 0.0 and got["score"] == 1.0
        assert task.score("print('no chart')", sample)["high_level"] == 0.0  # nothing drawn: the judge is not asked
    finally:
        srv.shutdown()
    [(path, auth, body)] = seen
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "judge-model"
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.1, 0.95, 4096)
    text, ref, gen = body["messages"][0]["content"]
    assert text["text"].startswith("You are an excellent judge at evaluating visualization chart plots.")
    assert base64.b64decode(ref["image_url"]["url"].split(",", 1)[1]) == sample.reference["image"]
    assert gen["image_url"]["url"].startswith("data:image/png;base64,")
    assert parse_score("Score: **72**") == 0.72 and parse_score("no verdict") is None
    with pytest.raises(EvalError, match="--judge-url needs --judge-model"):
        ChartJudge("http://localhost:1/v1", "")
    with pytest.raises(EvalError, match="add --task chartmimic"):
        with_judge([get_task("mmcode")], "http://localhost:1/v1", "m")
    with pytest.raises(EvalError, match=r"the judge at http://127.0.0.1:9/v1 did not answer"):
        ChartJudge("http://127.0.0.1:9/v1", "m", timeout=5).judge(b"x", b"y")
