"""Benchmark graphm's convolution kernels against PyTorch, in one process, at one thread count.

For each case (float32, batched 2-d) it times

* ``conv2d`` and ``conv_transpose2d`` forward: graphm.functional vs torch.nn.functional, and
* forward + backward: graphm's forward then ``conv_backward`` / ``conv_transpose_backward`` (all
  three gradients) vs PyTorch's forward then ``torch.autograd.grad(y, (x, w, b), g)``,

and prints the medians, graphm/PyTorch time ratios (below 1 means graphm is faster), graphm's
forward GFLOP/s and graphm's speedup from one thread to ``--threads`` threads.

The transposed cases swap the roles of the convolution cases: the input has the shape of that
convolution's output, the weight is ``(O, C, k, k)`` (PyTorch's transposed layout, in = O,
out = C), and ``output_padding`` is chosen so the output has the convolution's input size. This
is exactly the op that computes that convolution's input gradient.

Usage::

    python benchmarks/bench_conv.py                     # 2 threads, table on stdout
    python benchmarks/bench_conv.py --threads 4 --repeat 30 --json bench.json

This is a script, not a test: nothing here asserts a speed.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

import graphm
import graphm.functional as gf
from graphm.spec import conv_out_spatial, conv_transpose_out_spatial


@dataclass(frozen=True)
class Case:
    """A square 2-d convolution: (N, C, size, size) input, (O, C, k, k) weight."""

    name: str
    batch: int
    in_channels: int
    size: int
    out_channels: int
    kernel: int
    stride: int
    padding: int


CASES = [
    Case("lenet", batch=64, in_channels=1, size=28, out_channels=8, kernel=5, stride=1, padding=2),
    Case("mid", batch=32, in_channels=16, size=32, out_channels=32, kernel=3, stride=1, padding=1),
    Case("stride2", batch=32, in_channels=32, size=32, out_channels=64, kernel=3, stride=2,
         padding=1),
]


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def median_seconds(function, repeat, min_sample_seconds=0.02):
    """Median time of one call of ``function``, in seconds.

    Warm up first (first calls allocate, fault pages in and start thread pools). Then each of the
    ``repeat`` samples runs the function enough times to last about ``min_sample_seconds``, so
    that short calls are not drowned in timer resolution; the median resists stray outliers.
    """
    function()
    start = time.perf_counter()
    function()
    one_call = max(time.perf_counter() - start, 1e-7)
    calls_per_sample = max(1, int(min_sample_seconds / one_call))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls_per_sample):
            function()
        samples.append((time.perf_counter() - start) / calls_per_sample)
    return statistics.median(samples)


def set_threads(n):
    """Give graphm and PyTorch the same thread count."""
    graphm.set_num_threads(n)
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------------
# The problems: arrays and the four callables to time for each (case, op)
# --------------------------------------------------------------------------------------------

def conv2d_problem(case, rng):
    """Arrays, options and callables for the convolution of ``case``."""
    out_size = conv_out_spatial(case.size, case.kernel, case.stride, case.padding)
    x = rng.standard_normal((case.batch, case.in_channels, case.size, case.size), np.float32)
    w = rng.standard_normal((case.out_channels, case.in_channels, case.kernel, case.kernel),
                            np.float32)
    b = rng.standard_normal(case.out_channels, np.float32)
    g = rng.standard_normal((case.batch, case.out_channels, out_size, out_size), np.float32)
    options = dict(stride=case.stride, padding=case.padding)

    def graphm_forward():
        return gf.conv2d(x, w, b, **options)

    def graphm_forward_backward():
        gf.conv2d(x, w, b, **options)
        return gf.conv_backward(g, x, w, **options)

    torch_forward, torch_forward_backward = torch_callables(F.conv2d, x, w, b, g, options)
    # Multiply-adds of the convolution, counted over every output element and kernel tap.
    flops = 2 * case.batch * case.out_channels * out_size ** 2 * case.in_channels * case.kernel ** 2
    shapes = dict(input=x.shape, weight=w.shape, output=g.shape)
    return shapes, flops, graphm_forward, graphm_forward_backward, torch_forward, \
        torch_forward_backward


def conv_transpose2d_problem(case, rng):
    """The transposed convolution that undoes the geometry of ``case`` (roles swapped)."""
    in_size = conv_out_spatial(case.size, case.kernel, case.stride, case.padding)
    # The stride's floor forgets part of the size; output_padding gives it back.
    output_padding = case.size - conv_transpose_out_spatial(in_size, case.kernel, case.stride,
                                                            case.padding)
    x = rng.standard_normal((case.batch, case.out_channels, in_size, in_size), np.float32)
    w = rng.standard_normal((case.out_channels, case.in_channels, case.kernel, case.kernel),
                            np.float32)
    b = rng.standard_normal(case.in_channels, np.float32)
    g = rng.standard_normal((case.batch, case.in_channels, case.size, case.size), np.float32)
    options = dict(stride=case.stride, padding=case.padding, output_padding=output_padding)

    def graphm_forward():
        return gf.conv_transpose2d(x, w, b, **options)

    def graphm_forward_backward():
        gf.conv_transpose2d(x, w, b, **options)
        return gf.conv_transpose_backward(g, x, w, case.stride, case.padding, output_padding, 1, 1)

    torch_forward, torch_forward_backward = torch_callables(F.conv_transpose2d, x, w, b, g,
                                                            options)
    flops = 2 * case.batch * case.out_channels * in_size ** 2 * case.in_channels * case.kernel ** 2
    shapes = dict(input=x.shape, weight=w.shape, output=g.shape)
    return shapes, flops, graphm_forward, graphm_forward_backward, torch_forward, \
        torch_forward_backward


def torch_callables(torch_op, x, w, b, g, options):
    """PyTorch's forward (no autograd bookkeeping) and forward + all three gradients."""
    x_t, w_t, b_t = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    g_t = torch.from_numpy(g)

    def torch_forward():
        with torch.no_grad():
            return torch_op(x_t, w_t, b_t, **options)

    def torch_forward_backward():
        y = torch_op(x_t, w_t, b_t, **options)
        return torch.autograd.grad(y, (x_t, w_t, b_t), g_t)

    return torch_forward, torch_forward_backward


