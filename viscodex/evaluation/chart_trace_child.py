"""ChartMimic's low-level tracer, as the sandbox child runs it (sent as the child's script; the
viscodex process never imports it). Reads `job.json` ({"mode", "graph"}) and runs `program.py`
(built by chart_programs.py) the way the benchmark's evaluators run their prefix + script + suffix,
then writes `trace.json`:
  types   chart_type_evaluator_prefix: top-level calls of the traced functions, keyed
          "<file>-<name>" as inspect.getfile names them under the benchmark's pinned libraries
          (matplotlib 3.8.4, networkx 3.2.1, squarify 0.4.3, matplotlib-venn 0.11.10), so two
          functions share a type exactly where they shared one there (2-D and 3-D `bar` do)
  colors  color_evaluator_prefix: the objects each top-level call drew, keyed by function and
          colour at call time (a later object with the same key replaces the earlier one), their
          colours read again when the script has ended, "<file>/<name><suffix>--<colour>", as a set
  layout  layout_evaluator: every axes' gridspec geometry (a `graph` sample: 1x1 per axes)
  texts   text_evaluator: every string RendererPdf.draw_text draws during the script's own PDF saves
modes: "all" (one run for the four: chart_programs.combined_plan says when that is exact) or one of
"text", "type", "color", "layout" (that evaluator only, with its prefix's names in the script's
namespace). In "all", a wrapper that fails while recording (the benchmark's run for that one
evaluator would stop there) ends the run with `diverged` set, and the parent runs the four apart.
"""
import builtins
import importlib.abc
import importlib.util
import json
import sys
import warnings

warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

import matplotlib

matplotlib.use("Agg")
import inspect
import os

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.axes._base import _process_plot_var_args
from matplotlib.backends.backend_pdf import RendererPdf
from matplotlib.cbook import silent_list
from matplotlib.image import NonUniformImage
from matplotlib.patches import Circle, Ellipse, Patch, PathPatch
from matplotlib.projections.polar import PolarAxes
from matplotlib.tri._tripcolor import tripcolor
from mpl_toolkits.mplot3d import Axes3D

with open("job.json", encoding="utf-8") as f:
    JOB = json.load(f)
MODE = JOB["mode"]
TICKS_OFF = JOB["ticks_off"]  # chart_programs.TICKS_OFF: the text evaluator's tick removal
ON = {part: MODE in ("all", part) for part in ("text", "type", "color", "layout")}

# the files inspect.getfile gives for the traced functions under the pinned matplotlib 3.8.4:
# `_preprocess_data` wraps a function in matplotlib/__init__.py (installed versions differ, e.g.
# 3.10 adds keyword-only deprecation wrappers, so the names are fixed here, not looked up)
INIT, AXES, BASE = "matplotlib/__init__.py", "matplotlib/axes/_axes.py", "matplotlib/axes/_base.py"
A3D, NXP = "mpl_toolkits/mplot3d/axes3d.py", "networkx/drawing/nx_pylab.py"
PATCHES, SQUARIFY = "matplotlib/patches.py", "squarify/__init__.py"
FILES = {
    "bar": INIT, "barh": AXES, "plot": AXES, "axhline": AXES, "axvline": AXES, "axvspan": AXES, "axhspan": AXES,
    "hlines": INIT, "vlines": INIT, "errorbar": INIT, "boxplot": INIT, "violinplot": INIT, "violin": AXES,
    "hist": INIT, "fill_between": AXES, "fill_betweenx": AXES, "_fill_between_x_or_y": AXES, "scatter": INIT,
    "quiver": INIT, "pie": INIT, "fill": AXES, "imshow": INIT, "pcolor": INIT, "contour": INIT, "contourf": INIT,
    "broken_barh": INIT, "tripcolor": "matplotlib/tri/_tripcolor.py",
}
FILES_3D = {"scatter": INIT, "plot": A3D, "plot_surface": A3D, "bar3d": INIT, "bar": INIT, "add_collection3d": A3D}
# the benchmark's wrappers of networkx's drawing functions take exactly these parameters (networkx
# 3.2.1's), pass every one on explicitly, and are what draw_networkx's keyword check inspects
NX_PARAMS = {
    "draw_networkx_nodes": dict(nodelist=None, node_size=300, node_color="#1f78b4", node_shape="o", alpha=None,
                                cmap=None, vmin=None, vmax=None, ax=None, linewidths=None, edgecolors=None,
                                label=None, margins=None),
    "draw_networkx_edges": dict(edgelist=None, width=1.0, edge_color="k", style="solid", alpha=None,
                                arrowstyle=None, arrowsize=10, edge_cmap=None, edge_vmin=None, edge_vmax=None,
                                ax=None, arrows=None, label=None, node_size=300, nodelist=None, node_shape="o",
                                connectionstyle="arc3", min_source_margin=0, min_target_margin=0),
    "draw_networkx_labels": dict(labels=None, font_size=12, font_color="k", font_family="sans-serif",
                                 font_weight="normal", alpha=None, bbox=None, horizontalalignment="center",
                                 verticalalignment="center", ax=None, clip_on=True),
}

