"""``graphm.compile(module, example_input)``: a Module traced into a compiled GraphM program.

A Module's ``forward`` is written with :mod:`graphm.functional` and Tensor methods, and those
work on the Vars of a :class:`graphm.GraphM` as well as on Tensors. Tracing is therefore just a
call: make a graph input for the example, stand a graph param in for every Parameter, call
``forward``, compile the Var that comes out. The program holds no numbers of its own; each run
reads the module's *current* parameters, so the compiled module and the eager one share their
weights (and an optimizer updating one updates both).

Training in compiled mode puts the loss into the program too: :meth:`CompiledModule.forward_backward`
runs one forward sweep and one reverse sweep of the program and adds the gradients into each
Parameter's ``.grad``, just as ``loss.backward()`` does in eager mode; any optimizer then steps.

A program is specialised to the shapes it was traced with (as the SSA graph's shapes are checked
when it is built). A batch of another shape (the last, smaller one of an epoch) is traced once
more and cached, as ``torch.compile`` recompiles on a new shape.
"""
from __future__ import annotations

import re

import numpy as np

from graphm.graph import GraphM
from graphm.nn.module import Module
from graphm.tensor import Tensor

__all__ = ["compile", "CompiledModule"]


def _identifier(name, taken):
    """``features.0.weight`` -> ``features_0_weight`` (program arguments are identifiers)."""
    ident = re.sub(r"\W", "_", name)
    if not ident.isidentifier():
        ident = "p" + ident
    base, counter = ident, 1
    while ident in taken:
        counter += 1
        ident = f"{base}_{counter}"
    taken.add(ident)
    return ident


def _as_array(value):
    """A NumPy array from an array or a Tensor (whose values are ``.data``)."""
    return value.data if isinstance(value, Tensor) else np.asarray(value)


