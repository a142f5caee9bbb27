"""A fuzz test of graphm's public functional API and its layer constructors (issue 12, section 3).

Hypothesis draws a valid call of each function (consistent shapes, dtypes and geometry), and
then, in most examples, spoils one argument: a huge, negative, zero, fractional, NaN, string
or array value for an integer; a tuple of the wrong length or with a huge entry; an array of
another dtype, rank, extent, layout or with non-finite values; a list or None for an array.
Each call must keep graphm's contract:

* it returns what PyTorch returns for the same call (graphm.spec, the plain-loop reference,
  where the values are not finite or PyTorch refuses a convolution), or
* it raises a ValueError or TypeError whose message names an argument of the call;
* never another exception type (IndexError, OverflowError, MemoryError, ZeroDivisionError...),
  never a crash, never a hang (each case has a timeout), never a large allocation (the cases
  run in a worker process whose address space is limited, tests/_fuzz_worker.py).

The whole test takes well under a minute; ``GRAPHM_EXAMPLES_SCALE=20`` makes a long hunt.
"""
import json
import os
import re
import select
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import examples

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fuzz_worker.py")
CASE_TIMEOUT = 20.0        # seconds; a legal case here takes milliseconds
START_TIMEOUT = 120.0


class Worker:
    """The worker process, restarted after a case that killed it or hung."""

    def __init__(self):
        self.process = None

    def start(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [os.getcwd(), os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env,
                                        cwd=os.getcwd())
        ready = self._answer(START_TIMEOUT)
        assert ready and ready.get("ready"), f"the fuzz worker did not start: {ready}"
        self.limit_bytes = ready["limit_bytes"]

    def _answer(self, timeout):
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not readable:
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else None

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def run(self, case):
        if self.process is None:
            self.start()
        line = json.dumps(case)
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        started = time.monotonic()
        answer = self._answer(CASE_TIMEOUT)
        if answer is None:
            hung = self.process.poll() is None
            code = self.process.returncode
            if hung:
                self.stop()
            self.process = None
            if hung:
                raise AssertionError(f"no answer after {time.monotonic() - started:.0f} s "
                                     f"(a hang): {line}")
            raise AssertionError(f"the worker died (exit status {code}): {line}")
        return answer


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    w.start()
    yield w
    w.stop()


# ---------------------------------------------------------------------------------------------
# Encoding values for the worker (JSON has no tuples, arrays or NaN)
# ---------------------------------------------------------------------------------------------

def array(shape, dtype="float32", fill="normal", layout="c", seed=0):
    return {"array": {"shape": list(shape), "dtype": dtype, "fill": fill, "seed": seed,
                      "layout": layout}}


def tup(*items):
    return {"tuple": list(items)}


def shape_of(value):
    return tuple(value["array"]["shape"])


NAN = {"float": "nan"}
INF = {"float": "inf"}

# Values that spoil an integer argument (a stride, a channel count, a dim...)
BAD_INTEGERS = [0, -1, -3, 2 ** 31 - 1, 2 ** 31, 2 ** 32 + 1, 2 ** 63, 2 ** 70, -(2 ** 63)]
BAD_OTHERS = [1.5, 2.0, NAN, INF, None, "2", "same", "valid", "full", True, False, [], tup(),
              tup(1, 1, 1, 1), tup(2 ** 40), tup(1, -1), tup(1.0, 2), tup(None, 1),
              {"int64": 2}, {"ndarray": [1, 2]}, {"ndarray": 2}, {"ndarray": [[1]]},
              {"ndarray": [1.5]}]
BAD_SCALARS = BAD_INTEGERS + BAD_OTHERS


@st.composite
def spoiled_array(draw, value):
    """The array ``value`` with one thing wrong about it (or a non-array in its place)."""
    spec = dict(value["array"])
    shape = list(spec["shape"])
    how = draw(st.sampled_from(["dtype", "fill", "layout", "drop", "add", "zero", "grow",
                                "scalar", "other"]))
    if how == "dtype":
        spec["dtype"] = draw(st.sampled_from(["int64", "int32", "float16", "complex64", "bool",
                                              "uint8", "float64" if spec["dtype"] == "float32"
                                              else "float32"]))
    elif how == "fill":
        spec["fill"] = draw(st.sampled_from(["nan", "inf", "-inf", "huge", "zeros"]))
    elif how == "layout":
        spec["layout"] = draw(st.sampled_from(["fortran", "strided", "reversed"]))
    elif how == "drop" and shape:
        del shape[draw(st.integers(0, len(shape) - 1))]
    elif how == "add":
        shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(1, 3)))
    elif how == "zero" and shape:
        shape[draw(st.integers(0, len(shape) - 1))] = 0
    elif how == "grow" and shape:
        shape[draw(st.integers(0, len(shape) - 1))] += draw(st.integers(1, 3))
    elif how == "scalar":
        shape = []
    elif how == "other":
        return draw(st.sampled_from([None, 1.0, "x", [[1.0, 2.0]], tup(1.0)]))
    spec["shape"] = shape
    return {"array": spec}


