"""CLI conventions (issue 17) and options written once: each command's options are derived from the
typed options model of the library function it calls (MergeOptions, TrainConfig, EvalOptions,
SweepOptions, CardOptions, PublishOptions, SpaceOptions, AppOptions), so their defaults are the library's."""
from __future__ import annotations

import dataclasses
import inspect
import re

import click
import pytest
import typer
from typer.testing import CliRunner

from viscodex.cli import ORDER, app
from viscodex.engine.options import MergeOptions
from viscodex.training.trainer import TrainConfig


@pytest.fixture(scope="module")
def group() -> click.Group:
    return typer.main.get_command(app)


def options(cmd: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in cmd.params}


def test_version_and_short_help():
    from viscodex import __version__

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"viscodex {__version__}"
    r = CliRunner().invoke(app, ["merge", "-h"])
    assert r.exit_code == 0 and "Usage:" in r.stdout


def test_shell_completion_is_offered():
    r = CliRunner().invoke(app, ["--help"])
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout


def test_commands_are_listed_in_the_order_a_user_needs_them(group):
    listed = group.list_commands(click.Context(group))
    assert listed == ORDER and set(listed) == set(group.commands)
    r = CliRunner().invoke(app, ["--help"])
    shown = re.findall(r"^  (\w+)\s", r.stdout.split("Commands:")[1], re.M)
    assert shown == ORDER


def test_help_keeps_revision_brackets_and_shows_flags_as_flags(group):
    for name, cmd in group.commands.items():
        text = CliRunner().invoke(app, [name, "--help"]).stdout
        assert "<bool>" not in text, name
    merge_help = CliRunner().invoke(app, ["merge", "--help"]).stdout
    assert "Hub id[@revision]" in merge_help


def test_one_meaning_per_option_name(group):
    """--threads and --workers used to mean different things in different commands."""
    seen: dict[str, set[str]] = {}
    for name, cmd in group.commands.items():
        for p in cmd.params:
            for opt in getattr(p, "opts", []):
                seen.setdefault(opt, set()).add(name)
    assert "--threads" not in seen
    assert seen["--workers"] == {"eval", "sweep"}  # threads scoring in the sandbox, in both
    assert seen["--compute-threads"] == {"merge", "demo"}  # torch's threads, in both
    assert seen["--loader-workers"] == {"train"}


def test_merge_options_are_run_merge_defaults(group):
    """MergeOptions is the typed model of run_merge's run options: same names, same defaults."""
    from viscodex.engine import merge as engine_merge

    sig = inspect.signature(engine_merge.run_merge).parameters
    for f in dataclasses.fields(MergeOptions):
        assert sig[f.name].default == f.default, f.name
    assert engine_merge.DEFAULT_SHARD_SIZE == MergeOptions().shard_size
    opts = options(group.commands["merge"])
    for f in dataclasses.fields(MergeOptions):
        if f.name != "progress":
            assert str(opts[f.name].default) == str(f.default), f.name


def test_every_train_config_field_is_a_train_option_with_its_default(group):
    opts = options(group.commands["train"])
    for f in dataclasses.fields(TrainConfig):
        if f.name == "progress":
            continue
        assert f.name in opts, f"TrainConfig.{f.name} has no `viscodex train` option"
        if f.default is not dataclasses.MISSING:
            assert opts[f.name].default == f.default, f.name
    assert "--max-grad-norm" in opts["max_grad_norm"].opts and "--extra-arg" in opts["extra_args"].opts


def test_train_cli_builds_the_config(monkeypatch):
    import viscodex.training.trainer as trainer

    seen = {}

    class Done(Exception):
        pass

    def fake(cfg):
        seen["cfg"] = cfg
        raise Done

    monkeypatch.setattr(trainer, "run_train", fake)
    r = CliRunner().invoke(app, ["train", "m", "--data", "d.json", "-o", "out", "--lr", "3e-4", "--max-grad-norm", "0.5",
                                 "--no-gradient-checkpointing", "--extra-arg", "adam_beta2=0.95",
                                 "--extra-arg", "optim=adafactor"])
    assert isinstance(r.exception, Done), r.output
    want = TrainConfig(model="m", data="d.json", out="out", learning_rate=3e-4, max_grad_norm=0.5,
                       gradient_checkpointing=False, extra_args={"adam_beta2": 0.95, "optim": "adafactor"})
    assert seen["cfg"] == want


