"""Benchmark graphm's convolution kernels against PyTorch, in one process, at one thread count.

For each case and element type it times

* ``conv`` and ``conv_transpose`` forward: graphm.functional vs torch.nn.functional, and
* forward + backward: graphm's forward then ``conv_backward`` / ``conv_transpose_backward`` (all
  three gradients) vs PyTorch's forward then ``torch.autograd.grad(y, (x, w, b), g)``,

and prints the medians, graphm/PyTorch time ratios (below 1 means graphm is faster), graphm's
forward GFLOP/s and graphm's speedup from one thread to ``--threads`` threads; then NumPy's
sgemm GFLOP/s in the same run (the practical ceiling) and, with ``--small``, microseconds per
call of two classroom-sized convolutions.

The cases: lenet, mid and stride2 (2-d, the default) and, with ``--cases all``, a 3-d conv
(N=4, C=8, 16^3, O=16, k=3), a 1-d audio conv (N=16, C=32, L=2048, O=64, k=9, stride 2), a
dilated conv (dilation 2), a grouped conv (groups 4) and a depthwise conv (groups = channels).

The transposed cases swap the roles of the convolution cases: the input has the shape of that
convolution's output, the weight is ``(O, C/groups, k, ..)`` (PyTorch's transposed layout,
in = O, out = C), and ``output_padding`` is chosen so the output has the convolution's input
size. This is exactly the op that computes that convolution's input gradient.

Usage::

    python benchmarks/bench_conv.py                     # 2 threads, table on stdout
    python benchmarks/bench_conv.py --threads 4 --repeat 30 --json bench.json
    python benchmarks/bench_conv.py --cases all --dtypes float32 float64 --small

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
    """A convolution with a cubic input: (N, C, size, ..) input, (O, C/groups, k, ..) weight."""

    name: str
    batch: int
    in_channels: int
    size: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    rank: int = 2
    groups: int = 1
    dilation: int = 1


CASES = [
    Case("lenet", batch=64, in_channels=1, size=28, out_channels=8, kernel=5, stride=1, padding=2),
    Case("mid", batch=32, in_channels=16, size=32, out_channels=32, kernel=3, stride=1, padding=1),
    Case("stride2", batch=32, in_channels=32, size=32, out_channels=64, kernel=3, stride=2,
         padding=1),
    Case("3d", batch=4, in_channels=8, size=16, out_channels=16, kernel=3, stride=1, padding=1,
         rank=3),
    Case("audio1d", batch=16, in_channels=32, size=2048, out_channels=64, kernel=9, stride=2,
         padding=4, rank=1),
    Case("dilated", batch=32, in_channels=16, size=32, out_channels=32, kernel=3, stride=1,
         padding=2, dilation=2),
    Case("grouped", batch=32, in_channels=32, size=32, out_channels=32, kernel=3, stride=1,
         padding=1, groups=4),
    Case("depthwise", batch=32, in_channels=32, size=32, out_channels=32, kernel=3, stride=1,
         padding=1, groups=32),
]
DEFAULT_CASES = ["lenet", "mid", "stride2"]
TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


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

def conv2d_problem(case, rng, dtype=np.float32):
    """Arrays, options and callables for the convolution of ``case``."""
    out_size = conv_out_spatial(case.size, case.kernel, case.stride, case.padding, case.dilation)
    space, kspace, ospace = (case.size,) * case.rank, (case.kernel,) * case.rank, \
        (out_size,) * case.rank
    x = rng.standard_normal((case.batch, case.in_channels) + space).astype(dtype)
    w = rng.standard_normal((case.out_channels, case.in_channels // case.groups) + kspace
                            ).astype(dtype)
    b = rng.standard_normal(case.out_channels).astype(dtype)
    g = rng.standard_normal((case.batch, case.out_channels) + ospace).astype(dtype)
    options = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
                   groups=case.groups)

    def graphm_forward():
        return gf.conv(x, w, b, **options)

    def graphm_forward_backward():
        gf.conv(x, w, b, **options)
        return gf.conv_backward(g, x, w, **options)

    torch_forward, torch_forward_backward = torch_callables(TORCH_CONV[case.rank], x, w, b, g,
                                                            options)
    # Multiply-adds of the convolution, counted over every output element and kernel tap.
    flops = (2 * case.batch * case.out_channels * out_size ** case.rank
             * (case.in_channels // case.groups) * case.kernel ** case.rank)
    shapes = dict(input=x.shape, weight=w.shape, output=g.shape)
    return shapes, flops, graphm_forward, graphm_forward_backward, torch_forward, \
        torch_forward_backward


def conv_transpose2d_problem(case, rng, dtype=np.float32):
    """The transposed convolution that undoes the geometry of ``case`` (roles swapped)."""
    in_size = conv_out_spatial(case.size, case.kernel, case.stride, case.padding, case.dilation)
    # The stride's floor forgets part of the size; output_padding gives it back.
    output_padding = case.size - conv_transpose_out_spatial(in_size, case.kernel, case.stride,
                                                            case.padding, 0, case.dilation)
    space, kspace = (case.size,) * case.rank, (case.kernel,) * case.rank
    x = rng.standard_normal((case.batch, case.out_channels) + (in_size,) * case.rank
                            ).astype(dtype)
    w = rng.standard_normal((case.out_channels, case.in_channels // case.groups) + kspace
                            ).astype(dtype)
    b = rng.standard_normal(case.in_channels).astype(dtype)
    g = rng.standard_normal((case.batch, case.in_channels) + space).astype(dtype)
    options = dict(stride=case.stride, padding=case.padding, output_padding=output_padding,
                   groups=case.groups, dilation=case.dilation)

    def graphm_forward():
        return gf.conv_transpose(x, w, b, **options)

    def graphm_forward_backward():
        gf.conv_transpose(x, w, b, **options)
        return gf.conv_transpose_backward(g, x, w, case.stride, case.padding, output_padding,
                                          case.groups, case.dilation)

    torch_forward, torch_forward_backward = torch_callables(TORCH_CONV_TRANSPOSE[case.rank], x,
                                                            w, b, g, options)
    flops = (2 * case.batch * case.out_channels * in_size ** case.rank
             * (case.in_channels // case.groups) * case.kernel ** case.rank)
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

def measure(case, op_name, make_problem, threads, repeat, dtype=np.float32):
    shapes, flops, graphm_fwd, graphm_fwd_bwd, torch_fwd, torch_fwd_bwd = make_problem(
        case, np.random.default_rng(0), dtype)

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
        dtype=np.dtype(dtype).name,
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


def sgemm_gflops(threads, repeat, size=1024):
    """NumPy's float32 matrix multiply (its BLAS) on size x size matrices: the practical ceiling.
    NumPy's BLAS picks its own thread count (OPENBLAS_NUM_THREADS etc.); compare accordingly."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), np.float32)
    b = rng.standard_normal((size, size), np.float32)
    return 2 * size ** 3 / median_seconds(lambda: a @ b, repeat) / 1e9