def max_relative_difference(graphm_result, torch_result):
    """Largest |graphm − torch| relative to torch's largest magnitude, over a list of arrays."""
    worst = 0.0
    for ours, theirs in zip(graphm_result, torch_result):
        theirs = theirs.detach().numpy()
        worst = max(worst, float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30)))
    return worst


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------

def measure(case, op_name, make_problem, threads, repeat):
    shapes, flops, graphm_fwd, graphm_fwd_bwd, torch_fwd, torch_fwd_bwd = make_problem(
        case, np.random.default_rng(0))

    # Not a test, but a benchmark of wrong results would be worthless: compare once.
    set_threads(threads)
    difference = max(max_relative_difference([graphm_fwd()], [torch_fwd()]),
                     max_relative_difference(graphm_fwd_bwd(), torch_fwd_bwd()))

    set_threads(1)
    graphm_fwd_bwd_1 = median_seconds(graphm_fwd_bwd, repeat)
    set_threads(threads)
    figures = dict(
        graphm_fwd=median_seconds(graphm_fwd, repeat),
        torch_fwd=median_seconds(torch_fwd, repeat),
        graphm_fwd_bwd=median_seconds(graphm_fwd_bwd, repeat),
        torch_fwd_bwd=median_seconds(torch_fwd_bwd, repeat),
    )
    return dict(
        case=case.name,
        op=op_name,
        shapes={key: list(value) for key, value in shapes.items()},
        threads=threads,
        graphm_fwd_ms=1e3 * figures["graphm_fwd"],
        torch_fwd_ms=1e3 * figures["torch_fwd"],
        fwd_ratio=figures["graphm_fwd"] / figures["torch_fwd"],
        graphm_fwd_bwd_ms=1e3 * figures["graphm_fwd_bwd"],
        torch_fwd_bwd_ms=1e3 * figures["torch_fwd_bwd"],
        fwd_bwd_ratio=figures["graphm_fwd_bwd"] / figures["torch_fwd_bwd"],
        graphm_fwd_gflops=flops / figures["graphm_fwd"] / 1e9,
        graphm_fwd_bwd_ms_1_thread=1e3 * graphm_fwd_bwd_1,
        graphm_thread_speedup=graphm_fwd_bwd_1 / figures["graphm_fwd_bwd"],
        max_relative_difference=difference,
    )


