"""graphm in one screen: a convolution, its three gradients, and the adjoint identity.

Run it with ``python examples/quickstart.py`` after ``pip install .``.
"""
import numpy as np

import graphm
import graphm.functional as F

rng = np.random.default_rng(0)
x = rng.standard_normal((8, 3, 28, 28), dtype=np.float32)       # a batch of 8 RGB 28x28 images
w = rng.standard_normal((16, 3, 5, 5), dtype=np.float32) * 0.1   # 16 filters of 3x5x5
b = np.zeros(16, dtype=np.float32)

y = F.conv2d(x, w, b, stride=2, padding=2)
print(f"graphm {graphm.__version__}: OpenMP {'on' if graphm.openmp_enabled() else 'off'}, "
      f"{graphm.get_num_threads()} threads")
print(f"conv2d        input {x.shape} * weight {w.shape} -> output {y.shape}")

# Reverse mode: given dL/dy, the gradients with respect to input, weight and bias.
grad_y = np.ones_like(y)
grads = F.conv_backward(grad_y, x, w, stride=2, padding=2)
for name, value in grads._asdict().items():
    print(f"conv_backward {name:<11} {value.shape}")

# Transposed convolution is the adjoint: <conv(x, w), v> == <x, conv_transpose(v, w)>.
x64, w64 = x.astype(np.float64), w.astype(np.float64)
v = rng.standard_normal(y.shape)
lhs = np.vdot(F.conv2d(x64, w64, stride=2, padding=2), v)
rhs = np.vdot(x64, F.conv_transpose2d(v, w64, stride=2, padding=2, output_padding=1))
print(f"adjoint check <conv(x,w), v> = {lhs:.6f}, <x, conv_transpose(v,w)> = {rhs:.6f}")
