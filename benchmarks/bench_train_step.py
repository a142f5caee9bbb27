"""One training step of a LeNet-style CNN: graphm eager, graphm compiled and PyTorch, side by side.

The step is a forward pass and a backward pass (every parameter gradient) on a batch of 64
28x28 single-channel float32 images with integer labels:

    conv 1->8 k5 p2, relu, max_pool 2  ->  conv 8->16 k5, relu, max_pool 2  ->  flatten
    -> linear 400->120, relu -> linear 120->84, relu -> linear 84->10 -> cross_entropy

All three run in this process with the same thread count, taking turns step by step. Each
time is the median of ``--repeats`` steps after a warm-up; the ratio is graphm's time over
PyTorch's (the bar of issue 3: each graphm mode within 2x). The numbers are only meaningful on
an otherwise idle machine: OpenMP and BLAS threads that wait by spinning slow down badly when
another process holds a core. Run ``python benchmarks/bench_train_step.py --help``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import graphm
import graphm.functional as F

BATCH, IMAGE, CLASSES = 64, 28, 10
SHAPES = {
    "conv1.weight": (8, 1, 5, 5), "conv1.bias": (8,),
    "conv2.weight": (16, 8, 5, 5), "conv2.bias": (16,),
    "fc1.weight": (120, 400), "fc1.bias": (120,),
    "fc2.weight": (84, 120), "fc2.bias": (84,),
    "fc3.weight": (10, 84), "fc3.bias": (10,),
}


def lenet(x, p, labels):
    """The model, written once with graphm.functional: it runs on Tensors (eager) and on a
    GraphM's Vars (compiled) alike."""
    h = F.max_pool2d(F.relu(F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=2)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, p["conv2.weight"], p["conv2.bias"])), 2)
    h = h.flatten(1)
    h = F.relu(F.linear(h, p["fc1.weight"], p["fc1.bias"]))
    h = F.relu(F.linear(h, p["fc2.weight"], p["fc2.bias"]))
    return F.cross_entropy(F.linear(h, p["fc3.weight"], p["fc3.bias"]), labels)


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in SHAPES.items():
        fan_in = int(np.prod(SHAPES[name.replace("bias", "weight")][1:]))
        bound = 1 / np.sqrt(fan_in)
        params[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
    x = rng.standard_normal((BATCH, 1, IMAGE, IMAGE)).astype(np.float32)
    labels = rng.integers(0, CLASSES, BATCH)
    return x, labels, params


def median_times(steps, repeats, warmup=3):
    """Median seconds per call of each step. The steps take turns (round robin), so that a
    change in the machine's load during the run affects all of them alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def graphm_eager_step(x, labels, params):
    tensors = {name: graphm.tensor(value, requires_grad=True) for name, value in params.items()}
    x_tensor = graphm.tensor(x)

    def step():
        for t in tensors.values():
            t.grad = None
        loss = lenet(x_tensor, tensors, labels)
        loss.backward()
        return loss.item(), {name: t.grad for name, t in tensors.items()}
    return step


def graphm_compiled_step(x, labels, params):
    g = graphm.GraphM()
    x_var = g.input("x", x.shape)
    labels_var = g.input("labels", labels.shape, dtype="int64")
    param_vars = {name: g.param(name.replace(".", "_"), value.shape)
                  for name, value in params.items()}
    program = g.compile(lenet(x_var, param_vars, labels_var))
    feed = {"x": x, "labels": labels}
    feed.update({name.replace(".", "_"): value for name, value in params.items()})

    def step():
        loss, grads = program.value_and_grad(feed)
        return float(loss), {name: grads[name.replace(".", "_")] for name in params}
    return step, program


def torch_step(x, labels, params):
    import torch
    import torch.nn.functional as TF
    tensors = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    x_tensor, labels_tensor = torch.from_numpy(x), torch.from_numpy(labels)

    def step():
        for t in tensors.values():
            t.grad = None
        p = tensors
        h = TF.max_pool2d(TF.relu(TF.conv2d(x_tensor, p["conv1.weight"], p["conv1.bias"],
                                            padding=2)), 2)
        h = TF.max_pool2d(TF.relu(TF.conv2d(h, p["conv2.weight"], p["conv2.bias"])), 2)
        h = h.flatten(1)
        h = TF.relu(TF.linear(h, p["fc1.weight"], p["fc1.bias"]))
        h = TF.relu(TF.linear(h, p["fc2.weight"], p["fc2.bias"]))
        loss = TF.cross_entropy(TF.linear(h, p["fc3.weight"], p["fc3.bias"]), labels_tensor)
        loss.backward()
        return loss.item(), {name: t.grad.numpy() for name, t in tensors.items()}
    return step


def graphm_hvp_step(x, labels, params, vectors):
    """Hessian-vector product of the loss w.r.t. every parameter, forward over reverse."""
    names = list(params)

    def loss(*values):
        return lenet(graphm.tensor(x), dict(zip(names, values)), labels)

    grad = graphm.grad(loss, argnums=tuple(range(len(names))))
    primals = tuple(params[n] for n in names)
    tangents = tuple(vectors[n] for n in names)

    def step():
        _, hvp = graphm.jvp(grad, primals, tangents)
        return dict(zip(names, hvp))
    return step


def graphm_compiled_hvp_step(x, labels, params, vectors):
    """The same HVP as a Program: the loss Program's gradient Program, differentiated again
    (forward over reverse, by transposition), built once and run on the batch."""
    g = graphm.GraphM()
    x_var = g.input("x", x.shape)
    labels_var = g.input("labels", labels.shape, dtype="int64")
    param_vars = {name: g.param(name.replace(".", "_"), value.shape)
                  for name, value in params.items()}
    names = [name.replace(".", "_") for name in params]
    hvp = g.compile(lenet(x_var, param_vars, labels_var)).grad_program(names).jvp_program(names)
    feed = {"x": x, "labels": labels}
    feed.update({name.replace(".", "_"): value for name, value in params.items()})
    feed.update({"tangent_" + name.replace(".", "_"): vectors[name] for name in params})

    def step():
        return dict(zip(params, hvp(feed)))
    return step, hvp


def torch_hvp_step(x, labels, params, vectors):
    import torch
    import torch.nn.functional as TF
    names = list(params)
    x_tensor, labels_tensor = torch.from_numpy(x), torch.from_numpy(labels)

    def loss(*values):
        p = dict(zip(names, values))
        h = TF.max_pool2d(TF.relu(TF.conv2d(x_tensor, p["conv1.weight"], p["conv1.bias"],
                                            padding=2)), 2)
        h = TF.max_pool2d(TF.relu(TF.conv2d(h, p["conv2.weight"], p["conv2.bias"])), 2)
        h = h.flatten(1)
        h = TF.relu(TF.linear(h, p["fc1.weight"], p["fc1.bias"]))
        h = TF.relu(TF.linear(h, p["fc2.weight"], p["fc2.bias"]))
        return TF.cross_entropy(TF.linear(h, p["fc3.weight"], p["fc3.bias"]), labels_tensor)

    grad = torch.func.grad(loss, argnums=tuple(range(len(names))))
    primals = tuple(torch.from_numpy(params[n]) for n in names)
    tangents = tuple(torch.from_numpy(vectors[n]) for n in names)

    def step():
        _, hvp = torch.func.jvp(grad, primals, tangents)
        return {n: h.numpy() for n, h in zip(names, hvp)}
    return step


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--show-program", action="store_true",
                        help="print the SSA program (and the HVP program)")
    parser.add_argument("--no-hvp", action="store_true",
                        help="skip the Hessian-vector product row")
    args = parser.parse_args(argv)

    import torch
    torch.set_num_threads(args.threads)
    graphm.set_num_threads(args.threads)
    x, labels, params = make_data()
    eager = graphm_eager_step(x, labels, params)
    compiled, program = graphm_compiled_step(x, labels, params)
    reference = torch_step(x, labels, params)
    if args.show_program:
        print(program)

    # Same numbers first: a benchmark of wrong code is worthless.
    loss_t, grads_t = reference()
    for mode, step in (("eager", eager), ("compiled", compiled)):
        loss, grads = step()
        assert abs(loss - loss_t) < 1e-4 * max(1.0, abs(loss_t)), (mode, loss, loss_t)
        for name in params:
            np.testing.assert_allclose(grads[name], grads_t[name], rtol=1e-3, atol=1e-5,
                                       err_msg=f"{mode} gradient of {name}")

    times = median_times({"pytorch": reference, "graphm eager": eager,
                          "graphm compiled": compiled}, args.repeats)
    print(f"LeNet-style training step (forward + backward), batch {BATCH}, {IMAGE}x{IMAGE}, "
          f"float32, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'mode':<18}{'ms / step':>12}{'vs PyTorch':>12}")
    for mode, seconds in times.items():
        ratio = seconds / times["pytorch"]
        verdict = "" if mode == "pytorch" else ("  ok (<= 2x)" if ratio <= 2 else "  over 2x")
        print(f"{mode:<18}{seconds * 1e3:>12.2f}{ratio:>11.2f}x{verdict}")
    figures = {"threads": args.threads, "repeats": args.repeats, "seconds": times}
    if not args.no_hvp:
        rng = np.random.default_rng(1)
        vectors = {n: rng.standard_normal(v.shape).astype(np.float32) for n, v in params.items()}
        hvp_eager = graphm_hvp_step(x, labels, params, vectors)
        hvp_compiled, hvp_program = graphm_compiled_hvp_step(x, labels, params, vectors)
        hvp_torch = torch_hvp_step(x, labels, params, vectors)
        theirs = hvp_torch()
        for mode, step in (("eager", hvp_eager), ("compiled", hvp_compiled)):
            ours = step()
            for name in params:
                scale = max(1.0, float(np.abs(theirs[name]).max()))
                np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-2,
                                           atol=1e-3 * scale,
                                           err_msg=f"{mode} Hessian-vector product of {name}")
        if args.show_program:
            print(hvp_program)
        hvp_times = median_times({"pytorch": hvp_torch, "graphm eager": hvp_eager,
                                  "graphm compiled": hvp_compiled}, max(3, args.repeats // 3))
        print(f"\nHessian-vector product of the loss w.r.t. every parameter "
              f"(torch.func.jvp(torch.func.grad) vs graphm.jvp(graphm.grad)), median of "
              f"{max(3, args.repeats // 3)}")
        print(f"{'mode':<18}{'ms / HVP':>12}{'vs PyTorch':>12}")
        for mode, seconds in hvp_times.items():
            ratio = seconds / hvp_times["pytorch"]
            verdict = "" if mode == "pytorch" else (
                "  ok (<= 1.5x)" if ratio <= 1.5 else "  over 1.5x")
            print(f"{mode:<18}{seconds * 1e3:>12.2f}{ratio:>11.2f}x{verdict}")
        figures["hvp_seconds"] = hvp_times
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
