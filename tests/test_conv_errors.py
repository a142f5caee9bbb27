"""Bad input gets a clear ValueError or TypeError, never a crash, a hang or silent garbage.

Issue 2, section 4: the message names the argument (and its value and the shapes involved).
Every case here runs against every entry point it applies to: conv1d/2d/3d, conv,
conv_backward, conv_transpose1d/2d/3d, conv_transpose and conv_transpose_backward. Each
asserts the exception type and, with ``match``, that the message names the argument.

A last, randomized test draws configurations that are often invalid and checks that graphm
either raises ValueError/TypeError (invalid) or agrees with PyTorch (valid).
"""
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from conftest import (
    assert_close, conv_cases, conv_out_size, conv_transpose_out_size, examples, make_rng,
    torch_forward, torch_gradients,
)

import graphm.functional as F  # noqa: E402  (a broken build must fail, not skip)

BATCH, IN_C, OUT_C, KERNEL = 2, 4, 6, 3
IN_SIZE = {1: 7, 2: 6, 3: 5}


class Entry:
    """One entry point of graphm.functional and a valid call of it that tests then spoil.

    Forward functions are called as ``f(input, weight, bias, **kwargs)``, the backward ones
    as ``f(grad_output, input, weight, **kwargs)``.
    """

    def __init__(self, name, d):
        self.name, self.d = name, d
        self.transpose = name.startswith("conv_transpose")
        self.backward = name.endswith("backward")
        self.function = getattr(F, name)

    def __repr__(self):
        return f"{self.name}[d={self.d}]"

    def weight_shape(self, in_c=IN_C, out_c=OUT_C, groups=1, kernel=KERNEL):
        kernel = (kernel,) * self.d
        if self.transpose:
            return (in_c, out_c // groups) + kernel
        return (out_c, in_c // groups) + kernel

    def output_shape(self, batch=BATCH, stride=1, padding=0, output_padding=0):
        n = IN_SIZE[self.d]
        if self.transpose:
            out = conv_transpose_out_size(n, KERNEL, stride, padding, output_padding, 1)
        else:
            out = conv_out_size(n, KERNEL, stride, padding, 1)
        lead = () if batch is None else (batch,)
        return lead + (OUT_C,) + (out,) * self.d

    def arrays(self, dtype=np.float64):
        rng = make_rng(0)
        return dict(
            input=rng.standard_normal((BATCH, IN_C) + (IN_SIZE[self.d],) * self.d).astype(dtype),
            weight=rng.standard_normal(self.weight_shape()).astype(dtype),
            bias=rng.standard_normal(OUT_C).astype(dtype),
            grad_output=rng.standard_normal(self.output_shape()).astype(dtype),
        )

    def call(self, input=None, weight=None, bias=None, grad_output=None, **kwargs):
        """Call with the valid arrays, except those given (``None`` keeps the valid one)."""
        valid = self.arrays()
        input = valid["input"] if input is None else input
        weight = valid["weight"] if weight is None else weight
        if self.backward:
            grad_output = valid["grad_output"] if grad_output is None else grad_output
            return self.function(grad_output, input, weight, **kwargs)
        bias = valid["bias"] if bias is None else bias
        return self.function(input, weight, bias, **kwargs)

    def call_raw(self, input, weight, bias=None, grad_output=None, **kwargs):
        """Call with exactly these arrays (``None`` stays None)."""
        if self.backward:
            return self.function(grad_output, input, weight, **kwargs)
        return self.function(input, weight, bias, **kwargs)


def assert_message_names(excinfo, *fragments):
    """The error message contains each fragment (an argument's value, a shape, a dtype)."""
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} is not in the message {message!r}"


def assert_message_shows_value(excinfo, value):
    """The message shows the bad value: an int as its digits (it may be shown per axis), a
    tuple whole or by its one entry that is not an int."""
    message = str(excinfo.value)
    if isinstance(value, int):
        shown = [str(value)]
    elif isinstance(value, tuple):
        shown = [repr(value)] + [repr(v) for v in value if not isinstance(v, int)]
    else:
        shown = [repr(value), str(value)]
    assert any(text in message for text in shown), f"none of {shown} in {message!r}"


CONV_ENTRIES = [Entry("conv1d", 1), Entry("conv2d", 2), Entry("conv3d", 3), Entry("conv", 2),
                Entry("conv", 1), Entry("conv_backward", 2), Entry("conv_backward", 3)]
TRANSPOSE_ENTRIES = [Entry("conv_transpose1d", 1), Entry("conv_transpose2d", 2),
                     Entry("conv_transpose3d", 3), Entry("conv_transpose", 2),
                     Entry("conv_transpose_backward", 2), Entry("conv_transpose_backward", 1)]
ALL_ENTRIES = CONV_ENTRIES + TRANSPOSE_ENTRIES


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=repr)
def test_valid_base_call(entry):
    """The unspoiled call works, so each failure below is due to the spoiled argument."""
    result = entry.call()
    if entry.backward:
        assert result.grad_input.shape == entry.arrays()["input"].shape
    else:
        assert result.shape == entry.output_shape()


