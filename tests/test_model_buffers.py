"""The samplers never trust a model's input or output buffers (expsolver.models.ModelGuard).

A model that returns one preallocated output tensor on every call (as CUDA graphs and compiled engines do), that
modifies its input in place, or that returns its input, gives bitwise the same result as a well-behaved model, for
every sampler method, both predictions, every model type and the SDE samplers; the caller's ``x`` is never
changed. What cannot be repaired (memory reused behind PyTorch's back, a model that starts modifying its input
after its first call, a model that needs autograd) raises a named error. A well-behaved model costs one copy of
the initial state per run and nothing per call. Exact model: the 2-D test mixture, float64.

Runtime: a few seconds (about 120 sampler runs of 10 steps on 8 samples).
"""

import numpy as np
import pytest
import torch

import expsolver.models as models
from expsolver import ModelWrapper, VPLinear, reference_solve, sample
from expsolver.models import ModelAutogradError, ModelBufferError, ModelOutputError
from expsolver.sde_sampling import reverse_sde_sample

from conftest import make_mixture_2d

LIN = VPLinear()
MIXTURE = make_mixture_2d()
EXACT = MIXTURE.as_model(LIN)
STEPS = 10

RUNS = [dict(method="multistep", order=k) for k in (1, 2, 3)] + [
    dict(method="singlestep", order=3), dict(method="singlestep_fixed", order=2), dict(method="adaptive", order=3),
    dict(method="unipc", order=3), dict(method="deis", order=3)]
SDE_RUNS = [dict(algorithm_type="sde-dpmsolver++", order=2), dict(algorithm_type="sde-dpmsolver", order=1),
            dict(algorithm_type="sde-dpmsolver", order=2)]


def _x(n=8, seed=0):
    return MIXTURE.sample(n, torch.Generator().manual_seed(seed), t=LIN.T, schedule=LIN)


class OutputBuffer:
    """Writes every prediction into one preallocated tensor and returns it (a CUDA-graph style model)."""

    def __init__(self, inner=EXACT):
        self.inner, self.buffer = inner, None

    def __call__(self, x, t):
        y = self.inner(x, t)
        if self.buffer is None:
            self.buffer = torch.empty_like(y)
        return self.buffer.copy_(y)


class ScribblesOnInput:
    """Computes its prediction, then scales its input in place."""

    def __init__(self, inner=EXACT):
        self.inner = inner

    def __call__(self, x, t):
        y = self.inner(x, t)
        x.mul_(0.5)
        return y


class PredictsIntoInput:
    """Writes its prediction into its input and returns that tensor."""

    def __init__(self, inner=EXACT):
        self.inner = inner

    def __call__(self, x, t):
        return x.copy_(self.inner(x, t))


class ReturnsView:
    """Returns a view of a larger tensor it keeps (storage shared with another tensor)."""

    def __init__(self, inner=EXACT):
        self.inner, self.kept = inner, None

    def __call__(self, x, t):
        self.kept = torch.cat([self.inner(x, t), torch.zeros_like(x)])
        return self.kept[: x.shape[0]]


MISBEHAVING = [OutputBuffer, ScribblesOnInput, PredictsIntoInput, ReturnsView]


def _run_id(run):
    return "-".join(str(v) for v in run.values())


@pytest.mark.parametrize("kind", MISBEHAVING, ids=lambda k: k.__name__)
@pytest.mark.parametrize("algorithm_type", ["dpmsolver", "dpmsolver++"])
@pytest.mark.parametrize("run", RUNS, ids=_run_id)
def test_ode_samplers_give_the_well_behaved_result(run, algorithm_type, kind):
    x = _x()
    x_before = x.clone()
    expected = sample(EXACT, LIN, x, steps=STEPS, algorithm_type=algorithm_type, **run)
    got = sample(kind(), LIN, x, steps=STEPS, algorithm_type=algorithm_type, **run)
    assert torch.equal(got.x, expected.x) and got.nfe == expected.nfe
    assert torch.equal(x, x_before)


@pytest.mark.parametrize("kind", MISBEHAVING, ids=lambda k: k.__name__)
@pytest.mark.parametrize("run", SDE_RUNS, ids=_run_id)
def test_sde_samplers_give_the_well_behaved_result(run, kind):
    x = _x()
    x_before = x.clone()
    expected = sample(EXACT, LIN, x, steps=STEPS, generator=torch.Generator().manual_seed(7), **run)
    got = sample(kind(), LIN, x, steps=STEPS, generator=torch.Generator().manual_seed(7), **run)
    assert torch.equal(got.x, expected.x)
    assert torch.equal(x, x_before)


def _data_model(x, t):
    return MIXTURE.data(x, t, LIN)


def _v_model(x, t):
    alpha, sigma = LIN.alpha(t)[:, None], LIN.sigma(t)[:, None]
    return alpha * EXACT(x, t) - sigma * MIXTURE.data(x, t, LIN)


