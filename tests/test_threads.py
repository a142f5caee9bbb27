"""Thread control, and graphm's promise that results do not depend on the thread count.

Every parallel loop writes outputs that no other iteration writes, and sums in a fixed order,
so the forward and all three gradients of both ops are *bit-for-bit* identical for 1, 2, 3 or 8
threads (``np.array_equal``, not ``allclose``). The shapes below are big enough that the
kernels have several parallel work units on every loop (batch, channels, groups, positions).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import graphm
from conftest import make_rng, random_array

import graphm.functional as F  # noqa: E402  (a broken build must fail, not skip)

THREAD_COUNTS = (1, 2, 3, 8)


@pytest.fixture
def restore_threads():
    """Put back the thread count a test changes."""
    old = graphm.get_num_threads()
    yield
    graphm.set_num_threads(old)


# (op, input shape, weight shape, keyword arguments)
CASES = {
    "conv2d-groups": (
        "conv", (5, 6, 13, 11), (10, 3, 3, 3), dict(stride=2, padding=1, groups=2)),
    "conv2d-blocked": (  # > 8 samples, > 256 positions, > 256 rows of K, > 96 out channels
        "conv", (10, 40, 23, 19), (100, 40, 3, 3), dict(padding=1)),
    "conv2d-blocked-groups": (
        "conv", (11, 32, 19, 17), (98, 16, 3, 3), dict(padding=(1, 0), groups=2)),
    "conv_transpose2d-blocked": (
        "conv_transpose", (10, 100, 12, 10), (100, 40, 3, 3),
        dict(stride=2, padding=1, output_padding=1)),
    "conv2d-same-dilated": (
        "conv", (5, 6, 13, 11), (10, 6, 4, 3), dict(padding="same", dilation=(2, 1))),
    "conv2d-unbatched": (
        "conv", (6, 13, 11), (10, 3, 3, 3), dict(stride=(1, 2), padding=(2, 0), groups=2)),
    "conv1d": (
        "conv", (5, 6, 37), (10, 3, 5), dict(stride=3, padding=2, dilation=2, groups=2)),
    "conv3d": (
        "conv", (3, 4, 7, 6, 5), (6, 2, 3, 2, 3), dict(stride=(2, 1, 2), padding=1, groups=2)),
    "conv4d": (
        "conv", (2, 4, 4, 3, 4, 3), (4, 2, 2, 2, 2, 2), dict(padding=1, groups=2)),
    "conv_transpose2d-groups": (
        "conv_transpose", (5, 6, 13, 11), (6, 5, 3, 3),
        dict(stride=2, padding=1, output_padding=1, groups=2)),
    "conv_transpose2d-unbatched": (
        "conv_transpose", (6, 9, 7), (6, 4, 3, 2),
        dict(stride=(3, 2), padding=(1, 0), output_padding=(2, 1), groups=3, dilation=(1, 2))),
    "conv_transpose1d": (
        "conv_transpose", (5, 6, 23), (6, 5, 4), dict(stride=3, padding=1, groups=2)),
    "conv_transpose3d": (
        "conv_transpose", (3, 4, 5, 4, 3), (4, 3, 3, 2, 2),
        dict(stride=2, padding=(1, 0, 1), output_padding=(1, 1, 0), groups=2)),
}


def run_all(op, x, w, b, g, kwargs):
    """Forward and the three gradients, as a list of arrays."""
    forward = F.conv_transpose if op == "conv_transpose" else F.conv
    backward = F.conv_transpose_backward if op == "conv_transpose" else F.conv_backward
    return [forward(x, w, b, **kwargs), *backward(g, x, w, **kwargs)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_results_identical_for_every_thread_count(name, dtype, restore_threads):
    op, x_shape, w_shape, kwargs = CASES[name]
    rng = make_rng(len(name))
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    out_channels = w_shape[1] * kwargs.get("groups", 1) if op == "conv_transpose" else w_shape[0]
    b = random_array(rng, (out_channels,), dtype)
    forward = F.conv_transpose if op == "conv_transpose" else F.conv
    g = random_array(rng, forward(x, w, b, **kwargs).shape, dtype)

    graphm.set_num_threads(1)
    reference = run_all(op, x, w, b, g, kwargs)
    names = ("output", "grad_input", "grad_weight", "grad_bias")
    for threads in THREAD_COUNTS:
        graphm.set_num_threads(threads)
        assert graphm.get_num_threads() == threads
        for _ in range(2):  # and the same again on a second call
            results = run_all(op, x, w, b, g, kwargs)
            for what, got, want in zip(names, results, reference):
                assert got.dtype == want.dtype and got.shape == want.shape
                assert np.array_equal(got, want), (
                    f"{what} with {threads} threads differs from 1 thread by up to "
                    f"{np.max(np.abs(got - want))}")


# --------------------------------------------------------------------------------------------
# set_num_threads / get_num_threads / openmp_enabled
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 8, 64])
def test_set_then_get(n, restore_threads):
    graphm.set_num_threads(n)
    assert graphm.get_num_threads() == n


@pytest.mark.parametrize("bad", [0, -1, -8])
def test_set_num_threads_rejects_non_positive(bad, restore_threads):
    before = graphm.get_num_threads()
    with pytest.raises(ValueError, match=str(bad)):
        graphm.set_num_threads(bad)
    assert graphm.get_num_threads() == before


@pytest.mark.parametrize("bad", [1.5, 2.0, "2", None, [2], np.float64(2.0)])
def test_set_num_threads_rejects_non_integers(bad, restore_threads):
    before = graphm.get_num_threads()
    with pytest.raises(TypeError):
        graphm.set_num_threads(bad)
    assert graphm.get_num_threads() == before


def test_default_thread_count_is_positive():
    n = graphm.get_num_threads()
    assert isinstance(n, int) and n >= 1


def _default_in_subprocess(omp_num_threads):
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if omp_num_threads is not None:
        env["OMP_NUM_THREADS"] = omp_num_threads
    result = subprocess.run(
        [sys.executable, "-c", "import graphm; print(graphm.get_num_threads())"],
        env=env, capture_output=True, text=True, timeout=120, check=True)
    return int(result.stdout.strip())


def test_default_honours_omp_num_threads():
    assert _default_in_subprocess("1") == 1
    assert _default_in_subprocess("3") == 3


def test_default_is_the_cpus_this_process_may_use():
    expected = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else os.cpu_count())
    assert _default_in_subprocess(None) == expected


def test_openmp_enabled_is_a_bool():
    assert isinstance(graphm.openmp_enabled(), bool)


@pytest.mark.skipif(os.environ.get("GRAPHM_EXPECT_OPENMP") not in ("0", "1"),
                    reason="GRAPHM_EXPECT_OPENMP is not set to 0 or 1 (CI sets it per build)")
def test_openmp_enabled_matches_the_build_ci_asked_for():
    assert graphm.openmp_enabled() is (os.environ["GRAPHM_EXPECT_OPENMP"] == "1")


@pytest.mark.parametrize("threads", [1, 2])
def test_concurrent_calls_from_python_threads(threads, restore_threads):
    """The kernels release the GIL: calls from several Python threads at once (each running
    its own OpenMP team) must not share scratch memory, so each gets the serial result."""
    from concurrent.futures import ThreadPoolExecutor
    graphm.set_num_threads(threads)
    jobs = []
    for i, name in enumerate(["conv2d-groups", "conv_transpose2d-groups", "conv1d",
                              "conv3d", "conv2d-unbatched", "conv_transpose1d"]):
        op, x_shape, w_shape, kwargs = CASES[name]
        rng = make_rng(100 + i)
        x, w = random_array(rng, x_shape, np.float32), random_array(rng, w_shape, np.float32)
        forward = F.conv_transpose if op == "conv_transpose" else F.conv
        g = random_array(rng, forward(x, w, **kwargs).shape, np.float32)
        jobs.append((op, x, w, None, g, kwargs))
    expected = [run_all(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(run_all, *job) for _ in range(4) for job in jobs]
        results = [future.result(timeout=300) for future in futures]
    for index, got in enumerate(results):
        for a, b in zip(got, expected[index % len(jobs)]):
            assert np.array_equal(a, b)
