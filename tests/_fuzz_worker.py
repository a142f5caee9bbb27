"""The process that runs tests/test_fuzz.py's cases, one JSON line in, one JSON line out.

It runs apart from pytest so that a case cannot take the test run down with it: the worker
lowers its own address-space limit (``RLIMIT_AS``) once graphm and PyTorch are loaded, so a
large allocation fails here as a MemoryError instead of swapping the machine, and the test
kills it when a case outlives its timeout or when it dies (a segfault).

A case names a public function of ``graphm.functional`` or a layer of ``graphm.nn`` and gives
its arguments, JSON-encoded (see :func:`decode`). The worker calls graphm, then the oracle:

* the graphm call raised: the answer carries the exception's type and message, and the test
  checks that it is a ValueError or TypeError that names an argument;
* the graphm call returned: PyTorch makes the same call on the same values (layers on the
  ``meta`` device, which allocates nothing) and the answer says whether both agree.  Where
  PyTorch refuses an input that graphm accepts, :mod:`graphm.spec` (the plain-loop reference)
  is the oracle for the convolutions; for the other ops the answer says so and the test fails.
"""
import inspect
import json
import math
import os
import traceback
import resource
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as TF  # noqa: E402

import graphm  # noqa: E402
import graphm.functional as F  # noqa: E402
from graphm import nn, spec  # noqa: E402

# The bound on array sizes (graphm.set_max_elements) is the contract's "sane bound": lowered
# here so that everything graphm lets through fits under the address-space limit below.
MAX_ELEMENTS = 2 ** 22
HEADROOM = 768 * 2 ** 20            # bytes of address space beyond what the loaded worker maps


# ---------------------------------------------------------------------------------------------
# Decoding a case: JSON has no tuples, arrays or NaN, so they come as one-key objects.
# ---------------------------------------------------------------------------------------------

