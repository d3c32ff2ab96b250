"""ChartMimic's low-level tracing, as the sandbox child runs it (sent as the child's script; the
viscodex process never imports it). Runs `program.py` (a chart script: the generated one or the
ground truth) with matplotlib's drawing calls wrapped the way the benchmark's evaluator prefixes
wrap them, then writes `trace.json`:
  types   chart type -> number of top-level calls (chart_type_evaluator_prefix: a call made inside
          another traced call is not counted; `plot` on polar axes is its own type)
  colors  "type--#RRGGBB" (or a colormap name) of what each traced call drew, read back from the
          drawn objects after the script ended (color_evaluator_prefix + update_drawed_colors)
  layout  the gridspec geometry of every axes (layout_evaluator)
  texts   every string the PDF backend draws when the figure is saved with all ticks removed
          (text_evaluator with use_axs=False: RendererPdf.draw_text)
  error   what the script raised, if anything (then the benchmark has no trace: all empty)
"""
import io
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.axes._base import _process_plot_var_args  # noqa: E402
from matplotlib.backends.backend_pdf import RendererPdf  # noqa: E402
from matplotlib.patches import Circle, Ellipse  # noqa: E402
from matplotlib.projections.polar import PolarAxes  # noqa: E402

TYPE_CALLS = ["bar", "barh", "plot", "axhline", "axvline", "axvspan", "axhspan", "hlines", "vlines", "errorbar",
              "boxplot", "violinplot", "violin", "hist", "fill_between", "fill_betweenx", "scatter", "quiver", "pie",
              "fill", "imshow", "pcolor", "contour", "contourf", "broken_barh", "tripcolor"]
COLOR_CALLS = ["bar", "scatter", "axhline", "axvline", "_fill_between_x_or_y", "pie", "axvspan", "axhspan", "hlines",
               "vlines", "boxplot", "violinplot", "hist", "quiver", "imshow", "pcolor", "contour", "contourf", "fill",
               "broken_barh", "tripcolor"]
types, objects, state = {}, {}, {"inside_type": False, "inside_color": False}


def hexcolor(c):
    try:
        if isinstance(c, str) and c.startswith("#") and len(c) in (7, 9):
            return c.upper()
        return mcolors.to_hex(mcolors.to_rgba(c) if isinstance(c, str) else list(c)).upper()
    except (ValueError, TypeError):
        return None


def count_type(name, func):
    def wrapper(*args, **kwargs):
        if state["inside_type"]:
            return func(*args, **kwargs)
        state["inside_type"] = True
        try:
            key = name + ("_polar" if name == "plot" and args and type(args[0]) is PolarAxes else "")
            types[key] = types.get(key, 0) + 1
            return func(*args, **kwargs)
        finally:
            state["inside_type"] = False
    return wrapper


def remember(name, func):
    """Keep the objects a top-level call drew (keyed by type and its colour at call time, as the
    benchmark does); their colours are read again at the end."""
    def wrapper(*args, **kwargs):
        if state["inside_color"]:
            return func(*args, **kwargs)
        state["inside_color"] = True
        try:
            result = func(*args, **kwargs)
        finally:
            state["inside_color"] = False
        cmap = kwargs.get("cmap")
        if name == "_makeline":
            objects[("line", hexcolor(result[1].get("color")))] = result[0]
        elif name == "bar":
            for patch in result:
                objects[("bar", hexcolor(patch._original_facecolor))] = patch
        elif name == "scatter" and cmap is not None:
            objects[("scatter", cmap if isinstance(cmap, str) else cmap.name)] = None
        elif name == "pie":
            for wedge in result[0]:
                objects[("pie", hexcolor(wedge.get_facecolor()))] = wedge
        elif name in ("imshow", "pcolor", "contour", "contourf", "tripcolor"):
            objects[(name, result.get_cmap().name)] = None
        else:
            objects[(name, id(result))] = result
        return result
    return wrapper


