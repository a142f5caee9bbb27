"""Shared helpers for graphm's kernel tests: reproducible randomness, tolerances, the PyTorch
oracle and a hypothesis strategy that draws whole convolution configurations.

The test modules import these helpers with ``from conftest import ...``; the directory of this
file is put on ``sys.path`` below so that works whatever pytest's import mode is.

Hypothesis profiles (choose with the environment variable ``GRAPHM_HYPOTHESIS_PROFILE``):

``ci`` (default)
    derandomized, no example database, no deadline: the same examples on every run and machine.
``dev``
    random examples, for hunting bugs locally.

Tests set their example counts with :func:`examples`; ``GRAPHM_EXAMPLES_SCALE`` multiplies
them (e.g. ``GRAPHM_HYPOTHESIS_PROFILE=dev GRAPHM_EXAMPLES_SCALE=10`` for a long hunt).
"""
import dataclasses
import os
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The suite makes thousands of tiny kernel calls, each a few OpenMP parallel regions. By default
# OpenMP threads spin while they wait at a region's end; on a busy 2-core CI machine a spinning
# thread burns the time slice its partner needs, and the suite ran 4x slower. Sleeping waiters
# change no result (and the caller's own choice wins). Set before graphm or torch load OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")



def pytest_configure(config):
    # PyTorch (the oracle) warns that it copies the input for 'same' with even kernels
    config.addinivalue_line(
        "filterwarnings", "ignore:Using padding='same':UserWarning")


settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    parent=settings.get_profile("ci"),
    derandomize=False,
)
settings.load_profile(os.environ.get("GRAPHM_HYPOTHESIS_PROFILE", "ci"))


def examples(n):
    """``settings(max_examples=examples(n))``: n, scaled by ``GRAPHM_EXAMPLES_SCALE``."""
    return max(1, round(n * float(os.environ.get("GRAPHM_EXAMPLES_SCALE", "1"))))


# --------------------------------------------------------------------------------------------
# Randomness and tolerances
# --------------------------------------------------------------------------------------------

FLOAT_DTYPES = (np.float32, np.float64)

# Relative tolerance per dtype (issue 2, section 5). The absolute tolerance is the same
# relative tolerance times the largest magnitude in the expected array: a sum of many terms
# of mixed sign can cancel to a value near zero whose *relative* error is large, but whose
# absolute error is still bounded by eps * (size of the terms).
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def make_rng(seed):
    """A NumPy generator; hypothesis tests draw ``seed`` so every example is reproducible."""
    return np.random.default_rng(seed)


@pytest.fixture
def rng(request):
    """A generator seeded by the test's node id: reproducible, different for every test."""
    return make_rng(zlib.crc32(request.node.nodeid.encode()))


def random_array(rng, shape, dtype):
    """Standard normal values of the given shape and dtype, C-ordered."""
    return rng.standard_normal(shape).astype(dtype)


def assert_close(actual, expected, dtype, scale=None):
    """Assert ``actual`` is an ndarray of ``dtype`` and the shape of ``expected``, and close to it.

    rtol is 1e-4 for float32 and 1e-10 for float64; atol is rtol times ``scale`` (default: the
    largest magnitude in ``expected``, at least the smallest normal number).
    """
    dtype = np.dtype(dtype)
    assert isinstance(actual, np.ndarray), f"expected an ndarray, got {type(actual).__name__}"
    assert actual.dtype == dtype, f"dtype {actual.dtype}, expected {dtype}"
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape}, expected {expected.shape}"
    if expected.size == 0:
        return
    rtol = RTOL[dtype]
    if scale is None:
        finite = np.abs(expected[np.isfinite(expected)])
        scale = float(finite.max()) if finite.size else 0.0
    atol = rtol * max(scale, float(np.finfo(dtype).tiny))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def assert_fresh_c_array(result, dtype, *inputs):
    """The result is a new C-contiguous ndarray of ``dtype`` that shares no memory with inputs."""
    assert isinstance(result, np.ndarray), f"expected an ndarray, got {type(result).__name__}"
    assert result.dtype == np.dtype(dtype), f"dtype {result.dtype}, expected {np.dtype(dtype)}"
    assert result.flags.c_contiguous, "result is not C-contiguous"
    for array in inputs:
        if array is not None:
            assert not np.shares_memory(result, array), "result shares memory with an input"


