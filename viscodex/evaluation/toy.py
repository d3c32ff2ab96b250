"""The demo's toy tasks (viscodex.toy.world) as evaluation tasks: every scene with freshly drawn
images, generated from a seed, so they need no download. `viscodex demo` evaluates with these very
tasks, so `viscodex eval --task toy_grounding --limit N` scores the samples the demo's table reports
(seed 0; N = the demo's eval_samples). Scoring parses the answer (never runs it).

  toy_grounding   image -> "a small red circle"
  toy_coding      "Write SVG for: a small red circle" -> "a small red circle: <svg>...</svg>"   (text only)
  toy_image_code  image -> the same (caption, then SVG); only the SVG is scored

Headline `score` = per-attribute accuracy (size, colour, shape), the demo's measure.
"""
from __future__ import annotations

from ..toy import world as tt
from .tasks import EvalError, EvalSample, Task, register

DEFAULT_N = 64
IMAGE_SIZE = 56  # the tiny trio's processor size


class ToyTask(Task):
    dataset_id = None
    split = "all-scenes"
    metric = "attribute_accuracy"
    metric_name = "attribute accuracy"
    generated = True

    def __init__(self, toy: tt.Task, seed: int = 0, image_size: int = IMAGE_SIZE):
        self.toy, self.seed, self.image_size = toy, seed, image_size
        self.name = f"toy_{toy.name}"
        self.title = f"toy {toy.title}"
        self.dataset_name = f"viscodex toy {toy.name}"
        self.max_new_tokens = toy.max_new_tokens
        self.uses_images = toy.uses_image

    def load(self, source: str | None = None, limit: int | None = None) -> list[EvalSample]:
        if source not in (None, "sample", "generated"):
            raise EvalError(f"{self.name}: samples are generated from a seed; --source must be omitted (got {source!r})")
        n = limit if limit and limit > 0 else DEFAULT_N
        # the first n of a larger draw are the same samples (one shuffle of the 64 scenes, then the images)
        samples = tt.make_samples(self.toy, tt.all_scenes(), n, f"eval-{self.seed}", image_size=self.image_size)
        out = []
        for i, s in enumerate(samples):
            out.append(EvalSample(id=f"{i:04d}-{s.scene.size}-{s.scene.color}-{s.scene.shape}", prompt=self.toy.prompt(s.scene),
                                  images=[s.image] if self.toy.uses_image else [],
                                  reference={"scene": [s.scene.color, s.scene.shape, s.scene.size], "target": s.target}))
        return out

    def messages(self, sample: EvalSample) -> list[dict]:
        scene = tt.Scene(*sample.reference["scene"])
        return self.toy.messages(tt.Sample(scene, sample.images[0] if sample.images else None, sample.reference["target"]))

    def score(self, output: str, sample: EvalSample) -> dict:
        scene = tt.Scene(*sample.reference["scene"])
        s = self.toy.score(output, tt.Sample(scene, None, sample.reference["target"]))
        return {"score": s["attr_acc"], **s}


for _name, _toy in tt.TASKS.items():
    register(lambda _toy=_toy: ToyTask(_toy), f"toy_{_name}")
