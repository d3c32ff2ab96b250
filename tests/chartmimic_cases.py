"""Chart programs for ChartMimic's low-level metrics: ground-truth scripts in the benchmark's style
(each saves its own PDF, as `ori_500`'s do) and model answers against them. Shared by
tests/test_eval_chartmimic.py (hand-worked expected values) and benchmarks/chartmimic_conformance.py
(the same pairs through the benchmark's own evaluators)."""
from __future__ import annotations

SAVE = "plt.savefig('{name}.pdf', bbox_inches='tight')\n"

GOLDEN = {
    "bar_1": """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(['a', 'b', 'c'], [1, 2, 3], color=['#1F77B4', '#FF7F0E', '#2CA02C'])
ax.plot([0, 1, 2], [1, 2, 3], color='#D62728')
ax.set_title('Sales')
ax.set_xlabel('year')
plt.tight_layout()
""" + SAVE.format(name="bar_1"),
    "graph_1": """import matplotlib.pyplot as plt
import networkx as nx
G = nx.Graph()
G.add_edges_from([(1, 2), (2, 3)])
pos = {1: (0, 0), 2: (1, 0), 3: (2, 1)}
fig, ax = plt.subplots(figsize=(4, 3))
nx.draw_networkx_nodes(G, pos, node_color=['#FF0000', '#00FF00', '#FF0000'], ax=ax)
nx.draw_networkx_edges(G, pos, edge_color='#0000FF', ax=ax)
nx.draw_networkx_labels(G, pos, font_color='#000000', ax=ax)
""" + SAVE.format(name="graph_1"),
    "treemap_1": """import matplotlib.pyplot as plt
import squarify
fig, ax = plt.subplots(figsize=(4, 3))
squarify.plot(sizes=[3, 2, 1], label=['a', 'b', 'c'], color=['#FF0000', '#00FF00', '#0000FF'], ax=ax)
ax.axis('off')
""" + SAVE.format(name="treemap_1"),
    "venn_1": """import matplotlib.pyplot as plt
from matplotlib_venn import venn2
fig, ax = plt.subplots(figsize=(4, 3))
venn2(subsets=(3, 2, 1), set_labels=('A', 'B'), set_colors=('#FF0000', '#0000FF'), alpha=1.0, ax=ax)
""" + SAVE.format(name="venn_1"),
    "3d_1": """import matplotlib.pyplot as plt
import numpy as np
fig = plt.figure(figsize=(4, 3))
ax = fig.add_subplot(projection='3d')
ax.bar3d([0, 1], [0, 0], [0, 0], 0.5, 0.5, [1, 2], color='#FF0000', shade=False)
X, Y = np.meshgrid(np.arange(3), np.arange(3))
ax.plot_surface(X, Y, X * Y, cmap='viridis')
""" + SAVE.format(name="3d_1"),
    "3d_2": """import matplotlib.pyplot as plt
fig = plt.figure(figsize=(4, 3))
ax = fig.add_subplot(projection='3d')
ax.bar([0, 1], [1, 2], zs=0, zdir='y', color='#FF0000')
""" + SAVE.format(name="3d_2"),
    "box_1": """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
bp = ax.boxplot([[1, 2, 3, 4], [2, 3, 4, 5]], patch_artist=True)
for box, color in zip(bp['boxes'], ['#FF0000', '#00FF00']):
    box.set_facecolor(color)
""" + SAVE.format(name="box_1"),
    "violin_1": """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
parts = ax.violinplot([[1, 2, 3, 4], [2, 3, 4, 6]])
for body, color in zip(parts['bodies'], ['#FF0000', '#00FF00']):
    body.set_facecolor(color)
""" + SAVE.format(name="violin_1"),
    "hist_1": """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
ax.hist([1, 2, 2, 3, 3, 3], bins=3, color='#FF0000')
ax.hist([[1, 2], [2, 3]], bins=2, color=['#00FF00', '#0000FF'])
""" + SAVE.format(name="hist_1"),
    # saves its PDF twice: the benchmark logs the texts of both saves
    "line_2": """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
ax.plot([0, 1], [0, 1], color='#FF0000')
ax.set_title('Twice')
plt.savefig('line_2.pdf')
""" + SAVE.format(name="line_2"),
}


def block(code: str) -> str:
    return f"Here is the code:\n```python\n{code}```\n"


