"""Model cards generated from `viscodex_recipe.yaml`: Hub metadata through huggingface_hub's
ModelCard/ModelCardData and a body rendered from `templates/model_card.md.j2`.

The card is derived data: it is regenerated (never hand-edited) whenever a folder is carded or
published, so what the Hub shows always matches the recipe that produced the weights.

Model-tree rules (https://huggingface.co/docs/hub/model-cards#specifying-a-base-model):
`base_model` lists the models this one was derived from, `base_model_relation` says how. A plain
merge lists the VLM, the coder and the base with relation `merge`. When supervised fine-tuning ran
after the merge the weights are the product of training, so the relation is `finetune`, and
`base_model` names the merged checkpoint it started from when that is a Hub repo (else the merge's
parents).
"""
from __future__ import annotations

import dataclasses

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._util.sizes import human_size
from ..errors import CardError
from ..engine.recipe import RECIPE_FILE, Recipe
from .._util.hubref import HUB_ID, HubRef
from ..engine import arch
from ..engine.sources import front_matter, license_of

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md.j2"
CARD_FILE = "README.md"
PIPELINE_TAG = "image-text-to-text"
RELATIONS = ("adapter", "merge", "quantized", "finetune")
MIXED_LICENSE_NAME = "mixed-source-licenses"
# Methods from the OptMerge benchmark family (arXiv 2505.19892): cards that used one cite it.
OPTMERGE_FAMILY = {"ties", "dare", "dare_ties", "dare_linear", "tsv", "tsv_m", "iso_c", "iso_cts", "wudi", "optmerge",
                   "optmerge_closed_form"}
ROLE_MODULES = {role: (what, arch.ROLE_KEYS_SHOWN[role]) for role, what in (
    ("backbone", "language backbone"), ("embedding", "token embeddings and output head"),
    ("vision", "vision encoder and projector"))}


@dataclass
class SourceLicense:
    role: str
    name: str
    license: str | None  # Hub licence id ("other:<license_name>" for custom licences)
    where: str  # where it was read from, or why it is unknown


@dataclass
class LicenseDecision:
    license: str | None
    license_name: str | None = None
    license_link: str | None = None
    warnings: list[str] = field(default_factory=list)
    text: str = ""


# ---------------------------------------------------------------- recipe helpers
def _is_local_path(s: str) -> bool:
    return bool(s) and (os.path.isabs(s) or s.startswith("~") or bool(re.match(r"^[A-Za-z]:[\\/]", s))
                        or s.startswith("file:") or s.startswith("./") or s.startswith("../"))


