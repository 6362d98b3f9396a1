"""Stride-2 convolutions and transposed convolutions that XLA:CPU runs fast.

XLA:CPU (jax 0.10) hands ordinary convolutions to its YNNPACK/Eigen kernels, but two kinds that
a GAN's backward pass is full of fall off that path:
  - convolutions with lhs (input) dilation: the forward pass of every stride-2 transposed
    convolution and the input gradient of every stride-2 convolution (~20 ms each at batch 64
    on 2 cores, against ~2-10 ms for an ordinary convolution of the same size), and
  - the kernel gradient of a transposed convolution, which XLA emits with a reversed window
    and non-canonical dimension order and runs in its naive loop emitter (~230 ms per dcgan
    step at batch 64, 40% of the step; it grows with the batch, which is why the plain jax
    DCGAN gets slower per image at batch 256).
Both go away when the input dilation is moved out of the convolution ("sub-pixel" form): a
stride-2 transposed convolution runs as stride-1 convolutions producing its 4 output phases,
then depth-to-space (`strided_conv_transpose`, `strided_conv_transpose_split`), and a stride-2
convolution keeps XLA's forward pass but computes its input gradient that way
(`strided_conv_fast_grad`).
Their gradients (both data and kernel) are then ordinary stride-1 convolutions plus
reshapes/transposes. Results equal `lax.conv_general_dilated` / `lax.conv_transpose` up to float
summation order; the kernels are the usual (kh, kw, in, out) parameters, regrouped inside the
computation, so parameters, initialisation and checkpoints are unchanged. The one-convolution
form pays with zero taps, (2*ceil(k/2))^2 / k^2 more multiply-adds (1.44x for 5x5), which the
faster kernels repay on CPU; the split form (one convolution per phase) has none. Accelerators have native kernels for the dilated forms (cuDNN, TPU
convolution units), so `impl='auto'` keeps XLA's own convolution there.

`Conv` and `ConvTranspose` are drop-in flax modules (same parameter names and shapes as
`flax.linen.Conv` / `ConvTranspose` for 2-D NHWC inputs) with an `impl` field:
'auto' (phase form on CPU, XLA's convolution elsewhere) | 'phase' | 'xla'.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ('auto', 'phase', 'xla')
# Transposed convolutions with at least this many output features run one convolution per
# output phase (`strided_conv_transpose_split`); narrower ones one convolution producing all
# phases as channels (`strided_conv_transpose`), which keeps the convolution wide enough.
SPLIT_MIN_FEATURES = 16
_DIMENSION_NUMBERS = ('NHWC', 'HWIO', 'NHWC')
# The kernel gradients of stride-2 convolutions and transposed convolutions are summed over
# chunks of this many examples: XLA:CPU's kernel-gradient convolution gets slower per example
# as the batch grows (its batch-sized operands leave the cache). D's Conv_1 (5x5, 32 -> 64 at
# 14x14): 19.6 ms at batch 256 in one piece, 8.4 ms in chunks of 32 (2 cores); 5.7 against
# 4.5 ms at 128 on one core; no change at 64.
KERNEL_GRAD_CHUNK = 32


def resolve_impl(impl: str) -> str:
  if impl not in IMPLS:
    raise ValueError(f'unknown convolution impl {impl!r}: choose one of {", ".join(IMPLS)}')
  if impl == 'auto':
    return 'phase' if jax.default_backend() == 'cpu' else 'xla'
  return impl


def conv_padding(padding, in_sizes: Sequence[int], kernel_size: Sequence[int],
                 strides: Sequence[int]) -> list[tuple[int, int]]:
  """Explicit (low, high) pads of a forward convolution, as lax computes them."""
  if isinstance(padding, str):
    return list(lax.padtype_to_pads(in_sizes, kernel_size, strides, padding.upper()))
  return [tuple(p) for p in padding]


def conv_transpose_padding(padding, kernel_size: Sequence[int],
                           strides: Sequence[int]) -> list[tuple[int, int]]:
  """Explicit (low, high) pads of the lhs-dilated convolution behind `lax.conv_transpose`."""
  pads = []
  for k, s in zip(kernel_size, strides):
    if padding == 'SAME':
      pad_len = k + s - 2
      low = k - 1 if s > k - 1 else math.ceil(pad_len / 2)
    elif padding == 'VALID':
      pad_len = k + s - 2 + max(k - s, 0)
      low = k - 1
    else:
      raise ValueError(f'conv_transpose_padding: padding must be SAME or VALID, got {padding!r}')
    pads.append((low, pad_len - low))
  return pads


def strided_conv_transpose(x: jax.Array, kernel: jax.Array,
                           padding: Sequence[tuple[int, int]]):
  """`lax.conv_general_dilated(x, kernel, (1, 1), padding, lhs_dilation=(2, 2))` (what
  `lax.conv_transpose(..., strides=(2, 2))` computes, kernel not flipped) without input
  dilation: a stride-1 convolution to the 4 output phases, then depth-to-space."""
  n, in_h, in_w, c = x.shape
  k_h, k_w, _, features = kernel.shape
  out, pads, kernel_pads, taps = [], [], [], []
  for size, k, (low, high) in zip((in_h, in_w), (k_h, k_w), padding):
    out_size = 2 * size - 1 + low + high - k + 1
    per_phase = -(-out_size // 2)
    # Output o = 2p + a reads input p + d through kernel tap 2d + low - a.
    d_min, d_max = -(low // 2), (k - low) // 2
    count = d_max - d_min + 1
    shift = 1 - low - 2 * d_min  # pad the kernel so tap 2j + (1 - a) is d = d_min + j
    tail = 2 * count - k - shift
    assert shift in (0, 1) and tail >= 0, (k, low, shift, tail)
    out.append(out_size)
    taps.append(count)
    kernel_pads.append((shift, tail))
    pads.append((-d_min, per_phase - 1 + d_max - (size - 1)))
  if min(p for pad in pads for p in pad) < 0:  # crop input rows no output reads
    x = lax.pad(x, jnp.zeros((), x.dtype),
                [(0, 0, 0), *((min(lo, 0), min(hi, 0), 0) for lo, hi in pads), (0, 0, 0)])
    pads = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
  t_h, t_w = taps
  kernel = jnp.pad(kernel, [*kernel_pads, (0, 0), (0, 0)])
  kernel = kernel.reshape(t_h, 2, t_w, 2, c, features)[:, ::-1, :, ::-1]  # phase a = 1 - r
  kernel = kernel.transpose(0, 2, 4, 1, 3, 5).reshape(t_h, t_w, c, 4 * features)
  # Padding inside the convolution (not lax.pad before it) keeps its input gradient a
  # same-size convolution that XLA:CPU runs on its fast path.
  y = lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_DIMENSION_NUMBERS)
  rows, cols = y.shape[1], y.shape[2]
  y = y.reshape(n, rows, cols, 2, 2, features).transpose(0, 1, 3, 2, 4, 5)
  y = y.reshape(n, 2 * rows, 2 * cols, features)
  return y[:, :out[0], :out[1]]


def strided_conv_transpose_split(x: jax.Array, kernel: jax.Array,
                                 padding: Sequence[tuple[int, int]]):
  """As `strided_conv_transpose`, but one stride-1 convolution per output phase, each with only
  the kernel taps that phase reads (no zero taps: exactly the transposed convolution's
  multiply-adds), then the phases interleaved."""
  n, in_h, in_w, c = x.shape
  k_h, k_w, _, features = kernel.shape
  dims = []
  for size, k, (low, high) in zip((in_h, in_w), (k_h, k_w), padding):
    out_size = 2 * size - 1 + low + high - k + 1
    per_phase = -(-out_size // 2)
    phases = []
    for a in (0, 1):
      # Output 2p + a reads input p + d through tap 2d + low - a, for taps in [0, k).
      d_min, d_max = -((low - a) // 2), (k - 1 - low + a) // 2
      first_tap = 2 * d_min + low - a
      pads = (-d_min, per_phase - 1 + d_max - (size - 1))
      taps = slice(first_tap, first_tap + 2 * (d_max - d_min) + 1, 2) if d_max >= d_min else None
      phases.append((taps, pads))
    dims.append((out_size, phases))
  outputs = []
  for taps_h, pads_h in dims[0][1]:
    row = []
    for taps_w, pads_w in dims[1][1]:
      if taps_h is None or taps_w is None:  # no kernel tap reaches this phase
        row.append(jnp.zeros((n, -(-dims[0][0] // 2), -(-dims[1][0] // 2), features),
                             jnp.result_type(x, kernel)))
        continue
      pads = [pads_h, pads_w]
      xp = x
      if min(min(pads_h), min(pads_w)) < 0:
        xp = lax.pad(x, jnp.zeros((), x.dtype),
                     [(0, 0, 0), *((min(lo, 0), min(hi, 0), 0) for lo, hi in pads), (0, 0, 0)])
        pads = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
      row.append(lax.conv_general_dilated(xp, kernel[taps_h, taps_w], (1, 1), pads,
                                          dimension_numbers=_DIMENSION_NUMBERS))
    outputs.append(jnp.stack(row, axis=3))  # (n, P, P, ax, f)
  y = jnp.stack(outputs, axis=2)  # (n, P, ay, P, ax, f)
  rows, cols = y.shape[1], y.shape[3]
  y = y.reshape(n, 2 * rows, 2 * cols, features)
  return y[:, :dims[0][0], :dims[1][0]]


def _kernel_grad_in_chunks(convolve, x, kernel, dy):
  """The kernel gradient of `convolve(x, kernel)` against `dy`, summed over chunks of
  KERNEL_GRAD_CHUNK examples (in float32, so that bfloat16 compute rounds once)."""
  d_kernel = None
  for start in range(0, x.shape[0], KERNEL_GRAD_CHUNK):
    chunk = slice(start, start + KERNEL_GRAD_CHUNK)
    _, kernel_vjp = jax.vjp(functools.partial(convolve, x[chunk]), kernel)
    part = kernel_vjp(dy[chunk])[0].astype(jnp.float32)
    d_kernel = part if d_kernel is None else d_kernel + part
  return d_kernel.astype(kernel.dtype)


def _phase_conv_transpose_forward(x, kernel, padding):
  if kernel.shape[-1] >= SPLIT_MIN_FEATURES:
    return strided_conv_transpose_split(x, kernel, padding)
  return strided_conv_transpose(x, kernel, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _phase_conv_transpose(x, kernel, padding: tuple[tuple[int, int], ...]):
  """The sub-pixel transposed convolution, its kernel gradient summed over chunks."""
  return _phase_conv_transpose_forward(x, kernel, padding)


def _phase_conv_transpose_fwd(x, kernel, padding):
  return _phase_conv_transpose(x, kernel, padding), (x, kernel)


def _phase_conv_transpose_bwd(padding, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _phase_conv_transpose_forward(x, kernel, padding), x)
  (dx,) = input_vjp(dy)
  convolve = lambda x, k: _phase_conv_transpose_forward(x, k, padding)
  return dx, _kernel_grad_in_chunks(convolve, x, kernel, dy)


_phase_conv_transpose.defvjp(_phase_conv_transpose_fwd, _phase_conv_transpose_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def strided_conv_fast_grad(x: jax.Array, kernel: jax.Array, padding: tuple[tuple[int, int], ...]):
  """`lax.conv_general_dilated(x, kernel, (2, 2), padding)` (NHWC, HWIO), whose input gradient
  runs as `strided_conv_transpose` instead of XLA's input-dilated convolution."""
  return lax.conv_general_dilated(x, kernel, (2, 2), padding, dimension_numbers=_DIMENSION_NUMBERS)