types, objects, texts = {}, {}, []
VENN = []  # matplotlib-venn's VennDiagram, once the script imports it
busy = {"type": False, "color": False}  # the prefixes' `in_decorator` (one per evaluator)
state = {"diverged": None, "texts_lost": False, "caught": None}


class Diverged(BaseException):
    """A colour wrapper failed while recording: in the benchmark that stops the colour run only."""


# ---------------------------------------------------------------- chart types
def count(key, func, polar_key=None):
    """chart_type_evaluator_prefix.log_function: count the outermost traced call. An exception
    leaves the flag set (the benchmark has no `finally`): later calls are then not counted."""
    def wrapper(*args, **kwargs):
        if busy["type"]:
            return func(*args, **kwargs)
        busy["type"] = True
        k = polar_key if polar_key and args and type(args[0]) is PolarAxes else key
        types[k] = types.get(k, 0) + 1
        result = func(*args, **kwargs)
        busy["type"] = False
        return result
    return wrapper


# ---------------------------------------------------------------- colours
def hexc(c):
    """color_evaluator_prefix.convert_color_to_hex (its None, here an exception: the benchmark's
    next step, joining None to a string, raises too)."""
    if isinstance(c, str):
        if c.startswith("#") and len(c) in (7, 9):
            return c.upper()
        return mcolors.to_hex(mcolors.to_rgba(c)).upper()
    if isinstance(c, (list, tuple, np.ndarray)) and len(c) in (3, 4):
        return mcolors.to_hex(c).upper()
    raise ValueError(f"unsupported colour {c!r}")


def cmap_name(kwargs):
    cmap = kwargs.get("cmap")
    return cmap if type(cmap) is str else cmap.name  # exactly str, as the prefix tests it


# Reading a drawn object's colours when the script has ended (update_drawed_colors), by branch.
def line_color(obj, key_color):
    return [hexc(obj.get_color())]


def first_facecolors_row(obj, key_color):
    return [hexc(list(obj.get_facecolors()[0]))]


def original_facecolor(obj, key_color):
    return [hexc(list(obj._original_facecolor))]


def scatter_colors(obj, key_color):
    if not key_color.startswith("#"):
        return [key_color]
    return [hexc(list(obj.get_facecolor()[0]))] if len(obj.get_facecolor()) else []


def facecolor(obj, key_color):
    return [hexc(obj.get_facecolor())]


def facecolor_list(obj, key_color):
    return [hexc(list(obj.get_facecolor()))]


def first_of_facecolor(obj, key_color):
    return [hexc(list(obj.get_facecolor()[0]))]


def edgecolors(obj, key_color):
    return [hexc(list(c)) for c in obj.get_edgecolors()]


def all_facecolors(obj, key_color):
    return [hexc(c) for c in obj.get_facecolors().tolist()]


def colormap(obj, key_color):
    return [obj.get_cmap().name]


def scatter_3d_colors(obj, key_color):
    return [key_color] if not key_color.startswith("#") else all_facecolors(obj, key_color)


