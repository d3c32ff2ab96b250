"""Data preparation: parts checked across ranks and processes give exactly the single-pass index;
an interrupted (or SIGKILLed) run resumes with only the missing parts; a finished one is reused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from train_helpers import merge_tiny

from viscodex.training import index as sft_index
from viscodex.training.data import Encoder, build_index, open_data
from viscodex.training.toy_data import write_toy_dataset
from viscodex.training.index import INDEX_DIR, prepare_index

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder(trio):
    from transformers import AutoProcessor

    return Encoder(AutoProcessor.from_pretrained(trio["vlm"]))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    path = write_toy_dataset(root, n=40, seed=5)
    recs = json.loads(path.read_text())
    recs[7]["images"] = ["images/absent.png"]  # a skip in the second part
    recs[30] = {"messages": [{"role": "user", "content": "q"}]}
    path.write_text(json.dumps(recs))
    return path


def straight(data, encoder) -> dict:
    return build_index(open_data(str(data)), encoder, progress=False).to_json()


class Calls:
    """check_part stand-in: records the parts it checks; raises KeyboardInterrupt (a kill) at call `stop_at`."""

    def __init__(self, stop_at: int | None = None):
        self.starts: list[int] = []
        self.stop_at = stop_at

    def __call__(self, source, encoder, a, b, folder):
        if self.stop_at is not None and len(self.starts) == self.stop_at:
            raise KeyboardInterrupt
        self.starts.append(a)
        return sft_index._check_part(source, encoder, a, b, folder)


def test_interrupted_preparation_resumes_and_is_then_reused(data, encoder, tmp_path):
    src = open_data(str(data))
    folder = tmp_path / "idx"
    first = Calls(stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        prepare_index(src, encoder, folder, 40, chunk=8, progress=False, check_part=first)
    assert first.starts == [0, 8]
    assert sorted(p.name for p in folder.iterdir()) == ["part-0000000000.json", "part-0000000008.json"]
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    second = Calls()
    idx = prepare_index(src, encoder, folder, 40, chunk=8, progress=False, check_part=second)
    assert second.starts == [16, 24, 32]  # only what the first run had not finished
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("part-*") if p.name in stamps} == stamps
    assert idx.to_json() == straight(data, encoder)
    assert idx.report()["skipped"] == {"no_assistant_turn": 1, "missing_image": 1}
    assert idx.examples["missing_image"].startswith("record 7:")
    third = Calls()
    again = prepare_index(src, encoder, folder, 40, chunk=8, progress=False, check_part=third)
    assert third.starts == [] and again.to_json() == idx.to_json()


def test_ranks_and_processes_split_the_parts(data, encoder, tmp_path):
    src = open_data(str(data))
    want = straight(data, encoder)
    # two ranks (threads here), each checking every other part, waiting on each other's files
    folder, calls, results = tmp_path / "ranks", [Calls(), Calls()], {}

    def rank(r):
        results[r] = prepare_index(src, encoder, folder, 40, rank=r, world=2, chunk=8, progress=False, poll=0.02,
                                   check_part=calls[r])

    threads = [threading.Thread(target=rank, args=(r,)) for r in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert calls[0].starts == [0, 16, 32] and calls[1].starts == [8, 24]
    assert results[0].to_json() == results[1].to_json() == want
    # forked worker processes in one rank
    idx = prepare_index(src, encoder, tmp_path / "procs", 40, procs=2, chunk=8, progress=False)
    assert idx.to_json() == want
    assert len(list((tmp_path / "procs").glob("part-*.json"))) == 5


def test_train_prepare_only_then_reuse(trio, data, tmp_path, monkeypatch):
    from viscodex.training.trainer import TrainConfig, run_train

    merged = merge_tiny(trio, tmp_path)
    cfg = dict(model=str(merged), data=str(data), out=str(tmp_path / "ft"), progress=False, prepare_only=True,
               prepare_chunk=16, prepare_procs=1)
    res = run_train(TrainConfig(**cfg))
    assert res.training["data"]["used"] == 38 and not (tmp_path / "ft").exists()
    done = list((tmp_path / "ft-checkpoints" / INDEX_DIR).glob("*/index.json"))
    assert len(done) == 1

    def no_checks(*a, **k):
        raise AssertionError("records checked again")

    monkeypatch.setattr(sft_index, "_check_part", no_checks)
    assert run_train(TrainConfig(**cfg)).training["data"]["used"] == 38
    # a different setting that decides the index (max_len) is a different cache entry
    with pytest.raises(AssertionError, match="checked again"):
        run_train(TrainConfig(**{**cfg, "max_len": 4096}))


@pytest.mark.slow
def test_sigkill_during_preparation_then_resume(trio, tmp_path):
    """A real kill: `viscodex train --prepare-only` gets SIGKILL once some parts exist; the re-run
    leaves those parts untouched and produces the single-pass index."""
    from transformers import AutoProcessor

    merged = merge_tiny(trio, tmp_path)
    root = tmp_path / "big"
    recs = json.loads(write_toy_dataset(root, n=8, seed=2).read_text())
    (root / "data.json").write_text(json.dumps([recs[i % 8] for i in range(3000)]))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "viscodex", "train", str(merged), "--data", str(root / "data.json"), "--out",
           str(tmp_path / "ft"), "--prepare-only", "--prepare-procs", "1", "--prepare-chunk", "50"]
    folder_glob = (tmp_path / "ft-checkpoints" / INDEX_DIR)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(folder_glob.glob("*/part-*.json"))) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    parts = list(folder_glob.glob("*/part-*.json"))
    assert 3 <= len(parts) < 60 and not list(folder_glob.glob("*/index.json"))
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{len(parts)} of 60 part(s) already checked" in res.stderr
    assert "checked 3000 records: 3000 used" in res.stdout
    assert {p: p.stat().st_mtime_ns for p in parts} == stamps
    enc = Encoder(AutoProcessor.from_pretrained(merged))
    idx = json.loads(next(folder_glob.glob("*/index.json")).read_text())
    assert idx == build_index(open_data(str(root / "data.json")), enc, progress=False).to_json()
