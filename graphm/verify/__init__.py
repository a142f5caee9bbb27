r"""graphm.verify: what every input in a box can make a network compute, soundly bounded.

Two interpretations of the same program, beside evaluating it and differentiating it:

* :func:`ibp` (interval bound propagation) runs the program on boxes: each op's ``interval``
  rule (beside its shape, forward, VJP and JVP rules in :mod:`graphm.ops`) maps a box on its
  input to a box on its output.
* :func:`crown` pulls linear bounds backward through the program, as a VJP pulls gradients:
  through a convolution by a transposed convolution, through a ReLU by its linear relaxation.

Both are **sound in floating point**: the bounds contain every output the program computes,
in its own float32 or float64 arithmetic, for every input in the box (each rule charges the
rounding error it can make and rounds its bounds outward; :mod:`graphm.ops.interval` and
:mod:`graphm.verify.crown` give the argument). :func:`certify` proves that a classifier keeps
its label on an L∞ ball::

    from graphm.verify import certify, crown, ibp
    bounds = crown(model, x - 0.01, x + 0.01)            # Bounds(lower, upper) of the logits
    result = certify(model, x, labels, eps=0.01)          # result.certified, result.margins
"""
from graphm.ops.interval import Bounds, NoIntervalRule
from graphm.verify.certify import (Certificate, certify, certify_box, margin_spec,
                                   plot_certified_accuracy)
from graphm.verify.crown import crown, linear_bounds
from graphm.verify.ibp import ibp

__all__ = ["Bounds", "NoIntervalRule", "ibp", "crown", "linear_bounds", "certify",
           "certify_box", "Certificate", "margin_spec", "plot_certified_accuracy"]
