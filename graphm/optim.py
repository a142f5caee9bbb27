r"""Optimizers: SGD (momentum, Nesterov, weight decay), Adam and AdamW, with PyTorch's equations.

An optimizer holds a list of parameters (in *parameter groups*, each with its own settings such
as ``lr``) and, per parameter, the running state the method needs (a momentum buffer; Adam's
moment estimates). ``step()`` reads each parameter's ``.grad`` and updates its values in place;
``zero_grad()`` forgets the gradients before the next ``backward``::

    optimizer = graphm.optim.Adam(model.parameters(), lr=1e-3)
    for x, y in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(graphm.tensor(x)), y)
        loss.backward()
        optimizer.step()

Every update is written as PyTorch's documentation (and code) states it, step for step, so a
graphm model and a PyTorch model fed the same gradients stay equal; the tests check this
against ``torch.optim`` one step at a time.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from graphm.tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "CosineAnnealingLR"]


class Optimizer:
    """Base class: parameter groups, per-parameter state, ``zero_grad``, ``state_dict``.

    Parameters
    ----------
    params : iterable of Parameters, or of dicts
        Parameters, or groups ``{"params": [...], "lr": ...}`` whose settings override
        ``defaults``.
    defaults : dict
        The method's settings (``lr``, ``momentum``, ...).
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}                      # id(parameter) -> dict
        params = [params] if isinstance(params, Tensor) else list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a group ``{"params": [...], **settings}``; missing settings take the defaults."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a parameter group is a dict with a 'params' list")
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__} can only optimize Parameters or "
                                f"Tensors, got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError(f"{type(self).__name__}: a parameter of shape {p.shape} does not "
                                 "require grad")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: a parameter appears in more than one "
                                 "group (or twice in one)")
            seen.add(id(p))
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown setting(s) {sorted(unknown)}; "
                            f"settings are {sorted(self.defaults)}")
        full = dict(self.defaults)
        full.update(group)
        full["params"] = params
        self._check_settings(full)
        self.param_groups.append(full)

    def _check_settings(self, group):
        """Subclasses validate their settings here (errors name the setting and the value)."""
        lr = group["lr"]
        if not isinstance(lr, numbers.Real) or lr < 0:
            raise ValueError(f"{type(self).__name__}: invalid learning rate lr={lr!r} (must be "
                             ">= 0)")
        if group.get("weight_decay", 0) < 0:
            raise ValueError(f"{type(self).__name__}: invalid weight_decay="
                             f"{group['weight_decay']!r} (must be >= 0)")

    def zero_grad(self, set_to_none=True):
        """Forget every parameter's gradient (``grad = None``, or zeros)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.zero_grad(set_to_none)

    def _parameters_with_grad(self, group):
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = np.asarray(p.grad)
            if grad.shape != p.data.shape:
                raise ValueError(f"{type(self).__name__}.step: the gradient of a parameter of "
                                 f"shape {p.data.shape} has shape {grad.shape}")
            if group.get("maximize", False):
                grad = -grad
            yield p, grad.astype(p.data.dtype, copy=False)

    def step(self):
        raise NotImplementedError

    # -- checkpointing ----------------------------------------------------------------------------

    def state_dict(self):
        """Settings and state, with parameters named by their position (0, 1, ... across groups),
        as PyTorch's; ``state`` is a list with one dict per parameter (empty before its first
        step). Arrays are copies. Ready for :func:`graphm.save`."""
        index = 0
        groups, state = [], []
        for group in self.param_groups:
            settings = {k: v for k, v in group.items() if k != "params"}
            settings["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(settings)
            for p in group["params"]:
                entry = self.state.get(id(p), {})
                state.append({k: (v.copy() if isinstance(v, np.ndarray) else v)
                              for k, v in entry.items()})
        return {"type": type(self).__name__, "state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore settings and state saved by :meth:`state_dict` (the same parameters, in the
        same order, must have been given to this optimizer)."""
        name = type(self).__name__
        kind = state_dict.get("type", name)
        if kind != name:
            raise ValueError(f"load_state_dict: the state is of a {kind} optimizer, this is {name}")
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"load_state_dict: the state has {len(groups)} parameter groups, "
                             f"this optimizer {len(self.param_groups)}")
        params = [p for group in self.param_groups for p in group["params"]]
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"load_state_dict: a group of {len(saved['params'])} parameters "
                                 f"in the state, {len(group['params'])} here")
        state = state_dict["state"]
        if isinstance(state, dict):               # PyTorch's layout: {index: {...}}
            state = [state.get(i, state.get(str(i), {})) for i in range(len(params))]
        if len(state) != len(params):
            raise ValueError(f"load_state_dict: state for {len(state)} parameters, this "
                             f"optimizer has {len(params)}")
        restored = {}
        for i, (p, entry) in enumerate(zip(params, state)):
            values = {}
            for key, value in entry.items():
                if isinstance(value, np.ndarray) or hasattr(value, "shape"):
                    value = np.array(value, dtype=p.data.dtype)
                    if value.shape != p.data.shape:
                        raise ValueError(f"load_state_dict: state '{key}' of parameter {i} has "
                                         f"shape {value.shape}, the parameter {p.data.shape}")
                values[key] = value
            if values:
                restored[id(p)] = values
        for saved, group in zip(groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = tuple(value) if isinstance(value, list) else value
        self.state = restored

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {key}: {value}" for key, value in sorted(group.items())
                      if key != "params"]
        return "\n".join(lines + [")"])


