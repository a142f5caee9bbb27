"""How much memory graphm's convolutions need beyond their input and output.

Each case runs in a fresh Python subprocess, so that one case's allocations (or a cache) cannot
hide another's.  The subprocess imports graphm, makes the arrays, then resets the kernel's
peak-RSS counter (``/proc/self/clear_refs``, Linux) and records its current RSS; after the call
it reads the peak (``VmHWM``).  **extra = peak − RSS before the call − the result's bytes**:
what the call needed on top of what it was given and what it returns (scratch, tables, copies).
``tracemalloc`` measures the same call's Python-side (NumPy) allocations separately; the
kernels' per-thread ``malloc`` scratch is not in it, but is in the RSS figure.

The cases (float32, one sample, one channel in and out, as in issue 9):

* ``conv2d 1000x1000 k=31``: a large image and a large kernel (forward, and conv_backward);
* ``conv3d 48^3 k=5``: a volume, padding 2 (forward, and conv_backward);
* ``cache after 16 geometries``: sixteen different 2-d convolutions of a 224 x 224 image
  (kernels 5 .. 20) called once each, results dropped; then the memory still held (measured by
  tracemalloc: NumPy arrays kept alive between calls, e.g. by a cache of tables).

With ``--torch``, the same calls in PyTorch (CPU) in their own subprocesses, for comparison.

Usage::

    python benchmarks/bench_memory.py [--threads 2] [--torch] [--json memory.json]

A script, not a test: nothing here asserts a figure.
"""
import argparse
import json
import os
import subprocess
import sys
import textwrap

CASES = {
    "conv2d 1000x1000 k=31": dict(input=(1, 1, 1000, 1000), weight=(1, 1, 31, 31), padding=0),
    "conv3d 48^3 k=5": dict(input=(1, 1, 48, 48, 48), weight=(1, 1, 5, 5, 5), padding=2),
}

# Runs inside the subprocess: prints one JSON line.
CHILD = textwrap.dedent('''
    import gc, json, math, resource, sys, tracemalloc
    import numpy as np
    spec = json.loads(sys.argv[1])

    def rss_kib():
        with open("/proc/self/status") as status:
            fields = dict(line.split(":", 1) for line in status)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    if spec["framework"] == "torch":
        import torch
        torch.set_num_threads(spec["threads"])
        conv = {4: torch.nn.functional.conv2d, 5: torch.nn.functional.conv3d}
    else:
        import graphm
        import graphm.functional as F
        graphm.set_num_threads(spec["threads"])

    def run_case(input_shape, weight_shape, padding, backward):
        rng = np.random.default_rng(0)
        x = rng.standard_normal(input_shape, dtype=np.float32)
        w = rng.standard_normal(weight_shape, dtype=np.float32)
        if spec["framework"] == "torch":
            xt = torch.from_numpy(x).requires_grad_(backward)
            wt = torch.from_numpy(w).requires_grad_(backward)
            op = conv[len(input_shape)]
            if backward:
                with torch.no_grad():
                    g = op(xt, wt, padding=padding).numpy()
                gt = torch.from_numpy(g)
                call = lambda: torch.autograd.grad(op(xt, wt, padding=padding), (xt, wt), gt)
            else:
                def call():
                    with torch.no_grad():
                        return op(xt, wt, padding=padding)
        else:
            if backward:
                # grad_output made without calling conv, so that nothing is cached yet
                g = rng.standard_normal(F.conv_output_shape(x.shape, w.shape, padding=padding),
                                        dtype=np.float32)
                call = lambda: F.conv_backward(g, x, w, padding=padding)
            else:
                call = lambda: F.conv(x, w, padding=padding)
        gc.collect()
        exact = reset_peak()
        before, _ = rss_kib()
        tracemalloc.start()
        result = call()
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        _, peak = rss_kib()
        if not exact:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        results = result if isinstance(result, (tuple, list)) else (result,)
        result_bytes = sum(r.numel() * r.element_size() if hasattr(r, "numel") else r.nbytes
                           for r in results if r is not None)
        return dict(peak_minus_before_mb=(peak - before) / 1024, result_mb=result_bytes / 2**20,
                    extra_mb=(peak - before) / 1024 - result_bytes / 2**20,
                    tracemalloc_peak_mb=traced_peak / 2**20, exact_peak=exact)

    if spec["case"] == "cache":
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, 1, 224, 224), dtype=np.float32)
        weights = [rng.standard_normal((1, 1, k, k), dtype=np.float32) for k in range(5, 21)]
        gc.collect()
        tracemalloc.start()
        for w in weights:
            if spec["framework"] == "torch":
                with torch.no_grad():
                    y = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                                   padding=w.shape[-1] // 2)
            else:
                y = F.conv2d(x, w, padding=w.shape[-1] // 2)
            del y
        gc.collect()
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(json.dumps(dict(cached_mb=held / 2**20, tracemalloc_peak_mb=peak / 2**20)))
    else:
        print(json.dumps(run_case(spec["input"], spec["weight"], spec["padding"],
                                  spec["backward"])))
''')


def run_child(spec):
    env = dict(os.environ)
    completed = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return dict(error=completed.stderr.strip().splitlines()[-1:])
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torch", action="store_true", help="also measure PyTorch")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    frameworks = ["graphm"] + (["torch"] if args.torch else [])
    rows = []
    print(f"{args.threads} threads, float32; MB = 2**20 bytes; extra = peak RSS - RSS before "
          f"the call - result bytes")
    print(f"{'case':<24} {'call':<17} {'framework':<9} {'peak-before MB':>14} "
          f"{'result MB':>9} {'extra MB':>9} {'tracemalloc MB':>14}")
    for name, case in CASES.items():
        for backward in (False, True):
            for framework in frameworks:
                figures = run_child(dict(case="conv", framework=framework, threads=args.threads,
                                         backward=backward, **case))
                call = "forward" if not backward else "input+weight grad"
                rows.append(dict(case=name, call=call, framework=framework, **figures))
                if "error" in figures:
                    print(f"{name:<24} {call:<17} {framework:<9} error: {figures['error']}")
                    continue
                print(f"{name:<24} {call:<17} {framework:<9} "
                      f"{figures['peak_minus_before_mb']:>14.1f} {figures['result_mb']:>9.1f} "
                      f"{figures['extra_mb']:>9.1f} {figures['tracemalloc_peak_mb']:>14.1f}")
    for framework in frameworks:
        figures = run_child(dict(case="cache", framework=framework, threads=args.threads))
        rows.append(dict(case="cache after 16 geometries", framework=framework, **figures))
        if "error" in figures:
            print(f"cache after 16 geometries: {framework}: error: {figures['error']}")
            continue
        print(f"{'cache after 16 geometries':<24} {'':<17} {framework:<9} "
              f"held between calls {figures['cached_mb']:.2f} MB "
              f"(tracemalloc peak {figures['tracemalloc_peak_mb']:.1f} MB)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(dict(threads=args.threads, rows=rows), file, indent=2)


if __name__ == "__main__":
    main()