def surface_colors(obj, key_color):
    return [key_color] if not key_color.startswith("#") else [hexc(obj.get_facecolors().tolist()[0])]


def venn_colors(obj, key_color):
    return [hexc(p.get_facecolor()) for p in obj.patches]


def nx_edge_colors(obj, key_color):
    if type(obj) is list:
        return [hexc(arrow.get_facecolor()) for arrow in obj]
    return all_facecolors_of_edges(obj)


def all_facecolors_of_edges(obj):
    return [hexc(c) for c in obj.get_edgecolors().tolist()]


def keep(name, entries, reader, end_suffix=""):
    """drawed_objects[name--colour] = obj for each (colour at call time, obj)."""
    for key_color, obj in entries:
        objects[f"{name}--{key_color}"] = (obj, reader, name + end_suffix, key_color)


def last_keyed(colors, obj):
    """The multi-colour branches key the whole object by the last colour of their loop (an empty
    loop leaves the benchmark's variable unbound: it raises)."""
    if not colors:
        raise UnboundLocalError("no colour to key the drawn object by")
    return [(colors[-1], obj)]


def record(name, args, kwargs, result):
    """color_evaluator_prefix.log_function's branches, chosen by the wrapped function."""
    fn = name.rsplit("/", 1)[1]
    if fn == "_makeline":
        keep(name, [(hexc(result[1]["color"]), result[0])], line_color)
    elif fn in ("axhline", "axvline"):
        keep(name, [(hexc(result.get_color()), result)], line_color)
    elif fn == "_fill_between_x_or_y":
        keep(name, [(hexc(list(result.get_facecolors()[0])), result)], first_facecolors_row)
    elif fn == "bar":
        keep(name, [(hexc(list(p._original_facecolor)), p) for p in result], original_facecolor)
    elif fn == "scatter":
        polar = type(args[0]) is PolarAxes
        key = name + ("_polar" if polar else "")
        if kwargs.get("cmap") is not None:
            entries = [(cmap_name(kwargs), result)]
        else:
            entries = [(hexc(list(result.get_facecolor()[0])), result)] if len(result.get_facecolor()) else []
        keep(key, entries, scatter_colors, "_polar" if polar else "")
    elif fn == "pie":
        keep(name, [(hexc(w.get_facecolor()), w) for w in result[0]], facecolor)
    elif fn in ("axvspan", "axhspan"):
        keep(name, [(hexc(result.get_facecolor()), result)], facecolor)
    elif fn in ("hlines", "vlines"):
        keep(name, last_keyed([hexc(list(c)) for c in result.get_edgecolors()], result), edgecolors)
    elif fn == "boxplot":
        keep(name, [(hexc(list(b.get_facecolor())), b) for b in result["boxes"] if type(b) is PathPatch],
             facecolor_list)
    elif fn == "violinplot":
        keep(name, [(hexc(list(b.get_facecolor()[0])), b) for b in result["bodies"]], first_of_facecolor)
    elif fn == "hist":
        patches = result[2]
        # one data set: its patches; several: a silent_list of containers (matplotlib 3.8.4's shapes)
        groups = patches if type(patches) is silent_list or not all(isinstance(p, Patch) for p in patches) \
            else [patches]
        keep(name, [(hexc(list(p.get_facecolor())), p) for g in groups for p in g], facecolor_list)
    elif fn == "quiver":
        keep(name, last_keyed([hexc(c) for c in result.get_facecolors().tolist()], result), all_facecolors)
    elif fn == "plot":  # PolarAxes.plot on a PolarAxes itself (a subclass records nothing)
        if args and type(args[0]) is PolarAxes:
            keep(name + "_polar", [(hexc(line.get_color()), line) for line in result], line_color, "_polar")
    elif fn == "plot_squarify":
        keep(name, [(hexc(list(p.get_facecolor())), p) for c in result.containers for p in c], facecolor_list)
    elif fn in ("imshow", "pcolor", "contour", "contourf", "tripcolor"):
        keep(name, [(result.get_cmap().name, result)], colormap)
    elif fn == "fill":
        keep(name, [(hexc(list(p.get_facecolor())), p) for p in result], facecolor_list)
    elif fn == "broken_barh":
        keep(name, last_keyed([hexc(c) for c in result.get_facecolors().tolist()], result), all_facecolors)
    elif fn == "__init__":
        obj = args[0]
        if type(obj) is NonUniformImage:
            keep(name, [(obj.get_cmap().name, obj)], colormap)
        elif type(obj) in (Ellipse, Circle):
            keep(name, [(hexc(obj.get_facecolor()), obj)], facecolor)
        elif VENN and type(obj) is VENN[0]:
            keep(name, last_keyed([hexc(p.get_facecolor()) for p in obj.patches], obj), venn_colors)
    elif fn == "draw_networkx_labels":
        keep(name, [(hexc(t.get_color()), t) for t in result.values()], line_color)
    elif fn == "draw_networkx_edges":
        if type(result) is list:
            colors = [hexc(arrow.get_facecolor()) for arrow in result]
        else:
            colors = all_facecolors_of_edges(result)
        keep(name, last_keyed(colors, result), nx_edge_colors)
    elif fn == "draw_networkx_nodes":
        keep(name, last_keyed([hexc(c) for c in result.get_facecolors().tolist()], result), all_facecolors)


