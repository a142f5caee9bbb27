"""graphm on an idle machine and beside one busy process, under each OpenMP wait policy.

OpenMP threads that finish their share of a parallel loop wait for the others, and between two
loops they wait for the next one. They can wait by *spinning* (a busy loop: the fastest wake-up
when every thread has a core of its own) or by *sleeping* in the kernel (a wake-up costs a few
microseconds, but a waiting thread leaves its core to whoever needs it). When another program
keeps a core busy, spinning threads fight it for the core while the thread that still has work
to do waits its turn, and a training step of many small kernels slows down badly.

Each measurement runs in a fresh subprocess, because the OpenMP runtime reads its wait policy
once, when it is loaded. The policies compared:

``graphm default``
    no OpenMP variable set: what ``import graphm`` chooses when the user set no policy
    (``OMP_WAIT_POLICY=PASSIVE`` with ``GOMP_SPINCOUNT=1000``; see ``graphm._kernels``).
``ACTIVE``
    ``OMP_WAIT_POLICY=ACTIVE``: spin (almost) forever.
``PASSIVE``
    ``OMP_WAIT_POLICY=PASSIVE`` alone: sleep at once.
``libgomp default``
    ``GOMP_SPINCOUNT=300000``: what GCC's runtime does when no policy is set (spin about 300,000
    times, a few milliseconds, before sleeping), which was graphm's behaviour before it chose
    one. A spin count set by the user counts as a policy, so graphm leaves it alone.

and the workloads:

``step``
    one eager training step of the network ``graphm train`` trains (:func:`graphm.nn.models.
    make_cnn` on 8x8 digits, batch 64: forward, cross-entropy, backward, Adam): many small
    kernels, the case most sensitive to waiting;
``conv``
    the ``mid`` convolution of ``bench_conv.py`` (N=32, C=16, 32x32, O=32, k=3, padding 1),
    forward and the three gradients: few, larger kernels.

"Busy" means one child process spinning in a Python loop for the whole measurement, as a
browser tab or a second notebook would. A measurement is the mean time per step over the timed
steps (the total time divided by the number of steps: what a training run feels like), after a
warm-up; each case is measured ``--rounds`` times, round robin, and the table shows the median.
The
GOMP_SPINCOUNT column is what the runtime itself reported it uses (``OMP_DISPLAY_ENV=VERBOSE``),
so the table shows which policy was really in force.

Usage::

    python benchmarks/bench_busy.py                    # 2 threads, both workloads
    python benchmarks/bench_busy.py --threads 4 --seconds 3 --json busy.json

This is a script, not a test: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import numpy as np

#: name -> the environment variables set for the measured process (on top of the caller's,
#: with every OpenMP wait variable removed first)
POLICIES = {
    "graphm default": {},
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "libgomp default": {"GOMP_SPINCOUNT": "300000"},
}
#: the variables that decide how OpenMP threads wait (GCC's and LLVM's runtimes)
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "KMP_LIBRARY")
WORKLOADS = ("step", "conv")


# --------------------------------------------------------------------------------------------
# The measured process
# --------------------------------------------------------------------------------------------

def _step_workload():
    """One eager training step of `graphm train`'s CNN, as a function of no arguments."""
    import graphm
    import graphm.functional as F
    from graphm import optim
    from graphm.nn.models import make_cnn
    from graphm.train import Runner

    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    graphm.manual_seed(0)
    model = make_cnn((1, 8, 8))
    runner = Runner(model, "eager", F.cross_entropy, inputs)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad()
        runner.train_step(inputs, labels)
        optimizer.step()
    return step


def _conv_workload():
    """bench_conv's `mid` convolution, forward and backward (all three gradients)."""
    import graphm.functional as F

    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 16, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    g = rng.standard_normal((32, 32, 32, 32)).astype(np.float32)

    def step():
        F.conv2d(x, w, b, padding=1)
        F.conv_backward(g, x, w, padding=1)
    return step