def sanitize(obj: Any) -> Any:
    """Replace local paths anywhere in a recipe structure by their last component."""
    if isinstance(obj, dict):
        return {k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [sanitize(v) for v in obj]
    if isinstance(obj, str) and _is_local_path(obj):
        return Path(obj.replace("file:", "", 1).rstrip("/\\")).name or obj
    return obj


def spec_name(spec: str | None, record: dict | None = None) -> str | None:
    """A source as shown in a card: its Hub id or its folder name (never a machine's path)."""
    if not spec:
        return None
    if record and record.get("repo_id"):
        return record["repo_id"]
    if record and record.get("name"):
        return sanitize(record["name"])
    if HubRef.parse(spec).is_hub_id:
        return spec
    return Path(spec.rstrip("/\\")).name


def hub_id(spec: str | None, record: dict | None = None) -> str | None:
    """The Hub repo id of a source, or None for a local folder."""
    if record and record.get("repo_id"):
        return record["repo_id"]
    if record and "repo_id" in record:  # recorded as local
        return None
    if spec and not Path(spec).expanduser().exists():
        ref = HubRef.parse(spec)
        if ref.is_hub_id:
            return ref.ref
    return None


def find_nan_markers(obj: Any, where: str = "") -> list[str]:
    """Places in a recipe structure holding NaN/Inf or a truthy NaN marker (e.g. `nan_detected: true`)."""
    out = []
    if isinstance(obj, float) and not math.isfinite(obj):
        out.append(where or "<root>")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{where}.{k}" if where else str(k)
            if re.fullmatch(r"(has_)?(nan|non_finite|nonfinite)(_detected|_found)?", str(k).lower()) and v:
                out.append(key)
            out += find_nan_markers(v, key)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += find_nan_markers(v, f"{where}[{i}]")
    return out


# ---------------------------------------------------------------- licences
def source_licenses(recipe: Recipe, offline: bool = False) -> list[SourceLicense]:
    """Licence of every source whose weights are in the output (the VLM always, the coder and the
    base when the merge read them), from the recipe record, the local folder's README or the
    source's README on the Hub at the recorded revision."""
    recs = recipe.records.get("sources") or {}
    out = []
    for role in ("vlm", "coder", "base"):
        spec = getattr(recipe, role)
        rec = recs.get(role) or {}
        if not spec or (role != "vlm" and rec and rec.get("read") is False):
            continue
        name = spec_name(spec, rec)
        if rec.get("license"):
            out.append(SourceLicense(role, name, rec["license"], "recipe"))
            continue
        local = Path(spec).expanduser()
        rid = hub_id(spec, rec)
        if local.is_dir():
            readme = local / CARD_FILE
            lic = license_of(front_matter(readme.read_text(errors="replace"))) if readme.is_file() else None
            out.append(SourceLicense(role, name, lic, "local README.md" if lic else "no licence in the local folder's README.md"))
        elif rid and not offline:
            lic, where = _hub_license(rid, rec.get("revision") or HubRef.parse(spec).revision)
            out.append(SourceLicense(role, name, lic, where))
        else:
            out.append(SourceLicense(role, name, None, "source not available to read its licence"))
    return out


def _hub_license(repo_id: str, revision: str | None) -> tuple[str | None, str]:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo_id, CARD_FILE, revision=revision)
    except Exception as e:  # noqa: BLE001 - any failure means "unknown", reported as a warning
        return None, f"cannot read its model card from the Hub ({type(e).__name__})"
    lic = license_of(front_matter(Path(path).read_text(errors="replace")))
    return lic, "its model card on the Hub" if lic else "its model card on the Hub declares no licence"


def reconcile_license(sources: list[SourceLicense], override: str | None = None) -> LicenseDecision:
    """One licence for the merged weights. Agreeing sources give theirs; a conflict is reported and
    recorded as `other` with every source's licence listed, unless the user decides with `override`."""
    known = {s.license for s in sources if s.license}
    unknown = [s for s in sources if not s.license]
    lines = [f"- {s.role} `{s.name}`: {s.license or 'unknown'} ({s.where})" for s in sources]
    listing = "\n".join(lines)
    warnings = []
    for s in unknown:
        warnings.append(f"licence of the {s.role} ({s.name}) is unknown: {s.where}")

    def split(lic: str) -> tuple[str, str | None]:
        return ("other", lic.split(":", 1)[1]) if lic.startswith("other:") else (lic, None)

    if override:
        lic, name = split(override)
        differing = sorted(k for k in known if k != override)
        if differing:
            warnings.append(f"--license {override} differs from source licence(s) {', '.join(differing)}: "
                            "make sure the sources' terms allow it")
        text = (f"Licence chosen by the publisher: **{override}**. The merged weights derive from:\n\n{listing}\n\n"
                "The terms of every source apply to its contribution.")
        return LicenseDecision(lic, name, None, warnings, text)
    if len(known) == 1:
        lic, name = split(next(iter(known)))
        text = f"**{next(iter(known))}**, the licence of the sources the weights derive from:\n\n{listing}"
        if unknown:
            text += "\n\nSome sources' licences could not be read; check them before redistributing."
        return LicenseDecision(lic, name, None, warnings, text)
    if len(known) > 1:
        warnings.append(
            "the sources' licences conflict (" + ", ".join(f"{s.role}: {s.license}" for s in sources if s.license)
            + "); the card says `license: other` and lists each one. Choose explicitly with --license ID "
            "if you are entitled to.")
        text = ("The sources of these weights carry different licences, and all of them apply to the "
                f"parts they contributed:\n\n{listing}\n\nNo single licence was chosen for the merge.")
        return LicenseDecision("other", MIXED_LICENSE_NAME, None, warnings, text)
    warnings.append("no source licence is known; the card declares none (pass --license ID)")
    return LicenseDecision(None, None, None, warnings,
                           f"No licence could be determined for the sources:\n\n{listing}\n\nCheck them before use.")


