"""Certified bounds on the digits CNN: IBP and CROWN for a batch of 256 images, in ms.

The network is the one ``graphm train`` trains (graphm.nn.models.make_cnn on the 8x8 digits),
trained here for ``--epochs`` epochs (or read from ``--checkpoint``). For a batch of 256 test
digits and an L-inf ball of ``--eps`` (pixel units) the script times

* the forward pass (eager, no gradient), the unit the others are measured in;
* IBP (graphm.verify.ibp): at most 3 forward passes is the bar (centre and radius passes of
  each affine layer, plus the elementwise bookkeeping of the outward rounding);
* CROWN-IBP and CROWN (graphm.verify.crown, intermediate="ibp" / "crown"),

as the median of ``--repeats`` runs, and prints the mean output width of each method and the
certified accuracy on the batch. auto_LiRPA, the natural peer, does not install beside NumPy 2
and torch 2.13, so the ratios are against graphm's own forward pass. Run it on an otherwise
idle machine: ``python benchmarks/bench_verify.py --help``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

import graphm
from graphm import data, verify
from graphm.ops.interval import round_down, round_up, scalar_up


def _cpu():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def trained_model(checkpoint, epochs, seed):
    """(model, test pixels, test labels, mean, std) from a checkpoint or a quick training."""
    from graphm import train as training
    if checkpoint is None:
        out = tempfile.mkdtemp(prefix="graphm-bench-verify-")
        config = training.resolve_config({"model": "cnn", "epochs": epochs, "seed": seed})
        run = training.Training(config, out)
        for _ in run.epochs():
            pass
        checkpoint = run.checkpoint_path
    header = graphm.checkpoint.load_header(checkpoint)
    state = graphm.load(checkpoint)
    model = graphm.nn.from_architecture(header["architecture"])
    model.load_state_dict(state["model"])
    _, _, pixels, labels, _ = training.load_data({**state["config"], "model": "autoencoder"})
    norm = state["normalization"]
    return model, pixels, labels, norm["mean"], norm["std"]


def median_ms(function, repeats):
    function()                                    # warm-up (tracing, caches)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a graphm train --model cnn checkpoint")
    parser.add_argument("--epochs", type=int, default=5, help="epochs to train (default 5)")
    parser.add_argument("--batch", type=int, default=256, help="images (default 256)")
    parser.add_argument("--eps", type=float, default=0.01, help="L-inf radius, pixel units")
    parser.add_argument("--repeats", type=int, default=5, help="runs per timing (median)")
    parser.add_argument("--crown-repeats", type=int, default=1, help="runs of full CROWN")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    graphm.set_num_threads(args.threads)

    model, pixels, labels, mean, std = trained_model(args.checkpoint, args.epochs, args.seed)
    pixels, labels = pixels[:args.batch], labels[:args.batch]
    if len(labels) < args.batch:          # the digits' test split has 360: repeat it
        repeat = -(-args.batch // len(labels))
        pixels = np.concatenate([pixels] * repeat)[:args.batch]
        labels = np.concatenate([labels] * repeat)[:args.batch]
    x = data.normalize(pixels, mean, std)
    radius = scalar_up(args.eps, pixels.dtype)
    lower = data.normalize(np.maximum(round_down(pixels - radius), 0), mean, std)
    upper = data.normalize(np.minimum(round_up(pixels + radius), 1), mean, std)
    print(f"graphm.verify on the digits CNN: batch {args.batch}, eps {args.eps:g} (pixel "
          f"units), {args.threads} threads, {_cpu()}, {os.cpu_count()} CPUs")

    def forward():
        with graphm.no_grad():
            return model(graphm.tensor(x)).numpy()

    rows = []
    forward_ms = median_ms(forward, args.repeats)
    rows.append(("forward pass", forward_ms, None))
    results = {}
    for name, function, repeats in (
            ("IBP", lambda: verify.ibp(model, lower, upper), args.repeats),
            ("CROWN-IBP", lambda: verify.crown(model, lower, upper, intermediate="ibp"),
             args.repeats),
            ("CROWN", lambda: verify.crown(model, lower, upper), args.crown_repeats)):
        results[name] = function()
        rows.append((name, median_ms(function, repeats), results[name]))
    print(f"{'':14s} {'ms':>10s} {'x forward':>10s} {'mean width':>11s}")
    for name, ms, bounds in rows:
        width = "" if bounds is None else f"{float(np.mean(bounds.width())):11.4f}"
        print(f"{name:14s} {ms:10.1f} {ms / forward_ms:10.2f} {width}")
    ratio = float(np.mean(results["CROWN"].width() / results["IBP"].width()))
    print(f"CROWN / IBP output width (mean of per-logit ratios): {ratio:.3f}")
    for method in ("ibp", "crown-ibp", "crown"):
        certified = verify.certify_box(model, lower, upper, labels, method).accuracy()
        print(f"certified accuracy at eps {args.eps:g} ({method}): {100 * certified:.1f}%")
    ibp_ratio = rows[1][1] / forward_ms
    print(f"IBP costs {ibp_ratio:.2f} forward passes (bar: at most 3): "
          f"{'ok' if ibp_ratio <= 3 else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