def colors_of(kind, obj):
    """update_drawed_colors: the colours of one drawn object, read at the end."""
    if obj is None:
        return []
    if kind in ("line", "axhline", "axvline"):
        return [hexcolor(obj.get_color())]
    if kind in ("bar", "pie", "axvspan", "axhspan"):
        return [hexcolor(list(obj._original_facecolor) if kind == "bar" else obj.get_facecolor())]
    if kind in ("_fill_between_x_or_y", "violinplot", "scatter"):
        fc = obj.get_facecolors() if kind != "violinplot" else obj["bodies"][0].get_facecolor()
        return [hexcolor(list(fc[0]))] if len(fc) else []
    if kind in ("hlines", "vlines"):
        return [hexcolor(list(c)) for c in obj.get_edgecolors()]
    if kind in ("quiver", "broken_barh"):
        return [hexcolor(c) for c in obj.get_facecolors().tolist()]
    if kind == "hist":
        return [hexcolor(list(obj[2][0].get_facecolor()))] if len(obj[2]) and hasattr(obj[2][0], "get_facecolor") else []
    if kind == "fill":
        return [hexcolor(p.get_facecolor()) for p in obj]
    if kind == "boxplot":
        return [hexcolor(b.get_facecolor()) for b in obj.get("boxes", []) if hasattr(b, "get_facecolor")][:1]
    return []


def gridspec_layout():
    out = []
    for ax in plt.gcf().axes:
        spec = ax.get_subplotspec()
        if spec is None:
            continue
        nrows, ncols = spec.get_gridspec().get_geometry()
        out.append(dict(nrows=nrows, ncols=ncols, row_start=spec.rowspan.start, row_end=spec.rowspan.stop - 1,
                        col_start=spec.colspan.start, col_end=spec.colspan.stop - 1))
    return out


def main():
    for name in TYPE_CALLS:
        setattr(Axes, name, count_type(name, getattr(Axes, name)))
    for cls in (Ellipse, Circle):
        cls.__init__ = count_type(cls.__name__, cls.__init__)
    for name in COLOR_CALLS:
        setattr(Axes, name, remember(name, getattr(Axes, name)))
    # the line factory behind Axes.plot (`_makeline` in the matplotlib the benchmark pinned)
    attr = "_makeline" if hasattr(_process_plot_var_args, "_makeline") else "_make_line"
    setattr(_process_plot_var_args, attr, remember("_makeline", getattr(_process_plot_var_args, attr)))
    saves = []
    plt.savefig = lambda *a, **k: saves.append(1)  # the one save that counts is made below
    plt.show = lambda *a, **k: None
    out = {"types": {}, "colors": [], "layout": [], "texts": [], "error": None}
    try:
        with open("program.py", encoding="utf-8") as f:
            src = f.read()
        exec(compile(src, "program.py", "exec"), {"__name__": "__main__"})
    except BaseException as e:  # noqa: BLE001 - the benchmark's trace file is then never written
        out["error"] = f"the code raised {type(e).__name__}: {e}"[:500]
    if out["error"] is None:
        colors = set()
        for (kind, key), obj in objects.items():
            kind = {"_makeline": "line"}.get(kind, kind)
            found = colors_of(kind, obj) if obj is not None else [key]
            colors |= {f"{kind}--{c}" for c in found if c}
        out.update(types=types, colors=sorted(colors), layout=gridspec_layout())
        texts = []
        draw_text = RendererPdf.draw_text

        def log_text(self, gc, x, y, s, *args, **kwargs):
            texts.append(s)
            return draw_text(self, gc, x, y, s, *args, **kwargs)

        RendererPdf.draw_text = log_text
        for ax in plt.gcf().get_axes():
            ax.set_xticks([])
            ax.set_yticks([])
        plt.gcf().savefig(io.BytesIO(), format="pdf")
        out["texts"] = texts
    with open("trace.json", "w", encoding="utf-8") as f:
        json.dump(out, f)


main()