# ---------------------------------------------------------------- training / evaluation sections
def _as_list(v) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _dataset_ids(training: dict) -> tuple[list[str], list[str]]:
    """(Hub dataset ids for the metadata, display names for the body) of the SFT data."""
    raw = []
    for key in ("datasets", "dataset", "data"):
        raw += _as_list(training.get(key))
    ids, names = [], []
    for d in raw:
        if isinstance(d, dict):
            d = d.get("repo_id") or d.get("id") or d.get("name") or d.get("path")
        if not isinstance(d, str) or not d:
            continue
        hub = HubRef.parse(d)
        ref = hub.ref
        if hub.is_hub_id and not _is_local_path(d):
            ids.append(ref)
            names.append(f"[{ref}](https://huggingface.co/datasets/{ref})")
        else:
            names.append(f"`{sanitize(d)}` (local)")
    return list(dict.fromkeys(ids)), names


TRAINING_HIDDEN = ("frozen", "freeze", "frozen_modules", "loss_history", "versions", "skipped_while_loading")


def _training_section(training: dict) -> dict:
    ids, names = _dataset_ids(training)
    frozen = []
    for k in ("frozen", "freeze", "frozen_modules"):
        v = training.get(k)
        if isinstance(v, dict):  # viscodex train: {modules: [...], trainable_params, frozen_params}
            v = v.get("modules")
        frozen += [str(f) for f in _as_list(v)]

    def trim(d):
        return {k: (trim(v) if isinstance(v, dict) else v) for k, v in d.items() if k not in TRAINING_HIDDEN}

    steps, epochs = training.get("steps"), training.get("epochs")
    summary = "After merging, the model was fine-tuned (SFT)"
    if steps:
        summary += f" for {steps} optimizer steps" + (f" ({epochs} epochs)" if epochs else "")
    summary += ". Settings and data, as recorded in `viscodex_recipe.yaml`:"
    return {"datasets": names, "dataset_ids": ids, "frozen": frozen, "summary": summary,
            "yaml": yaml.safe_dump(sanitize(trim(training)), sort_keys=False, allow_unicode=True)}


def _training_init(training: dict) -> str | None:
    for k in ("init", "init_from", "from", "base_model", "model", "start_from"):
        v = training.get(k)
        if isinstance(v, str) and HubRef.parse(v).is_hub_id and not _is_local_path(v):
            return HubRef.parse(v).ref
    return None


EVAL_ALIASES = {
    "benchmark": "dataset_name", "dataset": "dataset_type", "metric": "metric_type", "value": "metric_value",
    "task": "task_type", "split": "dataset_split", "score": "metric_value",
}


