r"""CROWN: linear bounds pulled backward through a program, as a gradient is.

IBP bounds each value by a box and forgets how values are related; the widths add up layer
after layer. CROWN keeps the relation. To bound a linear function :math:`C y` of the output it
carries a row of coefficients :math:`\Lambda` backward, node by node, with the invariant

.. math:: C y \;\ge\; \Lambda_z \cdot z + \beta \qquad \text{for the node } z
          \text{ reached so far,}

starting from :math:`\Lambda_y = C`, :math:`\beta = 0`. Through an affine node
:math:`z = W x + b` the invariant becomes :math:`\Lambda_x = W^\top \Lambda_z`,
:math:`\beta \mathrel{+}= \Lambda_z \cdot b`: the coefficients travel exactly as a gradient
does, by the op's VJP. **Through a convolution that is a transposed convolution** (graphm's
kernel :math:`K_{in}`, with the convolution's stride, padding, dilation and groups), through a
transposed convolution a convolution, through a linear layer :math:`W^\top`, through average
pooling its transpose: the adjoint table, run on coefficient rows instead of gradients (one row
per bounded quantity and sample, handed to the kernels as the batch).

Through a ReLU :math:`z = \max(x, 0)` with pre-activation bounds :math:`l \le x \le u`, a
linear relaxation takes its place (Zhang et al., 2018): for unstable neurons
(:math:`l < 0 < u`) the chord :math:`z \le a (x - l)`, :math:`a = u / (u - l)`, above, and
:math:`z \ge \alpha x` below, with the adaptive slope :math:`\alpha = 1` if :math:`u \ge -l`,
else :math:`0`; each coefficient picks the side that keeps the inequality (the chord for a
negative coefficient). Stable neurons are exact (:math:`z = x` or :math:`z = 0`). Max pooling
is bounded below by the window's entry with the largest lower bound, :math:`\max \ge x_j`, and
above by :math:`x_j` itself where that entry dominates its window (:math:`l_j \ge u_i`
for every other entry :math:`i`: the maximum is then :math:`x_j`) and by the constant
:math:`\max_i u_i` elsewhere (windows that overlap use the constant everywhere). An op with no
linear rule here (sigmoid, say) is concretized by its interval box, which is always sound.

At the input the rows meet the box: :math:`\min_{l \le x \le u} \Lambda x = \sum \min(\Lambda_i
l_i, \Lambda_i u_i)`. The pre-activation bounds :math:`l, u` of every ReLU come from the same
backward pass started at that ReLU's input (one row per unstable neuron, both signs),
intersected with the node's interval box; ``intermediate="ibp"`` uses the interval boxes only
(CROWN-IBP: much faster, looser).

**Sound in floating point.** The invariant is a statement about the values the program
computes, so every rounding on either side is charged to :math:`\beta`:

* the program's own rounding at an affine node, :math:`|\mathrm{fl}(Wx + b) - (Wx + b)| \le
  \gamma_{n+1}(|W| m + |b|)` with :math:`m = \max(|l|, |u|)` of its input, and at an
  elementwise add or multiply :math:`2u` times the output's magnitude;
* the rounding of the backward pass itself: the coefficients the kernels return differ from
  :math:`W^\top \Lambda` by at most :math:`\gamma_{n'} |W|^\top |\Lambda|`, and
  :math:`\sum_x |{\rm error}_x|\, m_x \le \gamma_{n'} \sum_z |\Lambda_z| (|W| m)_z`, one more
  forward pass of :math:`|W|` on :math:`m`; products that round (a negative coefficient times a
  chord slope, itself rounded up so that the chord stays above the ReLU) are charged
  :math:`2u |\cdot|\, m` the same way;
* the constant terms (:math:`\Lambda \cdot b`, the charges, the concretization) are summed in
  float64 with the error bound of a sum (:mod:`graphm.verify._sums`) and rounded down, and the
  result rounded outward into the program's dtype.
"""
from __future__ import annotations

import math

import numpy as np