def record_3d(name, args, kwargs, result):
    """color_evaluator_prefix.log_function_for_3d (keys get "_3d", and "_3d" again at the end)."""
    fn, key = name.rsplit("/", 1)[1], name + "_3d"
    if fn in ("scatter", "plot_surface") and kwargs.get("cmap") is not None:
        entries = [(cmap_name(kwargs), result)]
    elif fn == "scatter":
        entries = last_keyed([hexc(c) for c in result.get_facecolors().tolist()], result)
    elif fn == "plot":
        entries = [(hexc(line.get_color()), line) for line in result]
    elif fn in ("plot_surface", "bar3d"):
        entries = [(hexc(result.get_facecolors().tolist()[0]), result)]
    elif fn == "bar":
        entries = [(hexc(p.get_facecolor()), p) for p in result]
    else:  # add_collection3d
        entries = last_keyed([hexc(c) for c in result.get_facecolors().tolist()], result)
    reader = {"scatter": scatter_3d_colors, "plot": line_color, "plot_surface": surface_colors,
              "bar3d": surface_colors, "bar": facecolor, "add_collection3d": all_facecolors}[fn]
    keep(key, entries, reader, "_3d")


def recorder(name, func, how=record):
    """color_evaluator_prefix's wrappers: record what the outermost traced call drew."""
    def wrapper(*args, **kwargs):
        if busy["color"]:
            return func(*args, **kwargs)
        busy["color"] = True
        result = func(*args, **kwargs)
        try:
            how(name, args, kwargs, result)
        except Exception as e:
            if MODE == "color":
                raise
            state["diverged"] = f"the colour tracer failed on {name.rsplit('/', 1)[1]} ({type(e).__name__}: {e})"
            raise Diverged() from None
        busy["color"] = False
        return result
    return wrapper


def final_colors():
    """The colour suffix: every kept object's colours now, as a set (an error: no colours)."""
    out = set()
    try:
        for obj, reader, name, key_color in objects.values():
            out |= {f"{name}--{c}" for c in reader(obj, key_color)}
    except Exception:  # noqa: BLE001 - the benchmark's suffix raises: its colour file is never written
        return []
    return sorted(out)