def eval_results(raw, name: str, variant: str):
    """Normalise the recipe's `eval_results` section into huggingface_hub EvalResults.

    Accepted: a list of mappings (EvalResult field names, or benchmark/dataset/metric/value/task/split),
    or a mapping benchmark -> value or benchmark -> {metric: value}. Entries naming another `model` or
    `variant` than this one are skipped.
    """
    from huggingface_hub import EvalResult

    items: list[dict] = []
    if isinstance(raw, dict):
        for bench, v in raw.items():
            if isinstance(v, dict):
                items += [{"benchmark": bench, "metric": m, "value": x} for m, x in v.items()]
            else:
                items.append({"benchmark": bench, "metric": "score", "value": v})
    elif isinstance(raw, list):
        items = [dict(x) for x in raw if isinstance(x, dict)]
    elif raw is not None:
        raise CardError("eval_results must be a list or a mapping")
    out = []
    for it in items:
        who = it.pop("model", None), it.pop("variant", None)
        if (who[0] and who[0] != name) or (who[1] and who[1] != variant):
            continue
        d = {EVAL_ALIASES.get(k, k): v for k, v in it.items()}
        if "dataset_name" not in d and "dataset_type" in d:
            d["dataset_name"] = d["dataset_type"]
        if "dataset_type" not in d and "dataset_name" in d:
            d["dataset_type"] = re.sub(r"[^a-z0-9]+", "-", str(d["dataset_name"]).lower()).strip("-")
        d.setdefault("task_type", PIPELINE_TAG)
        d.setdefault("metric_type", "score")
        try:
            out.append(EvalResult(**{k: v for k, v in d.items() if k in EvalResult.__dataclass_fields__}))
        except TypeError as e:
            raise CardError(f"eval_results entry {it!r}: {e}") from e
    return out


# ---------------------------------------------------------------- the card
@dataclass
class CardBuild:
    card: Any  # huggingface_hub.ModelCard
    warnings: list[str]
    relation: str
    base_models: list[str]


def _method_reference(method: str) -> str:
    try:
        from ..engine.methods import get_method

        return get_method(method).reference
    except Exception:  # noqa: BLE001 - an unknown method still gets a card
        return ""