def _strided_conv_fwd(x, kernel, padding):
  return strided_conv_fast_grad(x, kernel, padding), (x, kernel)


def _strided_conv_bwd(padding, residuals, dy):
  x, kernel = residuals
  d_kernel = _kernel_grad_in_chunks(
      lambda x, k: lax.conv_general_dilated(x, k, (2, 2), padding,
                                            dimension_numbers=_DIMENSION_NUMBERS),
      x, kernel, dy)
  # dx = the transposed convolution of dy: flipped kernel, in/out swapped, input-dilated by 2.
  pads = []
  for size, out_size, k, (low, _) in zip(x.shape[1:3], dy.shape[1:3], kernel.shape[:2], padding):
    t_low = k - 1 - low
    pads.append((t_low, size + k - 1 - t_low - (2 * out_size - 1)))
  flipped = kernel[::-1, ::-1].swapaxes(2, 3)
  return _phase_conv_transpose(dy, flipped, tuple(pads)), d_kernel


strided_conv_fast_grad.defvjp(_strided_conv_fwd, _strided_conv_bwd)


def _pair(value) -> tuple[int, int]:
  return (value, value) if isinstance(value, int) else tuple(value)


class _Conv2D(nn.Module):
  """flax.linen.Conv-style parameters ('kernel' HWIO, 'bias'); subclasses say how to convolve."""
  features: int
  kernel_size: Sequence[int]
  strides: int | Sequence[int] = 1
  padding: str | Sequence[tuple[int, int]] = 'SAME'
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  impl: str = 'auto'

  def convolve(self, x, kernel, kernel_size, strides):
    raise NotImplementedError

  @nn.compact
  def __call__(self, x):
    kernel_size, strides = _pair(self.kernel_size), _pair(self.strides)
    kernel = self.param('kernel', self.kernel_init, kernel_size + (x.shape[-1], self.features))
    dtype = jnp.result_type(x, kernel)  # flax's promotion: float32 params keep float32 compute
    y = self.convolve(x.astype(dtype), kernel.astype(dtype), kernel_size, strides)
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,)).astype(y.dtype)
    return y


