"""No lost data (issue 16): unsafe --out refused, signals and kills leave nothing behind (or it is
cleaned up by the next run), one writer per --out, everything fsynced before the rename.
The data-loss cases run real `viscodex` processes and send them real signals."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from viscodex._util import atomic
from viscodex._util.atomic import OWNER_FILE, OutputError, OutputFolder, process_start, recover
from viscodex.engine.merge import run_merge
from viscodex.engine.recipe import RECIPE_FILE, Recipe

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture
def own_trio(trio, tmp_path):
    """A private copy of the trio under tmp_path/t: these tests try to make a merge delete it."""
    t = tmp_path / "t"
    for role in ("vlm", "coder", "base"):
        shutil.copytree(trio[role], t / role)
    return t


def cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "viscodex", *map(str, args)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def trio_args(t: Path) -> list[str]:
    return ["--vlm", t / "vlm", "--coder", t / "coder", "--base", t / "base", "--shard-size", "100KB"]


def files_of(t: Path) -> dict[str, int]:
    return {str(p.relative_to(t)): p.stat().st_size for p in sorted(t.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ --out vs the sources
@pytest.mark.parametrize("where", ["parent", "equal", "inside", "dot", "symlink"])
def test_force_never_deletes_a_source(own_trio, tmp_path, where):
    t = own_trio
    before = files_of(t)
    cwd = None
    if where == "parent":
        out = t
    elif where == "equal":
        out = t / "vlm"
    elif where == "inside":
        out = t / "coder" / "merged"
    elif where == "dot":
        out, cwd = ".", t
    else:
        (tmp_path / "link").symlink_to(t / "base")
        out = tmp_path / "link"
    r = cli("merge", *trio_args(t), "--out", out, "--force", cwd=cwd)
    assert r.returncode == 2, r.stderr
    assert "source folder" in r.stderr and "choose an output folder outside every source" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert files_of(t) == before


def test_force_refuses_a_folder_with_foreign_files(trio, tmp_path):
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]))
    with pytest.raises(OutputError, match="holds files viscodex did not write"):
        run_merge(r, out, progress=False, force=True)
    assert (out / "thesis.tex").read_text() == "years of work"
    # an empty folder and a previous output may be replaced
    (out / "thesis.tex").unlink()
    run_merge(r, out, progress=False, force=True)
    run_merge(r, out, progress=False, force=True)
    assert (out / RECIPE_FILE).is_file() and (out / atomic.MARKER).is_file()


# ------------------------------------------------------------------ signals
SLOW_MERGE = """
import sys, time, viscodex.engine.merge as m
real = m.compute_chunk
def slow(*a, **k):
    time.sleep(0.15)
    return real(*a, **k)