def build_card(folder: str | os.PathLike, *, repo_id: str | None = None, license: str | None = None,
               offline: bool = False) -> CardBuild:
    """Build the model card of a merged (and maybe fine-tuned) folder from its recipe."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder).expanduser().resolve()
    if not (folder / RECIPE_FILE).is_file():
        raise CardError(f"{folder}: no {RECIPE_FILE} (is this a folder written by `viscodex merge`?)")
    recipe = Recipe.load(folder)
    recs = recipe.records
    srcs = recs.get("sources") or {}
    name = recipe.name or folder.name
    training = recs.get("training") or None
    if training is not None and not isinstance(training, dict):
        raise CardError(f"{RECIPE_FILE}: `training` must be a mapping")

    parents = [i for i in (hub_id(recipe.vlm, srcs.get("vlm")), hub_id(recipe.coder, srcs.get("coder")),
                           hub_id(recipe.base, srcs.get("base"))) if i]
    parents = list(dict.fromkeys(parents))
    relation = "merge"
    base_models = parents
    tsec = None
    if training:
        relation = "finetune"
        tsec = _training_section(training)
        init = _training_init(training)
        if init:
            base_models = [init]

    lic_sources = source_licenses(recipe, offline=offline)
    # one source of truth: a licence chosen once (card --license or publish --license) is recorded
    # in the recipe and used by every later card, publish included
    license = license or (recs.get("card") or {}).get("license")
    decision = reconcile_license(lic_sources, license)
    if decision.license == "other" and not decision.license_link:
        files = license_files(folder)
        if files:  # the Hub wants a link for custom licences: the sources' licence texts shipped here
            decision = dataclasses.replace(decision, license_link=files[0])
    for w in decision.warnings:
        log.warning("card: %s", w)

    tags = ["merge", "viscodex", *([recipe.method] if recipe.variant != "swapped" else []), "multimodal", "code"]
    if recipe.variant == "swapped":
        tags.append("coder-swapped")
    if training:
        tags.append("sft")
    evals = eval_results(recs.get("eval_results"), name, recipe.variant)
    extra = {}
    if base_models:
        extra["base_model_relation"] = relation
    data = ModelCardData(
        base_model=base_models or None,
        license=decision.license,
        license_name=decision.license_name,
        license_link=decision.license_link,
        pipeline_tag=PIPELINE_TAG,
        library_name="transformers",
        tags=tags,
        datasets=(tsec["dataset_ids"] or None) if tsec else None,
        model_name=name if evals else None,
        eval_results=evals or None,
        **extra,
    )

    ctx = _body_context(folder, recipe, name, repo_id, tsec, decision, lic_sources, evals)
    text = render_template(TEMPLATE, card_data=data.to_yaml(), **ctx)
    _assert_no_local_paths(text, folder, recipe)
    card = ModelCard(text)
    validate_card(card)
    return CardBuild(card, decision.warnings, relation, base_models)


def _body_context(folder: Path, recipe: Recipe, name: str, repo_id: str | None, tsec, decision,
                  lic_sources: list[SourceLicense], evals) -> dict:
    recs = recipe.records
    srcs = recs.get("sources") or {}
    pol = recs.get("policy_used") or {}
    out = recs.get("output") or {}
    vlm = spec_name(recipe.vlm, srcs.get("vlm"))
    coder = spec_name(recipe.coder, srcs.get("coder"))
    base = spec_name(recipe.base, srcs.get("base"))
    lic_by_role = {s.role: s.license for s in lic_sources}

    def link(role: str, spec: str | None) -> str:
        rid = hub_id(spec, srcs.get(role))
        return f"[{rid}](https://huggingface.co/{rid})" if rid else f"`{spec_name(spec, srcs.get(role))}` (local)"

    sources = []
    for role, spec in (("vlm", recipe.vlm), ("coder", recipe.coder), ("base", recipe.base)):
        if not spec:
            continue
        rec = srcs.get(role) or {}
        rev = rec.get("revision")
        read = rec.get("read")
        sources.append({
            "role": role + ("" if read is not False else " (not read)"),
            "link": link(role, spec),
            "revision": f"`{rev}`" if rev else ("sha256 recorded" if rec.get("files") else "-"),
            "license": lic_by_role.get(role) or ("-" if role not in lic_by_role else "unknown"),
        })

    lam = recipe.lam
    if recipe.variant == "swapped":
        intro = (f"**{name}** is the *coder-swapped* baseline of VisCodex (arXiv 2508.09945): the language "
                 f"backbone of `{vlm}` is replaced outright by the code LLM `{coder}`, while the vision encoder "
                 "and projector stay those of the VLM. The VisCodex paper reports that swapping breaks visual "
                 "grounding, which merging preserves; this model exists for comparison.")
    else:
        base_txt = f" over the base `{base}`" if base else ""
        intro = (f"**{name}** is a multimodal code model built the VisCodex way (arXiv 2508.09945): the "
                 f"language backbone of the vision-language model `{vlm}` is merged with the code LLM `{coder}`"
                 f"{base_txt} by **{recipe.method}** with λ = {lam:g} (the VLM's task vector weighs λ, the "
                 f"coder's 1 − λ); the vision encoder and projector are copied unchanged from `{vlm}`.")
        if tsec:
            intro += " The merged model was then fine-tuned (see below)."
    ref = _method_reference(recipe.method)
    params = ", ".join(f"{k}={v}" for k, v in recipe.params.items()) or "none"
    if recipe.variant == "swapped":  # nothing is merged: no method, no λ (issue 16: the card said task_arithmetic, λ 0.7)
        recipe_summary = (f"Variant `swapped` (the coder-swapped baseline): the VLM's language backbone replaced by "
                          f"the coder's; no merge method or λ applies. Output dtype `{out.get('dtype') or recipe.dtype}`.")
    else:
        recipe_summary = (f"Method `{recipe.method}` (parameters: {params}), λ = {lam:g}, variant `{recipe.variant}`, "
                          f"output dtype `{out.get('dtype') or recipe.dtype}`, seed {recipe.seed}."
                          + (f" Reference: {ref}." if ref else ""))

    keys = ("name", "vlm", "coder", "base", "variant", "method", "lambda", "params", "dtype", "seed",
            "keep_vision_token_rows", "allow_extrapolation", "policy")
    d = recipe.to_dict()
    if recipe.variant == "swapped":
        keys = tuple(k for k in keys if k not in ("method", "lambda", "params", "seed", "allow_extrapolation"))
    shown = {k: d[k] for k in keys if k in d}
    for role in ("vlm", "coder", "base"):
        if shown.get(role):
            shown[role] = spec_name(shown[role], srcs.get(role))
    shown["sources"] = {r: {k: v for k, v in (srcs.get(r) or {}).items() if k in ("name", "repo_id", "revision", "read")}
                        for r in ("vlm", "coder", "base") if r in srcs}
    if pol:
        shown["policy_used"] = {k: v for k, v in pol.items() if k in ("roles", "tensor_rules", "tied_embeddings")}
    recipe_yaml = yaml.safe_dump(sanitize(shown), sort_keys=False, allow_unicode=True)

    roles = pol.get("roles") or {}
    modules = []
    for role, policy in roles.items():
        module, pattern = ROLE_MODULES.get(role, (role, "-"))
        if policy == "merge":
            treat = f"merged by {recipe.method} (λ = {lam:g})"
            if role == "embedding":
                rows = pol.get("vision_token_rows_from_vlm") or []
                treat += (f" on the {pol.get('shared_vocab_rows', '?')} rows shared by all sources; rows of the "
                          f"vision special tokens ({', '.join(map(str, rows)) or 'none'}) and rows past the shared "
                          "vocabulary kept from the VLM")
        else:
            who = {"vlm": vlm, "coder": coder, "base": base}.get(policy, policy)
            treat = f"copied unchanged from the {policy} (`{who}`)"
        modules.append({"module": module, "pattern": f"`{pattern}`", "treatment": treat})
    counts = pol.get("counts") or {}
    total = out.get("total_bytes")
    files = out.get("files") or {}
    output = (f"{len(files)} safetensors file(s), {human_size(int(total))} in {out.get('dtype', '?')}" if total
              else "see the files of this repo")
    if counts:
        output += "; tensors by treatment: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)

    limitations = [
        "Merging is data-free: it transfers the coder's skill to the VLM's backbone without training, "
        "and quality depends on λ and on how far the two experts drifted from their common base.",
        "Generated code is untrusted: run it in a sandbox, and preview generated HTML in a sandboxed iframe.",
        "The vision encoder and projector are the VLM's; the model inherits its visual limits and biases, "
        "and the code LLM's.",
    ]
    if not tsec and recipe.variant == "merged":
        limitations.insert(1, "No fine-tuning was run after the merge; the VisCodex paper's models are "
                              "additionally trained on the Multimodal Coding Dataset (MCD).")
    if recipe.variant == "swapped":
        limitations.insert(0, "This is a baseline: swapping the backbone loses the VLM's visual grounding.")

    cite_optmerge = recipe.method in OPTMERGE_FAMILY or "2505.19892" in _method_reference(recipe.method) \
        or "optmerge" in _method_reference(recipe.method).lower()
    return dict(
        name=name, intro=intro, sources=sources, recipe_summary=recipe_summary, recipe_yaml=recipe_yaml,
        folder_name=folder.name, modules=modules, tensor_rules=pol.get("tensor_rules") or [], output=output,
        training=tsec, evals=evals, model_id=repo_id or folder.name, limitations=limitations,
        license_text=decision.text, cite_optmerge=cite_optmerge,
        # metrics recorded by `viscodex eval` under viscodex/<task>/<metric> are not the benchmark's own
        evals_unofficial=any(str(e.metric_type).startswith("viscodex/") for e in evals or []),
    )


def render_template(path: Path, **ctx) -> str:
    """Render a packaged Jinja template (strict: a missing variable is an error, not a blank)."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        return env.from_string(path.read_text(encoding="utf-8")).render(**ctx)
    except jinja2.TemplateError as e:
        raise CardError(f"{path.name}: cannot render ({e})") from e


