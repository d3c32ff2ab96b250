"""Options written once: a command's options derived from a typed options model (a dataclass),
as mergekit derives its CLI from MergeOptions. Types and defaults come from the dataclass, so the
command line and the library cannot drift; a field added to the dataclass becomes an option.

    @app.command()
    @derive(TrainConfig, help=TRAIN_HELP, names={"learning_rate": ("--lr",)}, arguments=("model",))
    def train(cfg: TrainConfig) -> None: ...

The decorated function's last parameter (annotated with the dataclass) receives the instance; its
other parameters stay hand-written options.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from typing import Annotated, Any, Optional, Union

import typer

from ._util.flags import cli_flag


def field_comments(cls: type) -> dict[str, str]:
    """`name: type = default  # comment` -> {name: comment}: the fallback help of a field. Base
    classes first, so a subclass's comment on a field wins and inherited fields keep theirs."""
    out: dict[str, str] = {}
    for c in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(c) or c is object:
            continue
        try:
            src = inspect.getsource(c)
        except (OSError, TypeError):
            continue
        out |= {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+):[^#\n]*#\s*(.+)$", src, re.M)}
    return out


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of `X | None` / Optional[X]."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        none = len(args) < len(typing.get_args(tp))
        # `str | int` (a size): the command line gives text
        return (args[0] if len(args) == 1 else str), none
    return tp, False


def _flag(name: str) -> str:
    return cli_flag(name)


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """['a=1', 'b=x'] -> {'a': 1, 'b': 'x'} (values read as YAML)."""
    import yaml

    from .errors import RecipeError

    out: dict[str, Any] = {}
    for kv in items or []:
        k, sep, v = kv.partition("=")
        if not sep or not k.strip():
            raise RecipeError(f"{flag} {kv!r}: expected key=value")
        out[k.strip()] = yaml.safe_load(v)
    return out


def derive(cls: type, *, help: dict[str, str] | None = None, names: dict[str, tuple[str, ...]] | None = None,
           skip: tuple[str, ...] = (), arguments: tuple[str, ...] = (),
           show_default: dict[str, str] | None = None):
    """Decorator: replace the command's parameter annotated `cls` by one option per field of `cls`."""
    help, names, show_default = help or {}, names or {}, show_default or {}
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)

    def decorate(fn):
        sig = inspect.signature(fn)
        resolved = typing.get_type_hints(fn, include_extras=True)  # fn's string annotations, in fn's module
        own = [p.replace(annotation=resolved.get(p.name, p.annotation)) for p in sig.parameters.values()]
        target = own.pop()  # the last parameter receives the instance
        params, dict_fields = list(own), set()
        for f in dataclasses.fields(cls):
            if f.name in skip or f.name in sig.parameters:
                continue
            tp, optional = _unwrap(hints[f.name])
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = None  # a container: empty unless given
            else:
                default = ...
            text = help.get(f.name) or comments.get(f.name) or f"{cls.__name__}.{f.name}"
            flags = names.get(f.name, (_flag(f.name),))
            if typing.get_origin(tp) is dict or tp is dict:
                dict_fields.add(f.name)
                tp, optional = list[str], True
                text += " (key=value, repeatable)"
            elif tp is bool and (default is None or default is True):
                flags = (f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:])
            if f.name in arguments:
                info = typer.Argument(help=text, show_default=show_default.get(f.name, True))
            else:
                info = typer.Option(*flags, help=text, show_default=show_default.get(f.name, True))
            ann = Optional[tp] if optional or default is None else tp
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                            annotation=Annotated[ann, info]))
        derived = [p.name for p in params[len(own):]]

        @functools.wraps(fn)
        def command(**kw):
            values = {k: kw.pop(k) for k in derived}
            for k in dict_fields:
                values[k] = parse_key_values(values[k], cli_flag(k, names))
            for k in list(values):
                if values[k] is None and _field_default(cls, k) is not None:
                    del values[k]  # a container or an option left unset: the dataclass's default
            return fn(**kw, **{target.name: cls(**values)})

        command.__signature__ = sig.replace(parameters=params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must read the new signature, not fn's
        return command

    return decorate


def _field_default(cls: type, name: str) -> Any:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None
