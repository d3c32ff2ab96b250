"""ChartMimic's low-level metrics (issue 15) on pairs of chart programs whose F1s are worked out by
hand: identical -> 1.0; a changed colour -> only colour F1 drops; an extra title -> text F1 0.8;
another grid of subplots -> layout F1 0; an extra chart call -> type F1 0.8."""
from __future__ import annotations

import pytest

from viscodex.evaluation.chart_metrics import ciede2000, color_f1, color_similarity, low_level, trace

HEAD = "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(4, 3))\n"
REF = HEAD + ("ax.bar(['a', 'b', 'c'], [1, 2, 3], color=['#1F77B4', '#FF7F0E', '#2CA02C'])\n"
              "ax.plot([0, 1, 2], [1, 2, 3], color='#D62728')\nax.set_title('Sales')\nax.set_xlabel('year')\n"
              "plt.savefig('chart.pdf')\n")


@pytest.fixture(scope="module")
def ref():
    return trace(REF, timeout=60, mem_mb=1536)


def scores(code, ref):
    return low_level(trace(code, timeout=60, mem_mb=1536), ref)


def test_identical_programs_score_one(ref):
    assert ref["error"] is None and sorted(ref["texts"]) == ["Sales", "year"]
    assert ref["types"] == {"bar": 1, "plot": 1}
    assert ref["colors"] == ["bar--#1F77B4", "bar--#2CA02C", "bar--#FF7F0E", "line--#D62728"]
    assert scores(REF, ref) == {"text": 1.0, "layout": 1.0, "type": 1.0, "color": 1.0, "low_level": 1.0}


def test_one_changed_colour_lowers_only_colour_f1(ref):
    got = scores(REF.replace("'#2CA02C'", "'#0000FF'"), ref)
    # 4 colours each side; 3 pair exactly, the changed bar pairs with the green one it replaced
    expected = (3 + color_similarity("#0000FF", "#2CA02C")) / 4
    assert got["color"] == pytest.approx(expected, abs=1e-6) and 0.75 < got["color"] < 0.9
    assert (got["text"], got["layout"], got["type"]) == (1.0, 1.0, 1.0)


def test_text_layout_and_type_f1_by_hand(ref):
    extra_title = scores(REF.replace("ax.set_xlabel('year')", "ax.set_xlabel('year')\nfig.suptitle('Q1')"), ref)
    assert extra_title["text"] == pytest.approx(0.8)  # P = 2/3, R = 2/2
    assert (extra_title["layout"], extra_title["type"], extra_title["color"]) == (1.0, 1.0, 1.0)
    grid = scores(REF.replace("plt.subplots(figsize=(4, 3))", "plt.subplots(1, 2, figsize=(4, 3))")
                  .replace("ax.", "ax[0]."), ref)
    assert grid["layout"] == 0.0 and grid["type"] == 1.0  # 1x2 axes vs one 1x1 axes: nothing matches
    more = scores(REF.replace("plt.savefig", "ax.plot([0, 1], [3, 1], color='#D62728')\nplt.savefig"), ref)
    assert more["type"] == pytest.approx(0.8)  # 3 calls vs 2: P = 2/3, R = 1
    assert scores("raise SystemExit(3)", ref) == {"text": 0.0, "layout": 0.0, "type": 0.0, "color": 0.0,
                                                    "low_level": 0.0}


def test_colour_similarity_is_ciede2000():
    # Sharma, Wu & Dalal (2005) test data, pairs 1 and 25
    assert ciede2000((50, 2.6772, -79.7751), (50, 0, -82.7485)) == pytest.approx(2.0425, abs=1e-4)
    assert ciede2000((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387)) == pytest.approx(1.2644, abs=1e-4)
    assert color_similarity("#FF0000", "#FF0000") == 1.0 and color_similarity("viridis", "viridis") == 1.0
    assert color_similarity("viridis", "#FF0000") == 0.0
    # groups by chart type: a bar colour never pairs with a line colour
    assert color_f1(["bar--#FF0000"], ["line--#FF0000"]) == 0.0 and color_f1([], ["bar--#FF0000"]) == 0.0


def test_high_level_score_comes_from_a_judge_at_the_given_endpoint(monkeypatch):
    """--judge-url/--judge-model: the benchmark's judge request (its instruction, the reference
    figure first, then the drawn chart) to an OpenAI-compatible endpoint; absent by default."""
    import base64
    import http.server
    import json
    import threading

    from viscodex.evaluation import get_task
    from viscodex.evaluation.chartmimic import ChartMimic, with_judge
    from viscodex.evaluation.judge import ChartJudge, parse_score
    from viscodex.errors import EvalError

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