# the bar_1 reference with one change
def bar(old: str, new: str) -> str:
    return block(GOLDEN["bar_1"].replace(old, new))


ANSWERS = {
    "identical": ("bar_1", block(GOLDEN["bar_1"])),
    "recoloured": ("bar_1", bar("'#2CA02C'", "'#0000FF'")),
    "extra_title": ("bar_1", bar("ax.set_xlabel('year')", "ax.set_xlabel('year')\nfig.suptitle('Q1')")),
    "two_axes": ("bar_1", block(GOLDEN["bar_1"].replace("plt.subplots(figsize", "plt.subplots(1, 2, figsize")
                                .replace("ax.", "ax[0].").replace("ax[0].set_title", "ax[1].set_title"))),
    "extra_line": ("bar_1", bar("ax.set_title", "ax.plot([0, 1], [3, 1], color='#D62728')\nax.set_title")),
    # code_interpreter cuts everything from the first plt.savefig( on: the title is never drawn
    "early_save": ("bar_1", bar("ax.set_title('Sales')", "plt.savefig('draft.png')\nax.set_title('Sales')")),
    # the answer's exception is caught by the benchmark's try/except: what was drawn before it counts
    "raises": ("bar_1", bar("ax.plot(", "raise ValueError('late')\nax.plot(")),
    # `np` without an import: only the colour evaluator's prefix defines it (one run per evaluator)
    "np_unimported": ("bar_1", bar("ax.plot([0, 1, 2]", "ax.plot(np.arange(3)")),
    "no_block": ("bar_1", "I would draw three bars and a red line."),
    "syntax_error": ("bar_1", block("import matplotlib.pyplot as plt\nplt.plot([1, 2]\n")),
    "graph_same": ("graph_1", block(GOLDEN["graph_1"])),
    # nx.draw calls the three wrapped functions itself (labels too, with with_labels=True)
    "graph_draw": ("graph_1", block("""import matplotlib.pyplot as plt
import networkx as nx
G = nx.Graph()
G.add_edges_from([(1, 2), (2, 3)])
pos = {1: (0, 0), 2: (1, 0), 3: (2, 1)}
nx.draw(G, pos, node_color=['#FF0000', '#0000FF', '#FF0000'], edge_color='#0000FF', font_color='#000000',
        with_labels=True)
""")),
    # no edges: the colour wrapper has no colour to key them by and raises (UnboundLocalError), which
    # stops the benchmark's colour run only: one run per evaluator
    "graph_no_edges": ("graph_1", block("""import matplotlib.pyplot as plt
import networkx as nx
G = nx.Graph()
G.add_edges_from([(1, 2), (2, 3)])
pos = {1: (0, 0), 2: (1, 0), 3: (2, 1)}
fig, ax = plt.subplots(figsize=(4, 3))
nx.draw_networkx_nodes(G, pos, node_color='#FF0000', ax=ax)
nx.draw_networkx_edges(G, pos, edgelist=[], ax=ax)
ax.bar([0], [1], color='#0000FF')
""")),
    "treemap_same": ("treemap_1", block(GOLDEN["treemap_1"])),
    "treemap_as_bars": ("treemap_1", block("""import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar(['a', 'b', 'c'], [3, 2, 1], color=['#FF0000', '#00FF00', '#0000FF'])
""")),
    "venn_same": ("venn_1", block(GOLDEN["venn_1"])),
    "3d_same": ("3d_1", block(GOLDEN["3d_1"])),
    # Axes3D.bar and Axes.bar share one chart type (both wrapped by _preprocess_data in matplotlib
    # 3.8.4: inspect.getfile gives matplotlib/__init__.py for both)
    "3d_bars_as_2d": ("3d_2", block("""import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(4, 3))
ax.bar([0, 1], [1, 2], color='#FF0000')
""")),
    "box_same": ("box_1", block(GOLDEN["box_1"])),
    "box_plain": ("box_1", block(GOLDEN["box_1"].replace(", patch_artist=True", "")
                                 .replace("    box.set_facecolor(color)\n", "    box.set_color(color)\n"))),
    "violin_same": ("violin_1", block(GOLDEN["violin_1"])),
    "hist_same": ("hist_1", block(GOLDEN["hist_1"])),
    "hist_step": ("hist_1", block(GOLDEN["hist_1"].replace("color='#FF0000'", "color='#FF0000', histtype='step'"))),
    "line_2_once": ("line_2", block(GOLDEN["line_2"])),
}