# --------------------------------------------------------------------------------------------
# Keyword arguments: stride, padding, dilation, groups (every entry point)
# --------------------------------------------------------------------------------------------

def _last_axis(d, value, other=1):
    """A per-axis tuple whose last entry is ``value``."""
    return (other,) * (d - 1) + (value,)


def keyword_cases(d):
    """(kwargs, exception, argument name the message must mention, id)."""
    return [
        (dict(stride=0), ValueError, "stride", "stride=0"),
        (dict(stride=-1), ValueError, "stride", "stride=-1"),
        (dict(stride=_last_axis(d, 0)), ValueError, "stride", "stride-tuple-0"),
        (dict(stride=_last_axis(d, -2)), ValueError, "stride", "stride-tuple-negative"),
        (dict(stride=1.5), TypeError, "stride", "stride=1.5"),
        (dict(stride=2.0), TypeError, "stride", "stride=2.0"),
        (dict(stride="2"), TypeError, "stride", "stride='2'"),
        (dict(stride=_last_axis(d, 1.5)), TypeError, "stride", "stride-tuple-float"),
        (dict(stride=(1,) * (d + 1)), ValueError, "stride", "stride-tuple-too-long"),
        (dict(stride=()), ValueError, "stride", "stride-empty-tuple"),
        (dict(dilation=0), ValueError, "dilation", "dilation=0"),
        (dict(dilation=-2), ValueError, "dilation", "dilation=-2"),
        (dict(dilation=_last_axis(d, 0)), ValueError, "dilation", "dilation-tuple-0"),
        (dict(dilation=1.5), TypeError, "dilation", "dilation=1.5"),
        (dict(dilation=(1,) * (d + 1)), ValueError, "dilation", "dilation-tuple-too-long"),
        (dict(padding=-1), ValueError, "padding", "padding=-1"),
        (dict(padding=_last_axis(d, -1, 0)), ValueError, "padding", "padding-tuple-negative"),
        (dict(padding=0.5), TypeError, "padding", "padding=0.5"),
        (dict(padding=(0,) * (d + 1)), ValueError, "padding", "padding-tuple-too-long"),
        (dict(groups=0), ValueError, "groups", "groups=0"),
        (dict(groups=-2), ValueError, "groups", "groups=-2"),
        (dict(groups=1.5), TypeError, "groups", "groups=1.5"),
        # groups 3 does not divide the IN_C = 4 input channels
        (dict(groups=3), ValueError, "groups", "groups-not-dividing-channels"),
    ]


KEYWORD_PARAMS = [
    pytest.param(entry, kwargs, exc, name, id=f"{entry!r}-{case_id}")
    for entry in ALL_ENTRIES
    for kwargs, exc, name, case_id in keyword_cases(entry.d)
]


@pytest.mark.parametrize("entry, kwargs, exc, name", KEYWORD_PARAMS)
def test_bad_keyword_argument(entry, kwargs, exc, name):
    with pytest.raises(exc, match=name) as excinfo:
        entry.call(**kwargs)
    if name != "groups":  # a groups error is about the channels it does not divide
        assert_message_shows_value(excinfo, kwargs[name])