m.compute_chunk = slow
{before}
from viscodex.cli import main
sys.argv = ["viscodex"] + {args!r}
main()
"""


def _sigint_as_in_a_terminal() -> None:
    # A test run started in the background (`pytest &` from a script) ignores SIGINT, and its
    # children inherit that: Python then installs no Ctrl-C handler and the SIGINT test would send
    # a signal the merge never sees. The child starts with SIGINT at its default, as under a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_slow_merge(trio, out: Path, *extra, before: str = "") -> subprocess.Popen:
    args = [str(a) for a in (*trio_args_from(trio), "--out", out, *extra)]
    code = SLOW_MERGE.format(args=["merge", *args], before=textwrap.dedent(before))
    return subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_sigint_as_in_a_terminal)


def trio_args_from(trio) -> list:
    return ["--vlm", trio["vlm"], "--coder", trio["coder"], "--base", trio["base"], "--shard-size", "100KB"]


def wait_for_shards(p: subprocess.Popen, parent: Path, name: str) -> Path:
    deadline = time.time() + 120
    while time.time() < deadline:
        tmps = list(parent.glob(f".{name}.viscodex-tmp-*"))
        if tmps and list(tmps[0].glob("*.safetensors")):
            return tmps[0]
        if p.poll() is not None:
            pytest.fail(f"merge ended early: {p.communicate()}")
        time.sleep(0.05)
    p.kill()
    pytest.fail("merge never started writing")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_terminate_and_hangup_clean_up_like_ctrl_c(trio, tmp_path, sig):
    p = start_slow_merge(trio, tmp_path / "o")
    wait_for_shards(p, tmp_path, "o")
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + sig, err
    assert "nothing was written to the output folder" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []  # no temp folder, no lock file


def test_sigkill_leftovers_are_removed_by_the_next_run(trio, tmp_path):
    p = start_slow_merge(trio, tmp_path / "o")
    tmp = wait_for_shards(p, tmp_path, "o")
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert tmp.is_dir() and not (tmp_path / "o").exists()
    r = cli("merge", *trio_args_from(trio), "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert f"removed {tmp.name} (" in r.stderr and "left by an interrupted run" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["o"]


def test_a_reused_pid_is_not_taken_for_the_owner(tmp_path):
    """A temp folder whose recorded pid is alive but belongs to another process (start time
    differs) is stale; one whose pid and start time match a live process is left alone."""
    out = tmp_path / "o"
    me = os.getpid()
    stale = tmp_path / f".o.viscodex-tmp-{me}"
    stale.mkdir()
    (stale / OWNER_FILE).write_text(json.dumps({"pid": me, "start": "1"}))
    live = tmp_path / ".o.viscodex-tmp-1"
    live.mkdir()
    (live / OWNER_FILE).write_text(json.dumps({"pid": me, "start": process_start(me)}))
    notes = recover(out)
    assert not stale.exists() and live.is_dir()
    assert notes == [f"removed {stale.name} (0.00 GB) left by an interrupted run"]


@pytest.mark.slow
def test_kill_between_the_final_renames_restores_the_previous_output(trio, tmp_path):
    out = tmp_path / "o"
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]))
    run_merge(r, out, progress=False, shard_size="100KB")
    before = files_of(out)
    # the second merge dies (SIGKILL) right after moving the old output aside
    kill = """
    import os, signal, viscodex._util.atomic as a
    real_rename = os.rename
    def rename(src, dst):
        real_rename(src, dst)
        if ".viscodex-old-" in str(dst):
            os.kill(os.getpid(), signal.SIGKILL)
    a.os.rename = rename
    """
    p = start_slow_merge(trio, out, "--force", "--lam", "0.3", before=kill)
    _, err = p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL, err
    assert not out.exists() and list(tmp_path.glob(".o.viscodex-old-*"))
    res = cli("merge", *trio_args_from(trio), "--out", out)
    assert res.returncode == 2 and "already exists; pass --force" in res.stderr
    assert "restored" in res.stderr and files_of(out) == before
    assert sorted(os.listdir(tmp_path)) == ["o"]


@pytest.mark.slow
def test_two_merges_to_one_out_do_not_both_succeed(trio, tmp_path):
    first = start_slow_merge(trio, tmp_path / "o")
    wait_for_shards(first, tmp_path, "o")
    second = cli("merge", *trio_args_from(trio), "--out", tmp_path / "o", "--lam", "0.2")
    assert second.returncode == 2
    assert "is being written by another viscodex command (pid" in second.stderr
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert Recipe.load(tmp_path / "o").lam == 0.7
    assert sorted(os.listdir(tmp_path)) == ["o"]


def test_every_file_is_fsynced_before_the_rename(trio, tmp_path, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(a, b):
        events.append(("rename", str(a)))
        return real_rename(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]))
    run_merge(r, tmp_path / "o", progress=False, shard_size="100KB")
    tmp_renamed = next(i for i, (k, p) in enumerate(events) if k == "rename" and ".viscodex-tmp-" in p)
    synced = {Path(p).name for k, p in events[:tmp_renamed] if k == "fsync"}
    written = {p.name for p in (tmp_path / "o").iterdir()}
    assert {"model.safetensors.index.json", "config.json", RECIPE_FILE} <= written
    assert written <= synced


# ------------------------------------------------------------------ the helper itself
def test_output_folder_errors_are_one_line(tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        OutputFolder(f / "out")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root writes anywhere: make the filesystem say no instead
            import errno

            def refuse(self, *a, **k):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

            monkeypatch.setattr(Path, "mkdir", refuse)
        with pytest.raises(OutputError, match="cannot write there .*choose a writable folder"):
            with OutputFolder(ro / "sub" / "out"):
                pass
    finally:
        monkeypatch.undo()
        ro.chmod(0o700)


def test_full_disk_is_refused_before_writing(trio, tmp_path, monkeypatch):
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    r = Recipe(vlm=str(trio["vlm"]), coder=str(trio["coder"]), base=str(trio["base"]))
    with pytest.raises(OutputError, match=r"needs 0\.\d+ GB but only 0\.00 GB are free"):
        run_merge(r, tmp_path / "o", progress=False)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ the other folder-writing commands
def test_train_refuses_an_out_inside_its_model_before_training(own_trio):
    from viscodex.training.trainer import TrainConfig, run_train

    before = files_of(own_trio)
    cfg = TrainConfig(model=str(own_trio / "vlm"), data=str(own_trio / "data.jsonl"), out=str(own_trio / "vlm" / "sft"),
                      force=True)
    with pytest.raises(OutputError, match="lies inside the source folder"):
        run_train(cfg)
    assert files_of(own_trio) == before


def test_sweep_refuses_an_out_that_contains_a_source(own_trio):
    from viscodex.evaluation.sweep import run_sweep

    r = Recipe(vlm=str(own_trio / "vlm"), coder=str(own_trio / "coder"), base=str(own_trio / "base"))
    before = files_of(own_trio)
    with pytest.raises(OutputError, match="contains the source folder"):
        run_sweep(r, [0.5], ["toy_coding"], own_trio, source="sample")
    assert files_of(own_trio) == before


def test_space_out_is_written_atomically(tmp_path, monkeypatch):
    """A Space build that fails half-way leaves nothing at --out."""
    import viscodex.hub.space as space

    def boom(*a, **k):
        raise RuntimeError("killed while rendering")

    import types

    import viscodex.hub.card as card

    monkeypatch.setattr(space, "footprint", lambda *a, **k: types.SimpleNamespace(total=1, slice="large", parts=[]))

    monkeypatch.setattr(card, "render_template", boom)
    with pytest.raises(RuntimeError):
        space.publish_space(model="me/merged", repo_id="me/demo", base_vlm="me/vlm", dry_run=True,
                            keep=tmp_path / "space", app_dir=ROOT)
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ `viscodex train`: the same rules, real processes
@pytest.fixture
def toy_data(tmp_path_factory):
    from viscodex.training.toy_data import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n=4, seed=0)


def train_args(trio, data: Path, out: Path, steps: int) -> list[str]:
    return ["train", str(trio["vlm"]), "--data", str(data), "--out", str(out), "--max-steps", str(steps),
            "--batch-size", "1", "--global-batch", "1", "--save-steps", "100000", "--checkpoint-dir",
            str(out.parent.parent / f"{out.name}-ckpt")]


def start_long_train(trio, data: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """A `viscodex train` that would run for hours, once it holds its temp folder and has logged a
    loss (stdout goes to a file beside the runs so that it can be read while the process runs)."""
    log_file = out.parent.parent / f"{out.name}.stdout"
    p = subprocess.Popen([sys.executable, "-m", "viscodex", *train_args(trio, data, out, 100000), "--logging-steps", "1"],
                         env=ENV, stdout=log_file.open("w"), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        tmps = list(out.parent.glob(f".{out.name}.viscodex-tmp-*"))
        if tmps and "'loss'" in log_file.read_text():  # training, the temp folder held
            return p, tmps[0]
        if p.poll() is not None:
            pytest.fail(f"train ended early: {p.communicate()}")
        time.sleep(0.1)
    p.kill()
    pytest.fail("train never started")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.slow
def test_train_terminate_and_hangup_leave_nothing(trio, toy_data, tmp_path, sig):
    (tmp_path / "runs").mkdir()
    out = tmp_path / "runs" / "ft"
    p, tmp = start_long_train(trio, toy_data, out)
    assert (tmp / OWNER_FILE).is_file()
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err[-3000:]
    assert f"terminated ({signal.Signals(sig).name}); nothing was written to the output folder" in err
    assert "Traceback" not in err
    assert os.listdir(tmp_path / "runs") == []  # no temp folder, no lock file, no output


@pytest.mark.slow
def test_sigkilled_train_leftovers_are_removed_by_the_next_run(trio, toy_data, tmp_path):
    (tmp_path / "runs").mkdir()
    out = tmp_path / "runs" / "ft"
    p, tmp = start_long_train(trio, toy_data, out)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert tmp.is_dir() and not out.exists()
    r = cli(*train_args(trio, toy_data, out, 1))
    assert r.returncode == 0, r.stderr[-3000:]
    notes = [line for line in r.stderr.splitlines() if "left by an interrupted run" in line]
    assert len(notes) == 1 and f"removed {tmp.name} (" in notes[0], r.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "runs")) == ["ft"]
    assert (out / atomic.MARKER).is_file() and (out / RECIPE_FILE).is_file()


@pytest.mark.slow
def test_train_holds_the_lock_while_it_trains(trio, toy_data, tmp_path):
    """A second train (or merge) to the same --out is refused while the first is still training."""
    (tmp_path / "runs").mkdir()
    out = tmp_path / "runs" / "ft"
    p, _ = start_long_train(trio, toy_data, out)
    try:
        r = cli(*train_args(trio, toy_data, out, 1))
        assert r.returncode == 2
        assert f"is being written by another viscodex command (pid {p.pid})" in r.stderr
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=120)
    assert os.listdir(tmp_path / "runs") == []


def test_a_signal_swallowed_by_a_del_still_stops_the_run():
    """Python drops an exception raised inside `__del__` (the train test hit one in regex's): the
    signal is remembered, and the training loop's raise_if_terminated stops the run at the next step."""
    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10000):  # the handler runs here, inside __del__
                pass

    with atomic.terminate_as_interrupt():
        Finalized()  # collected at once; its Terminated is printed and dropped
        with pytest.raises(atomic.Terminated, match="SIGTERM"):
            atomic.raise_if_terminated()
    atomic.raise_if_terminated()  # outside the block nothing is pending