def test_bad_key_value_names_the_flag():
    r = CliRunner().invoke(app, ["train", "m", "--data", "d", "-o", "o", "--extra-arg", "novalue"])
    assert r.exit_code == 2 or r.exception is not None
    assert "--extra-arg 'novalue': expected key=value" in (r.output + str(r.exception))


def test_merge_cli_passes_the_options(monkeypatch, tmp_path):
    import viscodex.engine.merge as engine_merge

    seen = {}

    class Done(Exception):
        pass

    def fake(recipe, out, **kw):
        seen.update(kw)
        raise Done

    monkeypatch.setattr(engine_merge, "run_merge", fake)
    r = CliRunner().invoke(app, ["merge", "--vlm", "a/v", "--coder", "b/c", "-o", str(tmp_path / "o"),
                                 "--read-threads", "2", "--no-hash"])
    assert isinstance(r.exception, Done), r.output
    # the command line gives text: the default size arrives as its byte count
    assert seen == {**MergeOptions().kwargs(), "shard_size": str(MergeOptions().shard_size), "threads": 2,
                    "hash_inputs": False}


def test_building_the_cli_imports_no_torch():
    """Every command's options are built at start-up (the train options from TrainConfig): that
    must not cost a torch import, or `viscodex --help` takes seconds."""
    import subprocess
    import sys

    code = ("import sys, typer; from viscodex.cli import app; typer.main.get_command(app); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr


# ------------------------------------------------- eval, sweep, card, publish, space, app: options written once
def library_defaults_match(cls: type, fn, fields: list[str] | None = None) -> None:
    """Each field of the options model is a keyword argument of `fn` with the same default."""
    sig = inspect.signature(fn).parameters
    for f in dataclasses.fields(cls):
        if fields is None or f.name in fields:
            assert f.name in sig, f"{cls.__name__}.{f.name} is not an argument of {fn.__name__}"
            want = f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty
            assert sig[f.name].default == want, f"{fn.__name__}({f.name}=) vs {cls.__name__}.{f.name}"


def cli_defaults_match(group: click.Group, command: str, cls: type, skip: tuple[str, ...] = ("progress",)) -> None:
    """Each field of the options model is an option of `command` with the same default (required
    where the field has none)."""
    opts = options(group.commands[command])
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        assert f.name in opts, f"{cls.__name__}.{f.name} has no `viscodex {command}` option"
        if f.default is dataclasses.MISSING:
            assert opts[f.name].required, f.name
        else:
            assert opts[f.name].default == f.default and not opts[f.name].required, f.name


def opts_of(group: click.Group, command: str) -> dict[str, click.Parameter]:
    return options(group.commands[command])


def test_eval_options_are_the_librarys_defaults(group):
    from viscodex.evaluation import runner
    from viscodex.evaluation.chartmimic import with_judge
    from viscodex.evaluation.options import EvalOptions

    settings = EvalOptions.TASK_SETTINGS
    library_defaults_match(EvalOptions, runner.evaluate_many, [f.name for f in dataclasses.fields(EvalOptions)
                                                               if f.name not in settings])
    library_defaults_match(EvalOptions, runner.score_predictions, list(EvalOptions().score_kwargs()))
    assert inspect.signature(with_judge).parameters["key_env"].default == EvalOptions.judge_key_env
    cli_defaults_match(group, "eval", EvalOptions)
    resume = opts_of(group, "eval")["resume"]
    assert resume.opts == ["--resume"] and resume.secondary_opts == ["--no-resume"]


def test_sweep_options_are_run_sweeps_defaults(group):
    from viscodex.evaluation.options import SweepOptions
    from viscodex.evaluation.sweep import run_sweep

    library_defaults_match(SweepOptions, run_sweep)
    cli_defaults_match(group, "sweep", SweepOptions)


def test_card_publish_space_options_are_the_hubs_defaults(group):
    from viscodex.hub.card import build_card
    from viscodex.hub.options import CardOptions, PublishOptions, SpaceOptions
    from viscodex.hub.publish import publish
    from viscodex.hub.space import publish_space

    library_defaults_match(CardOptions, build_card)
    library_defaults_match(PublishOptions, publish)
    library_defaults_match(SpaceOptions, publish_space)
    cli_defaults_match(group, "card", CardOptions)
    cli_defaults_match(group, "publish", PublishOptions)
    cli_defaults_match(group, "space", SpaceOptions)
    space = opts_of(group, "space")
    assert space["repo_id"].opts == ["--repo"] and space["keep"].opts == ["--out"]  # the flags users know


def test_app_options_are_run_apps_defaults(group):
    from viscodex.app import sources
    from viscodex.app.options import AppOptions
    from viscodex.app.ui import run_app

    library_defaults_match(AppOptions, run_app, list(AppOptions().kwargs()))
    assert list(AppOptions().variants()) == list(sources.ENV_VARS)  # the app's variants, no other names
    cli_defaults_match(group, "app", AppOptions)


def test_eval_cli_passes_the_options(monkeypatch, tmp_path):
    from viscodex.evaluation import runner
    from viscodex.evaluation.options import EvalOptions

    seen = {}

    class Done(Exception):
        pass

    def fake(model, tasks, **kw):
        seen.update(kw, model=model, tasks=[t.name for t in tasks])
        raise Done

    monkeypatch.setattr(runner, "evaluate_many", fake)
    out = tmp_path / "r.json"
    r = CliRunner().invoke(app, ["eval", str(tmp_path), "-t", "toy_grounding", "-o", str(out), "--limit", "3",
                                 "--no-resume", "--workers", "1"])
    assert isinstance(r.exception, Done), r.output
    want = {**EvalOptions(limit=3, resume=False, workers=1).kwargs(), "cache_dir": tmp_path / "r.samples"}
    assert seen == {**want, "model": str(tmp_path), "tasks": ["toy_grounding"]}


def test_sweep_and_app_clis_pass_the_options(monkeypatch, tmp_path):
    import viscodex.app.ui as ui
    import viscodex.evaluation.sweep as sweep_mod
    from viscodex.app.options import AppOptions
    from viscodex.engine.recipe import Recipe
    from viscodex.evaluation.options import SweepOptions

    seen = {}

    class Done(Exception):
        pass

    def fake_sweep(recipe, lambdas, tasks, out, **kw):
        seen.update(kw, lambdas=lambdas)
        raise Done

    monkeypatch.setattr(sweep_mod, "run_sweep", fake_sweep)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(Recipe(vlm="a/v", coder="b/c").dump())
    r = CliRunner().invoke(app, ["sweep", str(recipe), "--lambdas", "0.5,0.7", "-t", "toy_grounding", "-o",
                                 str(tmp_path / "o"), "--select", "min", "--keep"])
    assert isinstance(r.exception, Done), r.output
    assert seen == {**SweepOptions(select="min", keep=True).kwargs(), "lambdas": [0.5, 0.7]}

    def fake_app(variants, **kw):
        seen.clear()
        seen.update(kw, variants=variants)
        raise Done

    monkeypatch.setattr(ui, "run_app", fake_app)
    r = CliRunner().invoke(app, ["app", "--merged", "m/x", "--port", "7999"])
    assert isinstance(r.exception, Done), r.output
    assert seen == {**AppOptions(port=7999).kwargs(), "variants": {"vlm": None, "swapped": None, "merged": "m/x"}}


def test_front_door_evaluate_and_sweep_take_the_options_models_fields(monkeypatch):
    """viscodex.evaluate / viscodex.sweep accept what `viscodex eval` / `sweep` do, by the same names."""
    import viscodex
    from viscodex.evaluation import runner
    from viscodex.evaluation.options import EvalOptions

    with pytest.raises(viscodex.RecipeError, match=r"viscodex.evaluate\(\): unknown option batch= \(nor is there a "
                                                   r"--batch flag\); valid: .*batch_size"):
        viscodex.evaluate("a/m", "toy_grounding", batch=4)
    with pytest.raises(viscodex.RecipeError, match=r"viscodex.sweep\(\): unknown option lam= "):
        viscodex.sweep({"vlm": "a/b", "coder": "c/d"}, [0.5], "toy_grounding", "o", lam=0.5)

    seen = {}
    monkeypatch.setattr(runner, "evaluate_many", lambda model, tasks, **kw: seen.update(kw, tasks=tasks) or [])
    viscodex.evaluate("a/m", "chartmimic", limit=2, judge_url="http://localhost:9/v1", judge_model="j")
    assert {k: v for k, v in seen.items() if k != "tasks"} == EvalOptions(limit=2).kwargs()
    judge = seen["tasks"][0].judge  # the judge reached the task, as --judge-url does
    assert (judge.url, judge.model, judge.key_env) == ("http://localhost:9/v1", "j", "OPENAI_API_KEY")
