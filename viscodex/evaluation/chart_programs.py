"""The programs ChartMimic's low-level evaluators run, built as the benchmark builds them (parent side:
text only, nothing here executes the code).

A model's answer becomes a script the way `utils/post_process/code_interpreter.py` writes it: the
first ```python block (no block: a script that only imports pyplot), every newline indented by
four spaces, everything from the first `plt.savefig(` and from the first `plt.show(` (any character
between `plt` and `show`) to the end cut off, the rest put in `try: ... except Exception: pass`
(code that raises still leaves what it drew) and one `plt.savefig("<name>.pdf")` appended.

Each evaluator then runs prefix + script + suffix in a fresh interpreter; the text evaluator also
inserts a block that removes every axis's ticks just before the first "plt.savefig" in the text
(`TextEvaluator(use_axs=False)`). viscodex runs one traced process for all four evaluators when that
gives the same result (`combined_plan`), else one per evaluator.
"""
from __future__ import annotations

import ast
import re

NO_BLOCK = "import matplotlib.pyplot as plt"  # what the benchmark runs when the answer has no block
CAUGHT_HOOK = "__viscodex_caught__"  # records what the model's code raised (the benchmark: `pass`)
TICKS_HOOK = "__viscodex_ticks_off__()\n"  # the tick-removal block, as one top-level call

# The text evaluator's insertion (a leading newline, then four lines at column 0: it rebinds
# `all_axes` and `ax`, and needs `plt`); inserted as text, so it behaves as the benchmark's does
# wherever "plt.savefig" is found (inside a block or a comment included).
TICKS_OFF = ("\nall_axes = plt.gcf().get_axes()\nfor ax in all_axes:\n"
             "    ax.set_xticks([])\n    ax.set_yticks([])\n")

# Names the evaluators' prefixes define in the script's namespace. A script that reads one of them
# without binding it behaves differently per evaluator (e.g. `np` exists only in the colour run),
# so such a script gets one run per evaluator, each with that evaluator's names.
PREFIX_NAMES = {
    "text": {"warnings", "sys", "global_config", "RendererPdf", "drawed_texts", "log_function"},
    "layout": {"warnings", "sys"},
    "type": {"warnings", "os", "sys", "PolarAxes", "plt", "Axes", "_process_plot_var_args", "squarify", "nx_pylab",
             "nx", "Axes3D", "NonUniformImage", "Ellipse", "Circle", "tripcolor", "VennDiagram", "inspect",
             "called_functions", "in_decorator", "log_function"},
    "color": {"os", "squarify", "warnings", "sys", "networkx", "matplotlib", "plt", "np", "nx",
              "_process_plot_var_args", "Axes", "Axes3D", "mcolors", "nx_pylab", "PolarAxes", "NonUniformImage",
              "Ellipse", "Circle", "VennDiagram", "inspect", "filter_color", "drawed_colors", "drawed_objects",
              "in_decorator", "convert_color_to_hex", "log_function", "log_function_for_3d", "update_drawed_colors"},
}
ALL_PREFIX_NAMES = set().union(*PREFIX_NAMES.values())
SCOPES = (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)  # names bound inside stay there
DYNAMIC = {"globals", "vars", "locals", "eval", "exec", "__import__"}  # reads names we cannot see


def answer_code(answer: str) -> str:
    """The benchmark's extract_code: the first block opened by exactly ```python."""
    found = re.findall(r"```python(.*?)```", answer, re.DOTALL)
    return found[0] if found else NO_BLOCK


def generated_program(answer: str, name: str, *, report: bool = True) -> str:
    """The script the benchmark evaluates for a model's answer to sample `name` (code_interpreter).
    report=False: `pass` in the except clause, as there (for running it outside the tracer)."""
    code = answer_code(answer).replace("\n", "\n    ")
    code = re.sub(r"plt\.savefig\(.*\n*", "", code, flags=re.DOTALL)
    code = re.sub(r"plt.show\(.*\n*", "", code, flags=re.DOTALL)
    caught = f"{CAUGHT_HOOK}(e)" if report else "pass"
    return f"try:\n    {code.strip()}\nexcept Exception as e:\n    {caught}\nplt.savefig(\"{name}.pdf\")"


def text_program(code: str) -> str:
    """The text evaluator's script: TICKS_OFF before the first "plt.savefig". Without one the
    benchmark inserts it after its suffix has written the texts, i.e. too late to matter."""
    at = code.find("plt.savefig")
    return code if at < 0 else code[:at] + TICKS_OFF + code[at:]


def _module_bindings(tree: ast.Module) -> tuple[set[str], bool]:
    """Names bound at module level (any depth of if/for/with/try, not inside functions or
    classes), and whether a star import makes that unknowable."""
    bound, star, todo = set(), False, list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                star |= alias.name == "*"
                bound.add(alias.asname or alias.name.split(".")[0])
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Name) and isinstance(child.ctx, (ast.Store, ast.Del)):
                bound.add(child.id)
            elif not isinstance(child, SCOPES):
                if isinstance(child, ast.ExceptHandler) and child.name:
                    bound.add(child.name)
                todo.append(child)
    return bound, star


def combined_plan(code: str) -> tuple[bool, int | None]:
    """(one run serves all four evaluators, where the tick-removal call goes in that run).

    One run is exact when the script does not depend on the names a prefix defines (see
    PREFIX_NAMES) and the text evaluator's insertion point is a clean statement boundary at column
    0 (then a call doing the same at that point is the same program). The wrappers are the same
    functions in both cases; a wrapper that fails while recording makes the child ask for separate
    runs too (chart_trace_child.py)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return True, None  # every evaluator's run fails the same way before anything is drawn
    bound, star = _module_bindings(tree)
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    # `plt` must be the script's own: the layout suffix and the tick removal use it, and only the
    # type and colour prefixes define it
    if star or loaded & DYNAMIC or (loaded & ALL_PREFIX_NAMES) - bound or "plt" not in bound:
        return False, None
    at = code.find("plt.savefig")
    if at < 0:
        return True, None
    if at and code[at - 1] != "\n":
        return False, None
    try:
        ast.parse(code[:at])
    except SyntaxError:  # inside a string or a bracket: the benchmark's insertion changes the program
        return False, None
    return True, at


def with_ticks_hook(code: str, at: int | None) -> str:
    return code if at is None else code[:at] + TICKS_HOOK + code[at:]


__all__ = ["CAUGHT_HOOK", "NO_BLOCK", "PREFIX_NAMES", "TICKS_OFF", "answer_code", "combined_plan", "generated_program",
           "text_program", "with_ticks_hook"]
