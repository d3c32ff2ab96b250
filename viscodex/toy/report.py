"""`viscodex demo`'s report: the Markdown table (with the claims' verdicts, decided in toy.claims)
and the accuracy-vs-lambda plot. Pure functions of the results dict that `toy.demo.run_demo` writes."""
from __future__ import annotations

from pathlib import Path

from . import world as tt

VARIANT_NAMES = {"vlm": "base VLM", "swapped": "coder-swapped", "merged": "merged"}


def lam_dir(lam: float) -> str:
    """The results key (and variants/ folder) of the merge at `lam`."""
    return f"merged-lam{lam:g}"


def model_names(lam: float) -> dict[str, str]:
    """Labels of the results' model keys."""
    return {"base": "base LLM", "coder": "coder LLM", **VARIANT_NAMES, lam_dir(lam): f"merged (lambda {lam:g})"}


def _fmt(s: dict | None) -> str:
    if s is None:
        return "-"
    return f"{s['attr_acc']:.2f} ({s['exact']:.2f})"


def table_markdown(results: dict) -> str:
    """The results as Markdown: main table, lambda sweep, claims, timings."""
    lam = results["config"]["lam"]
    sc, sft = results["scores"], results["sft"]["scores"]
    rows = [("base LLM", "base", None), ("coder LLM", "coder", None), ("base VLM", "vlm", "vlm"),
            ("coder-swapped", "swapped", "swapped"), (f"merged (lambda {lam:g})", lam_dir(lam), "merged")]
    lines = [
        "# Toy VisCodex: base VLM vs coder-swapped vs merged",
        "",
        (f"Evaluation: {results['eval_samples']} samples per task, drawn apart from the training data (fresh random "
         "images; the coding prompts are the 64 scene descriptions, which the coder's training also covers), "
         "greedy decoding. Each cell: attribute accuracy (size, colour, shape; in brackets: all three right). "
         f"Chance attribute accuracy = {results['chance']:.2f}. Seed {results['config']['seed']}."),
        "",
        "| model | grounding (image -> description) | coding (description -> SVG) | image -> SVG, zero-shot | image -> SVG after SFT |",
        "|---|---|---|---|---|",
    ]
    for label, k, s in rows:
        r = sc.get(k, {})
        lines.append(f"| {label} | {_fmt(r.get('grounding'))} | {_fmt(r.get('coding'))} | {_fmt(r.get('image_code'))} | "
                     f"{_fmt(sft.get(s, {}).get('image_code')) if s else '-'} |")
    lines += ["", "## Lambda sweep (weight of the VLM's task vector; 1 = base VLM, 0 = coder backbone)", "",
              "| lambda | grounding | coding | image -> SVG, zero-shot |", "|---|---|---|---|"]
    for lm in sorted({float(k[len('merged-lam'):]) for k in sc if k.startswith("merged-lam")}):
        r = sc[lam_dir(lm)]
        lines.append(f"| {lm:g} | {_fmt(r.get('grounding'))} | {_fmt(r.get('coding'))} | {_fmt(r.get('image_code'))} |")
    lines += ["", "## After the short SFT on image -> SVG (grounding mixed in; vision tower and projector frozen)", "",
              "| variant | grounding before SFT | grounding after SFT | coding after SFT | image -> SVG after SFT |",
              "|---|---|---|---|---|"]
    before = {"vlm": "vlm", "swapped": "swapped", "merged": lam_dir(lam)}
    for k, label in VARIANT_NAMES.items():
        r = sft.get(k, {})
        lines.append(f"| {label} | {_fmt(sc.get(before[k], {}).get('grounding'))} | {_fmt(r.get('grounding'))} | "
                     f"{_fmt(r.get('coding'))} | {_fmt(r.get('image_code'))} |")
    lines += ["", "## The paper's claims at toy scale", "",
              (f"Each claim compares two models on the same {results['eval_samples']} samples: the mean difference "
               "of their attribute accuracies, its 95 % paired bootstrap interval, and the verdict against the "
               "claim's margin: holds (the interval lies above the margin), does not hold (below it), "
               "inconclusive (it contains the margin)."), "",
              "| claim | test | values | difference [95 % interval] | verdict |", "|---|---|---|---|---|"]
    for c in results["claims"]:
        if "interval" not in c:
            lines.append(f"| {c['claim']} | {c['test']} | - | - | {c['verdict']} |")
            continue
        (x, y), (lo, hi) = c["values"], c["interval"]
        lines.append(f"| {c['claim']} | {c['test']} | {x:.2f} vs {y:.2f} | {c['difference']:+.2f} [{lo:+.2f}, {hi:+.2f}] | "
                     f"**{c['verdict']}** |")
    t = results["timings"]
    lines += ["", (f"Time: {t['total']:.0f} s in all (trio {t['trio']:.0f} s - "
                   f"{'built' if t.get('trio_built') else 'reused from the cache'}, merges and evaluation "
                   f"{t['merge'] + t['eval']:.0f} s, SFT {t['sft']:.0f} s) on {results['threads']} thread(s)."), ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Accuracy vs lambda for the three tasks, with the SFT results as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc, sft = results["scores"], results["sft"]["scores"]
    lams = sorted({float(k[len("merged-lam"):]) for k in sc if k.startswith("merged-lam")})
    fig, ax = plt.subplots(figsize=(8.6, 4.2), dpi=110)
    for task, color in (("grounding", "tab:blue"), ("coding", "tab:orange"), ("image_code", "tab:green")):
        ys = [sc[lam_dir(x)][task]["attr_acc"] for x in lams]
        ax.plot(lams, ys, "o-", color=color, label=tt.TASKS[task].title + (", zero-shot" if task == "image_code" else ""))
    pts = {"vlm": 1.0, "merged": results["config"]["lam"], "swapped": 0.0}
    ax.scatter([pts[k] for k in pts], [sft[k]["image_code"]["attr_acc"] for k in pts], marker="*", s=140,
               color="tab:green", edgecolor="black", zorder=5,
               label="image -> code after SFT\n(at 1: base VLM, 0.7: merged, 0: swapped)")
    ax.axhline(sc["coder"]["coding"]["attr_acc"], color="tab:orange", ls=":", lw=1, label="coder LLM, coding")
    ax.axhline(results["chance"], color="gray", ls="--", lw=1, label="chance")
    ax.set_xlabel("lambda (weight of the VLM's task vector)")
    ax.set_ylabel("attribute accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("Toy VisCodex: merging the coder into the VLM")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)