@pytest.mark.parametrize("kind", MISBEHAVING, ids=lambda k: k.__name__)
@pytest.mark.parametrize("algorithm_type", ["dpmsolver", "dpmsolver++"])
@pytest.mark.parametrize("model_type, inner", [("x_start", _data_model), ("v", _v_model)], ids=["x_start", "v"])
def test_other_model_types_and_denoise_to_zero(model_type, inner, algorithm_type, kind):
    x = _x()
    x_before = x.clone()
    options = dict(steps=STEPS, order=3, algorithm_type=algorithm_type, model_type=model_type, denoise_to_zero=True,
                   return_intermediates=True)
    expected = sample(inner, LIN, x, **options)
    got = sample(kind(inner), LIN, x, **options)
    assert torch.equal(got.x, expected.x)
    assert all(torch.equal(a, b) for a, b in zip(got.intermediates, expected.intermediates))
    assert torch.equal(x, x_before) and got.intermediates[0] is x


@pytest.mark.parametrize("kind", MISBEHAVING, ids=lambda k: k.__name__)
def test_reference_solve_and_reverse_sde(kind):
    x = _x()
    x_before = x.clone()
    expected = reference_solve(EXACT, LIN, x, 1.0, 0.5, rtol=1e-5, atol=1e-5).x
    assert torch.equal(reference_solve(kind(), LIN, x, 1.0, 0.5, rtol=1e-5, atol=1e-5).x, expected)
    for scheme in ("euler_maruyama", "ddpm_ancestral"):
        runs = [reverse_sde_sample(model, LIN, x, steps=STEPS, scheme=scheme,
                                   generator=torch.Generator().manual_seed(3)).x for model in (EXACT, kind())]
        assert torch.equal(runs[1], runs[0])
    assert torch.equal(x, x_before)


def test_inference_mode_passes_copies():
    """Tensors made in inference mode have no version counter, so every input is a copy there."""
    x = _x()
    expected = sample(EXACT, LIN, x, steps=STEPS, order=3, algorithm_type="dpmsolver")
    with torch.inference_mode():
        x_inf = x.clone()
        got = sample(ScribblesOnInput(), LIN, x_inf, steps=STEPS, order=3, algorithm_type="dpmsolver")
    assert torch.equal(got.x, expected.x) and torch.equal(x_inf, x)


def _sync_free(x, t):
    """A model of device-side arithmetic only (a CUDA graph cannot capture host reads)."""
    return torch.tanh(x) * (0.5 + t[:, None]) - 0.1 * x


class CUDAGraphModel:
    """:func:`_sync_free` captured in a CUDA graph: static input, time and output tensors, the output returned on
    every call (what CUDA-graph and compiled inference wrappers do)."""

    def __init__(self, like):
        self.x = like.clone()
        self.t = torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graph requires
            for _ in range(3):
                _sync_free(self.x, self.t)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = _sync_free(self.x, self.t)

    def __call__(self, x, t):
        self.x.copy_(x)
        self.t.copy_(t)
        self.graph.replay()
        return self.out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("run", [dict(method="multistep", order=3), dict(method="singlestep", order=3),
                                 dict(method="unipc", order=3), dict(algorithm_type="sde-dpmsolver", order=2)],
                         ids=_run_id)
def test_a_cuda_graph_model_gives_the_eager_result(run):
    x = _x(64).cuda()
    options = {"steps": STEPS, "algorithm_type": "dpmsolver", **run}
    if options["algorithm_type"].startswith("sde"):
        options["generator"] = torch.Generator(device="cuda").manual_seed(5)
    eager = sample(_sync_free, LIN, x, **options).x
    if "generator" in options:
        options["generator"] = torch.Generator(device="cuda").manual_seed(5)
    graphed = sample(CUDAGraphModel(x), LIN, x, **options).x
    assert torch.allclose(graphed, eager, rtol=0, atol=1e-12)


# -- what cannot be repaired raises ----------------------------------------------------------------------------
class ReusesRawMemory:
    """A new tensor on every call, made from the same raw memory (an engine's output buffer): neither the
    reference count nor the storage shows the sharing."""

    def __init__(self):
        self.memory = None

    def __call__(self, x, t):
        y = EXACT(x, t).numpy()
        if self.memory is None:
            self.memory = np.empty_like(y)
        self.memory[...] = y
        return torch.from_numpy(self.memory)


@pytest.mark.parametrize("run", RUNS + [dict(algorithm_type="sde-dpmsolver", order=2)], ids=_run_id)
def test_raw_memory_reuse_is_an_error_where_an_earlier_output_is_kept(run):
    """Noise prediction keeps the model's outputs (the multistep history, the singlestep and adaptive stages), so
    the second call overwrites one of them: an error (a ModelBufferError, a ModelOutputError, which the driver may
    re-raise naming the step). Data prediction converts every output into a new tensor at once, so the same model
    is harmless there and gives the exact result."""
    x = _x()
    options = dict(steps=STEPS, generator=torch.Generator().manual_seed(7)) if "algorithm_type" in run else \
        dict(steps=STEPS, algorithm_type="dpmsolver")
    with pytest.raises(ModelOutputError, match="memory of an earlier output"):
        sample(ReusesRawMemory(), LIN, x, **options, **run)
    if "algorithm_type" not in run:
        expected = sample(EXACT, LIN, x, steps=STEPS, **run).x
        assert torch.equal(sample(ReusesRawMemory(), LIN, x, steps=STEPS, **run).x, expected)


