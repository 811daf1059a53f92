"""Coupled Brownian paths and noise sources (expsolver.brownian).

The aggregation is tested on its own: coarse increments built from one fine path must have exactly the variance
``v_kappa(b - a) = int_0^{b-a} e^{2 kappa u} du`` and the covariances (with each other, with the fine increments,
across rates) that the exponential schemes need. Statistical checks use 200,000 independent entries, so a
relative standard error of the variance of sqrt(2/200000) = 0.32 %; they allow 4 standard errors. Runtime ~2 s.
"""

import math

import numpy as np
import pytest
import torch

from expsolver.brownian import (BrownianPath, GeneratorNoise, TensorNoise, check_generator, exp_weighted_variance,
                                noise_source, refine)

N_ENTRIES = 200_000


class _FakeCudaGenerator(torch.Generator):
    """A CPU generator that reports a CUDA device: simulates a generator on the wrong device."""

    @property
    def device(self):
        return torch.device("cuda", 0)


def _path(nodes, rates, n=N_ENTRIES, seed=0, **kw):
    return BrownianPath(nodes, (n, 1), rates=rates, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("delta", [1e-9, 1e-4, 0.3, 2.0])
def test_exp_weighted_variance_closed_forms(delta):
    assert exp_weighted_variance(-1.0, delta) == pytest.approx(-math.expm1(-2 * delta) / 2, rel=1e-14)
    assert exp_weighted_variance(1.0, delta) == pytest.approx(math.expm1(2 * delta) / 2, rel=1e-14)
    assert exp_weighted_variance(0.0, delta) == pytest.approx(delta, rel=1e-15)
    # the noise amplitudes of the schemes: sigma_t sqrt(1 - e^{-2h}) and sigma_t sqrt(e^{2h} - 1)
    assert math.sqrt(2 * exp_weighted_variance(-1.0, delta)) == pytest.approx(math.sqrt(-math.expm1(-2 * delta)),
                                                                              rel=1e-14)


def test_refine_contains_nodes_exactly():
    nodes = np.array([-5.0, -1.3, 0.2, 4.6])
    fine = refine(nodes, 4)
    assert fine.shape == (13,)
    np.testing.assert_array_equal(fine[::4], nodes)
    np.testing.assert_allclose(np.diff(fine)[:4], (nodes[1] - nodes[0]) / 4, rtol=1e-14)
    with pytest.raises(ValueError):
        refine([0.0, 1.0, 0.5], 2)
    with pytest.raises(TypeError):
        refine(nodes, 2.0)


@pytest.mark.parametrize("rate", [-1.0, 1.0])
def test_coarse_increment_has_exact_variance(rate):
    """A coarse increment aggregated from 16 unequal fine intervals has variance v_kappa(b - a); the plain sum of
    the fine increments does not (its variance is off by far more than the Monte-Carlo error)."""
    rng = np.random.default_rng(0)
    nodes = np.concatenate([[0.0], np.cumsum(rng.uniform(0.02, 0.15, size=16))])
    path = _path(nodes, (rate,))
    a, b = nodes[0], nodes[-1]
    inc = path.increment(a, b, rate)[:, 0]
    v = exp_weighted_variance(rate, b - a)
    se = math.sqrt(2.0 / N_ENTRIES)
    assert abs(float(inc.var()) / v - 1.0) < 4 * se
    assert abs(float(inc.mean())) < 4 * math.sqrt(v / N_ENTRIES)
    plain = path._increments[:, 0, :, 0].sum(0)
    assert abs(float(plain.var()) / v - 1.0) > 20 * se
    # normalised increments are standard normal
    z = path.normal(0, "lam", a, b, rate, torch.empty(N_ENTRIES, 1, dtype=torch.float64))
    assert abs(float(z.var()) - 1.0) < 4 * se


def test_coarse_increments_covariances():
    """Disjoint coarse steps are uncorrelated; a coarse increment and a fine increment inside it have covariance
    e^{kappa (b - u_{i+1})} v_kappa(delta_i); the rates -1 and +1 over the same step have covariance b - a."""
    nodes = np.linspace(0.0, 2.4, 25)
    path = _path(nodes, (-1.0, 1.0))
    se = 1.0 / math.sqrt(N_ENTRIES)  # standard error of a correlation near 0 (and a bound for the others)

    def corr_cov(u, w):
        u, w = u[:, 0], w[:, 0]
        return float(((u - u.mean()) * (w - w.mean())).mean())

    i1 = path.increment(nodes[0], nodes[12], -1.0)
    i2 = path.increment(nodes[12], nodes[24], -1.0)
    v1 = exp_weighted_variance(-1.0, 1.2)
    assert abs(corr_cov(i1, i2)) / v1 < 4 * se
    # coarse vs a fine interval inside it
    fine = path.increment(nodes[3], nodes[4], -1.0)
    expected = math.exp(-1.0 * (nodes[12] - nodes[4])) * exp_weighted_variance(-1.0, 0.1)
    sd = math.sqrt(v1 * exp_weighted_variance(-1.0, 0.1))
    assert abs(corr_cov(i1, fine) - expected) / sd < 4 * se
    # rates -1 and +1 over the same coarse step: Cov = int_0^delta e^{0 u} du = delta
    j1 = path.increment(nodes[0], nodes[12], 1.0)
    sd = math.sqrt(v1 * exp_weighted_variance(1.0, 1.2))
    assert abs(corr_cov(i1, j1) - 1.2) / sd < 4 * se
    assert abs(float(j1.var()) / exp_weighted_variance(1.0, 1.2) - 1.0) < 4 * math.sqrt(2.0 / N_ENTRIES)


@pytest.mark.parametrize("rate", [-1.0, 0.0, 1.0])
def test_aggregation_composes(rate):
    """I(a, c) = e^{kappa (c - b)} I(a, b) + I(b, c) for every b between: the weights compose exactly, so a
    medium grid aggregated to a coarse one gives the same noise as the fine grid aggregated directly."""
    nodes = refine(np.array([0.0, 0.7, 1.1, 2.5]), 8)
    path = _path(nodes, (rate,), n=64)
    a, b, c = 0.0, 1.1, 2.5
    direct = path.increment(a, c, rate)
    composed = math.exp(rate * (c - b)) * path.increment(a, b, rate) + path.increment(b, c, rate)
    torch.testing.assert_close(direct, composed, rtol=1e-13, atol=1e-14)
    if rate == 0.0:  # plain Brownian increments: a plain sum
        torch.testing.assert_close(direct, path._increments[:, 0].sum(0), rtol=1e-13, atol=1e-14)


def test_decreasing_t_path_and_direction():
    """A path in t runs along decreasing t (the sampling direction); a step against it is rejected."""
    ts = np.linspace(1.0, 0.0, 11)
    path = BrownianPath(ts, (N_ENTRIES, 1), variable="t", rates=(0.0,), generator=torch.Generator().manual_seed(1))
    inc = path.increment(1.0, 0.5, 0.0)
    assert abs(float(inc.var()) / 0.5 - 1.0) < 4 * math.sqrt(2.0 / N_ENTRIES)
    with pytest.raises(ValueError, match="direction"):
        path.increment(0.5, 1.0, 0.0)
    like = torch.empty(N_ENTRIES, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="integrates its noise in 'lam'"):
        path.normal(0, "lam", 1.0, 0.5, 0.0, like)
    with pytest.raises(ValueError, match="no node"):
        path.normal(0, "t", 1.0, 0.55, 0.0, like)
    with pytest.raises(ValueError, match="rates"):
        path.normal(0, "t", 1.0, 0.5, -1.0, like)


def test_per_sample_generators_make_paths_batch_independent():
    nodes = np.linspace(0.0, 1.0, 9)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    full = BrownianPath(nodes, (3, 2), rates=(-1.0, 1.0), generator=gens)
    alone = BrownianPath(nodes, (1, 2), rates=(-1.0, 1.0), generator=[torch.Generator().manual_seed(6)])
    torch.testing.assert_close(full.increment(0.0, 1.0, 1.0)[1:2], alone.increment(0.0, 1.0, 1.0), rtol=0, atol=0)
    with pytest.raises(ValueError, match="one generator per sample"):
        BrownianPath(nodes, (3, 2), generator=gens[:2])


def test_path_validation():
    with pytest.raises(ValueError, match="monotone"):
        BrownianPath([0.0, 1.0, 0.5], (2, 1))
    with pytest.raises(ValueError, match="distinct"):
        BrownianPath([0.0, 1.0], (2, 1), rates=(-1.0, -1.0))
    with pytest.raises(ValueError, match="variable"):
        BrownianPath([0.0, 1.0], (2, 1), variable="sigma")
    with pytest.raises(ValueError, match="shape"):
        BrownianPath([0.0, 1.0], (0, 1))
    with pytest.raises(TypeError):
        BrownianPath([0.0, 1.0], (2, 1), generator=3)


def test_noise_source_validation():
    x = torch.zeros(4, 2, dtype=torch.float64)
    assert isinstance(noise_source(None, None, x, 5), GeneratorNoise)
    src = noise_source(torch.zeros(5, 4, 2, dtype=torch.float64), None, x, 5)
    assert isinstance(src, TensorNoise)
    with pytest.raises(ValueError, match=r"noise must have shape \(steps, \*x.shape\)"):
        noise_source(torch.zeros(4, 4, 2), None, x, 5)
    with pytest.raises(ValueError, match="noise"):
        noise_source(torch.full((5, 4, 2), float("nan")), None, x, 5)
    with pytest.raises(TypeError, match="noise"):
        noise_source(np.zeros((5, 4, 2)), None, x, 5)
    with pytest.raises(ValueError, match="not both"):
        noise_source(torch.zeros(5, 4, 2), torch.Generator(), x, 5)
    path = BrownianPath([0.0, 1.0], (3, 2))
    with pytest.raises(ValueError, match="noise: the BrownianPath has shape"):
        noise_source(path, None, x, 5)
    with pytest.raises(TypeError, match="torch.Generator"):
        check_generator(1234, x)
    with pytest.raises(TypeError, match="device"):
        check_generator(_FakeCudaGenerator(), x)
    with pytest.raises(ValueError, match="one generator per sample"):
        check_generator([torch.Generator()] * 3, x)
    assert len(check_generator([torch.Generator() for _ in range(4)], x)) == 4
