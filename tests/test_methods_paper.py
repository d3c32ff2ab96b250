"""Each method's paper settings (methods/paper.py) against an independent computation of the
paper's formula on unweighted task vectors (issue 16: `lambda 0.5, scale 2` doubled TIES, was 7%
off for WUDI and summed the 1-D tensors)."""
from __future__ import annotations

import pytest
import torch

from viscodex.engine.methods import get_method, method_for
from viscodex.engine.methods.paper import LAMBDA, PAPER, paper_flags, paper_settings

M, N = 12, 6


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def trio(seed=0, m=M, n=N):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(m, n, generator=g, dtype=torch.float64)
    experts = [base + 0.1 * torch.randn(m, n, generator=g, dtype=torch.float64) for _ in range(2)]
    return base, experts


def run(name, base, experts, **extra):
    lam, params = paper_settings(name)
    return get_method(name).fn(base.float(), [e.float() for e in experts], [lam, 1 - lam], **{**params, **extra}).double()


def close(got, want, rtol=1e-5, atol=1e-6):
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def taus_of(base, experts):
    return [e - base for e in experts]


# ------------------------------------------------------------------ references (unweighted, as published)
def ref_ties(taus, density=0.2):
    trimmed = []
    for t in taus:
        k = int(density * t.numel() + 0.5)
        th = t.abs().flatten().sort(descending=True).values[k - 1]
        trimmed.append(t * (t.abs() >= th))
    sign = torch.sign(sum(trimmed))
    agree = [(torch.sign(t) == sign) & (t != 0) for t in trimmed]
    num = sum(torch.where(a, t, 0.0) for a, t in zip(agree, trimmed))
    cnt = sum(a.double() for a in agree)
    return torch.where(cnt > 0, num / cnt.clamp_min(1), 0.0)


def procrustes(a):
    p, _, qh = torch.linalg.svd(a, full_matrices=False)
    return p @ qh


def ref_tsv(taus):
    k = min(taus[0].shape) // len(taus)
    us, ss, vs = [], [], []
    for t in taus:
        u, s, vh = torch.linalg.svd(t, full_matrices=False)
        us.append(u[:, :k]), ss.append(s[:k]), vs.append(vh[:k].T)
    return procrustes(torch.cat(us, 1)) @ torch.diag(torch.cat(ss)) @ procrustes(torch.cat(vs, 1)).T


def ref_iso_c(taus):
    u, s, vh = torch.linalg.svd(sum(taus), full_matrices=False)
    return s.mean() * u @ vh


def wudi_loss(x, taus):
    return sum(((x - t) @ t.T).square().sum() / t.square().sum() for t in taus)


def optmerge_loss(x, taus):
    r = min(taus[0].shape) // len(taus)
    total = 0
    for t in taus:
        u, s, vh = torch.linalg.svd(t, full_matrices=False)
        tr, low = (u[:, :r] * s[:r]) @ vh[:r], s[:r, None] * vh[:r]
        total = total + ((x - tr) @ low.T).square().sum() / t.square().sum()
    return total


def descend(loss, x0, opt, steps=300):
    x = torch.nn.Parameter(x0.clone())
    o = opt([x])
    for _ in range(steps):
        o.zero_grad()
        loss(x).backward()
        o.step()
    return x.detach()


# ------------------------------------------------------------------ one test per method
def test_task_arithmetic_is_ilharcos_sum():
    base, ex = trio(1)
    close(run("task_arithmetic", base, ex), base + sum(taus_of(base, ex)))


def test_weight_average_is_the_soup():
    base, ex = trio(2)
    close(run("weight_average", base, ex), (ex[0] + ex[1]) / 2)


def test_ties_is_the_papers_disjoint_mean_at_lambda_one():
    base, ex = trio(3)
    close(run("ties", base, ex), base + ref_ties(taus_of(base, ex)))


def test_dare_is_drop_rescale_then_sum():
    base, ex = trio(4)
    p = PAPER["dare"]["drop_rate"]
    g = torch.Generator().manual_seed(7)
    masks = [torch.rand(base.shape, generator=g, dtype=torch.float32) >= p for _ in ex]
    want = base + sum(t * m / (1 - p) for t, m in zip(taus_of(base, ex), masks))
    close(run("dare", base, ex, generator=torch.Generator().manual_seed(7)), want)