def with_layout(array, layout):
    """The same values as ``array`` in another memory layout.

    ``"C"`` as is, ``"F"`` Fortran order, ``"strided"`` every other element of a larger
    buffer along the last axis (not contiguous), ``"reversed"`` a view with negative strides on
    the last axis, ``"readonly"`` a C-ordered array whose writeable flag is off.
    """
    if layout == "C":
        return np.ascontiguousarray(array)
    if layout == "F":
        return np.asfortranarray(array)
    if layout == "strided":
        buffer = np.full(array.shape[:-1] + (2 * array.shape[-1],), np.nan, array.dtype)
        view = buffer[..., ::2]
        view[...] = array
        return view
    if layout == "reversed":
        return array[..., ::-1].copy()[..., ::-1]
    if layout == "readonly":
        copy = np.array(array, order="C")
        copy.setflags(write=False)
        return copy
    raise ValueError(f"unknown layout {layout!r}")


# --------------------------------------------------------------------------------------------
# Output-size formulas, written out here once so the tests do not trust graphm's own
# --------------------------------------------------------------------------------------------

def conv_out_size(n, k, s, p, d):
    """floor((n + 2p - d(k-1) - 1) / s) + 1, PyTorch's Conv output size on one axis."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def conv_transpose_out_size(n, k, s, p, op, d):
    """(n-1)s - 2p + d(k-1) + op + 1, PyTorch's ConvTranspose output size on one axis."""
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


# --------------------------------------------------------------------------------------------
# A drawn convolution configuration
# --------------------------------------------------------------------------------------------

def _as_arg(values, as_tuple):
    """Pass per-axis values as a tuple, or as one int when all axes agree and we chose to."""
    if not as_tuple and len(set(values)) == 1:
        return values[0]
    return tuple(values)


@dataclasses.dataclass
class ConvCase:
    """One convolution (``transpose=False``) or transposed convolution configuration.

    ``batch`` is None for an unbatched ``(C, *spatial)`` input. Channel counts are per group.
    ``padding`` keeps the argument as passed (int, tuple or string); ``pads`` the per-axis
    left padding for the size formulas (for 'same' see ``out_spatial``).
    """

    d: int
    transpose: bool
    batch: object
    groups: int
    in_per_group: int
    out_per_group: int
    kernel: tuple
    in_spatial: tuple
    stride: object
    padding: object
    dilation: object
    output_padding: object
    strides: tuple
    pads: tuple
    dilations: tuple
    output_paddings: tuple
    with_bias: bool
    seed: int

    @property
    def in_channels(self):
        return self.groups * self.in_per_group

    @property
    def out_channels(self):
        return self.groups * self.out_per_group

    @property
    def input_shape(self):
        lead = () if self.batch is None else (self.batch,)
        return lead + (self.in_channels,) + self.in_spatial

    @property
    def weight_shape(self):
        if self.transpose:  # (inC, outC / groups, *k), PyTorch's ConvTranspose layout
            return (self.in_channels, self.out_per_group) + self.kernel
        return (self.out_channels, self.in_per_group) + self.kernel

    @property
    def out_spatial(self):
        if self.padding == "same":
            return self.in_spatial
        if self.transpose:
            return tuple(conv_transpose_out_size(*a) for a in zip(
                self.in_spatial, self.kernel, self.strides, self.pads,
                self.output_paddings, self.dilations))
        return tuple(conv_out_size(*a) for a in zip(
            self.in_spatial, self.kernel, self.strides, self.pads, self.dilations))

    @property
    def output_shape(self):
        lead = () if self.batch is None else (self.batch,)
        return lead + (self.out_channels,) + self.out_spatial

    def kwargs(self):
        """Keyword arguments shared by graphm's forward and backward functions and torch's."""
        kw = dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                  groups=self.groups)
        if self.transpose:
            kw["output_padding"] = self.output_padding
        return kw

    def arrays(self, dtype):
        """(input, weight, bias or None, grad_output) drawn from this case's seed."""
        rng = make_rng(self.seed)
        x = random_array(rng, self.input_shape, dtype)
        w = random_array(rng, self.weight_shape, dtype)
        b = random_array(rng, (self.out_channels,), dtype)
        g = random_array(rng, self.output_shape, dtype)
        return x, w, (b if self.with_bias else None), g


