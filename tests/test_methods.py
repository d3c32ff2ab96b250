"""Merge methods (issue 3): properties of each method on small random matrices.

Reference quantities (losses, signs, singular values) are recomputed here from the definitions,
independently of the implementation's bounded-memory forms.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from viscodex.errors import MergeError, RecipeError
from viscodex.engine.methods import METHODS, get_method, method_for
from viscodex.engine.methods.dare import cpu_generator, dare
from viscodex.engine.methods.spectral import iso_c, iso_cts, tsv, tsv_factors
from viscodex.engine.methods.ties import (
    GlobalMagnitudeThreshold,
    global_thresholds,
    keep_count,
    ties,
    trim,
)
from viscodex.engine.methods.wudi import (
    init_vector,
    optmerge,
    optmerge_closed_form,
    top_subspace,
    wudi,
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALL = ("task_arithmetic", "weight_average", "ties", "dare", "tsv", "iso_c", "iso_cts", "wudi", "optmerge",
       "optmerge_closed_form")


def trio_tensors(seed: int, m: int, n: int, spread: float = 0.1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(m, n, generator=g, dtype=dtype)
    experts = [base + spread * torch.randn(m, n, generator=g, dtype=dtype) for _ in range(2)]
    return base, experts


shapes = st.tuples(st.integers(2, 12), st.integers(2, 12))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


lams = st.sampled_from([0.0, 0.15, 0.5, 0.7, 1.0])
seeds = st.integers(0, 10_000)


# ---------------------------------------------------------------- registry
def test_every_method_is_registered_with_reference_and_valid_defaults():
    assert set(ALL) <= set(METHODS)
    for name in ALL:
        m = get_method(name)
        assert m.reference and "20" in m.reference, name
        params = m.validate_params({})
        assert set(params) == {p.name for p in m.params}
        if name not in ("weight_average",):
            assert "scale" in params, name


@pytest.mark.parametrize("method,params,msg", [
    ("ties", {"density": 1.5}, "parameter 'density'=1.5 is outside [0.0, 1.0]"),
    ("ties", {"topk": "everywhere"}, "parameter 'topk'='everywhere'; choose from per_tensor, global"),
    ("ties", {"density": "dense"}, "parameter 'density' must be float, got 'dense'"),
    ("dare", {"rescale": "yes"}, "parameter 'rescale' must be true/false"),
    ("dare", {"drop_rate": 1.0}, "parameter 'drop_rate'=1.0 is outside [0.0, 0.999]"),
    ("dare", {"combine": "sum"}, "choose from task_arithmetic, ties"),
    ("wudi", {"steps": -1}, "parameter 'steps'=-1 is outside"),
    ("wudi", {"optimizer": "lbfgs"}, "choose from adam, sgd"),
    ("wudi", {"steps": True}, "parameter 'steps' must be int"),
    ("optmerge", {"rank": 3}, "unknown parameter(s) rank; it takes steps, optimizer, lr"),
    ("optmerge_closed_form", {"precision": "float16"}, "choose from float64, float32"),
    ("iso_cts", {"common_space_fraction": -0.1}, "outside [0.0, 1.0]"),
])
def test_bad_parameters_are_rejected_clearly(method, params, msg):
    with pytest.raises(RecipeError) as e:
        get_method(method).validate_params(params)
    assert msg in str(e.value)
    assert repr(method) in str(e.value)


@pytest.mark.parametrize("name", ["tsv", "iso_c", "iso_cts", "wudi", "optmerge", "optmerge_closed_form"])
def test_matrix_methods_send_vectors_and_embeddings_to_task_arithmetic_with_the_recipe_scale(name):
    m = get_method(name)
    assert m.applies_to("model.layers.0.mlp.up_proj.weight", (128, 64))
    for tname, shape in [("model.layers.0.input_layernorm.weight", (64,)), ("model.layers.0.self_attn.q_proj.bias", (64,)),
                         ("model.embed_tokens.weight", (700, 64)), ("lm_head.weight", (700, 64))]:
        fb, params = method_for(m, tname, shape, {**m.validate_params({}), "scale": 0.5})
        assert fb.name == "task_arithmetic" and params == {"scale": 0.5}, tname
    fb, params = method_for(m, "model.norm.weight", (64,))
    assert params == {"scale": 1.0}
    with pytest.raises(MergeError, match="works on 2-D matrices"):
        m.fn(torch.zeros(4), [torch.ones(4), torch.ones(4)], [0.5, 0.5], **m.validate_params({}))


@pytest.mark.parametrize("name", ALL)
def test_every_method_is_deterministic_and_keeps_shape(name):
    base, experts = trio_tensors(3, 9, 6)
    m = get_method(name)
    p = m.validate_params({})
    outs = [m.fn(base, experts, [0.7, 0.3], generator=torch.Generator().manual_seed(5), **p) for _ in range(2)]
    assert outs[0].shape == base.shape and outs[0].dtype == torch.float32
    assert torch.equal(outs[0], outs[1])
    assert torch.isfinite(outs[0]).all()


# ---------------------------------------------------------------- task arithmetic
@FAST
@given(shape=shapes, lam=lams, scale=st.sampled_from([0.5, 1.0, 1.3]), seed=seeds)
def test_task_arithmetic_matches_formula(shape, lam, scale, seed):
    base, (a, b) = trio_tensors(seed, *shape)
    out = get_method("task_arithmetic").fn(base, [a, b], [lam, 1 - lam], scale=scale)
    want = base + scale * (lam * (a - base) + (1 - lam) * (b - base))
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- TIES
@FAST
@given(shape=shapes, lam=st.sampled_from([0.15, 0.5, 0.7]), density=st.sampled_from([0.1, 0.2, 0.5, 0.9]), seed=seeds)
def test_ties_trims_bottom_entries_and_follows_elected_sign(shape, lam, density, seed):
    base, experts = trio_tensors(seed, *shape)
    w = [lam, 1 - lam]
    taus = [e - base for e in experts]
    n = base.numel()
    trimmed = []
    for t in taus:
        tt = trim(t, density)
        kept = tt != 0
        assert int(kept.sum()) == keep_count(n, density) == int(density * n + 0.5)
        if 0 < int(kept.sum()) < n:
            assert t.abs()[~kept].max() <= t.abs()[kept].min()  # the dropped ones are the smallest
        trimmed.append(tt)
    out = ties(base, experts, w, density=density) - base
    elected = torch.sign(w[0] * trimmed[0] + w[1] * trimmed[1])
    nz = out.abs() > 1e-6
    assert torch.equal(torch.sign(out[nz]), elected[nz])
    # disjoint weighted mean of the entries that agree with the elected sign
    num = torch.zeros_like(out)
    den = torch.zeros_like(out)
    for t, wi in zip(trimmed, w):
        agree = (torch.sign(t) == elected) & (t != 0)
        num += torch.where(agree, wi * t, 0.0)
        den += agree * wi
    want = torch.where(den > 0, num / den.clamp_min(1e-30), 0.0)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)


def test_ties_one_expert_at_full_density_is_that_expert_and_scale_applies():
    base, experts = trio_tensors(0, 8, 5)
    torch.testing.assert_close(ties(base, experts, [1.0, 0.0], density=1.0), experts[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(ties(base, experts, [0.0, 1.0], density=1.0), experts[1], rtol=0, atol=1e-6)
    half = ties(base, experts, [0.7, 0.3], density=0.5, scale=0.5) - base
    full = ties(base, experts, [0.7, 0.3], density=0.5, scale=1.0) - base
    torch.testing.assert_close(half, full / 2)


def test_ties_global_threshold_is_the_exact_kth_magnitude_over_all_tensors():
    g = torch.Generator().manual_seed(1)
    # bf16-rounded values give many exact ties and shapes of every rank
    tensors = [[(torch.randn(s, generator=g) * c).bfloat16().float() for c in (1.0, 0.01)]
               for s in [(7, 5), (13,), (3, 4, 2), (1,), (40, 9)]]
    tensors[1][0][:5] = 0.0
    tensors[2][1].neg_()
    for density in (0.0, 0.013, 0.2, 0.5, 0.97, 1.0):
        ths = global_thresholds(lambda: iter(tensors), 2, density)
        for i in range(2):
            flat = torch.cat([ts[i].abs().flatten() for ts in tensors])
            n, k = flat.numel(), keep_count(flat.numel(), density)
            if k == 0:
                assert ths[i] == math.inf
            elif k == n:
                assert ths[i] == 0.0
            else:
                assert ths[i] == float(torch.kthvalue(flat, n - k + 1).values), (density, i)
                assert int((flat >= ths[i]).sum()) >= k > int((flat > ths[i]).sum()) - 1


def test_ties_global_equals_ties_on_the_flattened_model():
    g = torch.Generator().manual_seed(2)
    shapes_ = [(6, 4), (10,), (5, 5)]
    bases = [torch.randn(s, generator=g) for s in shapes_]
    exps = [[b + 0.1 * torch.randn(b.shape, generator=g) for _ in range(2)] for b in bases]
    params = get_method("ties").validate_params({"topk": "global", "density": 0.3})
    pre = get_method("ties").prepass(params)
    assert isinstance(pre, GlobalMagnitudeThreshold) and pre.passes == 2
    assert get_method("ties").prepass(get_method("ties").validate_params({})) is None
    for p in range(pre.passes):
        for b, e in zip(bases, exps):
            pre.observe(p, b, e, [0.6, 0.4])
    extra = pre.result()
    merged = [ties(b, e, [0.6, 0.4], **params, **extra) for b, e in zip(bases, exps)]
    flat_base = torch.cat([b.flatten() for b in bases])
    flat_exps = [torch.cat([e[i].flatten() for e in exps]) for i in range(2)]
    flat = ties(flat_base, flat_exps, [0.6, 0.4], density=0.3)
    torch.testing.assert_close(torch.cat([x.flatten() for x in merged]), flat)
    with pytest.raises(MergeError, match="topk=global needs per-expert magnitude thresholds"):
        ties(bases[0], exps[0], [0.6, 0.4], **params)


# ---------------------------------------------------------------- DARE
@pytest.mark.parametrize("combine", ["task_arithmetic", "ties"])
def test_dare_without_drops_is_exactly_the_combined_method(combine):
    base, experts = trio_tensors(4, 10, 7)
    out = dare(base, experts, [0.7, 0.3], generator=torch.Generator().manual_seed(0), drop_rate=0.0, combine=combine)
    want = get_method(combine).fn(base, experts, [0.7, 0.3], **get_method(combine).validate_params({}))
    assert torch.equal(out, want)


def test_dare_drops_at_rate_p_rescales_survivors_and_is_seeded():
    base, experts = trio_tensors(5, 60, 50)
    tau = experts[0] - base
    out = dare(base, experts, [1.0, 0.0], generator=torch.Generator().manual_seed(7), drop_rate=0.3) - base
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.03
    torch.testing.assert_close(out[kept], tau[kept] / 0.7)
    no_rescale = dare(base, experts, [1.0, 0.0], generator=torch.Generator().manual_seed(7), drop_rate=0.3,
                      rescale=False) - base
    torch.testing.assert_close(no_rescale[kept], tau[kept])
    assert torch.equal(no_rescale != 0, kept)  # same seed, same mask
    again = dare(base, experts, [1.0, 0.0], generator=torch.Generator().manual_seed(7), drop_rate=0.3) - base
    other = dare(base, experts, [1.0, 0.0], generator=torch.Generator().manual_seed(8), drop_rate=0.3) - base
    assert torch.equal(out, again) and not torch.equal(out, other)
    gen = torch.Generator()
    assert cpu_generator(gen) is gen


def test_dare_expectation_over_seeds_approaches_task_arithmetic():
    base, experts = trio_tensors(6, 6, 5, spread=1.0)
    ta = get_method("task_arithmetic").fn(base, experts, [0.7, 0.3])
    gen = torch.Generator().manual_seed(0)
    errs = {}
    for n in (20, 2000):
        mean = torch.stack([dare(base, experts, [0.7, 0.3], generator=gen, drop_rate=0.5) for _ in range(n)]).mean(0)
        errs[n] = (mean - ta).abs().max().item()
    # each entry's standard deviation is |w tau| * sqrt(p / (1 - p)) <= ~3 here: its mean over 2000 draws is ~0.07
    assert errs[2000] < 0.35 and errs[2000] < errs[20] / 3


# ---------------------------------------------------------------- TSV-M
@FAST
@given(shape=shapes, lam=st.sampled_from([0.2, 0.5, 0.7]), seed=seeds)
def test_tsv_rank_orthonormal_factors_and_kept_singular_values(shape, lam, seed):
    base, experts = trio_tensors(seed, *shape)
    m, n = shape
    k = min(m, n) // 2
    if k < 1:
        with pytest.raises(MergeError, match="no singular vectors to share"):
            tsv(base, experts, [lam, 1 - lam])
        return
    taus = [w * (e - base) for w, e in zip([lam, 1 - lam], experts)]
    u, s, v = tsv_factors(taus)
    eye = torch.eye(2 * k)
    torch.testing.assert_close(u.T @ u, eye, atol=1e-4, rtol=0)
    torch.testing.assert_close(v.T @ v, eye, atol=1e-4, rtol=0)
    want_s = torch.cat([torch.linalg.svdvals(t)[:k] for t in taus])
    torch.testing.assert_close(s, want_s, rtol=1e-4, atol=1e-6)
    out = tsv(base, experts, [lam, 1 - lam]) - base
    assert torch.linalg.matrix_rank(out, rtol=1e-4) <= 2 * k
    torch.testing.assert_close(out, (u * s) @ v.T, rtol=1e-4, atol=1e-5)


def test_tsv_with_one_expert_returns_it():
    base, experts = trio_tensors(1, 9, 6)
    assert torch.equal(tsv(base, experts, [1.0, 0.0]), experts[0])
    taus = [experts[0] - base]
    u, s, v = tsv_factors(taus)  # k = min(m, n): the full SVD, orthogonalised: the task vector itself
    torch.testing.assert_close((u * s) @ v.T, taus[0], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- Iso-C / Iso-CTS
@FAST
@given(shape=shapes, lam=st.sampled_from([0.2, 0.5, 0.7, 1.0]), scale=st.sampled_from([1.0, 0.5]), seed=seeds)
def test_iso_c_flattens_the_spectrum_to_its_mean(shape, lam, scale, seed):
    base, experts = trio_tensors(seed, *shape)
    total = lam * (experts[0] - base) + (1 - lam) * (experts[1] - base)
    out = (iso_c(base, experts, [lam, 1 - lam], scale=scale) - base) / scale
    s_in = torch.linalg.svdvals(total)
    s_out = torch.linalg.svdvals(out)
    torch.testing.assert_close(s_out, torch.full_like(s_out, s_in.mean().item()), rtol=1e-3, atol=1e-5)
    # same singular subspaces: the output maps onto the input's column space
    u = torch.linalg.svd(total, full_matrices=False)[0]
    torch.testing.assert_close(u @ (u.T @ out), out, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("shape", [(12, 8), (8, 12), (10, 10)])
def test_iso_cts_is_isotropic_and_reduces_to_iso_c_without_task_space(shape):
    base, experts = trio_tensors(2, *shape)
    out = iso_cts(base, experts, [0.6, 0.4]) - base
    s = torch.linalg.svdvals(out)
    torch.testing.assert_close(s, torch.full_like(s, s[0].item()), rtol=1e-3, atol=1e-5)
    assert torch.linalg.matrix_rank(out) == min(shape)
    torch.testing.assert_close(iso_cts(base, experts, [0.6, 0.4], common_space_fraction=1.0),
                               iso_c(base, experts, [0.6, 0.4]), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- WUDI / OptMerge
def literal_wudi_loss(x, taus):
    """sum_i ||(x - tau_i) tau_i^T||^2 / ||tau_i||^2, with the m x m products, in float64."""
    x = x.double()
    return sum(float(((x - t.double()) @ t.double().T).square().sum() / t.double().square().sum()) for t in taus)


def svd_truncation(t, r):
    u, s, vh = torch.linalg.svd(t.double(), full_matrices=False)
    return (u[:, :r] * s[:r]) @ vh[:r], s[:r, None] * vh[:r]


def literal_optmerge_loss(x, taus, r):
    """sum_i ||(x - t_i) (S_r V_r^T)^T||^2 / ||tau_i||^2 with t_i the SVD truncation, in float64."""
    total = 0.0
    for t in taus:
        tr, low = svd_truncation(t, r)
        total += float(((x.double() - tr) @ low.T).square().sum() / t.double().square().sum())
    return total


@FAST
@given(shape=shapes, seed=seeds)
def test_top_subspace_matches_the_svd_truncation(shape, seed):
    a = trio_tensors(seed, *shape)[1][0]
    r = max(1, min(shape) // 2)
    t, k = top_subspace(a, r)
    want_t, want_low = svd_truncation(a, r)
    torch.testing.assert_close(t.double(), want_t, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(k.T.double() @ k.double(), want_low.T @ want_low, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(14, 6), (6, 14), (9, 9)])
@pytest.mark.parametrize("lam", [0.5, 0.7])
def test_wudi_reduces_its_loss_and_the_closed_form_does_best(shape, lam):
    base, experts = trio_tensors(11, *shape)
    w = [lam, 1 - lam]
    taus = [wi * (e - base) for wi, e in zip(w, experts)]
    start = literal_wudi_loss(init_vector(taus, "sum"), taus)
    ref = wudi(base, experts, w) - base  # the reference settings: Adam, lr 1e-5, 300 steps
    fast = wudi(base, experts, w, lr=1e-2, steps=400) - base
    closed = optmerge_closed_form(base, experts, w, rank_fraction=1.0, init="sum", ridge=0, max_ratio=0) - base
    l_ref, l_fast, l_closed = (literal_wudi_loss(x, taus) for x in (ref, fast, closed))
    assert l_ref < start and l_fast < l_ref
    assert l_closed <= min(l_ref, l_fast) + 1e-6 * start
    assert l_closed < 0.999 * start


def test_wudi_closed_form_is_d_c_inverse():
    base, experts = trio_tensors(12, 10, 6)  # n = 6 <= T*m: C is invertible
    w = [0.7, 0.3]
    taus = [wi * (e - base).double() for wi, e in zip(w, experts)]
    c = sum(t.T @ t / t.square().sum() for t in taus)
    d = sum(t @ t.T @ t / t.square().sum() for t in taus)
    want = d @ torch.linalg.inv(c)
    got = optmerge_closed_form(base, experts, w, rank_fraction=1.0, ridge=0, max_ratio=0) - base
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(14, 6), (6, 14), (9, 9)])
@pytest.mark.parametrize("center", [False, True])
def test_optmerge_reduces_its_loss_and_the_closed_form_does_best(shape, center):
    base, experts = trio_tensors(13, *shape)
    w = [0.7, 0.3]
    taus = [wi * (e - base) for wi, e in zip(w, experts)]
    r = min(shape) // 2
    start = literal_optmerge_loss(init_vector(taus, "sum"), taus, r)
    ref = optmerge(base, experts, w, center=center) - base  # SGD lr 1e-4 momentum 0.9, 300 steps
    fast = optmerge(base, experts, w, center=center, lr=3e-2, steps=300) - base
    closed = optmerge_closed_form(base, experts, w, center=center, ridge=0, max_ratio=0) - base
    if center:  # targets change; the loss is still L with the centred targets: check against it
        mean = (taus[0] + taus[1]) / 2
        tgt = [svd_truncation(t - mean, r)[0] + mean.double() for t in taus]
        lows = [svd_truncation(t, r)[1] for t in taus]

        def loss(x):
            return sum(float(((x.double() - tt) @ lo.T).square().sum() / t.double().square().sum())
                       for tt, lo, t in zip(tgt, lows, taus))
        start = loss(init_vector(taus, "sum"))
    else:
        def loss(x):
            return literal_optmerge_loss(x, taus, r)
    l_ref, l_fast, l_closed = loss(ref), loss(fast), loss(closed)
    assert l_ref < start and l_fast < l_ref
    assert l_closed <= min(l_ref, l_fast) + 1e-6 * start


@pytest.mark.parametrize("name", ["tsv", "wudi", "optmerge", "optmerge_closed_form"])
def test_one_expert_in_is_that_expert_out(name):
    base, experts = trio_tensors(14, 8, 5)
    m = get_method(name)
    p = m.validate_params({})
    assert torch.equal(m.fn(base, experts, [1.0, 0.0], **p), experts[0])
    assert torch.equal(m.fn(base, experts, [0.0, 1.0], **p), experts[1])


def test_optmerge_rank_fraction_one_is_wudi_loss():
    base, experts = trio_tensors(15, 7, 11)
    w = [0.5, 0.5]
    taus = [wi * (e - base) for wi, e in zip(w, experts)]
    a = optmerge(base, experts, w, rank_fraction=1.0, init="sum", optimizer="adam", lr=1e-3, steps=50)
    b = wudi(base, experts, w, lr=1e-3, steps=50)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert literal_wudi_loss(a - base, taus) < literal_wudi_loss(init_vector(taus, "sum"), taus)


class _ShapeLog(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the largest tensor any op produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("shape", [(400, 12), (12, 400)])
@pytest.mark.parametrize("name", ["wudi", "optmerge", "optmerge_closed_form"])
def test_interference_methods_never_form_a_long_side_square(shape, name):
    base, experts = trio_tensors(16, *shape)
    m = get_method(name)
    p = m.validate_params({"steps": 3} if name != "optmerge_closed_form" else {})
    with _ShapeLog() as log:
        out = m.fn(base, experts, [0.5, 0.5], **p)
    assert out.shape == shape
    long_side = max(shape)
    # inputs are 400 x 12 = 4800 entries; a 400 x 400 product would be 160000
    assert log.largest <= 2 * shape[0] * shape[1] < long_side**2, log.largest


@pytest.mark.parametrize("name", ["tsv", "wudi", "optmerge", "optmerge_closed_form"])
def test_an_expert_that_left_a_matrix_untouched_is_left_out(name):
    base, experts = trio_tensors(17, 8, 6)
    m = get_method(name)
    p = m.validate_params({})
    out = m.fn(base, [experts[0], base.clone()], [0.7, 0.3], **p)
    torch.testing.assert_close(out, base + 0.7 * (experts[0] - base))
    assert torch.equal(m.fn(base, [base.clone(), base.clone()], [0.7, 0.3], **p), base)


def test_iso_cts_ignores_an_untouched_expert():
    base, experts = trio_tensors(18, 9, 6)
    alone = iso_cts(base, [experts[0], base.clone()], [0.7, 0.0]) - base
    with_zero = iso_cts(base, [experts[0], base.clone()], [0.7, 0.3]) - base
    torch.testing.assert_close(with_zero, alone, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- issue 16: no silent wrong results
@pytest.mark.parametrize("method,param", [("dare", "drop_rate"), ("ties", "density"), ("wudi", "lr"),
                                          ("task_arithmetic", "scale"), ("optmerge_closed_form", "ridge")])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan"])
def test_non_finite_parameters_are_refused(method, param, value):
    with pytest.raises(RecipeError, match=f"parameter '{param}' must be a finite number"):
        get_method(method).validate_params({param: value})


def test_closed_form_update_stays_in_proportion_on_tall_matrices():
    """The exact minimiser on tall random matrices is 10-13x any input; the ridge keeps it within
    1.5x, and without the ridge the guard refuses instead of returning it."""
    g = torch.Generator().manual_seed(0)
    w = [0.7, 0.3]
    for m, n in ((512, 64), (1024, 128)):
        base = torch.zeros(m, n)
        experts = [torch.randn(m, n, generator=g), torch.randn(m, n, generator=g)]
        top = max(float((wi * e).abs().max()) for wi, e in zip(w, experts))
        exact = optmerge_closed_form(base, experts, w, ridge=0, max_ratio=0)
        assert float(exact.abs().max()) > 5 * top  # the ill-conditioning the ridge is for
        assert float(optmerge_closed_form(base, experts, w).abs().max()) < 1.5 * top
        with pytest.raises(MergeError, match=r"ill-conditioned here; raise -p ridge"):
            optmerge_closed_form(base, experts, w, ridge=0)