def test_tuple_of_wrong_length_for_rank_one_entry():
    """A 2-tuple given to conv1d (and a 2-tuple to conv3d) names the argument (a 1-tuple is
    broadcast to every axis, as in PyTorch: see tests/test_bad_input.py)."""
    x1, w1 = np.ones((1, 2, 5)), np.ones((3, 2, 2))
    for key in ("stride", "padding", "dilation"):
        with pytest.raises(ValueError, match=key):
            F.conv1d(x1, w1, **{key: (1, 1)})
    x3, w3 = np.ones((1, 2, 5, 5, 5)), np.ones((3, 2, 2, 2, 2))
    for key in ("stride", "padding", "dilation"):
        with pytest.raises(ValueError, match=key):
            F.conv3d(x3, w3, **{key: (1, 1)})


HUGE = 2**63  # does not fit a C long: must be caught in Python, before any index arithmetic


@pytest.mark.parametrize("entry", [Entry("conv2d", 2), Entry("conv_backward", 2),
                                   Entry("conv_transpose2d", 2),
                                   Entry("conv_transpose_backward", 2)], ids=repr)
@pytest.mark.parametrize("kwargs, pattern", [
    (dict(stride=HUGE), "stride|output"),
    (dict(stride=(1, HUGE)), "stride|output"),
    (dict(dilation=HUGE), "dilation|input|output"),
    (dict(padding=HUGE), "padding|output"),
    (dict(padding=2**62), "padding|output"),  # an output of ~2**63 positions per axis
], ids=["stride", "stride-tuple", "dilation", "padding", "padding-2**62"])
def test_absurdly_large_values(entry, kwargs, pattern):
    """Integers past int64 or outputs past any memory: a ValueError that says which argument
    (not an OverflowError or NumPy's 'Maximum allowed size exceeded')."""
    with pytest.raises(ValueError, match=pattern):
        entry.call(**kwargs)


# --------------------------------------------------------------------------------------------
# String padding
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", CONV_ENTRIES, ids=repr)
def test_same_padding_needs_stride_one(entry):
    with pytest.raises(ValueError, match="stride"):
        entry.call(padding="same", stride=2)
    with pytest.raises(ValueError, match="stride"):
        entry.call(padding="same", stride=_last_axis(entry.d, 2))


@pytest.mark.parametrize("padding", ["full", "SAME", "", "circular"])
@pytest.mark.parametrize("entry", CONV_ENTRIES, ids=repr)
def test_unknown_padding_string(entry, padding):
    with pytest.raises(ValueError, match="padding"):
        entry.call(padding=padding)


@pytest.mark.parametrize("padding", ["same", "full"])
@pytest.mark.parametrize("entry", TRANSPOSE_ENTRIES, ids=repr)
def test_string_padding_rejected_by_conv_transpose(entry, padding):
    """PyTorch's conv_transpose takes no padding strings ('same' has no transposed meaning)."""
    with pytest.raises((ValueError, TypeError), match="padding"):
        entry.call(padding=padding)


# --------------------------------------------------------------------------------------------
# output_padding (transposed op only): 0 <= output_padding < max(stride, dilation) per axis
# --------------------------------------------------------------------------------------------

def output_padding_cases(d):
    return [
        (dict(output_padding=1), ValueError, "stride-1"),
        (dict(stride=2, output_padding=2), ValueError, "equal-to-stride"),
        (dict(stride=2, dilation=3, output_padding=3), ValueError, "equal-to-dilation"),
        (dict(stride=2, output_padding=_last_axis(d, 2, 1)), ValueError, "tuple-last-axis"),
        (dict(stride=_last_axis(d, 1, 3), output_padding=(2,) * d), ValueError,
         "stride-per-axis"),
        (dict(output_padding=-1), ValueError, "negative"),
        (dict(stride=2, output_padding=_last_axis(d, -1, 0)), ValueError, "tuple-negative"),
        (dict(stride=2, output_padding=0.5), TypeError, "float"),
        (dict(stride=2, output_padding=(0,) * (d + 1)), ValueError, "tuple-too-long"),
    ]


OUTPUT_PADDING_PARAMS = [
    pytest.param(entry, kwargs, exc, id=f"{entry!r}-{case_id}")
    for entry in TRANSPOSE_ENTRIES
    for kwargs, exc, case_id in output_padding_cases(entry.d)
]