@st.composite
def conv_cases(draw, d, transpose=False, *, max_in=6, max_kernel=3, max_stride=3,
               max_dilation=2, max_pad=2, max_groups=3, max_per_group=3, max_batch=3,
               extra=2, batch=None, allow_strings=True):
    """Draw a valid :class:`ConvCase` of spatial rank ``d`` (every output extent >= 1).

    Sizes are drawn so that strides often do not tile the input (PyTorch floors). For the
    transposed op the output_padding on each axis is drawn below max(stride, dilation), the
    bound PyTorch accepts. ``batch`` fixes the batch size (None: drawn, unbatched included).
    A conv input extent goes up to ``max_in + extra`` (more when the dilated kernel needs it).
    """
    groups = draw(st.integers(1, max_groups))
    in_per_group = draw(st.integers(1, max_per_group))
    out_per_group = draw(st.integers(1, max_per_group))
    kernel = tuple(draw(st.integers(1, max_kernel)) for _ in range(d))
    dilations = tuple(draw(st.integers(1, max_dilation)) for _ in range(d))

    mode = "int"
    if allow_strings and not transpose:
        mode = draw(st.sampled_from(["int", "int", "same", "valid"]))
    if mode == "same":  # PyTorch allows 'same' only with stride 1
        strides = (1,) * d
    else:
        strides = tuple(draw(st.integers(1, max_stride)) for _ in range(d))

    pads, in_spatial, output_paddings = [], [], []
    for axis in range(d):
        k, s, dil = kernel[axis], strides[axis], dilations[axis]
        span = dil * (k - 1) + 1  # extent of the dilated kernel
        if transpose:
            op = draw(st.integers(0, max(s, dil) - 1))
            n = draw(st.integers(1, max_in))
            p = draw(st.integers(0, max_pad))
            # keep the output extent >= 1 by capping the padding
            p = min(p, ((n - 1) * s + dil * (k - 1) + op) // 2)
            output_paddings.append(op)
        else:
            p = draw(st.integers(0, max_pad)) if mode == "int" else 0
            lowest = 1 if mode == "same" else max(1, span - 2 * p)
            n = draw(st.integers(lowest, max(lowest, max_in) + extra))
            output_paddings.append(0)
        pads.append(p)
        in_spatial.append(n)

    as_tuple = draw(st.booleans())
    padding = mode if mode in ("same", "valid") else _as_arg(pads, as_tuple)
    if batch is None:
        batch = draw(st.sampled_from([None, 1, 2, max_batch]))
    return ConvCase(
        d=d, transpose=transpose, batch=batch, groups=groups, in_per_group=in_per_group,
        out_per_group=out_per_group, kernel=kernel, in_spatial=tuple(in_spatial),
        stride=_as_arg(strides, as_tuple), padding=padding,
        dilation=_as_arg(dilations, as_tuple),
        output_padding=_as_arg(output_paddings, as_tuple),
        strides=strides, pads=tuple(pads), dilations=dilations,
        output_paddings=tuple(output_paddings),
        with_bias=draw(st.booleans()), seed=draw(st.integers(0, 2**32 - 1)),
    )


# --------------------------------------------------------------------------------------------
# The PyTorch oracle (test time only)
# --------------------------------------------------------------------------------------------

def _torch_function(d, transpose):
    import torch
    import torch.nn.functional as TF
    # The oracle's tensors are small: one thread spares the two cores for graphm's own threads
    # (PyTorch's thread count does not change its results' meaning, only its speed).
    torch.set_num_threads(1)
    name = f"conv_transpose{d}d" if transpose else f"conv{d}d"
    return getattr(TF, name)


def _to_torch(array, requires_grad=False):
    import torch
    tensor = torch.from_numpy(np.array(array, order="C", copy=True))
    tensor.requires_grad_(requires_grad)
    return tensor


def torch_forward(x, w, b, *, transpose, stride, padding, dilation, groups, output_padding=0):
    """PyTorch's conv{d}d / conv_transpose{d}d of NumPy arrays, as a NumPy array."""
    import torch
    d = w.ndim - 2
    function = _torch_function(d, transpose)
    tb = None if b is None else _to_torch(b)
    with torch.no_grad():
        if transpose:
            out = function(_to_torch(x), _to_torch(w), tb, stride=stride, padding=padding,
                           output_padding=output_padding, groups=groups, dilation=dilation)
        else:
            out = function(_to_torch(x), _to_torch(w), tb, stride=stride, padding=padding,
                           dilation=dilation, groups=groups)
    return out.numpy()


def torch_gradients(g, x, w, *, transpose, stride, padding, dilation, groups,
                    output_padding=0):
    """(grad_input, grad_weight, grad_bias) that torch.autograd gives for the op with a bias."""
    d = w.ndim - 2
    function = _torch_function(d, transpose)
    out_channels = w.shape[1] * groups if transpose else w.shape[0]
    tx, tw = _to_torch(x, True), _to_torch(w, True)
    tb = _to_torch(np.zeros(out_channels, x.dtype), True)
    if transpose:
        out = function(tx, tw, tb, stride=stride, padding=padding,
                       output_padding=output_padding, groups=groups, dilation=dilation)
    else:
        out = function(tx, tw, tb, stride=stride, padding=padding, dilation=dilation,
                       groups=groups)
    out.backward(_to_torch(g))
    return tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def nonfinite_pattern(array):
    """Boolean masks (NaN, +Inf, -Inf): the positions where IEEE arithmetic left finite values."""
    return np.isnan(array), np.isposinf(array), np.isneginf(array)