def test_ranks_of_one_job_share_a_temp_folder_name(monkeypatch, tmp_path):
    """torchrun gives every rank the same port and run id, and a distinct pid: the name follows the job."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_PORT", "29533")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc/../x")
    tag = atomic.job_tag()
    assert tag == "job29533-abcx"
    assert OutputFolder(tmp_path / "o", tag=tag).tmp == tmp_path / ".o.viscodex-tmp-job29533-abcx"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert atomic.job_tag() == str(os.getpid())


# ------------------------------------------------------------------ `viscodex eval`: results and the per-sample cache
def test_eval_cache_survives_a_line_torn_by_a_kill(trio, tmp_path):
    """A kill mid-line leaves a torn last line: resume ignores it, regenerates that sample, and the
    records appended after it stay readable (they used to be glued to the torn line and lost)."""
    from typer.testing import CliRunner

    from viscodex.cli import app

    task = "toy_grounding"
    out = tmp_path / "results.json"
    args = ["eval", str(trio["vlm"]), "--task", task, "--source", "sample", "--max-new-tokens", "4", "--out", str(out),
            "--device", "cpu"]

    def run(limit: int) -> dict:
        res = CliRunner().invoke(app, [*args, "--limit", str(limit)])
        assert res.exit_code == 0, res.output
        return json.loads(out.read_text())["results"][0]

    run(2)
    cache = tmp_path / "results.samples" / f"{task}.jsonl"
    lines = cache.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2
    cache.write_bytes(lines[0] + lines[1][: len(lines[1]) // 2])  # killed while writing the second record
    r = run(3)
    assert (r["n"], r["cached"], r["generated"]) == (3, 1, 2)
    assert cache.read_bytes().startswith(lines[0] + lines[1][: len(lines[1]) // 2] + b"\n")
    r = run(3)  # nothing lost: every sample is read back from the cache
    assert (r["n"], r["cached"], r["generated"]) == (3, 3, 0)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file beside results.json


def test_results_json_is_replaced_atomically_and_durably(tmp_path, monkeypatch):
    from viscodex.evaluation.runner import write_json

    out = tmp_path / "results.json"
    write_json(out, {"results": [1]})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".results.json.tmp-{dead.pid}").write_text('{"res')  # a SIGKILLed writer's leftover
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))

    def killed(*a):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json(out, {"results": [2]})
    assert json.loads(out.read_text()) == {"results": [1]}  # the previous results, whole
    assert os.listdir(tmp_path) == ["results.json"]  # no temp file, the stale one removed
    monkeypatch.undo()
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    synced.clear()
    write_json(out, {"results": [2]})
    assert json.loads(out.read_text()) == {"results": [2]} and len(synced) == 2  # the file, then its folder