class Conv(_Conv2D):
  """2-D NHWC convolution with `flax.linen.Conv`'s parameters; stride 2 runs as
  `strided_conv_fast_grad` when `impl` resolves to 'phase'."""

  def convolve(self, x, kernel, kernel_size, strides):
    padding = conv_padding(self.padding, x.shape[1:3], kernel_size, strides)
    if strides == (2, 2) and resolve_impl(self.impl) == 'phase':
      return strided_conv_fast_grad(x, kernel, tuple(map(tuple, padding)))
    return lax.conv_general_dilated(x, kernel, strides, padding,
                                    dimension_numbers=_DIMENSION_NUMBERS)


class ConvTranspose(_Conv2D):
  """2-D NHWC transposed convolution with `flax.linen.ConvTranspose`'s parameters (kernel not
  flipped, as flax's default; `padding` a string); stride 2 runs as `strided_conv_transpose`
  when `impl` resolves to 'phase'."""

  def convolve(self, x, kernel, kernel_size, strides):
    if strides == (2, 2) and resolve_impl(self.impl) == 'phase':
      padding = conv_transpose_padding(self.padding, kernel_size, strides)
      return _phase_conv_transpose(x, kernel, tuple(padding))
    return lax.conv_transpose(x, kernel, strides, self.padding,
                              dimension_numbers=_DIMENSION_NUMBERS)
