"""Layers shared by the generator and discriminator modules."""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan import rng

# The variable collection holding spectral normalisation's power-iteration vectors.
SPECTRAL = 'spectral'

# Keras defaults, which the papers' models used.
KERAS_LEAKY_SLOPE = 0.3
keras_kernel_init = nn.initializers.glorot_uniform()


class ExampleDropout(nn.Module):
  """Inverted dropout whose mask for each example depends only on its global batch index.

  flax's `nn.Dropout` draws one mask for the local batch, so the same global batch split over
  a different number of devices would be dropped differently.

  `leaky_slope` set: the layer is LeakyReLU(leaky_slope) then dropout, as one op whose backward
  pass reads only the output (LeakyReLU keeps the sign), not the pre-activation as well: the
  dcgan discriminator's backward LeakyReLU/dropout fusions then read two arrays, not three.

  The gradient passes where the output is non-zero: a kept unit whose output is exactly 0 (an
  input of exactly 0) gets a zero gradient, as a dropped one does. See `_dropped` for why.
  """
  rate: float
  axis_name: str | None = None
  leaky_slope: float | None = None

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    if not 0.0 <= self.rate <= 1.0:
      raise ValueError(f'dropout rate must be in [0, 1], got {self.rate}')
    if self.leaky_slope is not None and not self.leaky_slope > 0.0:
      raise ValueError(f'leaky_slope must be > 0 (the backward pass reads the sign of the '
                       f'output), got {self.leaky_slope}')
    if deterministic or self.rate == 0.0:
      return x if self.leaky_slope is None else nn.leaky_relu(x, self.leaky_slope)
    if self.rate == 1.0:  # x / 0 in the discarded branch would make the gradient NaN
      return jnp.zeros_like(x)
    keep = rng.bernoulli(self.make_rng('dropout'), x.shape[0], x.shape[1:], 1.0 - self.rate,
                         self.axis_name)
    return _dropped(x, keep, 1.0 - self.rate, self.leaky_slope)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _dropped(x, keep, keep_prob, leaky_slope):
  """where(keep, f(x) / keep_prob, 0), f the identity or LeakyReLU(leaky_slope), whose
  backward pass reads the mask (and LeakyReLU's branch) off the output.

  Autodiff's backward pass needs `keep`, and XLA:CPU recomputes its 20-round hash inside each
  backward fusion rather than store it: the dcgan discriminator's backward LeakyReLU/dropout
  fusions ran 2.5x slower than without the hash (1.2 against 0.5 ms at 128 x 14x14x32). The
  output is stored anyway (the next layer's input), so the backward pass reads `y != 0`.
  """
  if leaky_slope is not None:
    x = nn.leaky_relu(x, leaky_slope)
  return jnp.where(keep, x / keep_prob, jnp.zeros_like(x))


def _dropped_fwd(x, keep, keep_prob, leaky_slope):
  y = _dropped(x, keep, keep_prob, leaky_slope)
  return y, y


def _dropped_bwd(keep_prob, leaky_slope, y, g):
  kept = jnp.where(y != 0, g / keep_prob, jnp.zeros_like(g))
  if leaky_slope is None:
    return kept, None
  # The products autodiff of LeakyReLU after dropout forms, so results match it bit for bit.
  return jnp.where(y > 0, kept, leaky_slope * kept), None


_dropped.defvjp(_dropped_fwd, _dropped_bwd)


class FeatureDense(nn.Module):
  """`nn.Dense(features)` of x flattened past its batch axis, with nn.Dense's parameters
  (kernel (prod(x.shape[1:]), features), bias), computed without flattening x: a multiply and
  a sum over x's axes for one output (the discriminator's logit), a contraction for several.

  Why not flatten: XLA:CPU fuses the reshape into the fusion that computes x, and with the
  dropout mask's hash in that fusion (the dcgan discriminator's last feature maps) it runs about
  5x slower than the same ops without the reshape (2.1 against 0.4 ms at 128 x 7x7x64, 2 cores;
  about 12% of the dcgan step). Equal to nn.Dense up to float summation order.
  """
  features: int
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init, (math.prod(x.shape[1:]), self.features))
    bias = self.param('bias', self.bias_init, (self.features,))
    kernel = kernel.reshape(x.shape[1:] + (self.features,)).astype(x.dtype)
    if self.features == 1:
      # kernel[..., 0], not x[..., None]: a reshape of x would land in x's fusion again.
      y = jnp.sum(x * kernel[..., 0], axis=tuple(range(1, x.ndim)))[:, None]
    else:  # a product with many outputs would be x's size times features, a contraction is not
      y = jnp.tensordot(x, kernel, axes=x.ndim - 1)
    return y + bias.astype(y.dtype)


def minibatch_std(x, group: int):
  """x (B, H, W, C) with one more feature map: for each group of `group` consecutive examples,
  the standard deviation over the group of every feature, averaged over features and positions
  (Karras et al. 2018). A discriminator sees how varied a batch is, so a generator that draws
  too little variety is told apart. Groups never cross devices (whole groups per device) and
  real and fake batches pass separately, so a group is all real or all fake. A batch of one
  (init's dummy batch) is one group."""
  batch = x.shape[0]
  group = 1 if batch == 1 else group
  if batch % group:  # also a batch smaller than the group, which would be silently one group
    raise ValueError(f'model.minibatch_std_group={group} must divide the batch each device gives '
                     f'the discriminator ({batch}): change batch_size or the group')
  grouped = x.astype(jnp.float32).reshape((batch // group, group) + x.shape[1:])
  std = jnp.sqrt(jnp.var(grouped, axis=1) + 1e-8).mean(axis=(1, 2, 3))
  feature = jnp.broadcast_to(jnp.repeat(std, group)[:, None, None, None], x.shape[:-1] + (1,))
  return jnp.concatenate([x, feature.astype(x.dtype)], axis=-1)


def spectral_normalised(module: nn.Module, x, *, train: bool):
  """`module(x)` with its kernel divided by its largest singular value (Miyato et al. 2018).

  flax's `nn.SpectralNorm` (kernels of rank > 2 flattened to (-1, out), one power iteration
  per call), with its vector u (and the estimate sigma) in the SPECTRAL collection rather than
  'batch_stats', so it is told apart from batch statistics and carried in GANState.d_state.
  In training mode each call advances u by one iteration from the current weights, as
  torch.nn.utils.spectral_norm does on every forward pass; u depends only on the (replicated)
  weights, so every device computes the same u. Evaluation mode reads u without changing it.
  """
  return nn.SpectralNorm(module, collection_name=SPECTRAL)(x, update_stats=train)