def make_array(shape, dtype, fill, seed, layout):
    """A deterministic array: ``fill`` is normal, zeros, nan, inf, -inf, huge or classes:K."""
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    if fill.startswith("classes:"):
        array = rng.integers(0, max(int(fill.split(":")[1]), 1), size=shape)
        return array.astype(dtype)
    array = rng.standard_normal(shape)
    if fill == "zeros":
        array[...] = 0
    elif fill in ("nan", "inf", "-inf") and array.size:
        flat = array.reshape(-1)
        flat[rng.integers(0, flat.size, size=max(1, flat.size // 4))] = float(fill)
    elif fill == "huge":
        array *= 1e37
    array = array.astype(dtype)
    if layout == "fortran":
        array = np.asfortranarray(array)
    elif layout == "strided" and array.ndim:
        # the same values, reached through a view with a step of 2 along the last axis
        wide = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
        wide[..., ::2] = array
        array = wide[..., ::2]
    elif layout == "reversed" and array.ndim:
        array = np.ascontiguousarray(array[..., ::-1])[..., ::-1]
    return array


def decode(value):
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        (tag, payload), = value.items()
        if tag == "tuple":
            return tuple(decode(v) for v in payload)
        if tag == "array":
            return make_array(**payload)
        if tag == "float":
            return float(payload)
        if tag == "int64":
            return np.int64(payload)
        if tag == "ndarray":
            return np.array(payload)
        raise ValueError(f"unknown tag {tag!r}")
    return value


# ---------------------------------------------------------------------------------------------
# The oracle: the same call in PyTorch
# ---------------------------------------------------------------------------------------------

def to_torch(value):
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True))
    if isinstance(value, (tuple, list)):
        return type(value)(to_torch(v) for v in value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _rank(fn, kwargs):
    digit = fn.rstrip("d")[-1]
    if digit.isdigit():
        return int(digit)
    return np.asarray(kwargs["weight"]).ndim - 2


def _conv_name(fn, kwargs):
    base = "conv_transpose" if fn.startswith("conv_transpose") else "conv"
    return f"{base}{_rank(fn, kwargs)}d"


# Where graphm accepts more than PyTorch by design, the oracle is asked in PyTorch's terms:
# a 1-d NumPy integer array for a stride (graphm reads it as a list) and int32 class labels.
GEOMETRY = ("kernel_size", "stride", "padding", "dilation", "output_padding", "groups")


def torch_call(fn, kwargs):
    """PyTorch's answer for graphm's ``fn(**kwargs)``: an array or a tuple of arrays."""
    t = {k: to_torch(v) for k, v in kwargs.items()}
    for name in ("input_shape", "weight_shape", "bias_shape"):
        if isinstance(kwargs.get(name), (int, np.integer)):
            kwargs = {**kwargs, name: (int(kwargs[name]),)}   # an int is a 1-d shape (NumPy)
    for name in GEOMETRY:
        if isinstance(kwargs.get(name), np.ndarray):
            t[name] = kwargs[name].tolist()
    if isinstance(kwargs.get("target"), np.ndarray) and kwargs["target"].dtype.kind in "iu":
        t["target"] = t["target"].long()
    if fn in ("conv", "conv1d", "conv2d", "conv3d", "conv_transpose", "conv_transpose1d",
              "conv_transpose2d", "conv_transpose3d"):
        return getattr(TF, _conv_name(fn, kwargs))(**t)
    if fn in ("conv_backward", "conv_transpose_backward"):
        forward = getattr(TF, _conv_name(fn, kwargs))
        x = t.pop("input").requires_grad_()
        w = t.pop("weight").requires_grad_()
        g = t.pop("grad_output")
        b = torch.zeros(w.shape[1] * t.get("groups", 1) if "transpose" in fn else w.shape[0],
                        dtype=w.dtype, requires_grad=True)
        y = forward(x, w, b, **t)
        if y.shape != g.shape:
            raise ValueError(f"grad_output has shape {tuple(g.shape)}, output {tuple(y.shape)}")
        y.backward(g)
        return x.grad, w.grad, b.grad
    if fn == "conv_weight_grad":
        # the weight's gradient of the forward convolution, by autograd (torch.nn.grad's
        # conv*_weight takes no string padding)
        rank = len(kwargs["weight_shape"]) - 2
        w = torch.zeros(tuple(kwargs["weight_shape"]), dtype=t["input"].dtype,
                        requires_grad=True)
        y = getattr(TF, f"conv{rank}d")(
            t["input"], w, **{k: t[k] for k in ("stride", "padding", "dilation", "groups")
                              if k in t})
        g = t["grad_output"]
        lead = y.ndim - rank                  # 1 unbatched, 2 batched
        short = [full - given for full, given in zip(y.shape[lead:], g.shape[lead:])]
        if (y.ndim == g.ndim and y.shape[:lead] == g.shape[:lead] and len(short) == rank
                and min(short, default=0) >= 0):
            # documented: an axis of grad_output may stop short of the output at its high end
            # (the cropped outputs get no gradient), i.e. zeros there
            g = TF.pad(g, [n for extra in reversed(short) for n in (0, extra)])
        if y.shape != g.shape:
            raise ValueError("grad_output does not have the output's shape")
        y.backward(g)
        return w.grad
    if fn in ("conv_output_shape", "conv_transpose_output_shape"):
        transposed = "transpose" in fn
        x = torch.empty(tuple(kwargs["input_shape"]), device="meta")
        w = torch.empty(tuple(kwargs["weight_shape"]), device="meta")
        b = kwargs.get("bias_shape")
        b = None if b is None else torch.empty(tuple(b), device="meta")
        rank = len(kwargs["weight_shape"]) - 2
        op = getattr(TF, f"conv_transpose{rank}d" if transposed else f"conv{rank}d")
        rest = {k: t[k] for k in t if k not in ("input_shape", "weight_shape", "bias_shape",
                                                 "rank", "dtype")}
        return np.array(op(x, w, b, **rest).shape)
    if fn == "linear_backward":
        x = t["input"].requires_grad_()
        w = t["weight"].requires_grad_()
        y = TF.linear(x, w)
        if y.shape != t["grad_output"].shape:
            raise ValueError("grad_output does not have the output's shape")
        y.backward(t["grad_output"])
        return x.grad, w.grad, t["grad_output"].reshape(-1, w.shape[0]).sum(0)
    for name in ("beta", "threshold", "label_smoothing"):
        if isinstance(t.get(name), int) and not isinstance(t[name], bool):
            t[name] = float(t[name])       # PyTorch takes a big int here only as a float
    if fn in ("softmax", "log_softmax") and t.get("dim") is None:
        # graphm follows PyTorch's legacy implicit dim (0 for ndim 0, 1 and 3, else 1)
        t["dim"] = torch.nn.functional._get_softmax_dim(fn, t["input"].ndim, 3)
    return getattr(TF, fn)(**t)


def as_arrays(result):
    if isinstance(result, torch.Tensor):
        return [result.detach().numpy()]
    if isinstance(result, np.ndarray):
        return [result]
    if isinstance(result, (tuple, list)):
        return [a for r in result for a in as_arrays(r)]
    if isinstance(result, (int, float, np.generic)):
        return [np.asarray(result)]
    if isinstance(result, torch.Size):
        return [np.array(result)]
    raise TypeError(f"unexpected result type {type(result).__name__}")


def mismatch(actual, expected):
    """None when the results agree, else a sentence saying where they differ."""
    actual, expected = as_arrays(actual), as_arrays(expected)
    if len(actual) != len(expected):
        return f"{len(actual)} results, the oracle gives {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        a, e = np.asarray(a), np.asarray(e)
        if a.shape != e.shape:
            return f"result {i} has shape {a.shape}, the oracle's {e.shape}"
        if e.dtype.kind in "iub":
            if not np.array_equal(a, e):
                return f"result {i}: integers differ"
            continue
        if a.dtype != e.dtype:
            return f"result {i} has dtype {a.dtype}, the oracle's {e.dtype}"
        if not (np.array_equal(np.isnan(a), np.isnan(e))
                and np.array_equal(np.isposinf(a), np.isposinf(e))
                and np.array_equal(np.isneginf(a), np.isneginf(e))):
            return f"result {i}: NaN or infinities at different places"
        finite = np.isfinite(e)
        a, e = a[finite].astype(np.float64), e[finite].astype(np.float64)
        tol = 2e-4 if actual[i].dtype == np.float32 else 1e-10
        scale = max(1.0, float(np.abs(e).max(initial=0.0)))
        if not np.allclose(a, e, rtol=tol, atol=tol * scale):
            return f"result {i}: largest difference {np.abs(a - e).max():.3g} (scale {scale:.3g})"
    return None


SPEC = {"conv": spec.conv, "conv1d": spec.conv, "conv2d": spec.conv, "conv3d": spec.conv,
        "conv_transpose": spec.conv_transpose, "conv_transpose1d": spec.conv_transpose,
        "conv_transpose2d": spec.conv_transpose, "conv_transpose3d": spec.conv_transpose,
        "conv_backward": spec.conv_backward, "conv_transpose_backward": spec.conv_transpose_backward}


def huge_geometry(kwargs, limit=2 ** 20):
    """Whether a stride, padding, dilation or output_padding has an entry above ``limit``."""
    for name in GEOMETRY:
        value = kwargs.get(name)
        entries = value if isinstance(value, (tuple, list, np.ndarray)) else [value]
        if any(isinstance(v, (int, np.integer)) and abs(int(v)) > limit
               for v in np.asarray(entries, dtype=object).reshape(-1)):
            return True
    return False


def layer_oracle(name, kwargs):
    """PyTorch's layer of the same name on the meta device: its parameter shapes."""
    cls = getattr(torch.nn, name)
    if "device" in inspect.signature(cls).parameters:
        kwargs = {**kwargs, "device": "meta"}
    layer = cls(**kwargs)
    return [np.array(p.shape) for p in layer.parameters()]


def run(case):
    fn, kwargs = case["fn"], {k: decode(v) for k, v in case["kwargs"].items()}
    layer = fn.startswith("nn.")
    target = getattr(nn, fn[3:]) if layer else getattr(F, fn)
    try:
        result = target(**kwargs)
    except Exception as error:              # noqa: BLE001 - the test judges the type
        return {"status": "raised", "type": type(error).__name__, "message": str(error),
                "value_or_type_error": isinstance(error, (ValueError, TypeError))}
    if layer:
        result = [np.array(p.shape) for p in result.parameters()]
    elif fn.endswith("_output_shape"):
        result = np.array(result)
    answer = {"status": "returned"}
    any_nonfinite = any(isinstance(v, np.ndarray) and v.dtype.kind == "f"
                        and not np.isfinite(v).all() for v in kwargs.values())
    try:
        if layer:
            expected = layer_oracle(fn[3:], kwargs)
        elif fn in SPEC and (any_nonfinite or huge_geometry(kwargs)):
            # the documented semantics at padded taps are the spec's (PyTorch is not
            # consistent there), so non-finite values are judged against the spec; and
            # PyTorch's conv_transpose dies of SIGFPE at a stride of 2**31 - 1
            raise _UseSpec
        else:
            expected = torch_call(fn, kwargs)
        answer["oracle"] = "torch"
    except _UseSpec:
        expected = SPEC[fn](**kwargs)
        answer["oracle"] = "spec"
    except RuntimeError as error:
        if fn == "avg_pool3d" and "smaller than kernel size" in str(error):
            # PyTorch's avg_pool3d alone refuses an input smaller than the kernel, where its
            # avg_pool1d/2d (and graphm) clip the windows: judged by the plain loops below
            expected = avg_pool_reference(**kwargs)
        elif fn == "conv_weight_grad":
            # PyTorch's autograd oracle runs the forward convolution, whose output a huge
            # padding makes too large (or computes in 32 bits); graphm only visits the
            # positions grad_output holds, and so do the plain loops below
            expected = conv_weight_grad_reference(**kwargs)
        else:
            return {**answer, "oracle_refused": f"RuntimeError: {error}"}
        answer["oracle"] = "reference loops"
    except Exception as error:              # noqa: BLE001
        if fn not in SPEC:
            answer["oracle_refused"] = f"{type(error).__name__}: {error}"
            return answer
        expected = SPEC[fn](**kwargs)
        answer["oracle"] = "spec"
    answer["mismatch"] = mismatch(result, expected)
    return answer


def avg_pool_reference(input, kernel_size, stride=None, padding=0, ceil_mode=False,
                       count_include_pad=True, divisor_override=None):
    """Average pooling of any rank by loops over the output, with PyTorch's rules: the output
    size, the window clipped to the padded input (the count_include_pad divisor), then to the
    input itself (the values summed and the other divisor)."""
    dims = 3
    batched = input.ndim == dims + 2
    x = input if batched else input[None]
    per_axis = (lambda v: tuple(v) * (dims if len(v) == 1 else 1)
                if isinstance(v, (tuple, list)) else (v,) * dims)
    k = per_axis(kernel_size)
    s = k if stride is None or stride == () else per_axis(stride)
    p = per_axis(padding)
    sizes = []
    for n, kk, ss, pp in zip(x.shape[2:], k, s, p):
        out = (n + 2 * pp - kk + (ss - 1 if ceil_mode else 0)) // ss + 1
        if ceil_mode and (out - 1) * ss >= n + pp:
            out -= 1
        sizes.append(out)
    y = np.zeros(x.shape[:2] + tuple(sizes), x.dtype)
    for o in np.ndindex(*sizes):
        start = [oo * ss - pp for oo, ss, pp in zip(o, s, p)]
        padded_end = [min(st + kk, n + pp) for st, kk, n, pp in zip(start, k, x.shape[2:], p)]
        pool = math.prod(e - b for b, e in zip(start, padded_end))
        lo = [max(b, 0) for b in start]
        hi = [min(e, n) for e, n in zip(padded_end, x.shape[2:])]
        window = x[(slice(None), slice(None)) + tuple(slice(a, b) for a, b in zip(lo, hi))]
        count = divisor_override or (pool if count_include_pad else window[0, 0].size)
        y[(slice(None), slice(None)) + o] = window.sum(axis=(2, 3, 4)) / count
    return y if batched else y[0]


def conv_weight_grad_reference(input, weight_shape, grad_output, stride=1, padding=0,
                               dilation=1, groups=1):
    """K_w by loops over grad_output's positions and the kernel's taps (integer geometry):
    W[o, c, k] = sum over n, i of g[n, o, i] * x[n, group(o) * C_in/G + c, i*s - p + k*d]."""
    rank = len(weight_shape) - 2
    x = input if input.ndim == rank + 2 else input[None]
    g = grad_output if grad_output.ndim == rank + 2 else grad_output[None]
    axis = (lambda v: tuple(v) * (rank if len(v) == 1 else 1)
            if isinstance(v, (tuple, list)) else (int(v),) * rank)
    s, p, d = axis(stride), axis(padding), axis(dilation)
    out_channels, per_group = weight_shape[0], weight_shape[1]
    w = np.zeros(weight_shape, np.float64)
    for o in range(out_channels):
        first = (o // (out_channels // groups)) * per_group
        for i in np.ndindex(*g.shape[2:]):
            for k in np.ndindex(*weight_shape[2:]):
                at = [ii * ss - pp + kk * dd for ii, ss, pp, kk, dd in zip(i, s, p, k, d)]
                if all(0 <= a < n for a, n in zip(at, x.shape[2:])):
                    w[(o, slice(None)) + k] += np.einsum(
                        "n,nc->c", g[(slice(None), o) + i].astype(np.float64),
                        x[(slice(None), slice(first, first + per_group)) + tuple(at)])
    return w.astype(input.dtype)


class _UseSpec(Exception):
    pass


def main():
    graphm.set_max_elements(MAX_ELEMENTS)
    graphm.set_num_threads(2)
    # Start the OpenMP pools (graphm's and PyTorch's) before the limit: their threads' stacks
    # are address space too.
    x, w = np.ones((2, 4, 8, 8), np.float32), np.ones((4, 4, 3, 3), np.float32)
    F.conv_backward(F.conv2d(x, w), x, w)
    TF.conv2d(torch.from_numpy(x), torch.from_numpy(w)).sum()
    with open("/proc/self/status") as status:
        mapped = next(int(line.split()[1]) * 1024 for line in status
                      if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (mapped + HEADROOM, mapped + HEADROOM))
    print(json.dumps({"ready": True, "limit_bytes": mapped + HEADROOM}), flush=True)
    for line in sys.stdin:
        try:
            answer = run(json.loads(line))
        except MemoryError as error:       # a case that was not caught by graphm's bound
            answer = {"status": "raised", "type": "MemoryError", "message": str(error),
                      "value_or_type_error": False}
        except Exception:                  # noqa: BLE001 - a bug in the worker or its oracle
            answer = {"status": "worker_error", "worker_error": traceback.format_exc()}
        print(json.dumps(answer, default=str), flush=True)


if __name__ == "__main__":
    main()
