"""Train the same CNN on the digits in graphm (eager and compiled) and in PyTorch, side by side.

Same data (the 8x8 digits, 80/20 split, normalised as ``graphm train`` does), same network
(``graphm.nn.models.make_cnn``; PyTorch gets an exact copy of graphm's initial weights through
``graphm.interop.to_torch``), same batch order, batch size, optimizer (Adam) and epochs, same
thread count. Each framework first trains one untimed warm-up epoch; then every epoch of
training (forward, backward, optimizer step over all batches; no evaluation) is timed, and the
median seconds per epoch are printed with the ratio graphm / PyTorch (below 1: graphm faster)
and each model's final test accuracy.

Usage::

    python benchmarks/bench_train.py                    # 2 threads, 5 timed epochs
    python benchmarks/bench_train.py --threads 1 --epochs 10 --json train.json
    graphm bench train --epochs 3                       # the same, through the graphm command

This is a script, not a test: nothing here asserts a speed.
"""
import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

import graphm
import graphm.functional as F
from graphm import data, interop, optim, train
from graphm.nn.models import make_cnn


def digits(seed):
    """Training and test arrays exactly as ``graphm train`` prepares them for the CNN."""
    config = dict(train.CONFIG_DEFAULTS, model="cnn", dataset="digits", seed=seed)
    return train.load_data(config)[:4]


class GraphmTrainer:
    """One epoch at a time of graphm training, eager or compiled."""

    def __init__(self, model, mode, loader, lr):
        self.model, self.loader = model, loader
        self.optimizer = optim.Adam(model.parameters(), lr=lr)
        self.compiled = graphm.compile(model, loader.arrays[0][:loader.batch_size],
                                       loss=F.cross_entropy) if mode == "compiled" else None

    def epoch(self, number):
        """Train one epoch; return its seconds."""
        self.loader.epoch = number
        start = time.perf_counter()
        for inputs, labels in self.loader:
            self.optimizer.zero_grad()
            if self.compiled is not None:
                self.compiled.forward_backward(inputs, labels)
            else:
                F.cross_entropy(self.model(graphm.tensor(inputs)), labels).backward()
            self.optimizer.step()
        return time.perf_counter() - start

    def predict(self, inputs):
        with graphm.no_grad():
            return self.model(graphm.tensor(inputs)).numpy()


class TorchTrainer:
    """The same for a torch.nn model."""

    def __init__(self, model, loader, lr):
        self.model, self.loader = model, loader
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def epoch(self, number):
        self.loader.epoch = number
        start = time.perf_counter()
        for inputs, labels in self.loader:
            self.optimizer.zero_grad()
            torch.nn.functional.cross_entropy(self.model(torch.from_numpy(inputs)),
                                              torch.from_numpy(labels)).backward()
            self.optimizer.step()
        return time.perf_counter() - start

    def predict(self, inputs):
        with torch.no_grad():
            return self.model(torch.from_numpy(inputs)).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for graphm and PyTorch alike (default 2)")
    parser.add_argument("--epochs", type=int, default=5,
                        help="timed epochs after one warm-up epoch (default 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="default 64, as graphm train")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam's lr (default 3e-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.epochs < 1 or args.batch_size < 1:
        parser.error("--threads, --epochs and --batch-size must be positive")

    graphm.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    x_train, y_train, x_test, y_test = digits(args.seed)
    print(f"graphm {graphm.__version__} (openmp_enabled={graphm.openmp_enabled()}), torch "
          f"{torch.__version__}, numpy {np.__version__}, python {platform.python_version()}, "
          f"{os.cpu_count()} cores")
    print(f"CNN on the 8x8 digits: {len(x_train)} training samples, batch {args.batch_size}, "
          f"Adam lr={args.lr}, {args.threads} threads; median of {args.epochs} timed epochs "
          f"after 1 warm-up epoch; ratio = graphm time / torch time\n")

    trainers = {}
    for framework in ("torch", "graphm eager", "graphm compiled"):
        graphm.manual_seed(args.seed)
        model = make_cnn(x_train.shape[1:])
        loader = data.DataLoader(x_train, y_train, batch_size=args.batch_size, shuffle=True,
                                 seed=args.seed)
        if framework == "torch":       # the same initial weights as the graphm models
            trainers[framework] = TorchTrainer(interop.to_torch(model), loader, args.lr)
        else:
            trainers[framework] = GraphmTrainer(model, framework.split()[1], loader, args.lr)
    # Round robin, one epoch each in turn: a noisy neighbour on the machine slows all three alike
    seconds = {framework: [] for framework in trainers}
    for epoch in range(args.epochs + 1):
        for framework, trainer in trainers.items():
            seconds[framework].append(trainer.epoch(epoch))
    results = {}
    for framework, trainer in trainers.items():
        accuracy = float((trainer.predict(x_test).argmax(1) == y_test).mean())
        results[framework] = dict(seconds_per_epoch=statistics.median(seconds[framework][1:]),
                                  epoch_seconds=seconds[framework][1:], test_accuracy=accuracy)

    reference = results["torch"]["seconds_per_epoch"]
    header = f"{'framework':<16}  {'s/epoch':>8}  {'ms/step':>8}  {'ratio':>6}  {'test acc':>8}"
    print(header)
    print("-" * len(header))
    steps = -(-len(x_train) // args.batch_size)
    for framework, result in results.items():
        result["ratio"] = result["seconds_per_epoch"] / reference
        print(f"{framework:<16}  {result['seconds_per_epoch']:8.3f}  "
              f"{1000 * result['seconds_per_epoch'] / steps:8.2f}  {result['ratio']:6.2f}  "
              f"{100 * result['test_accuracy']:7.2f}%")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(threads=args.threads, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr, results=results), handle, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