def machine_info():
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:      # not on Linux
        usable_cpus = os.cpu_count()
    return dict(
        cpus=os.cpu_count(),
        usable_cpus=usable_cpus,
        processor=platform.processor() or platform.machine(),
        python=platform.python_version(),
        numpy=np.__version__,
        torch=torch.__version__,
        graphm=graphm.__version__,
        graphm_openmp=graphm.openmp_enabled(),
    )


def print_table(results, threads):
    columns = [
        ("case", "case", "{}"),
        ("op", "op", "{}"),
        ("graphm fwd ms", "graphm_fwd_ms", "{:.2f}"),
        ("torch fwd ms", "torch_fwd_ms", "{:.2f}"),
        ("ratio", "fwd_ratio", "{:.2f}"),
        ("graphm f+b ms", "graphm_fwd_bwd_ms", "{:.2f}"),
        ("torch f+b ms", "torch_fwd_bwd_ms", "{:.2f}"),
        ("ratio", "fwd_bwd_ratio", "{:.2f}"),
        ("graphm GFLOP/s", "graphm_fwd_gflops", "{:.1f}"),
        (f"1->{threads} thr f+b", "graphm_thread_speedup", "{:.2f}x"),
    ]
    rows = [[title for title, _, _ in columns]]
    rows += [[fmt.format(result[key]) for _, key, fmt in columns] for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for index, row in enumerate(rows):
        # Text columns left-aligned, numbers right-aligned.
        print("  ".join(cell.ljust(width) if column < 2 else cell.rjust(width)
                        for column, (cell, width) in enumerate(zip(row, widths))))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for graphm and PyTorch alike (default 2)")
    parser.add_argument("--repeat", type=int, default=15,
                        help="timed samples per figure; the median is reported (default 15)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    parser.add_argument("--cases", nargs="+", choices=[case.name for case in CASES],
                        default=[case.name for case in CASES], help="run only these cases")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeat < 1:
        parser.error("--threads and --repeat must be positive")

    machine = machine_info()
    print(f"machine: {machine['cpus']} cores ({machine['usable_cpus']} usable), "
          f"{machine['processor']}; graphm {machine['graphm']} openmp_enabled="
          f"{machine['graphm_openmp']}; torch {machine['torch']}; numpy {machine['numpy']}; "
          f"python {machine['python']}")
    print(f"float32, {args.threads} threads for both, median of {args.repeat}; "
          f"ratio = graphm time / torch time (< 1: graphm faster); f+b = forward + backward\n")

    results = []
    for case in (case for case in CASES if case.name in args.cases):
        for op_name, make_problem in (("conv2d", conv2d_problem),
                                      ("conv_transpose2d", conv_transpose2d_problem)):
            results.append(measure(case, op_name, make_problem, args.threads, args.repeat))
    print_table(results, args.threads)

    for result in results:
        if result["max_relative_difference"] > 1e-3:
            print(f"WARNING: {result['case']} {result['op']}: graphm and torch differ by "
                  f"{result['max_relative_difference']:.2e} (relative)", file=sys.stderr)

    if args.json:
        with open(args.json, "w") as file:
            json.dump(dict(machine=machine, threads=args.threads, repeat=args.repeat,
                           cases=[asdict(case) for case in CASES if case.name in args.cases],
                           results=results), file, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
