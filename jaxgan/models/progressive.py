"""A progressively grown DCGAN-style pair for 28x28 digits (Karras et al. 2018, "practical
approach" recipe): both networks always hold the 14x14 and the 28x28 paths, and `alpha` in
[0, 1] blends them, so growing is a schedule of one input (`growth_alpha`). Called with
`grown=False` (only valid while alpha is 0, before growth) the networks return the 14x14 path's
result alone: nothing live reads the 28x28 convolutions, so XLA drops them and a training step
before growth costs about half of one after (the trainer compiles one program for each phase).

Generator: z -> Dense(7*7*64) -> norm -> LReLU -> ConvT(64, 5, s2) -> norm -> LReLU -> h (14x14)
  out = (1 - alpha) * upsample(toImage14(h)) + alpha * toImage28(ConvT(32, 5, s2)(h) ...),
  toImage = 1x1 convolution to one channel, then tanh (a convex blend stays in [-1, 1]).
Discriminator: the input is low-passed by the same alpha, x <- (1 - alpha) * up(down(x)) +
  alpha * x, for real and generated images alike; then
  h = (1 - alpha) * fromImage14(down(x)) + alpha * Conv(64, 5, s2)(fromImage28(x)) (14x14x64)
  -> Conv(128, 5, s2) -> LReLU -> Flatten -> Dense(1).
At alpha = 0 the generator's output is the upsampled 14x14 image and the discriminator sees only
14x14 content; at alpha = 1 both are plain 28x28 networks. With `grown=False` the 28x28 layers
are still called, so their state advances as at alpha 0 with `grown=True` (batch statistics of
the generator's, spectral-norm vectors of the discriminator's); only what feeds nothing is dropped.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxgan import convs
from jaxgan.layers import KERAS_LEAKY_SLOPE, keras_kernel_init, spectral_normalised

LATENT_DIM = 100


def _leaky(x):
  return nn.leaky_relu(x, KERAS_LEAKY_SLOPE)


def downsample(x):
  """2x2 average pooling: 28x28 -> 14x14."""
  return nn.avg_pool(x, (2, 2), (2, 2))


def upsample(x):
  """Nearest-neighbour 2x: 14x14 -> 28x28 (downsample(upsample(x)) == x)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def growth_alpha(step, grow_step: int, fade_steps: int):
  """0 before `grow_step`, rising linearly to 1 over `fade_steps` generator steps."""
  if fade_steps == 0:
    return jnp.where(step >= grow_step, 1.0, 0.0).astype(jnp.float32)
  return jnp.clip((jnp.asarray(step, jnp.float32) - grow_step) / fade_steps, 0.0, 1.0)


class Generator(nn.Module):
  axis_name: str | None = None  # batch statistics are averaged over this device axis
  conv_impl: str = 'auto'
  norm: str = 'batch'  # batch | instance

  @nn.compact
  def __call__(self, z, *, train: bool, alpha=1.0, grown: bool = True):
    def normalise(x):
      if self.norm == 'instance':
        return nn.InstanceNorm(epsilon=1e-3)(x)
      return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3,
                          axis_name=self.axis_name)(x)

    def to_image(x):
      return jnp.tanh(nn.Conv(1, (1, 1), kernel_init=keras_kernel_init)(x))

    x = nn.Dense(7 * 7 * 64, use_bias=False, kernel_init=keras_kernel_init)(z)
    x = _leaky(normalise(x.reshape((-1, 7, 7, 64))))
    h14 = _leaky(normalise(convs.ConvTranspose(64, (5, 5), (2, 2), 'SAME', use_bias=False,
                                               kernel_init=keras_kernel_init,
                                               impl=self.conv_impl)(x)))
    h28 = _leaky(normalise(convs.ConvTranspose(32, (5, 5), (2, 2), 'SAME', use_bias=False,
                                               kernel_init=keras_kernel_init,
                                               impl=self.conv_impl)(h14)))
    if not grown:
      return upsample(to_image(h14))
    return (1.0 - alpha) * upsample(to_image(h14)) + alpha * to_image(h28)


class Discriminator(nn.Module):
  axis_name: str | None = None  # kept for a uniform interface (no dropout here)
  conv_impl: str = 'auto'
  spectral_norm: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool, alpha=1.0, grown: bool = True):
    def layer(module, x):
      return spectral_normalised(module, x, train=train) if self.spectral_norm else module(x)

    x = (1.0 - alpha) * upsample(downsample(x)) + alpha * x
    h14 = _leaky(layer(nn.Conv(64, (1, 1), kernel_init=keras_kernel_init), downsample(x)))
    h28 = _leaky(layer(nn.Conv(32, (1, 1), kernel_init=keras_kernel_init), x))
    h28 = _leaky(layer(convs.Conv(64, (5, 5), (2, 2), 'SAME', kernel_init=keras_kernel_init,
                                  impl=self.conv_impl), h28))
    h = (1.0 - alpha) * h14 + alpha * h28 if grown else h14
    h = _leaky(layer(convs.Conv(128, (5, 5), (2, 2), 'SAME', kernel_init=keras_kernel_init,
                                impl=self.conv_impl), h))
    return layer(nn.Dense(1, kernel_init=keras_kernel_init), h.reshape((h.shape[0], -1)))[:, 0]