from graphm import functional as F
from graphm.functional import pooling as Fpool
from graphm.functional._checks import per_axis
from graphm.ops.conv import _axes, _crop, _input_grad_geometry
from graphm.ops.interval import (
    Bounds,
    gamma,
    magnitude,
    round_down,
    round_up,
    unit_roundoff,
)
from graphm.verify._program import as_graph, check_box
from graphm.verify._sums import (add_down, nonnegative_dot_upper, sum_lower, sum_upper,
                                 to_dtype_down, to_dtype_up)
from graphm.verify.ibp import interval_values

__all__ = ["crown", "linear_bounds"]

#: Coefficient rows are pulled back in chunks of at most this many entries per node.
CHUNK_ENTRIES = 1 << 21

_AFFINE = ("conv", "conv_transpose", "linear", "avg_pool")
_RELAXED = ("relu",)


class _Crown:
    """The boxes of every node (refined for ReLU inputs) and the backward pass over them."""

    def __init__(self, graph, box, intermediate="crown"):
        if intermediate not in ("crown", "ibp"):
            raise ValueError(f"crown: intermediate must be 'crown' or 'ibp', got "
                             f"{intermediate!r}")
        if box.lower.ndim < 1:
            raise ValueError("crown: the input needs a batch axis first, got a 0-d box")
        self.graph = graph
        self.batch = box.lower.shape[0]
        self.dtype = graph.dtype
        self.u = unit_roundoff(self.dtype)
        self.tiny = float(np.finfo(self.dtype).tiny)
        self.steps = {step.index: step for step in graph.steps}
        self.order = [step.index for step in graph.steps]
        self._cache = {}
        self.refined = {}                     # node -> (count of refined neurons, per sample)
        self.to_refine = self._nodes_to_refine() if intermediate == "crown" else set()
        self.values = None
        self.values = interval_values(graph, box, "crown", refine=self._refine)

    # -- which intermediate bounds CROWN computes -------------------------------------------------

    def _nodes_to_refine(self):
        wanted = set()
        for step in self.graph.steps:
            if step.op.name in _RELAXED and step.inputs[0] is not None:
                wanted.add(step.inputs[0])
        skip = set()
        for index in wanted:
            step = self.steps.get(index)
            # one affine op on the input: its interval box is already exact (up to rounding)
            if step is None or (step.op.name in _AFFINE and step.inputs[0] == self.graph.input):
                skip.add(index)
        return wanted - skip

    def _refine(self, step, bounds, values):
        if step.index not in self.to_refine:
            return bounds
        self.values = values
        values[step.index] = bounds
        lower, upper = bounds
        if lower.ndim < 1 or lower.shape[0] != self.batch:
            return bounds
        unstable = (lower < 0) & (upper > 0)
        owners, positions = np.nonzero(unstable.reshape(self.batch, -1))
        count = len(owners)
        self.refined[step.index] = count / self.batch
        if count == 0:
            return bounds
        size = math.prod(step.shape[1:])
        signs = np.concatenate([np.ones(count, self.dtype), -np.ones(count, self.dtype)])
        all_owners = np.concatenate([owners, owners])
        all_positions = np.concatenate([positions, positions])

        def spec(start, stop):
            rows = np.zeros((stop - start, size), self.dtype)
            rows[np.arange(stop - start), all_positions[start:stop]] = signs[start:stop]
            return rows.reshape((stop - start,) + tuple(step.shape[1:]))

        found = self.backward(step.index, spec, all_owners)
        new_lower = to_dtype_down(found[:count], self.dtype)
        new_upper = -to_dtype_down(found[count:], self.dtype)
        lower, upper = lower.copy(), upper.copy()
        flat_lower, flat_upper = lower.reshape(self.batch, -1), upper.reshape(self.batch, -1)
        flat_lower[owners, positions] = np.maximum(flat_lower[owners, positions], new_lower)
        flat_upper[owners, positions] = np.minimum(flat_upper[owners, positions], new_upper)
        return Bounds(lower, upper)

    # -- the backward pass --------------------------------------------------------------------------

    def perturbed(self, index):
        return index is not None and isinstance(self.values.get(index), Bounds)

    def magnitude(self, index):
        key = ("magnitude", index)
        if key not in self._cache:
            self._cache[key] = magnitude(self.values[index])
        return self._cache[key]

    def backward(self, target, spec, owners):
        """Lower bounds (float64, one per row) on ``spec_row · value[target]`` of sample
        ``owners[row]``; ``spec(start, stop)`` makes rows start..stop."""
        largest = max([math.prod(s.shape[1:]) for s in self.graph.steps if s.index <= target]
                      + [math.prod(self.graph.input_shape[1:])])
        chunk = max(1, CHUNK_ENTRIES // max(largest, 1))
        found = np.empty(len(owners), np.float64)
        for start in range(0, len(owners), chunk):
            stop = min(len(owners), start + chunk)
            found[start:stop] = self._backward_rows(target, spec(start, stop), owners[start:stop])
        return found

    def _backward_rows(self, target, spec, owners):
        coefficients = {target: spec}
        beta = np.zeros(len(owners), np.float64)
        for index in reversed(self.order):
            if index > target or index not in coefficients:
                continue
            coefficient = coefficients.pop(index)
            step = self.steps[index]
            rule = _RULES.get(step.op.name)
            result = rule(self, step, coefficient, owners) if rule is not None else None
            if result is None:          # no linear rule: the node's box bounds it
                beta = add_down(beta, self.concretize(coefficient, self.values[index], owners))
                continue
            pieces, constant = result
            beta = add_down(beta, constant)
            for j, piece in pieces:
                if j in coefficients:   # a value read twice: the coefficients add, and round
                    total = coefficients[j] + piece
                    beta = add_down(beta, -self.rounding_charge(total, j, owners))
                    coefficients[j] = total
                else:
                    coefficients[j] = piece
        if self.graph.input in coefficients:
            beta = add_down(beta, self.concretize(coefficients[self.graph.input],
                                                  self.values[self.graph.input], owners))
        return beta

    def concretize(self, coefficient, bounds, owners):
        r""":math:`\min_{l \le x \le u} \Lambda x`, a lower bound per row."""
        lower, upper = bounds.lower[owners], bounds.upper[owners]
        c = coefficient.astype(np.float64)
        with np.errstate(invalid="ignore"):
            terms = np.where(c >= 0, c * lower, c * upper)
        terms = np.where(c == 0, 0.0, terms)                 # 0 * inf is 0 here
        return sum_lower(terms)

    def rounding_charge(self, computed, index, owners):
        r"""Upper bound on :math:`\sum |\text{exact} - \text{computed}|\, m` for coefficients
        produced by one rounded operation each (:math:`\le 2u|\text{computed}|` + underflow)."""
        m = self.magnitude(index)
        key = ("magnitude sum", index)
        if key not in self._cache:
            self._cache[key] = m.reshape(len(m), -1).sum(axis=1, dtype=np.float64) * (1 + 1e-9)
        scaled = nonnegative_dot_upper(np.abs(computed), m[owners])
        return (2 * self.u) * (1 + 1e-12) * scaled + 2 * self.tiny * self._cache[key][owners]

    def output_charge(self, step, coefficient, owners):
        """The program's rounding at an elementwise op: ``|fl(z) - z| <= 2u |fl(z)|``."""
        return self.rounding_charge(coefficient, step.index, owners)

    def affine_charge(self, step, x, coefficient, owners, abs_forward, terms_forward,
                      terms_backward, bias):
        r"""Upper bound (per row) on what the rounding of an affine node, forward in the program
        and backward in this pass, can change :math:`\Lambda \cdot z` by (module docstring)."""
        key = ("affine", step.index)
        if key not in self._cache:
            m = self.magnitude(x)
            g_n = float(gamma(terms_forward, self.dtype))
            wm = np.asarray(abs_forward(m), np.float64) * (1 + 2 * g_n) * (1 + 1e-12)
            wm += 4 * terms_forward * self.tiny
            g_f = float(gamma(terms_forward + 1, self.dtype))
            g_b = float(gamma(terms_backward, self.dtype))
            slack = (g_f + g_b) * wm + 8 * (terms_forward + 1) * self.tiny
            if bias is not None:
                slack = slack + g_f * np.abs(_channel_view(bias, step, wm.ndim)).astype(
                    np.float64)
            slack = to_dtype_up(slack * (1 + 1e-12), self.dtype)
            # the backward pass's own underflow, for every input coordinate it writes
            underflow = (4 * terms_backward * self.tiny
                         * m.reshape(len(m), -1).astype(np.float64).sum(axis=1)) * 2
            self._cache[key] = (slack, underflow)
        slack, underflow = self._cache[key]
        return nonnegative_dot_upper(np.abs(coefficient), slack[owners]) + underflow[owners]

    def bias_term(self, coefficient, bias, step):
        r"""A lower bound on ``Λ · b`` (the bias broadcast over the node's positions): the
        coefficients summed per channel first (in float64, off by at most
        :math:`\gamma_P \sum_p |\Lambda|`), then weighted by the bias."""
        if bias is None:
            return 0.0
        rows, channels = coefficient.shape[0], bias.shape[0]
        if step.op.name == "linear":       # the bias is on the last axis
            per_channel = coefficient.reshape(rows, -1, channels)
            axis = 1
        else:                              # (rows, C, *spatial)
            per_channel = coefficient.reshape(rows, channels, -1)
            axis = 2
        positions = per_channel.shape[axis]
        # in the coefficients' own dtype: sum of P terms off by at most γ_P Σ|Λ|, and the
        # computed Σ|Λ| is at most (1 + 2γ_P) short of the exact one
        sums = per_channel.sum(axis=axis).astype(np.float64)
        sizes = np.abs(per_channel).sum(axis=axis).astype(np.float64)
        g = float(gamma(positions + 1, self.dtype))
        g = g * (1 + 2 * g) * (1 + 1e-9)
        b = np.asarray(bias, np.float64)
        return sum_lower(sums * b) - sum_upper(sizes * (g * np.abs(b)) + 2 * positions
                                               * self.tiny * np.abs(b))


def _channel_view(bias, step, ndim):
    """The bias of a conv-like node shaped to broadcast over (rows, C, *spatial); of a linear
    node over (rows, ..., out)."""
    if step.op.name == "linear":
        return np.asarray(bias)
    return np.asarray(bias).reshape((-1,) + (1,) * (ndim - 2))


# ------------------------------------------------------------------------------------------------
# The backward rules: (coefficients for each perturbed input, constant lower bound), or None
# when the node has to be concretized by its box instead.
# ------------------------------------------------------------------------------------------------

def _known_weights(crown, step):
    x, weight, bias = step.inputs
    if not crown.perturbed(x) or crown.perturbed(weight) or crown.perturbed(bias):
        return None
    known = crown.values
    return x, known[weight], None if bias is None else known[bias]


def _known_conv_weights(crown, step):
    """``(x, weight, bias, attrs, x_shape)`` of a (transposed) convolution of a perturbed,
    batched input by known weights; None where CROWN falls back to the interval box."""
    found = _known_weights(crown, step)
    if found is None:
        return None
    x, weight, bias = found
    x_shape = crown.values[x].shape
    if len(x_shape) != weight.ndim:
        return None                                    # no batch axis
    return x, weight, bias, step.attrs, x_shape


def _conv(crown, step, coefficient, owners):
    found = _known_conv_weights(crown, step)
    if found is None:
        return None
    x, weight, bias, a, x_shape = found
    rows_shape = (len(owners),) + tuple(x_shape[1:])
    try:
        pairs, output_padding = _input_grad_geometry(rows_shape, weight.shape, coefficient.shape,
                                                     a["stride"], a["padding"], a["dilation"],
                                                     "conv")
    except NotImplementedError:
        return None
    # K_in: the transposed convolution with the forward convolution's geometry
    pulled = F.conv_transpose(coefficient, weight, None, a["stride"], pairs, output_padding,
                              a["groups"], a["dilation"])
    abs_weight = np.abs(weight)
    kernel = math.prod(weight.shape[2:])
    charge = crown.affine_charge(
        step, x, coefficient, owners,
        lambda m: F.conv(m, abs_weight, None, a["stride"], a["padding"], a["dilation"],
                         a["groups"]),
        terms_forward=math.prod(weight.shape[1:]),
        terms_backward=(weight.shape[0] // a["groups"]) * kernel, bias=bias)
    return [(x, pulled)], crown.bias_term(coefficient, bias, step) - charge


def _conv_transpose(crown, step, coefficient, owners):
    found = _known_conv_weights(crown, step)
    if found is None:
        return None
    x, weight, bias, a, x_shape = found
    rank = weight.ndim - 2
    # K_fwd: the convolution whose adjoint the transposed convolution is (as its VJP)
    _, _, low, high = _axes(x_shape, weight.shape, a["stride"], a["padding"],
                                 a["dilation"], "conv_transpose")
    extra = per_axis("conv_transpose", "output_padding", a["output_padding"], rank, "")
    pairs = tuple((lo, max(hi - e, 0)) for lo, hi, e in zip(low, high, extra))
    pulled = _crop(F.conv(coefficient, weight, None, a["stride"], pairs, a["dilation"],
                          a["groups"]), x_shape[-rank:])
    abs_weight = np.abs(weight)
    kernel = math.prod(weight.shape[2:])
    charge = crown.affine_charge(
        step, x, coefficient, owners,
        lambda m: F.conv_transpose(m, abs_weight, None, a["stride"], a["padding"],
                                   a["output_padding"], a["groups"], a["dilation"]),
        terms_forward=(weight.shape[0] // a["groups"]) * kernel,
        terms_backward=weight.shape[1] * kernel, bias=bias)
    return [(x, np.ascontiguousarray(pulled))], crown.bias_term(coefficient, bias, step) - charge


def _linear(crown, step, coefficient, owners):
    found = _known_weights(crown, step)
    if found is None:
        return None
    x, weight, bias = found
    if len(crown.values[x].shape) < 2:
        return None
    pulled = coefficient @ weight                        # (R, ..., out) @ (out, in)
    abs_weight = np.abs(weight)
    charge = crown.affine_charge(step, x, coefficient, owners,
                                 lambda m: F.linear(m, abs_weight),
                                 terms_forward=weight.shape[1], terms_backward=weight.shape[0],
                                 bias=bias)
    return [(x, pulled)], crown.bias_term(coefficient, bias, step) - charge


def _avg_pool(crown, step, coefficient, owners):
    x = step.inputs[0]
    a = dict(step.attrs)
    dims = a.pop("dims")
    x_shape = crown.values[x].shape
    if len(x_shape) != dims + 2:
        return None
    rows_shape = (len(owners),) + tuple(x_shape[1:])
    name = f"avg_pool{dims}d"
    geometry = Fpool.avg_pool_geometry(name, rows_shape, dims, a["kernel_size"], a.get("stride"),
                                       a.get("padding", 0), a.get("ceil_mode", False),
                                       a.get("divisor_override"))
    pulled = Fpool.avg_pool_backward(coefficient, rows_shape, geometry,
                                     a.get("count_include_pad", True), a.get("divisor_override"))
    kernel = math.prod(geometry.kernel_size)
    charge = crown.affine_charge(step, x, coefficient, owners,
                                 lambda m: np.abs(step.op.forward(m, dims, **a)[0]),
                                 terms_forward=kernel, terms_backward=kernel + 1, bias=None)
    return [(x, pulled)], -charge


def _same_batch(crown, x, step):
    shape = crown.values[x].shape
    return len(shape) >= 1 and len(step.shape) >= 1 and shape[0] == step.shape[0] == crown.batch


def _reshape(crown, step, coefficient, owners):
    x = step.inputs[0]
    if not _same_batch(crown, x, step):
        return None
    return [(x, coefficient.reshape((len(owners),) + tuple(crown.values[x].shape[1:])))], 0.0


def _permute(crown, step, coefficient, owners):
    x = step.inputs[0]
    dims = [int(d) % len(step.shape) for d in step.attrs["dims"]]
    if dims[0] != 0:
        return None
    inverse = tuple(int(d) for d in np.argsort(dims))
    return [(x, np.ascontiguousarray(np.transpose(coefficient, inverse)))], 0.0


def _alias(crown, step, coefficient, owners):
    return [(step.inputs[0], coefficient)], 0.0


def _neg(crown, step, coefficient, owners):
    return [(step.inputs[0], -coefficient)], 0.0


def _rows_of(crown, value, step, owners):
    """A known operand broadcast to the node's shape, one row per coefficient row."""
    return np.broadcast_to(value, step.shape)[owners]


def _add_sub(sign):
    def rule(crown, step, coefficient, owners):
        pieces, constant = [], 0.0
        for k, j in enumerate(step.inputs):
            factor = 1 if k == 0 else sign
            if crown.perturbed(j):
                if crown.values[j].shape != step.shape:     # a broadcast box: not this rule
                    return None
                pieces.append((j, coefficient if factor == 1 else -coefficient))
            else:
                known = _rows_of(crown, crown.values[j], step, owners).astype(np.float64)
                constant = constant + sum_lower(factor * coefficient.astype(np.float64) * known)
        return pieces, constant - crown.output_charge(step, coefficient, owners)
    return rule


def _scale(divide):
    def rule(crown, step, coefficient, owners):
        a, b = step.inputs
        if divide:
            if not crown.perturbed(a) or crown.perturbed(b):
                return None
            x, k = a, crown.values[b]
        elif crown.perturbed(a) and not crown.perturbed(b):
            x, k = a, crown.values[b]
        elif crown.perturbed(b) and not crown.perturbed(a):
            x, k = b, crown.values[a]
        else:
            return None
        if crown.values[x].shape != step.shape:
            return None
        factor = _rows_of(crown, k, step, owners)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            pulled = coefficient / factor if divide else coefficient * factor
        if not np.isfinite(pulled).all():
            return None
        charge = crown.output_charge(step, coefficient, owners) \
            + crown.rounding_charge(pulled, x, owners)
        return [(x, pulled)], -charge
    return rule


def _relu_relaxation(crown, index):
    """Per sample: lower slope α ∈ {0, 1}, upper (chord) slope rounded up, unstable mask."""
    key = ("relu", index)
    if key not in crown._cache:
        lower, upper = crown.values[index]
        dtype = lower.dtype
        unstable = (lower < 0) & (upper > 0)
        active = lower >= 0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            chord = round_up(upper / round_down(upper - lower))
        slope = np.where(unstable, chord, active.astype(dtype)).astype(dtype)
        alpha = np.where(unstable, upper >= -lower, active).astype(dtype)
        crown._cache[key] = (alpha, slope, unstable)
    return crown._cache[key]


def _relu(crown, step, coefficient, owners):
    x = step.inputs[0]
    alpha, slope, unstable = (v[owners] for v in _relu_relaxation(crown, x))
    negative = coefficient < 0
    pulled = np.where(negative, coefficient * slope, coefficient * alpha)
    # where the coefficient is negative and the neuron unstable, relu(x) <= a (x - l): the
    # intercept -a l goes to the constant, and the product coefficient * a rounded
    rows, entries = np.nonzero((negative & unstable).reshape(len(owners), -1))
    if len(rows) == 0:
        return [(x, pulled)], 0.0
    flat = (len(owners), -1)
    lower = crown.values[x].lower.reshape(len(crown.values[x].lower), -1)[owners[rows], entries]
    m = crown.magnitude(x).reshape(crown.batch, -1)[owners[rows], entries]
    intercept = (coefficient.reshape(flat)[rows, entries].astype(np.float64)
                 * slope.reshape(flat)[rows, entries].astype(np.float64) * -lower)
    rounded = np.abs(pulled.reshape(flat)[rows, entries]).astype(np.float64) * m
    n = pulled[0].size + 2
    g = float(gamma(n, np.float64)) * (1 + 1e-9)
    total = np.bincount(rows, intercept, len(owners))
    size = np.bincount(rows, np.abs(intercept), len(owners))
    charge = np.bincount(rows, rounded, len(owners)) * (2 * crown.u) * (1 + 2 * g + 1e-9) \
        + 2 * crown.tiny * np.bincount(rows, m, len(owners))
    constant = round_down(total - size * g * (1 + 2 * g) - charge * (1 + 1e-12))
    return [(x, pulled)], constant


def _max_pool_relaxation(crown, step):
    key = ("max_pool", step.index)
    if key not in crown._cache:
        x = step.inputs[0]
        a = dict(step.attrs)
        dims = a.pop("dims")
        lower, upper = crown.values[x]
        name = f"max_pool{dims}d"
        _, winners, geometry = Fpool.max_pool_with_indices(name, lower, dims, **a)
        top = step.op.forward(upper, dims, **a)[0]                 # max of the upper bounds
        overlapping = any(s < d * (k - 1) + 1 for k, s, d in
                          zip(geometry.kernel_size, geometry.stride, geometry.dilation))
        if overlapping:
            dominated = np.zeros(top.shape, bool)
        else:   # each entry is in one window: mask the winner, the rest's largest upper bound
            planes = math.prod(upper.shape[:-dims])
            others = upper.reshape(planes, -1).copy()
            others[np.arange(planes)[:, None], winners.reshape(planes, -1)] = -np.inf
            second = step.op.forward(others.reshape(upper.shape), dims, **a)[0]
            dominated = Fpool.max_pool_gather(lower, winners, dims) >= second
        crown._cache[key] = (winners, top, dominated, overlapping, dims, a)
    return crown._cache[key]


def _max_pool(crown, step, coefficient, owners):
    x = step.inputs[0]
    winners, top, dominated, overlapping, dims, a = _max_pool_relaxation(crown, step)
    if len(crown.values[x].shape) != dims + 2:
        return None
    keep = (coefficient >= 0) | dominated[owners]          # max >= x_j; max = x_j if dominant
    sent = np.where(keep, coefficient, coefficient.dtype.type(0))
    constant = sum_lower(np.where(keep, 0.0, coefficient.astype(np.float64)
                                  * top[owners].astype(np.float64)))    # max <= max_i u_i
    rows_shape = (len(owners),) + tuple(crown.values[x].shape[1:])
    geometry = Fpool.pool_geometry(f"max_pool{dims}d", rows_shape, dims, a["kernel_size"],
                                   a.get("stride"), a.get("padding", 0), a.get("dilation", 1),
                                   a.get("ceil_mode", False))
    pulled = Fpool.max_pool_backward(sent, winners[owners], rows_shape, geometry)
    if overlapping:                                        # winners shared: their sums round
        constant = constant - crown.rounding_charge(pulled, x, owners)
    return [(x, pulled)], constant


_RULES = {"conv": _conv, "conv_transpose": _conv_transpose, "linear": _linear,
          "avg_pool": _avg_pool, "reshape": _reshape, "permute": _permute, "alias": _alias,
          "neg": _neg, "add": _add_sub(1), "sub": _add_sub(-1), "mul": _scale(False),
          "div": _scale(True), "relu": _relu, "max_pool": _max_pool}


# ------------------------------------------------------------------------------------------------
# The public functions
# ------------------------------------------------------------------------------------------------

def linear_bounds(model, lower, upper, spec, *, params=None, intermediate="crown",
                  function="crown"):
    r"""Lower bounds on :math:`C_n\, y_n` for every sample :math:`n` and every row of its
    specification, :math:`y_n` the model's output on any input in the box.

    Parameters
    ----------
    model, lower, upper, params
        As for :func:`crown`.
    spec : ndarray, shape ``(N, M, *output_shape[1:])``
        :math:`M` rows of coefficients per sample (a margin :math:`e_y - e_j`, say).
    intermediate : {"crown", "ibp"}
        Where the ReLUs' pre-activation bounds come from.

    Returns
    -------
    ndarray of float64, shape (N, M)
        Exact lower bounds (rounded down).
    """
    box = check_box(lower, upper, function)
    graph = as_graph(model, box.lower, params, function)
    return _linear_bounds(graph, box, spec, intermediate)[0]


def _linear_bounds(graph, box, spec, intermediate):
    state = _Crown(graph, box, intermediate)
    out = state.values[graph.output]
    spec = np.asarray(spec)
    batch = state.batch
    if spec.shape[:1] != (batch,) or spec.shape[2:] != tuple(graph_output_shape(state)[1:]):
        raise ValueError(f"crown: spec must have shape (N, M, *output[1:]) = ({batch}, M, "
                         f"{', '.join(map(str, graph_output_shape(state)[1:]))}), got "
                         f"{spec.shape}")
    rows = spec.shape[1]
    flat = np.ascontiguousarray(spec.reshape((batch * rows,) + spec.shape[2:]), graph.dtype)
    owners = np.repeat(np.arange(batch), rows)
    if not isinstance(out, Bounds):                   # the output does not depend on the box
        exact = np.asarray(out, np.float64)[owners]
        found = sum_lower(flat.astype(np.float64) * exact)
    else:
        found = state.backward(graph.output, lambda start, stop: flat[start:stop], owners)
    return found.reshape(batch, rows), state


def graph_output_shape(state):
    out = state.values[state.graph.output]
    return out.shape if isinstance(out, Bounds) else np.shape(out)


def crown(model, lower, upper, *, params=None, intermediate="crown"):
    r"""Bounds on a model's output over a box of inputs by backward linear bound propagation
    (CROWN, Zhang et al. 2018), sound in floating point.

    Each output :math:`y_k` is bounded below by pulling the row :math:`e_k` backward through
    the program (and above by pulling :math:`-e_k`), as a VJP pulls a gradient: through a conv
    by a transposed convolution, through a ReLU by its linear relaxation (the chord above,
    the adaptive slope :math:`\alpha \in \{0, 1\}` below), through max pooling by the entry with
    the largest lower bound; the module docstring (:mod:`graphm.verify.crown`) has the rules
    and how every rounding is accounted for, so that the bounds contain every output the program
    computes, in its own arithmetic, for every input in the box.

    Parameters
    ----------
    model : graphm.nn.Module, CompiledModule or Program
        As for :func:`graphm.verify.ibp`; the input needs a batch axis first.
    lower, upper : ndarray
        The box, shaped like the model's input.
    params : dict, optional
        For a Program: the values of its params by name.
    intermediate : {"crown", "ibp"}
        Pre-activation bounds of the ReLUs by CROWN itself (default, as auto_LiRPA's
        ``method="CROWN"``; each is intersected with the node's interval box) or by interval
        propagation alone (CROWN-IBP: far fewer backward passes).

    Returns
    -------
    Bounds
        ``(lower, upper)`` of the output, in the model's dtype.

    Raises
    ------
    ValueError
        As :func:`graphm.verify.ibp`.
    """
    box = check_box(lower, upper, "crown")
    graph = as_graph(model, box.lower, params, "crown")
    out_shape = None
    for step in graph.steps:
        if step.index == graph.output:
            out_shape = step.shape
    if out_shape is None:          # the output is the input itself, or a known value
        return Bounds(box.lower, box.upper)
    if len(out_shape) < 1 or out_shape[0] != box.lower.shape[0]:
        raise ValueError(f"crown: the output's first axis must be the batch axis; the input "
                         f"has shape {box.lower.shape}, the output {out_shape}")
    batch, size = out_shape[0], math.prod(out_shape[1:])
    eye = np.eye(size, dtype=graph.dtype).reshape((size,) + tuple(out_shape[1:]))
    spec = np.broadcast_to(np.concatenate([eye, -eye]), (batch, 2 * size) + tuple(out_shape[1:]))
    found, _ = _linear_bounds(graph, box, spec, intermediate)
    low = to_dtype_down(found[:, :size], graph.dtype).reshape(out_shape)
    high = (-to_dtype_down(found[:, size:], graph.dtype)).reshape(out_shape)
    return Bounds(low, high)