def _assert_no_local_paths(text: str, folder: Path, recipe: Recipe) -> None:
    """Guard: a card never shows where the merge ran (absolute paths of this machine)."""
    needles = {str(folder.parent)}
    for spec in (recipe.vlm, recipe.coder, recipe.base):
        if spec and Path(spec).expanduser().exists():
            needles.add(str(Path(spec).expanduser().resolve().parent))
            if os.path.isabs(spec):
                needles.add(spec)
    for n in needles:
        if n not in ("/", "") and n in text:
            raise CardError(f"internal error: the generated card would reveal the local path {n!r}")


def validate_card(card, remote: bool = False) -> None:
    """Check the card's metadata: parsed back by ModelCardData (strict) and our own rules; with
    `remote`, also by the Hub's /api/validate-yaml (ModelCard.validate, needs the network)."""
    from huggingface_hub import ModelCardData

    meta = card.data.to_dict()
    try:
        ModelCardData(**meta)
    except ValueError as e:
        raise CardError(f"model card metadata is invalid: {e}") from e
    rel = meta.get("base_model_relation")
    if rel is not None and rel not in RELATIONS:
        raise CardError(f"base_model_relation {rel!r} is not one of {', '.join(RELATIONS)}")
    if rel is not None and not meta.get("base_model"):
        raise CardError("base_model_relation needs base_model")
    for b in _as_list(meta.get("base_model")):
        if not HUB_ID.match(str(b)):
            raise CardError(f"base_model {b!r} is not a Hub repo id")
    if remote:
        try:
            card.validate(repo_type="model")
        except ValueError as e:
            raise CardError(f"the Hub rejected the model card metadata: {e}") from e