@pytest.mark.parametrize("entry, kwargs, exc", OUTPUT_PADDING_PARAMS)
def test_bad_output_padding(entry, kwargs, exc):
    # the backward functions need a grad_output of the (valid part of the) configuration
    grad_output = None
    if entry.backward and isinstance(kwargs.get("stride"), int):
        grad_output = np.zeros(entry.output_shape(stride=kwargs["stride"]))
    with pytest.raises(exc, match="output_padding"):
        entry.call(grad_output=grad_output, **kwargs)


@pytest.mark.parametrize("entry", TRANSPOSE_ENTRIES, ids=repr)
def test_output_padding_below_dilation_is_accepted(entry):
    """The bound is max(stride, dilation): stride 1, dilation 3 allows output_padding 2."""
    grad_output = None
    if entry.backward:
        n = conv_transpose_out_size(IN_SIZE[entry.d], KERNEL, 1, 0, 2, 3)
        grad_output = np.zeros((BATCH, OUT_C) + (n,) * entry.d)
    entry.call(grad_output=grad_output, dilation=3, output_padding=2)


# --------------------------------------------------------------------------------------------
# Shapes: ranks, channels, kernel extents, output extents, bias, grad_output
# --------------------------------------------------------------------------------------------

BOTH = r"(?s)(input.*weight|weight.*input)"  # a message that names both arrays