@st.composite
def spoil(draw, kwargs, names):
    """Spoil one of ``names`` in ``kwargs`` (or none); return (kwargs, the spoiled name)."""
    if draw(st.integers(0, 9)) >= 7:        # 3 examples in 10 keep the valid call
        return kwargs, None
    name = draw(st.sampled_from(names))
    kwargs = dict(kwargs)
    current = kwargs.get(name)
    if isinstance(current, dict) and "array" in current and draw(st.booleans()):
        kwargs[name] = draw(spoiled_array(current))
    elif name.endswith("_shape") and current is not None and draw(st.booleans()):
        entries = list(current["tuple"])
        entries[draw(st.integers(0, len(entries) - 1))] = draw(st.sampled_from(
            [0, -1, 2 ** 31, 2 ** 62, 1.5, None, "3", 2 ** 70]))
        kwargs[name] = tup(*entries)
    else:
        kwargs[name] = draw(st.sampled_from(BAD_SCALARS))
    return kwargs, name


# ---------------------------------------------------------------------------------------------
# Valid calls
# ---------------------------------------------------------------------------------------------

def _rank_of(fn):
    digit = fn[-2] if fn.endswith("d") else ""
    return int(digit) if digit.isdigit() else None


@st.composite
def conv_call(draw, fn):
    transposed = fn.startswith("conv_transpose")
    rank = _rank_of(fn) or draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    groups = draw(st.sampled_from([1, 1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 3)) for _ in range(rank)]
    extent = 6 if rank < 3 else 4
    spatial = [draw(st.integers(1, extent)) for _ in range(rank)]
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    padding = draw(st.sampled_from([0, 1, 2, "valid"] + ([] if transposed else ["same"])))
    if padding == "same":
        stride = 1
    batch = draw(st.sampled_from([(1,), (2,), ()]))
    seed = draw(st.integers(0, 2 ** 16))
    x = array(batch + (cin,) + tuple(spatial), dtype, seed=seed)
    w_shape = ((cin, cout // groups) if transposed else (cout, cin // groups)) + tuple(kernel)
    w = array(w_shape, dtype, seed=seed + 1)
    kwargs = {"input": x, "weight": w, "stride": stride, "padding": padding,
              "dilation": dilation, "groups": groups}
    if draw(st.booleans()):
        kwargs["bias"] = array((cout,), dtype, seed=seed + 2)
    if transposed:
        kwargs["output_padding"] = draw(st.integers(0, max(stride, dilation) - 1))
    return kwargs


def _forward_shape(fn, kwargs):
    """The output shape PyTorch gives the forward call behind a backward ``fn`` (or None)."""
    import torch
    import torch.nn.functional as TF
    transposed = "transpose" in fn
    rank = len(shape_of(kwargs["weight"])) - 2
    op = getattr(TF, f"conv_transpose{rank}d" if transposed else f"conv{rank}d")
    geometry = {k: v for k, v in kwargs.items() if k not in ("input", "weight", "bias")}
    try:
        x = torch.empty(shape_of(kwargs["input"]), device="meta")
        w = torch.empty(shape_of(kwargs["weight"]), device="meta")
        return tuple(op(x, w, **geometry).shape)
    except Exception:                      # noqa: BLE001 - an invalid geometry: any shape
        return (1, 1) + (1,) * rank


@st.composite
def conv_backward_call(draw, fn):
    kwargs = draw(conv_call("conv_transpose" if "transpose" in fn else "conv"))
    kwargs.pop("bias", None)
    dtype = kwargs["input"]["array"]["dtype"]
    seed = kwargs["input"]["array"]["seed"]
    if fn == "conv_weight_grad":
        out = _forward_shape("conv", kwargs)
        weight = kwargs.pop("weight")
        kwargs["weight_shape"] = tup(*shape_of(weight))
        if kwargs["padding"] == "same":
            kwargs["padding"] = 0
            out = _forward_shape("conv", {**kwargs, "weight": weight})
        kwargs["grad_output"] = array(out, dtype, seed=seed + 3)
        return kwargs
    kwargs["grad_output"] = array(_forward_shape(fn, kwargs), dtype, seed=seed + 3)
    return kwargs


@st.composite
def shape_call(draw, fn):
    kwargs = draw(conv_call("conv_transpose" if "transpose" in fn else "conv"))
    out = {"input_shape": tup(*shape_of(kwargs.pop("input"))),
           "weight_shape": tup(*shape_of(kwargs.pop("weight")))}
    bias = kwargs.pop("bias", None)
    if bias is not None:
        out["bias_shape"] = tup(*shape_of(bias))
    out.update(kwargs)
    return out


@st.composite
def pool_call(draw, fn):
    rank = _rank_of(fn)
    dtype = draw(st.sampled_from(["float32", "float64"]))
    kernel = draw(st.integers(1, 3))
    batch = draw(st.sampled_from([(1,), (2,), ()]))
    spatial = tuple(draw(st.integers(kernel, 6 if rank < 3 else 4)) for _ in range(rank))
    kwargs = {"input": array(batch + (draw(st.integers(1, 2)),) + spatial, dtype,
                             seed=draw(st.integers(0, 2 ** 16))),
              "kernel_size": kernel,
              "stride": draw(st.sampled_from([None, 1, 2, 3])),
              "padding": draw(st.integers(0, kernel // 2)),
              "ceil_mode": draw(st.booleans())}
    if fn.startswith("max"):
        kwargs["dilation"] = draw(st.integers(1, 2))
        kwargs["return_indices"] = draw(st.booleans())
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
        if rank > 1:
            kwargs["divisor_override"] = draw(st.sampled_from([None, 1, 3]))
    return kwargs


@st.composite
def elementwise_call(draw, fn):
    dtype = draw(st.sampled_from(["float32", "float64"]))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    kwargs = {"input": array(shape, dtype, seed=draw(st.integers(0, 2 ** 16)))}
    if fn == "softplus":
        kwargs["beta"] = draw(st.sampled_from([0.5, 1.0, 2.0]))
        kwargs["threshold"] = draw(st.sampled_from([1.0, 20.0]))
    if fn in ("softmax", "log_softmax"):
        ndim = len(shape)
        kwargs["dim"] = draw(st.integers(-max(ndim, 1), max(ndim, 1) - 1))
    if fn == "relu":
        kwargs["inplace"] = draw(st.booleans())
    return kwargs


@st.composite
def linear_call(draw, fn):
    dtype = draw(st.sampled_from(["float32", "float64"]))
    seed = draw(st.integers(0, 2 ** 16))
    features, outs = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    kwargs = {"input": array(lead + (features,), dtype, seed=seed),
              "weight": array((outs, features), dtype, seed=seed + 1)}
    if fn == "linear":
        if draw(st.booleans()):
            kwargs["bias"] = array((outs,), dtype, seed=seed + 2)
    else:
        kwargs["grad_output"] = array(lead + (outs,), dtype, seed=seed + 3)
    return kwargs


@st.composite
def loss_call(draw, fn):
    dtype = draw(st.sampled_from(["float32", "float64"]))
    seed = draw(st.integers(0, 2 ** 16))
    classes = draw(st.integers(1, 4))
    batch = draw(st.sampled_from([(), (1,), (3,)]))
    extra = draw(st.sampled_from([(), (2,)])) if batch else ()
    shape = batch + (classes,) + extra
    kwargs = {"input": array(shape, dtype, seed=seed),
              "reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    if fn == "mse_loss":
        kwargs["target"] = array(shape, dtype, seed=seed + 1)
        return kwargs
    if fn == "cross_entropy" and draw(st.booleans()):
        kwargs["target"] = array(shape, dtype, fill="zeros", seed=seed + 1)   # probabilities
    else:
        kwargs["target"] = array(batch + extra, "int64", fill=f"classes:{classes}",
                                 seed=seed + 1)
    if draw(st.booleans()):
        kwargs["weight"] = array((classes,), dtype, seed=seed + 2)
    if draw(st.booleans()):
        kwargs["ignore_index"] = draw(st.sampled_from([-100, 0]))
    if fn == "cross_entropy":
        kwargs["label_smoothing"] = draw(st.sampled_from([0.0, 0.1]))
    return kwargs


@st.composite
def layer_call(draw, fn):
    name = fn[3:]
    if name.startswith("Conv"):
        groups = draw(st.sampled_from([1, 2]))
        kwargs = {"in_channels": groups * draw(st.integers(1, 3)),
                  "out_channels": groups * draw(st.integers(1, 3)),
                  "kernel_size": draw(st.integers(1, 3)),
                  "stride": draw(st.integers(1, 2)), "padding": draw(st.integers(0, 2)),
                  "dilation": draw(st.integers(1, 2)), "groups": groups,
                  "bias": draw(st.booleans())}
        if "Transpose" in name:
            kwargs["output_padding"] = 0
        return kwargs
    if name == "Linear":
        return {"in_features": draw(st.integers(1, 5)), "out_features": draw(st.integers(1, 5)),
                "bias": draw(st.booleans())}
    if name.endswith("Pool2d"):
        kwargs = {"kernel_size": draw(st.integers(1, 3)),
                  "stride": draw(st.sampled_from([None, 1, 2])),
                  "padding": 0, "ceil_mode": draw(st.booleans())}
        return kwargs
    if name == "Flatten":
        return {"start_dim": draw(st.integers(0, 2)), "end_dim": -1}
    return {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))}


CONVS = ["conv", "conv1d", "conv2d", "conv3d", "conv_transpose", "conv_transpose1d",
         "conv_transpose2d", "conv_transpose3d"]
CALLS = {
    **{fn: conv_call for fn in CONVS},
    **{fn: conv_backward_call for fn in ("conv_backward", "conv_transpose_backward",
                                         "conv_weight_grad")},
    **{fn: shape_call for fn in ("conv_output_shape", "conv_transpose_output_shape")},
    **{f"{kind}_pool{d}d": pool_call for kind in ("max", "avg") for d in (1, 2, 3)},
    **{fn: elementwise_call for fn in ("relu", "sigmoid", "tanh", "softplus", "softmax",
                                       "log_softmax")},
    **{fn: linear_call for fn in ("linear", "linear_backward")},
    **{fn: loss_call for fn in ("cross_entropy", "nll_loss", "mse_loss")},
    **{f"nn.{name}": layer_call for name in (
        "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
        "Linear", "MaxPool2d", "AvgPool2d", "Flatten", "CrossEntropyLoss", "MSELoss")},
}

# Arguments a valid call leaves at their defaults that the fuzzing may spoil too (keyword-only
# and rarely given ones).
EXTRA_NAMES = {"conv_output_shape": ["bias_shape", "rank"],
               "nn.Linear": ["dtype"], "nn.Conv2d": ["dtype", "padding_mode"]}


# ---------------------------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------------------------

def names_an_argument(message, names):
    """Whether ``message`` mentions one of ``names`` as a word (or the shape of one)."""
    words = set(re.findall(r"[a-z_][a-z_0-9]*", message.lower()))
    names = [n.lower() for n in names]
    names += [n.removesuffix("_shape") for n in names]     # "bias shape (0,)" names bias_shape
    return any(name in words for name in names)


def parameter_names(fn):
    import inspect
    import graphm.functional as F
    from graphm import nn
    target = getattr(nn, fn[3:]) if fn.startswith("nn.") else getattr(F, fn)
    return [p for p in inspect.signature(target).parameters if not p.startswith("_")]


def judge(fn, case, answer, spoiled):
    shown = json.dumps(case)
    if "worker_error" in answer:
        raise AssertionError(f"the fuzz worker failed on {shown}:\n{answer['worker_error']}")
    if answer["status"] == "raised":
        kind, message = answer["type"], answer["message"]
        assert answer["value_or_type_error"], (
            f"{fn} raised {kind}: {message}\n(spoiled: {spoiled}) case: {shown}")
        assert names_an_argument(message, parameter_names(fn)), (
            f"{fn}'s {kind} names no argument: {message!r}\n(spoiled: {spoiled}) case: {shown}")
        return
    assert "oracle_refused" not in answer, (
        f"{fn} returned where PyTorch refuses ({answer['oracle_refused']})\n"
        f"(spoiled: {spoiled}) case: {shown}")
    assert answer["mismatch"] is None, (
        f"{fn} disagrees with {answer['oracle']}: {answer['mismatch']}\n"
        f"(spoiled: {spoiled}) case: {shown}")


@pytest.mark.parametrize("fn", sorted(CALLS))
def test_every_call_returns_the_oracles_answer_or_a_clear_error(fn, worker):
    names = parameter_names(fn)

    @settings(max_examples=examples(30))
    @given(st.data())
    def check(data):
        kwargs = data.draw(CALLS[fn](fn), label="valid call")
        spoilable = sorted(set(kwargs) | set(EXTRA_NAMES.get(fn, [])) & set(names))
        kwargs, spoiled = data.draw(spoil(kwargs, spoilable), label="spoiled")
        case = {"fn": fn, "kwargs": kwargs}
        judge(fn, case, worker.run(case), spoiled)

    check()


def test_the_worker_runs_under_a_memory_limit(worker):
    """A request past the limit fails in the worker as a MemoryError, not by swapping: the
    limit is what lets the fuzz test catch a large allocation."""
    assert worker.limit_bytes < 8 * 2 ** 30
    answer = worker.run({"fn": "relu", "kwargs": {"input": array((2 ** 28,), "float64")}})
    # making the 2 GiB float64 input is what fails, before graphm sees it
    assert answer["status"] == "raised" and answer["type"] == "MemoryError", answer


def test_a_hang_is_reported_not_waited_for(monkeypatch):
    """The timeout works: a worker that does not answer is killed and the case reported."""
    w = Worker()
    w.start()
    try:
        monkeypatch.setattr(sys.modules[__name__], "CASE_TIMEOUT", 0.5)
        w.process.send_signal(19)           # SIGSTOP: the worker cannot answer
        with pytest.raises(AssertionError, match="a hang"):
            w.run({"fn": "relu", "kwargs": {"input": array((2,))}})
    finally:
        w.stop()