class SGD(Optimizer):
    r"""Stochastic gradient descent, with optional momentum, Nesterov momentum and weight decay.

    With gradient :math:`g_t`, weight decay :math:`\lambda`, momentum :math:`\mu`, dampening
    :math:`\tau` (PyTorch's equations):

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \\
        b_t &= \mu b_{t-1} + (1 - \tau) g_t \quad (b_1 = g_1) \\
        g_t &\leftarrow g_t + \mu b_t \ \text{(Nesterov)} \quad\text{or}\quad g_t \leftarrow b_t \\
        \theta_t &= \theta_{t-1} - \gamma g_t
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _check_settings(self, group):
        super()._check_settings(group)
        if group["momentum"] < 0:
            raise ValueError(f"SGD: invalid momentum={group['momentum']!r} (must be >= 0)")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum > 0 and zero dampening")

    def step(self):
        """Update every parameter that has a gradient."""
        for group in self.param_groups:
            lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
            weight_decay, nesterov = group["weight_decay"], group["nesterov"]
            for p, grad in self._parameters_with_grad(group):
                if weight_decay != 0:
                    grad = grad + weight_decay * p.data
                if momentum != 0:
                    state = self.state.setdefault(id(p), {})
                    buffer = state.get("momentum_buffer")
                    if buffer is None:
                        buffer = np.array(grad, dtype=p.data.dtype)    # b_1 = g_1, a copy
                    else:
                        buffer *= momentum
                        buffer += (1 - dampening) * grad
                    state["momentum_buffer"] = buffer
                    grad = grad + momentum * buffer if nesterov else buffer
                p.data -= lr * grad


class Adam(Optimizer):
    r"""Adam (Kingma and Ba, 2015), as ``torch.optim.Adam``.

    .. math::
        g_t &\leftarrow g_t + \lambda \theta_{t-1} \quad \text{(L2 weight decay)} \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        \theta_t &= \theta_{t-1} - \frac{\gamma}{1 - \beta_1^t}\,
                    \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    With ``amsgrad``, :math:`v_t` in the denominator is replaced by the running maximum.
    """

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def _check_settings(self, group):
        super()._check_settings(group)
        betas = tuple(group["betas"])
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"{type(self).__name__}: invalid betas={betas!r} (two numbers in "
                             "[0, 1))")
        if group["eps"] < 0:
            raise ValueError(f"{type(self).__name__}: invalid eps={group['eps']!r} (must be >= 0)")

    def step(self):
        """Update every parameter that has a gradient."""
        for group in self.param_groups:
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p, grad in self._parameters_with_grad(group):
                state = self.state.setdefault(id(p), {})
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = np.zeros_like(p.data)
                    state["exp_avg_sq"] = np.zeros_like(p.data)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = np.zeros_like(p.data)
                state["step"] += 1
                step = state["step"]
                if weight_decay != 0:
                    if self._decoupled:                      # AdamW: shrink the weights
                        p.data *= 1 - lr * weight_decay
                    else:                                    # Adam: L2 term in the gradient
                        grad = grad + weight_decay * p.data
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                # m += (1 - beta1)(g - m) is PyTorch's lerp form of beta1 m + (1 - beta1) g
                exp_avg += (1 - beta1) * (grad - exp_avg)
                exp_avg_sq *= beta2
                exp_avg_sq += (1 - beta2) * grad * grad
                bias_correction1 = 1 - beta1 ** step
                bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
                if group["amsgrad"]:
                    np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                    second = state["max_exp_avg_sq"]
                else:
                    second = exp_avg_sq
                denominator = np.sqrt(second) / bias_correction2_sqrt + eps
                p.data -= (lr / bias_correction1) * (exp_avg / denominator)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov and Hutter, 2019), as ``torch.optim.AdamW``.

    The weights shrink by :math:`\theta \leftarrow \theta (1 - \gamma\lambda)` before the Adam
    step, instead of an L2 term entering the gradient (and so the moment estimates).
    """

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize)


class CosineAnnealingLR:
    r"""Lower each group's learning rate along half a cosine, as ``torch.optim.lr_scheduler``'s
    scheduler of this name (its closed form). Call :meth:`step` once per epoch, after the
    optimizer's steps:

    .. math:: \gamma_t = \gamma_{\min} + \tfrac12 (\gamma_0 - \gamma_{\min})
              \bigl(1 + \cos(\pi t / T_{\max})\bigr)

    Big steps early to make progress, small steps late to settle: the final test accuracy then
    depends less on where the last epoch happened to stop.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=0):
        if isinstance(T_max, bool) or not isinstance(T_max, numbers.Integral) or T_max < 1:
            raise ValueError(f"CosineAnnealingLR: T_max must be a positive int, got {T_max!r}")
        self.optimizer, self.T_max, self.eta_min = optimizer, int(T_max), float(eta_min)
        self.base_lrs = [group.setdefault("initial_lr", group["lr"])
                         for group in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._apply()

    def _apply(self):
        t = min(self.last_epoch, self.T_max)
        factor = (1 + math.cos(math.pi * t / self.T_max)) / 2
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.eta_min + (base - self.eta_min) * factor

    def step(self):
        """Move to the next epoch's learning rate."""
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        return {"T_max": self.T_max, "eta_min": self.eta_min, "base_lrs": list(self.base_lrs),
                "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict):
        self.T_max, self.eta_min = int(state_dict["T_max"]), float(state_dict["eta_min"])
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = int(state_dict["last_epoch"])
        self._apply()
