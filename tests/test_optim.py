"""graphm.optim against torch.optim, one step at a time, and the optimizers' own API."""
import math

import numpy as np
import pytest

from graphm import nn, optim

torch = pytest.importorskip("torch")

CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.5, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True)),
]
# float32 state differs from PyTorch's by a few ulps (its loops fuse some operations)
TOLERANCE = {np.float32: 2e-6, np.float64: 1e-13}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name, settings", CONFIGS,
                         ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in s.items())}"
                              for n, s in CONFIGS])
def test_steps_match_torch(name, settings, dtype):
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal(5).astype(dtype)]
    params = [nn.Parameter(a) for a in start]
    torch_params = [torch.tensor(a, requires_grad=True) for a in start]
    ours = getattr(optim, name)(params, **settings)
    theirs = getattr(torch.optim, name)(torch_params, **settings)
    for step in range(8):
        for p, tp in zip(params, torch_params):
            grad = rng.standard_normal(p.shape).astype(dtype)
            p.grad, tp.grad = grad.copy(), torch.from_numpy(grad)
        if step == 5:                         # a parameter without gradient is left alone
            params[1].grad, torch_params[1].grad = None, None
        ours.step()
        theirs.step()
        for p, tp in zip(params, torch_params):
            assert p.dtype == dtype
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=TOLERANCE[dtype],
                                       atol=TOLERANCE[dtype], err_msg=f"step {step + 1}")


def test_parameter_groups_have_their_own_settings():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    optimizer = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad = b.grad = np.ones(2)
    optimizer.step()
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_allclose(b.data, 0.0)
    optimizer.zero_grad()
    assert a.grad is None and b.grad is None


def test_state_dict_resumes_exactly():
    """Three steps, save, a new optimizer loads the state, two more steps == five steps."""
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(3) for _ in range(5)]
    start = rng.standard_normal(3)

    def run(steps, optimizer, parameter):
        for grad in steps:
            parameter.grad = grad.copy()
            optimizer.step()

    straight = nn.Parameter(start)
    straight_optimizer = optim.Adam([straight], lr=0.1, amsgrad=True)
    run(grads, straight_optimizer, straight)

    first = nn.Parameter(start)
    first_optimizer = optim.Adam([first], lr=0.1, amsgrad=True)
    run(grads[:3], first_optimizer, first)
    state = first_optimizer.state_dict()
    state["state"][0]["exp_avg"][0] += 0   # a copy, not the live buffer
    second = nn.Parameter(first.data)
    second_optimizer = optim.Adam([second], lr=0.5, amsgrad=True)
    second_optimizer.load_state_dict(state)
    assert second_optimizer.param_groups[0]["lr"] == 0.1
    run(grads[3:], second_optimizer, second)
    np.testing.assert_array_equal(second.data, straight.data)

    with pytest.raises(ValueError, match="state is of a Adam optimizer, this is SGD"):
        optim.SGD([second], lr=0.1).load_state_dict(state)
    with pytest.raises(ValueError, match="state for 1 parameters, this optimizer has 2"):
        optim.Adam([nn.Parameter(np.ones(3)), nn.Parameter(np.ones(3))]).load_state_dict(
            {**state, "param_groups": [{**state["param_groups"][0], "params": [0, 1]}]})


def test_sgd_momentum_state_round_trips_through_a_checkpoint(tmp_path):
    import graphm
    p = nn.Parameter(np.ones(2))
    optimizer = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(2)
    optimizer.step()
    graphm.save(optimizer.state_dict(), tmp_path / "o.npz")
    again = optim.SGD([p], lr=0.1, momentum=0.9)
    again.load_state_dict(graphm.load(tmp_path / "o.npz"))
    np.testing.assert_array_equal(again.state[id(p)]["momentum_buffer"], np.ones(2))


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD(p, lr=-1), "invalid learning rate lr=-1"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "Nesterov momentum requires a momentum"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), "invalid momentum"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), "invalid betas"),
    (lambda p: optim.Adam(p, eps=-1), "invalid eps"),
    (lambda p: optim.AdamW(p, weight_decay=-0.1), "invalid weight_decay"),
    (lambda p: optim.SGD([{"params": p, "momentun": 0.9}], lr=0.1), "unknown setting"),
    (lambda p: optim.SGD(p + p, lr=0.1), "more than one group"),
    (lambda p: optim.SGD([], lr=0.1), "empty parameter list"),
    (lambda p: optim.SGD([np.ones(2)], lr=0.1), "can only optimize Parameters"),
])
def test_bad_settings(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make([nn.Parameter(np.ones(2))])


def test_cosine_schedule_matches_torch():
    p = nn.Parameter(np.ones(1))
    tp = torch.nn.Parameter(torch.ones(1))
    ours = optim.SGD([p], lr=0.1)
    theirs = torch.optim.SGD([tp], lr=0.1)
    schedule = optim.CosineAnnealingLR(ours, T_max=7, eta_min=0.001)
    torch_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=7, eta_min=0.001)
    for _ in range(7):
        assert schedule.get_last_lr()[0] == pytest.approx(torch_schedule.get_last_lr()[0],
                                                          rel=1e-12)
        ours.step()
        theirs.step()
        schedule.step()
        torch_schedule.step()
    assert schedule.get_last_lr()[0] == pytest.approx(0.001)
    assert math.isclose(schedule.get_last_lr()[0], torch_schedule.get_last_lr()[0], rel_tol=1e-9)