class CompiledModule:
    """A Module and the GraphM programs traced from it; made by :func:`compile`.

    Attributes
    ----------
    module : Module
        The eager module whose Parameters the programs read.
    program : graphm.graph.Program
        The forward program for the example input's shape (``print`` it to see the SSA code).
    param_names : dict
        Program argument name -> dotted parameter name.
    """

    def __init__(self, module, example_input, loss=None):
        if not isinstance(module, Module):
            raise TypeError(f"compile: expected a graphm.nn.Module, got {type(module).__name__}")
        self.module = module
        self.loss = loss
        taken = {"input", "target"}
        self._parameters = {}                        # program name -> Parameter
        for name, parameter in module.named_parameters():
            self._parameters[_identifier(name, taken)] = parameter
        self.param_names = {ident: name for ident, name in
                            zip(self._parameters, dict(module.named_parameters()))}
        self._programs = {}      # (shapes, dtypes) -> (program, output shape, output dtype)
        example = _as_array(example_input)
        self.program = self._program(example.shape, example.dtype)[0]

    # -- tracing ----------------------------------------------------------------------------------

    def _trace(self, input_shape, input_dtype, target=None):
        """Build the graph: module(input) and, with ``target`` (shape, dtype), the loss too.

        Returns ``(program, output_shape, output_dtype)``.
        """
        graph = GraphM()
        x = graph.input("input", input_shape, input_dtype)
        var_of = {id(parameter): graph.param(ident, parameter.shape, parameter.dtype)
                  for ident, parameter in self._parameters.items()}
        swapped = []
        try:
            # stand a graph param in for every Parameter, in every module that holds it
            for module in self.module.modules():
                for key, parameter in list(module._parameters.items()):
                    if parameter is not None:
                        swapped.append((module, key, parameter))
                        module._parameters[key] = var_of[id(parameter)]
            output = self.module(x)
            if target is None:
                program = graph.compile(output)
            else:
                y = graph.input("target", *target)
                program = graph.compile((self.loss(output, y), output))
        finally:
            # put the Parameters back, last swap first, whatever happened
            for module, key, parameter in reversed(swapped):
                module._parameters[key] = parameter
        return program, output.shape, output.dtype

    def _program(self, input_shape, input_dtype, target=None):
        key = (tuple(input_shape), np.dtype(input_dtype).str,
               None if target is None else (tuple(target[0]), np.dtype(target[1]).str))
        if key not in self._programs:
            self._programs[key] = self._trace(tuple(input_shape), np.dtype(input_dtype), target)
        return self._programs[key]

    def _arguments(self, program, input, target=None):
        """The program's keyword arguments: the current parameter values and the batch."""
        arguments = {ident: self._parameters[ident].data for ident in program.params}
        arguments["input"] = input
        if target is not None:
            arguments["target"] = target
        return arguments

    # -- running ------------------------------------------------------------------------------------

    def __call__(self, input):
        """The module's output for ``input`` (a NumPy array or Tensor), as a NumPy array."""
        input = _as_array(input)
        program, _, _ = self._program(input.shape, input.dtype)
        return program(**self._arguments(program, input))

    def forward_backward(self, input, target):
        """One training pass in compiled mode: the loss, and its gradients added into ``.grad``.

        Parameters
        ----------
        input, target : NumPy arrays (or Tensors)
            A batch and what the loss compares the output with (class labels, or the input
            itself for an autoencoder).

        Returns
        -------
        loss : float
        output : ndarray
            The module's output for the batch (for accuracy), from the same forward sweep.
        """
        if self.loss is None:
            raise ValueError("forward_backward: this CompiledModule has no loss; compile with "
                             "graphm.compile(module, example_input, loss=F.cross_entropy)")
        input, target = _as_array(input), _as_array(target)
        program, output_shape, output_dtype = self._program(input.shape, input.dtype,
                                                            (target.shape, target.dtype))
        # seed the loss with 1 and the (also returned) output with 0: the gradient of the loss
        cotangents = (np.ones((), output_dtype), np.zeros(output_shape, output_dtype))
        (loss, output), grads = program.vjp(self._arguments(program, input, target), cotangents,
                                            return_outputs=True)
        for ident, parameter in self._parameters.items():
            g = grads.get(ident)
            if parameter.requires_grad and g is not None:
                parameter.grad = g if parameter.grad is None else parameter.grad + g
        return float(loss), output

    def training_program(self, input, target):
        """The whole training step for batches shaped like ``input`` and ``target``, as one
        Program: the loss and its gradient with respect to every parameter.

        It is the loss program's :meth:`~graphm.graph.Program.grad_program`: one graph holding
        the forward pass and the backward pass, each gradient a node of graphm ops (a
        convolution's weight gradient is a ``conv_weight_grad`` node). ``print`` it to read
        compiled backprop; call it with ``input=``, ``target=`` and the parameters (by program
        name, see :attr:`param_names`) to get ``(loss, grad_<name>, ...)``, in the order of
        ``output_names``. Differentiate it again for Hessian-vector products.
        """
        if self.loss is None:
            raise ValueError("training_program: this CompiledModule has no loss; compile with "
                             "graphm.compile(module, example_input, loss=F.cross_entropy)")
        input, target = _as_array(input), _as_array(target)
        key = ("training", input.shape, input.dtype.str, target.shape, target.dtype.str)
        if key not in self._programs:
            graph = GraphM()
            x = graph.input("input", input.shape, input.dtype)
            y = graph.input("target", target.shape, target.dtype)
            forward, _, _ = self._program(input.shape, input.dtype, (target.shape, target.dtype))
            loss, _ = forward(input=x, target=y, **{
                name: graph.param(name, shape, dtype)
                for name, (shape, dtype) in forward.params.items()})
            self._programs[key] = graph.compile(loss).grad_program(
                [name for name in forward.params], with_value=True)
        return self._programs[key]

    def __repr__(self):
        return f"CompiledModule({type(self.module).__name__}, {self.program!r})"


def compile(module, example_input, loss=None):
    """Trace ``module`` into a compiled :class:`graphm.GraphM` program that shares its weights.

    Parameters
    ----------
    module : graphm.nn.Module
    example_input : ndarray or Tensor
        Fixes the input shape and dtype of :attr:`CompiledModule.program`.
    loss : callable, optional
        ``loss(output, target)`` written with graphm.functional (``F.cross_entropy``,
        ``F.mse_loss``): enables :meth:`CompiledModule.forward_backward` for training.

    Returns
    -------
    CompiledModule
        ``compiled(x)`` gives the output as a NumPy array; ``print(compiled.program)`` shows the
        SSA program.
    """
    return CompiledModule(module, example_input, loss)
