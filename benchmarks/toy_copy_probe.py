"""Does a toy model's SVG follow its own caption? (docs/demo.md, "Design notes")

The merged model writes code for an image by captioning it and then writing the SVG of its
caption; that second step copies the caption's colour word into the SVG. This probe prefills an
answer with a scene's caption and the SVG up to its colour (`a small red circle: <svg><circle
style="fill:`), lets the model write the next tokens greedily and counts how often it writes the
caption's colour, in four contexts:

  text      the user turn is "Write SVG for: <the same description>"
  bare      the user turn is "Write SVG for:" (no description: only the caption can be copied)
  conflict  the user turn describes another colour: does it copy the caption or the prompt?
  image     (VL models) the user turn is "Write SVG for:" + an image of the same scene
  image≠    (VL models) the same with an image of another colour: caption or image?

With `--attention` it also prints, per layer and head, the share of the last position's
attention on the caption's colour token and on the image tokens (image context, eager attention).

    PYTHONPATH=. python benchmarks/toy_copy_probe.py <demo-out>/variants swapped merged-lam0.7
    PYTHONPATH=. python benchmarks/toy_copy_probe.py ~/.cache/viscodex/trio-<key> base coder vlm
"""
from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

import torch


def _load(path: Path):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    from viscodex.engine import arch

    is_vlm = json.loads((path / "config.json").read_text()).get("model_type") in arch.VLM_MODEL_TYPES
    if is_vlm:
        model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="eager")
        return model.eval(), AutoProcessor.from_pretrained(path), True
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager")
    return model.eval(), AutoTokenizer.from_pretrained(path), False


def _prefix(scene) -> str:
    """The scene's code answer up to its colour value (the canonical SVG's first `fill:`)."""
    code = scene.code()
    return code[: code.index("fill:") + len("fill:")]


def probe(path: Path, n: int = 48, seed: int = 0, attention: bool = False) -> dict:
    from viscodex.toy import world as tt

    model, proc, is_vlm = _load(path)
    tok = proc.tokenizer if is_vlm else proc
    rng = random.Random(seed)
    scenes = tt.all_scenes()
    hits: Counter[str] = Counter()
    att = None

    def run(user: list[dict], prefix: str, image=None):
        text = (proc if is_vlm else tok).apply_chat_template(
            [{"role": "user", "content": user if is_vlm else "".join(c.get("text", "") for c in user)}],
            add_generation_prompt=True, tokenize=False) + prefix
        inp = proc(text=[text], images=[image], return_tensors="pt") if image is not None else \
            tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**inp, max_new_tokens=3, do_sample=False)
        word = tok.decode(out[0, inp["input_ids"].shape[1]:]).strip().split('"')[0].split(";")[0].strip()
        return word, inp

    for _ in range(n):
        a, b = rng.choice(scenes), rng.choice(scenes)
        while b.color == a.color:
            b = rng.choice(scenes)
        pre = _prefix(a)
        ask = lambda prompt: [{"type": "text", "text": prompt}]
        # the coding tasks' own prompts: with the description, and bare as image -> code asks
        bare = ask(tt.IMAGE_CODE.prompt(a))
        for key, user in (("text", ask(tt.CODING.prompt(a))), ("bare", bare)):
            hits[key] += run(user, pre)[0] == a.color
        word, _ = run(ask(tt.CODING.prompt(b)), pre)
        hits["conflict: caption"] += word == a.color
        hits["conflict: prompt"] += word == b.color
        if is_vlm:
            img_a, img_b = tt.render(a, 56, rng), tt.render(b, 56, rng)
            user = bare + [{"type": "image"}]
            word, inp = run(user, pre, img_a)
            hits["image"] += word == a.color
            word, _ = run(user, pre, img_b)
            hits["image≠: caption"] += word == a.color
            hits["image≠: image"] += word == b.color
            if attention:
                att = _attention(model, tok, inp, a, att, n)
    res = {k: round(v / n, 2) for k, v in hits.items()}
    if att is not None:
        res["attention"] = {"caption colour": att[0].tolist(), "image": att[1].tolist()}
    return res


def _attention(model, tok, inp, scene, acc, n):
    """Running mean over samples of [share on the caption's colour token, share on image tokens]
    of the last position's attention, per layer and head."""
    ids = inp["input_ids"][0].tolist()
    colour = tok(" " + scene.color, add_special_tokens=False)["input_ids"][0]
    pos = max(i for i, t in enumerate(ids) if t == colour)
    img = [i for i, t in enumerate(ids) if t == model.config.image_token_id]
    with torch.no_grad():
        out = model(**inp, output_attentions=True)
    last = torch.stack([a[0, :, -1] for a in out.attentions])  # layers x heads x positions
    cur = torch.stack([last[:, :, pos], last[:, :, img].sum(-1)]) / n
    return cur if acc is None else acc + cur


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path, help="a folder holding the model folders")
    ap.add_argument("models", nargs="+", help="model folder names under root")
    ap.add_argument("-n", type=int, default=48, help="scenes probed per context")
    ap.add_argument("--attention", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    for name in a.models:
        res = probe(a.root / name, a.n, attention=a.attention)
        att = res.pop("attention", None)
        print(f"{name:16s} " + "  ".join(f"{k} {v:.2f}" for k, v in res.items()))
        if att:
            for what, rows in att.items():
                print(f"{'':16s} attention on {what}, per layer [heads]: "
                      + "  ".join("[" + " ".join(f"{x:.2f}" for x in r) + "]" for r in rows))


if __name__ == "__main__":
    main()