from ..engine.sources import LICENSE_GLOBS  # noqa: E402 - one list of licence file names


def license_files(folder: Path) -> list[str]:
    """The licence texts in a merged folder (the sources', copied by the merge), LICENSE first."""
    names = {p.name for g in LICENSE_GLOBS for p in Path(folder).glob(g) if p.is_file()}
    return sorted(names, key=lambda n: (n.split(".")[0] != "LICENSE", n))


def record_license(folder: str | os.PathLike, license: str) -> None:
    """Record the licence the publisher chose in the folder's recipe (section `card`)."""
    folder = Path(folder).expanduser().resolve()
    recipe = Recipe.load(folder)
    if (recipe.records.get("card") or {}).get("license") == license:
        return
    recipe.records["card"] = {**(recipe.records.get("card") or {}), "license": license}
    path = folder / RECIPE_FILE
    tmp = path.with_name(f".{RECIPE_FILE}.viscodex-tmp-{os.getpid()}")
    tmp.write_text(recipe.dump(), encoding="utf-8")
    os.replace(tmp, path)


def write_card(folder: str | os.PathLike, **kw) -> tuple[Path, CardBuild]:
    """Build the card and write it as README.md in `folder` (atomically); a --license given is
    recorded in the recipe so `publish` keeps it."""
    build = build_card(folder, **kw)
    if kw.get("license"):
        record_license(folder, kw["license"])
    path = Path(folder).expanduser().resolve() / CARD_FILE
    tmp = path.with_name(f".{CARD_FILE}.viscodex-tmp-{os.getpid()}")
    tmp.write_text(str(build.card), encoding="utf-8")
    os.replace(tmp, path)
    return path, build


__all__ = ["build_card", "write_card", "validate_card", "reconcile_license", "source_licenses", "eval_results",
           "sanitize", "CardError", "CardBuild"]