def test_a_model_that_starts_modifying_its_input_later_is_an_error():
    calls = []

    def model(x, t):
        calls.append(1)
        y = EXACT(x, t)
        if len(calls) == 3:
            x.add_(1.0)
        return y

    x = _x()
    x_before = x.clone()
    with pytest.raises(ModelOutputError, match=r"modified its input in place at t=[^ ]* .*step 2\)"):
        sample(model, LIN, x, steps=STEPS, order=2)
    assert torch.equal(x, x_before)


def test_the_wrapper_raises_model_buffer_errors():
    with pytest.raises(ModelBufferError, match="memory of an earlier output"):
        _drive(ReusesRawMemory())
    calls = []

    def late_scribbler(x, t):
        calls.append(1)
        if len(calls) == 2:
            x.mul_(2.0)
        return EXACT(x, t)

    with pytest.raises(ModelBufferError, match="modified its input in place at t=0.9"):
        _drive(late_scribbler)


def _energy_score(x, t):
    """The exact score as the gradient of ``log q_t``: needs autograd."""
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(MIXTURE.log_prob(x, t, LIN).sum(), x)[0]


def test_a_model_that_needs_autograd_gets_a_clear_error_and_enable_grad_works():
    x = _x()
    with pytest.raises(ModelAutogradError, match=r"torch\.enable_grad\(\)") as info:
        sample(_energy_score, LIN, x, steps=STEPS, model_type="score")
    assert "at t=1" in str(info.value) and isinstance(info.value.__cause__, RuntimeError)

    def with_grad(x, t):
        with torch.enable_grad():
            return _energy_score(x, t)

    got = sample(with_grad, LIN, x, steps=STEPS, model_type="score", algorithm_type="dpmsolver").x
    expected = sample(EXACT, LIN, x, steps=STEPS, algorithm_type="dpmsolver").x
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


def test_other_model_errors_pass_through_unchanged():
    def broken(x, t):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="^out of memory$"):
        sample(broken, LIN, _x(), steps=STEPS)


# -- the price: copies only where needed ---------------------------------------------------------------------
def _drive(model, n_calls=6, model_type="noise"):
    """Call a wrapper the way a sampler does: the caller's state first, then new states, keeping every output."""
    wrapper = ModelWrapper(model, LIN, model_type=model_type)
    x = _x()
    kept = []
    for i in range(n_calls):
        t = 1.0 - 0.1 * i
        kept.append(wrapper.eps(x, t, LIN.alpha(t), LIN.sigma(t)))
        x = x + 0.01 * kept[-1]
    return wrapper.guard, kept


def test_a_well_behaved_model_costs_one_copy_of_the_initial_state():
    guard, _ = _drive(EXACT)
    assert (guard.input_copies, guard.output_copies, guard.copy_inputs) == (1, 0, False)


@pytest.mark.parametrize("kind, inputs, outputs, copy_inputs", [
    (OutputBuffer, 1, 6, False), (ScribblesOnInput, 6, 0, True), (PredictsIntoInput, 6, 0, True),
    (ReturnsView, 1, 6, False)], ids=lambda v: getattr(v, "__name__", str(v)))
def test_misbehaving_models_cost_copies_of_what_they_share(kind, inputs, outputs, copy_inputs):
    guard, kept = _drive(kind())
    assert (guard.input_copies, guard.output_copies, guard.copy_inputs) == (inputs, outputs, copy_inputs)
    _, expected = _drive(EXACT)
    assert all(torch.equal(a, b) for a, b in zip(kept, expected))


def test_an_output_fed_back_to_a_model_that_returns_its_input_is_not_an_error():
    """The model returning its input is not a reuse of output memory, even when that input is an output the
    wrapper kept earlier: the result is a copy, and the earlier output is untouched."""
    wrapper = ModelWrapper(lambda x, t: x, LIN)
    first = wrapper.eps(_x(), 0.5, LIN.alpha(0.5), LIN.sigma(0.5))
    value = first.clone()
    second = wrapper.eps(first, 0.4, LIN.alpha(0.4), LIN.sigma(0.4))
    assert second is not first and torch.equal(second, value) and torch.equal(first, value)


def test_converted_outputs_are_never_copied():
    """``x_start`` outputs converted to noise predictions are new tensors: no output copy even from a buffer."""
    guard, _ = _drive(OutputBuffer(_data_model), model_type="x_start")
    assert (guard.input_copies, guard.output_copies) == (1, 0)


def test_without_reference_count_calibration_every_kept_output_is_copied(monkeypatch):
    monkeypatch.setattr(models, "_FRESH_REFERENCES", None)
    guard, kept = _drive(EXACT)
    assert guard.output_copies == 6
    monkeypatch.undo()
    assert models._FRESH_REFERENCES is not None  # on this interpreter the calibration is active
    _, expected = _drive(EXACT)
    assert all(torch.equal(a, b) for a, b in zip(kept, expected))