def small_problems(threads, repeat):
    """Microseconds per call, Python included, of classroom-sized convolutions."""
    rows = []
    rng = np.random.default_rng(0)
    for name, x_shape, w_shape in (("1x8x8 image, 4 filters 3x3", (1, 1, 8, 8), (4, 1, 3, 3)),
                                   ("28x28 batch of one, 8 filters 5x5", (1, 1, 28, 28),
                                    (8, 1, 5, 5))):
        x = rng.standard_normal(x_shape, np.float32)
        w = rng.standard_normal(w_shape, np.float32)
        x_t, w_t = torch.from_numpy(x), torch.from_numpy(w)
        set_threads(threads)

        def torch_call():
            with torch.no_grad():
                return F.conv2d(x_t, w_t, padding=1)

        graphm_us = 1e6 * median_seconds(lambda: gf.conv2d(x, w, padding=1), repeat)
        torch_us = 1e6 * median_seconds(torch_call, repeat)
        rows.append(dict(case=name, graphm_us=graphm_us, torch_us=torch_us,
                         ratio=graphm_us / torch_us))
    return rows


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
        ("dtype", "dtype", "{}"),
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
        print("  ".join(cell.ljust(width) if column < 3 else cell.rjust(width)
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
    parser.add_argument("--cases", nargs="+", choices=[case.name for case in CASES] + ["all"],
                        default=DEFAULT_CASES,
                        help=f"run these cases (default {' '.join(DEFAULT_CASES)}; 'all')")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "float64"],
                        default=["float32"], help="element types (default float32)")
    parser.add_argument("--small", action="store_true",
                        help="also time classroom-sized problems (microseconds per call)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeat < 1:
        parser.error("--threads and --repeat must be positive")
    if "all" in args.cases:
        args.cases = [case.name for case in CASES]

    machine = machine_info()
    print(f"machine: {machine['cpus']} cores ({machine['usable_cpus']} usable), "
          f"{machine['processor']}; graphm {machine['graphm']} openmp_enabled="
          f"{machine['graphm_openmp']}; torch {machine['torch']}; numpy {machine['numpy']}; "
          f"python {machine['python']}")
    print(f"{' and '.join(args.dtypes)}, {args.threads} threads for both, median of {args.repeat}; "
          f"ratio = graphm time / torch time (< 1: graphm faster); f+b = forward + backward\n")

    results = []
    for dtype in args.dtypes:
        for case in (case for case in CASES if case.name in args.cases):
            for op_name, make_problem in ((f"conv{case.rank}d", conv2d_problem),
                                          (f"conv_transpose{case.rank}d",
                                           conv_transpose2d_problem)):
                results.append(measure(case, op_name, make_problem, args.threads, args.repeat,
                                       np.dtype(dtype)))
    print_table(results, args.threads)
    ceiling = sgemm_gflops(args.threads, args.repeat)
    print(f"\nNumPy sgemm (1024^3, float32, NumPy's own BLAS threads) in this run: "
          f"{ceiling:.1f} GFLOP/s")
    small = small_problems(args.threads, args.repeat) if args.small else []
    for row in small:
        print(f"{row['case']:<36} graphm {row['graphm_us']:8.1f} us/call   torch "
              f"{row['torch_us']:8.1f} us/call   ratio {row['ratio']:.2f}")

    for result in results:
        if result["max_relative_difference"] > 1e-3:
            print(f"WARNING: {result['case']} {result['op']}: graphm and torch differ by "
                  f"{result['max_relative_difference']:.2e} (relative)", file=sys.stderr)

    if args.json:
        with open(args.json, "w") as file:
            json.dump(dict(machine=machine, threads=args.threads, repeat=args.repeat,
                           cases=[asdict(case) for case in CASES if case.name in args.cases],
                           results=results, sgemm_gflops=ceiling, small=small), file, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