def worker(workload, threads, seconds):
    """Time ``workload`` in this process; print ``{"seconds_per_step", "steps"}`` as JSON."""
    import graphm
    graphm.set_num_threads(threads)
    step = {"step": _step_workload, "conv": _conv_workload}[workload]()
    warmup_end = time.perf_counter() + min(1.0, seconds / 3)
    while time.perf_counter() < warmup_end:
        step()
    steps, start = 0, time.perf_counter()
    while steps < 5 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    elapsed = time.perf_counter() - start
    print(json.dumps({"seconds_per_step": elapsed / steps, "steps": steps}))


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------

def _spinner():
    """A process that keeps one core busy until it is killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(workload, policy, busy, threads, seconds):
    """Run one measurement in a fresh process; returns (seconds per step, spin count seen)."""
    env = {key: value for key, value in os.environ.items() if key not in WAIT_VARIABLES}
    env.update(POLICIES[policy])
    env["OMP_DISPLAY_ENV"] = "VERBOSE"     # the runtime prints the policy it really uses
    # the measured process imports the same graphm as this one (a checkout, not the install)
    import graphm
    root = os.path.dirname(os.path.dirname(os.path.abspath(graphm.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    spinner = _spinner() if busy else None
    try:
        if spinner is not None:
            time.sleep(0.2)                # let it get going
        result = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", workload, "--threads",
             str(threads), "--seconds", str(seconds)],
            env=env, capture_output=True, text=True, check=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    found = re.search(r"GOMP_SPINCOUNT\s*=\s*'(\d+)'", result.stderr)
    spin = found.group(1) if found else "?"
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds_per_step"], spin


def _cpu_model():
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return re.search(r"Model name:\s*(.+)", text).group(1).strip()
    except (OSError, subprocess.CalledProcessError, AttributeError):
        return platform.processor() or "unknown CPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="graphm threads (default 2)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="timed seconds per measurement (default 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements of each case; the table shows their median "
                             "(default 3)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES))
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.threads, args.seconds)
        return 0

    import graphm
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"graphm {graphm.__version__}, OpenMP {'on' if graphm.openmp_enabled() else 'off'}, "
          f"{args.threads} threads, {cpus} CPUs ({_cpu_model()}), python "
          f"{platform.python_version()}")
    print(f"time per step in ms: the median of {args.rounds} rounds, each the mean over "
          f"{args.seconds:g} s of steps; x: over the same workload's graphm default, idle\n")
    # round robin: every round measures every case once, so a change in the machine's load
    # during the run touches all of them alike
    cases = [(workload, policy, busy) for workload in args.workloads
             for policy in args.policies for busy in (False, True)]
    times = {case: [] for case in cases}
    spins = {}
    for _ in range(args.rounds):
        for case in cases:
            seconds, spins[case[:2]] = measure(*case, args.threads, args.seconds)
            times[case].append(seconds)
    median = {case: statistics.median(values) for case, values in times.items()}
    print(f"{'workload':8} {'policy':16} {'spincount':>11} {'idle ms':>9} {'busy ms':>9} "
          f"{'idle x':>7} {'busy x':>7}")
    rows = []
    for workload in args.workloads:
        reference = median[(workload, args.policies[0], False)]
        for policy in args.policies:
            idle, busy = median[(workload, policy, False)], median[(workload, policy, True)]
            spin = spins[(workload, policy)]
            rows.append({"workload": workload, "policy": policy, "spincount": spin,
                         "idle_seconds": times[(workload, policy, False)],
                         "busy_seconds": times[(workload, policy, True)]})
            print(f"{workload:8} {policy:16} {spin:>11} {1e3 * idle:9.2f} {1e3 * busy:9.2f} "
                  f"{idle / reference:7.2f} {busy / reference:7.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"threads": args.threads, "cpus": cpus, "cpu": _cpu_model(),
                       "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