def test_dare_with_ties_keeps_scale_one():
    base, ex = trio(5)
    p = 0.2
    g = torch.Generator().manual_seed(3)
    masks = [torch.rand(base.shape, generator=g, dtype=torch.float32) >= p for _ in ex]
    dropped = [t * m / (1 - p) for t, m in zip(taus_of(base, ex), masks)]
    got = run("dare", base, ex, combine="ties", scale=1.0, generator=torch.Generator().manual_seed(3))
    close(got, base + ref_ties(dropped))


def test_tsv_is_tsv_m():
    base, ex = trio(6)
    close(run("tsv", base, ex), base + ref_tsv(taus_of(base, ex)), rtol=1e-4, atol=1e-5)


def test_iso_c_flattens_the_sum():
    base, ex = trio(7)
    close(run("iso_c", base, ex), base + ref_iso_c(taus_of(base, ex)), rtol=1e-4, atol=1e-5)


def test_iso_cts_equals_the_unweighted_computation():
    """Iso-CTS is degree-1 homogeneous: the preset equals the method on the papers' weights (1, 1)."""
    base, ex = trio(8)
    want = get_method("iso_cts").fn(base.float(), [e.float() for e in ex], [1.0, 1.0], common_space_fraction=0.8)
    close(run("iso_cts", base, ex), want.double(), rtol=1e-4, atol=1e-5)


def test_wudi_is_adam_at_the_papers_step_from_the_sum():
    base, ex = trio(9)
    taus = [t.float() for t in taus_of(base, ex)]
    want = descend(lambda x: wudi_loss(x, taus), sum(taus), lambda p: torch.optim.Adam(p, lr=1e-5))
    close(run("wudi", base, ex) - base, want.double(), rtol=1e-3, atol=1e-6)
    # the old advice (lambda 0.5, scale 2 with the paper's lr) moves twice as far
    lam, params = paper_settings("wudi")
    old = get_method("wudi").fn(base.float(), [e.float() for e in ex], [0.5, 0.5], **{**params, "lr": 1e-5}).double()
    assert not torch.allclose(old - base, want.double(), rtol=1e-3, atol=1e-6)


def test_optmerge_is_sgd_from_the_mean():
    base, ex = trio(10)
    taus = taus_of(base, ex)
    want = descend(lambda x: optmerge_loss(x, taus), sum(taus) / 2,
                   lambda p: torch.optim.SGD(p, lr=1e-4, momentum=0.9))
    close(run("optmerge", base, ex) - base, want, rtol=1e-4, atol=1e-6)


def test_optmerge_closed_form_is_the_exact_minimiser():
    base, ex = trio(11)
    taus = taus_of(base, ex)
    r = min(taus[0].shape) // 2
    c = torch.zeros(N, N, dtype=torch.float64)
    d = torch.zeros(M, N, dtype=torch.float64)
    for t in taus:
        u, s, vh = torch.linalg.svd(t, full_matrices=False)
        k = s[:r, None] * vh[:r] / t.norm()
        c += k.T @ k
        d += ((u[:, :r] * s[:r]) @ vh[:r]) @ k.T @ k
    close(run("optmerge_closed_form", base, ex) - base, d @ torch.linalg.inv(c), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["tsv", "iso_c", "iso_cts", "wudi", "optmerge", "optmerge_closed_form"])
def test_matrix_presets_average_the_1d_tensors_like_the_reference(name):
    """MLLMerging averages the task vectors of non-matrix tensors: the mean, not the sum."""
    lam, params = paper_settings(name)
    fb, fb_params = method_for(get_method(name), "model.norm.weight", (N,), params)
    base, ex = torch.zeros(N), [torch.full((N,), 1.0), torch.full((N,), 3.0)]
    got = fb.fn(base, ex, [lam, 1 - lam], **fb_params)
    assert torch.equal(got, torch.full((N,), 2.0))


def test_every_method_has_paper_settings_and_flags():
    from viscodex.engine.methods import METHODS

    assert set(PAPER) == set(METHODS)
    assert LAMBDA == 0.5
    assert paper_flags("ties") == "--lambda 0.5 -p density=0.2 -p scale=1"
    assert paper_flags("wudi") == "--lambda 0.5 -p lr=5e-06 -p init=sum -p scale=2 -p fallback_scale=1"