def shape_cases(entry):
    """(array overrides, kwargs, exception, regex the message must match, id)."""
    d, t = entry.d, entry.transpose
    sp = (IN_SIZE[d],) * d
    k = (KERNEL,) * d
    w_zero_kernel = entry.weight_shape()[:-1] + (0,)
    weight_rank = "weight" if entry.name[-2:] in ("1d", "2d", "3d") else "input|weight"
    cases = [
        # a kernel extent of 0 (TorchLean's hypothesis kernel[i] != 0)
        (dict(weight=np.ones(w_zero_kernel)), {}, ValueError, "weight", "kernel-extent-0"),
        # inC = 0 (TorchLean's hypothesis inC != 0)
        (dict(input=np.ones((BATCH, 0) + sp),
              weight=np.ones((0, OUT_C) + k if t else (OUT_C, 0) + k)), {}, ValueError,
         "input|weight|channel", "in-channels-0"),
        # input channels != weight in-channels x groups
        (dict(input=np.ones((BATCH, IN_C + 1) + sp)), {}, ValueError, BOTH, "channel-mismatch"),
        (dict(input=np.ones((BATCH, IN_C // 2) + sp)), {}, ValueError, BOTH,
         "channel-mismatch-fewer"),
        (dict(weight=np.ones((IN_C // 2, OUT_C) + k if t else entry.weight_shape(groups=2))),
         {}, ValueError, BOTH, "weight-shaped-for-groups-2"),
        # wrong rank of input
        (dict(input=np.ones((BATCH, IN_C) + sp + (3,))), {}, ValueError, "input",
         "input-rank-too-high"),
        (dict(input=np.ones(sp)), {}, ValueError, "input", "input-rank-too-low"),
        (dict(input=np.ones(())), {}, ValueError, "input", "input-0-d"),
        # wrong rank of weight
        # (the any-rank entry points take their rank from the weight, so for them the input
        # then has the wrong rank, and the message may name either)
        (dict(weight=np.ones(entry.weight_shape() + (3,))), {}, ValueError, weight_rank,
         "weight-rank-too-high"),
        (dict(weight=np.ones(entry.weight_shape()[:-1])), {}, ValueError, weight_rank,
         "weight-rank-too-low"),
        # an output extent < 1: the input is smaller than the (dilated) kernel
        (dict(input=np.ones((BATCH, IN_C) + (1,) * d)), {}, ValueError, "input",
         "input-smaller-than-kernel") if not t else
        (dict(input=np.ones((BATCH, IN_C) + (1,) * d)), dict(padding=2), ValueError,
         "input|output|padding", "output-extent-negative"),
    ]
    if not t:
        # groups 4 divides the 4 input channels (weight in-channels 1) but not the 6 outputs
        cases.append((dict(weight=np.ones((OUT_C, 1) + k)), dict(groups=4), ValueError,
                      "groups", "out-channels-not-divisible-by-groups"))
        cases.append((dict(input=np.ones((BATCH, IN_C) + (4,) * d)), dict(dilation=2),
                      ValueError, "input", "input-smaller-than-dilated-kernel"))
        cases.append((dict(input=np.ones((BATCH, IN_C) + (4,) * (d - 1) + (2,))), {},
                      ValueError, "input", "last-axis-too-small"))
    else:
        # (1 - 1) * 1 - 2 * 1 + 1 * (2 - 1) + 0 + 1 = 0
        cases.append((dict(input=np.ones((BATCH, IN_C) + (1,) * d),
                           weight=np.ones((IN_C, OUT_C) + (2,) * d)), dict(padding=1),
                      ValueError, "input|output|padding", "output-extent-0"))
    if not entry.backward:
        cases += [
            (dict(bias=np.ones((OUT_C, 1))), {}, ValueError, "bias", "bias-rank-2"),
            (dict(bias=np.ones(())), {}, ValueError, "bias", "bias-0-d"),
            (dict(bias=np.ones(OUT_C - 1)), {}, ValueError, "bias", "bias-too-short"),
            (dict(bias=np.ones(OUT_C + 1)), {}, ValueError, "bias", "bias-too-long"),
            (dict(bias=np.ones(IN_C)), {}, ValueError, "bias", "bias-in-channels"),
        ]
    else:
        out = entry.output_shape()
        cases += [
            (dict(grad_output=np.ones(out[:-1] + (out[-1] + 1,))), {}, ValueError,
             "grad_output", "grad-output-spatial"),
            (dict(grad_output=np.ones(out[:1] + (OUT_C + 1,) + out[2:])), {}, ValueError,
             "grad_output", "grad-output-channels"),
            (dict(grad_output=np.ones((BATCH + 1,) + out[1:])), {}, ValueError,
             "grad_output", "grad-output-batch"),
            (dict(grad_output=np.ones(out[1:])), {}, ValueError, "grad_output",
             "grad-output-unbatched"),
            (dict(grad_output=np.ones(out + (1,))), {}, ValueError, "grad_output",
             "grad-output-rank"),
            (dict(grad_output=np.ones(entry.arrays()["input"].shape)), {}, ValueError,
             "grad_output", "grad-output-is-input-shaped"),
        ]
    return cases


SHAPE_PARAMS = [
    pytest.param(entry, arrays, kwargs, exc, pattern, id=f"{entry!r}-{case_id}")
    for entry in ALL_ENTRIES
    for arrays, kwargs, exc, pattern, case_id in shape_cases(entry)
]


@pytest.mark.parametrize("entry, arrays, kwargs, exc, pattern", SHAPE_PARAMS)
def test_bad_shapes(entry, arrays, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern) as excinfo:
        entry.call(**arrays, **kwargs)
    # the message shows the shape of every array the test spoiled
    assert_message_names(excinfo, *(str(a.shape) for a in arrays.values()))


@pytest.mark.parametrize("entry", [e for e in ALL_ENTRIES if e.backward], ids=repr)
def test_unbatched_backward_with_batched_grad_output(entry):
    arrays = entry.arrays()
    x = arrays["input"][0]
    with pytest.raises(ValueError, match="grad_output"):
        entry.call_raw(x, arrays["weight"], grad_output=arrays["grad_output"])
    # and the unbatched grad_output works
    entry.call_raw(x, arrays["weight"], grad_output=arrays["grad_output"][0])


@pytest.mark.parametrize("name, weight_rank", [
    ("conv1d", 4), ("conv2d", 3), ("conv2d", 5), ("conv3d", 4), ("conv_transpose1d", 4),
    ("conv_transpose2d", 3), ("conv_transpose3d", 6)])
def test_rank_specific_entry_rejects_other_weight_rank(name, weight_rank):
    """conv2d given a 3-d weight (a conv1d weight) names the weight and does not guess."""
    x = np.ones((1, 2) + (5,) * int(name[-2]))  # an input of the entry point's own rank
    w = np.ones((2, 2) + (2,) * (weight_rank - 2))
    with pytest.raises(ValueError, match="weight"):
        getattr(F, name)(x, w)


@pytest.mark.parametrize("name", ["conv", "conv_transpose"])
@pytest.mark.parametrize("weight_shape", [(2, 2), (2,), ()])
def test_generic_entry_rejects_weight_without_spatial_axes(name, weight_shape):
    with pytest.raises(ValueError, match="weight"):
        getattr(F, name)(np.ones((1, 2, 5)), np.ones(weight_shape))


# --------------------------------------------------------------------------------------------
# dtypes: float32 or float64, the same for every array
# --------------------------------------------------------------------------------------------

BAD_DTYPES = [np.int64, np.int32, np.uint8, np.bool_, np.complex128, np.complex64, object,
              np.float16]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=repr)
def test_bad_dtype(entry, dtype):
    arrays = entry.arrays()
    for name in ("input", "weight") + (("grad_output",) if entry.backward else ("bias",)):
        spoiled = {name: arrays[name].astype(dtype)}
        with pytest.raises(TypeError, match=name) as excinfo:
            entry.call(**spoiled)
        assert_message_names(excinfo, np.dtype(dtype).name)
    # all arrays of the bad dtype
    all_bad = {name: a.astype(dtype) for name, a in arrays.items()}
    with pytest.raises(TypeError, match="input|weight|grad_output|bias"):
        entry.call_raw(**all_bad)


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=repr)
def test_float32_mixed_with_float64(entry):
    arrays64, arrays32 = entry.arrays(np.float64), entry.arrays(np.float32)
    names = ("input", "weight") + (("grad_output",) if entry.backward else ("bias",))
    for odd_one in names:
        for majority, other in ((arrays64, arrays32), (arrays32, arrays64)):
            mixed = dict(majority)
            mixed[odd_one] = other[odd_one]
            with pytest.raises(TypeError, match=odd_one) as excinfo:
                entry.call_raw(**mixed)
            assert_message_names(excinfo, "float32", "float64")


@pytest.mark.parametrize("entry", ALL_ENTRIES, ids=repr)
def test_not_an_array(entry):
    arrays = entry.arrays()
    with pytest.raises(TypeError, match="input"):
        entry.call_raw(None, arrays["weight"], arrays["bias"], arrays["grad_output"])
    with pytest.raises(TypeError, match="weight"):
        entry.call_raw(arrays["input"], None, arrays["bias"], arrays["grad_output"])
    with pytest.raises(TypeError, match="input"):
        entry.call_raw("not an array", arrays["weight"], arrays["bias"],
                       arrays["grad_output"])


# --------------------------------------------------------------------------------------------
# Randomized: often-invalid configurations; graphm raises exactly when they are invalid
# --------------------------------------------------------------------------------------------

def contract_problem(d, transpose, batch, in_c, w_shape, groups, in_spatial, stride, padding,
                     dilation, output_padding):
    """Why the configuration breaks the contract (a short text), or None when it is valid."""
    if groups < 1:
        return "groups"
    if min(stride) < 1:
        return "stride"
    if min(dilation) < 1:
        return "dilation"
    if min(w_shape[2:]) < 1:
        return "kernel extent 0"
    if in_c == 0:
        return "inC = 0"
    kernel = w_shape[2:]
    if isinstance(padding, str):
        if transpose or padding not in ("same", "valid"):
            return "padding string"
        if padding == "same" and max(stride) > 1:
            return "'same' with stride > 1"
        pads = (0,) * d
    else:
        if min(padding) < 0:
            return "padding"
        pads = padding
    if transpose:
        if w_shape[0] != in_c or in_c % groups:
            return "channels"
        for op, s, dil in zip(output_padding, stride, dilation):
            if not 0 <= op < max(s, dil):
                return "output_padding"
        out = [conv_transpose_out_size(*a) for a in zip(in_spatial, kernel, stride, pads,
                                                        output_padding, dilation)]
    else:
        if w_shape[1] * groups != in_c or w_shape[0] % groups:
            return "channels"
        if padding == "same":
            out = list(in_spatial)
        else:
            out = [conv_out_size(*a) for a in zip(in_spatial, kernel, stride, pads, dilation)]
    if min(out) < 1:
        return "output extent"
    return None


SPOILS = ["none", "none", "groups", "stride", "dilation", "kernel", "in_channels_zero",
          "channels", "out_channels", "padding", "padding_string", "output_padding",
          "shrink_input", "empty_batch"]


@st.composite
def messy_configurations(draw):
    """A valid configuration with (usually) one thing spoiled; ``contract_problem`` judges."""
    d = draw(st.integers(1, 3))
    transpose = draw(st.booleans())
    case = draw(conv_cases(d, transpose, max_in=4, extra=1, max_per_group=2, max_batch=2))
    in_c, w_shape = case.in_channels, list(case.weight_shape)
    groups, batch, in_spatial = case.groups, case.batch, list(case.in_spatial)
    stride, dilation = list(case.strides), list(case.dilations)
    padding = case.padding if isinstance(case.padding, str) else list(case.pads)
    output_padding = list(case.output_paddings)
    spoil = draw(st.sampled_from(SPOILS))
    axis = draw(st.integers(0, d - 1))
    if spoil == "groups":
        groups = draw(st.sampled_from([0, -1, groups + 1, 2 * groups]))
    elif spoil == "stride":
        stride[axis] = draw(st.sampled_from([0, -1]))
    elif spoil == "dilation":
        dilation[axis] = draw(st.sampled_from([0, -1]))
    elif spoil == "kernel":
        w_shape[2 + axis] = 0
    elif spoil == "in_channels_zero":
        in_c = 0
        w_shape[0 if transpose else 1] = draw(st.sampled_from([0, w_shape[0 if transpose else 1]]))
    elif spoil == "channels":
        in_c += draw(st.integers(1, 2))
    elif spoil == "out_channels":
        w_shape[0] += 1
    elif spoil == "padding" and not isinstance(padding, str):
        padding[axis] = -1
    elif spoil == "padding_string":
        padding = draw(st.sampled_from(["same", "valid", "full"]))
    elif spoil == "output_padding":
        bound = max(stride[axis], dilation[axis])
        output_padding[axis] = draw(st.sampled_from([-1, bound, bound + 1]))
    elif spoil == "shrink_input":
        in_spatial[axis] = 1
    elif spoil == "empty_batch":
        batch = 0
    return dict(d=d, transpose=transpose, batch=batch, in_c=in_c, w_shape=tuple(w_shape),
                groups=groups, in_spatial=tuple(in_spatial), stride=tuple(stride),
                padding=padding if isinstance(padding, str) else tuple(padding),
                dilation=tuple(dilation), output_padding=tuple(output_padding))


@settings(max_examples=examples(1000))
@given(config=messy_configurations(), seed=st.integers(0, 2**16), backward=st.booleans())
def test_random_configurations_raise_or_match_torch(config, seed, backward):
    """Invalid: ValueError or TypeError (never another exception, a crash or a result).
    Valid: the forward, or the backward function, agrees with PyTorch."""
    problem = contract_problem(**config)
    event(f"invalid: {problem}" if problem else "valid")
    transpose, batch = config["transpose"], config["batch"]
    rng = make_rng(seed)
    lead = () if batch is None else (batch,)
    x = rng.standard_normal(lead + (config["in_c"],) + config["in_spatial"])
    w = rng.standard_normal(config["w_shape"])
    kwargs = dict(stride=config["stride"], padding=config["padding"],
                  dilation=config["dilation"], groups=config["groups"])
    if transpose:
        kwargs["output_padding"] = config["output_padding"]
    function = F.conv_transpose if transpose else F.conv
    backward_function = F.conv_transpose_backward if transpose else F.conv_backward
    if problem is not None:
        with pytest.raises((ValueError, TypeError)):
            if backward:  # any grad_output: the configuration itself is invalid
                backward_function(np.ones((1,) * x.ndim), x, w, **kwargs)
            else:
                function(x, w, **kwargs)
        return
    pytest.importorskip("torch")
    expected = torch_forward(x, w, None, transpose=transpose, **kwargs)
    if not backward:
        assert_close(function(x, w, **kwargs), expected, np.float64)
        return
    g = rng.standard_normal(expected.shape)
    grads = backward_function(g, x, w, **kwargs)
    for got, want in zip(grads, torch_gradients(g, x, w, transpose=transpose, **kwargs)):
        assert_close(got, want, np.float64)