# ---------------------------------------------------------------- wrapping
def nx_wrapper(func, fname, wrap):
    """A wrapper with the benchmark's parameter list (extra keywords raise TypeError, as there)."""
    params = [inspect.Parameter("G", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("pos", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(k, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=v)
               for k, v in NX_PARAMS[fname].items()]
    sig = inspect.Signature(params)

    def call(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        return func(a.pop("G"), a.pop("pos"), **a)

    inner = wrap(call)

    def wrapper(*args, **kwargs):
        sig.bind(*args, **kwargs)  # the benchmark's wrapper rejects a call before it counts or records
        return inner(*args, **kwargs)
    wrapper.__signature__ = sig
    return wrapper


def wrap_networkx(nx_pylab):
    """networkx's three drawing functions. The prefixes wrap them in nx_pylab and again in the
    `networkx` namespace, which copies nx_pylab's when it is imported: wrapping them here, while
    it is imported, covers both (one wrapper per evaluator, with the same key)."""
    for fname in NX_PARAMS:
        if ON["type"]:
            key = f"{NXP}/{fname}-{fname}"
            setattr(nx_pylab, fname, nx_wrapper(getattr(nx_pylab, fname), fname, lambda f, k=key: count(k, f)))
        if ON["color"]:
            name = f"{NXP}/{fname}"
            setattr(nx_pylab, fname, nx_wrapper(getattr(nx_pylab, fname), fname, lambda f, n=name: recorder(n, f)))


def wrap_squarify(mod):
    if ON["type"]:
        mod.plot = count(f"{SQUARIFY}-plot", mod.plot)
    if ON["color"]:
        mod.plot = recorder(f"{SQUARIFY}/plot_squarify", mod.plot)


def wrap_venn(mod):
    VENN.append(mod.VennDiagram)
    if ON["type"]:
        mod.VennDiagram.__init__ = count("matplotlib_venn/_common.py-__init__", mod.VennDiagram.__init__)
    if ON["color"]:
        mod.VennDiagram.__init__ = recorder("matplotlib_venn/_common.py/__init__", mod.VennDiagram.__init__)


LAZY = {"networkx.drawing.nx_pylab": wrap_networkx, "squarify": wrap_squarify, "matplotlib_venn._common": wrap_venn}


class WrapOnImport(importlib.abc.MetaPathFinder):
    """Wraps networkx, squarify and matplotlib-venn when the script imports them. The prefixes
    import them first; that costs ~0.4 s a run and draws nothing, so wrapping at import is the same."""

    def find_spec(self, name, path=None, target=None):
        wrap = LAZY.get(name)
        if wrap is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module

            def exec_module(module):
                load(module)
                LAZY.pop(name, None)
                wrap(module)
            spec.loader.exec_module = exec_module
        return spec


def install():
    if ON["type"]:
        for attr, file in FILES.items():
            if attr != "_fill_between_x_or_y":
                setattr(Axes, attr, count(f"{file}-{attr}", getattr(Axes, attr),
                                          f"{file}_polar-plot" if attr == "plot" else None))
        for attr, file in FILES_3D.items():
            setattr(Axes3D, attr, count(f"{file}-{attr}", getattr(Axes3D, attr)))
        for cls, file in ((NonUniformImage, "matplotlib/image.py"), (Ellipse, PATCHES), (Circle, PATCHES)):
            cls.__init__ = count(f"{file}-__init__", cls.__init__)
    if ON["color"]:
        make = "_makeline" if hasattr(_process_plot_var_args, "_makeline") else "_make_line"
        setattr(_process_plot_var_args, make, recorder(f"{BASE}/_makeline", getattr(_process_plot_var_args, make)))
        for attr in ("bar", "scatter", "axhline", "axvline", "_fill_between_x_or_y", "pie", "axvspan", "axhspan",
                     "hlines", "vlines", "boxplot", "violinplot", "hist", "quiver", "imshow", "pcolor", "contour",
                     "contourf", "fill", "broken_barh", "tripcolor"):
            setattr(Axes, attr, recorder(f"{FILES[attr]}/{attr}", getattr(Axes, attr)))
        PolarAxes.plot = recorder(f"{AXES}/plot", PolarAxes.plot)
        for cls, file in ((NonUniformImage, "matplotlib/image.py"), (Ellipse, PATCHES), (Circle, PATCHES)):
            cls.__init__ = recorder(f"{file}/__init__", cls.__init__)
        for attr, file in FILES_3D.items():
            setattr(Axes3D, attr, recorder(f"{file}/{attr}", getattr(Axes3D, attr), record_3d))
    if ON["type"] or ON["color"]:
        sys.meta_path.insert(0, WrapOnImport())
    if ON["text"]:
        draw_text = RendererPdf.draw_text

        def log_text(*args, **kwargs):
            texts.append(args[4])
            return draw_text(*args, **kwargs)
        RendererPdf.draw_text = log_text


def namespace():
    """The script's globals: what the running evaluators' prefixes define (see chart_programs)."""
    names = {"__name__": "__main__", "__builtins__": builtins, "warnings": warnings, "sys": sys}
    if ON["type"] or ON["color"]:
        names.update(os=os, inspect=inspect, plt=plt, Axes=Axes, Axes3D=Axes3D, PolarAxes=PolarAxes,
                     _process_plot_var_args=_process_plot_var_args, NonUniformImage=NonUniformImage,
                     Ellipse=Ellipse, Circle=Circle)
        if MODE != "all":  # "all" runs only scripts that bind these themselves (chart_programs.combined_plan)
            import matplotlib_venn._common
            import networkx
            import networkx.drawing.nx_pylab
            import squarify

            names.update(squarify=squarify, nx=networkx, nx_pylab=networkx.drawing.nx_pylab,
                         VennDiagram=matplotlib_venn._common.VennDiagram)
    if ON["type"]:
        names["tripcolor"] = tripcolor
    if ON["color"]:
        names.update(np=np, matplotlib=matplotlib, mcolors=mcolors)
        if MODE != "all":
            names["networkx"] = names["nx"]
    if ON["text"]:
        names["RendererPdf"] = RendererPdf

    def ticks_off():
        """The text evaluator's tick removal, run where it inserts it (it fails: that run has no texts)."""
        try:
            exec(TICKS_OFF, names)  # noqa: S102 - fixed code, in the script's namespace
        except Exception:  # noqa: BLE001
            state["texts_lost"] = True

    def caught(e):
        state["caught"] = f"{type(e).__name__}: {e}"[:500]
    names.update(__viscodex_ticks_off__=ticks_off, __viscodex_caught__=caught)
    return names



def layout(names):
    """layout_evaluator's suffix (`plt` is the script's: without it that suffix fails)."""
    try:
        fig = names["plt"].gcf()
        if JOB["graph"]:
            return [dict(nrows=1, ncols=1, row_start=0, row_end=1, col_start=0, col_end=1) for _ in fig.axes]
        out = []
        for ax in fig.axes:
            spec = ax.get_subplotspec()
            if spec is None:
                continue
            nrows, ncols = spec.get_gridspec().get_geometry()
            out.append(dict(nrows=nrows, ncols=ncols, row_start=spec.rowspan.start, row_end=spec.rowspan.stop - 1,
                            col_start=spec.colspan.start, col_end=spec.colspan.stop - 1))
        return out
    except Exception:  # noqa: BLE001
        return []


def library_versions():
    """The versions of the traced libraries this run imported (the parent compares them with the
    installed ones it reads from package metadata, which the sandbox cannot list)."""
    out = {"matplotlib": matplotlib.__version__}
    for dist, module in (("networkx", "networkx"), ("matplotlib-venn", "matplotlib_venn")):
        if module in sys.modules:
            out[dist] = sys.modules[module].__version__
    return out


def main():
    install()
    names = namespace()
    out = {"types": {}, "colors": [], "layout": [], "texts": [], "error": None, "caught": None, "diverged": None}
    with open("program.py", encoding="utf-8") as f:
        src = f.read()
    try:
        exec(compile(src, "program.py", "exec"), names)  # noqa: S102 - this is the sandboxed child
    except Diverged:
        pass
    except BaseException as e:  # noqa: BLE001 - then no evaluator's suffix runs: every trace is empty
        out["error"] = f"the code raised {type(e).__name__}: {e}"[:500]
    out["caught"], out["diverged"], out["libraries"] = state["caught"], state["diverged"], library_versions()
    if out["error"] is None and out["diverged"] is None:
        out["types"] = types if ON["type"] else {}
        out["colors"] = final_colors() if ON["color"] else []
        out["layout"] = layout(names) if ON["layout"] else []
        out["texts"] = texts if ON["text"] and not state["texts_lost"] else []
    with open("trace.json", "w", encoding="utf-8") as f:
        json.dump(out, f)


main()
