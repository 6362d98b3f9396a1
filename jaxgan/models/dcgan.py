"""The papers' Keras DCGAN (the TensorFlow DCGAN tutorial network), layer for layer.

Keras defaults are kept where the papers relied on them: glorot-uniform kernels, zero biases,
LeakyReLU slope 0.3, BatchNormalization momentum 0.99 and epsilon 1e-3. Parameter counts equal
the Keras model's (371,936 trainable in G, 55,233 in D; pinned in tests/test_models.py).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxgan import convs
from jaxgan.layers import (KERAS_LEAKY_SLOPE, ExampleDropout, FeatureDense, keras_kernel_init,
                           minibatch_std, spectral_normalised)

LATENT_DIM = 100


def _leaky(x):
  return nn.leaky_relu(x, KERAS_LEAKY_SLOPE)


class Generator(nn.Module):
  """z -> Dense(7*7*64) -> BN -> LReLU -> 7x7x64 -> ConvT(32, 5, s2) -> BN -> LReLU
  -> ConvT(1, 5, s2, tanh) -> 28x28x1.

  `norm='instance'` puts instance normalisation (per example and channel over the spatial
  axes, learned scale and bias; no batch statistics) where BN is, the Dense output being
  normalised as 7x7x64 feature maps. `norm='conditional_batch'` (class-conditional BN, de Vries
  et al. 2017, as in Miyato & Koyama's projection-GAN generator) keeps BN's statistics but
  takes each channel's scale and shift from `condition` (a label embedding, B x E) through
  zero-initialised linear maps, so it starts as plain BN and the label reaches every layer.
  `width` multiplies both hidden layers' channels (64 and 32): a wider generator than the
  papers', for more capacity (width=1 is the papers' network). `depth` > 0 makes it deeper:
  `depth` 3x3 conv -> norm -> LReLU blocks at 14x14, and the last transposed convolution
  gives 16 * width feature maps at 28x28 instead of the image, followed by `depth` - 1 more
  blocks and a 3x3 conv to the image (depth=0 is the papers' network).
  """
  axis_name: str | None = None  # batch statistics are averaged over this device axis
  conv_impl: str = 'auto'  # jaxgan.convs: auto | phase | xla (same parameters and results)
  norm: str = 'batch'  # batch | instance | conditional_batch
  width: int = 1
  depth: int = 0

  @nn.compact
  def __call__(self, z, *, train: bool, condition=None):
    if (condition is None) != (self.norm != 'conditional_batch'):
      raise ValueError("the dcgan generator takes a condition exactly when norm='conditional_batch'"
                       f' (norm={self.norm!r}, condition given: {condition is not None})')

    def normalise(x):
      if self.norm == 'instance':
        return nn.InstanceNorm(epsilon=1e-3)(x)
      conditional = self.norm == 'conditional_batch'
      return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3,
                          axis_name=self.axis_name, use_scale=not conditional,
                          use_bias=not conditional)(x)

    def condition_channels(x):
      if self.norm != 'conditional_batch':
        return x
      channels = x.shape[-1]
      scale = nn.Dense(channels, kernel_init=nn.initializers.zeros)(condition)
      shift = nn.Dense(channels, kernel_init=nn.initializers.zeros)(condition)
      return x * (1.0 + scale[:, None, None, :].astype(x.dtype)) + shift[:, None, None, :]

    channels = 64 * self.width
    x = nn.Dense(7 * 7 * channels, use_bias=False, kernel_init=keras_kernel_init)(z)
    if self.norm == 'instance':
      x = _leaky(normalise(x.reshape((-1, 7, 7, channels))))
    elif self.norm == 'conditional_batch':
      x = _leaky(condition_channels(normalise(x).reshape((-1, 7, 7, channels))))
    else:  # the original op order: XLA's fusion, hence float rounding, follows it
      x = _leaky(normalise(x)).reshape((-1, 7, 7, channels))
    x = convs.ConvTranspose(channels // 2, (5, 5), (2, 2), 'SAME', use_bias=False,
                            kernel_init=keras_kernel_init, impl=self.conv_impl)(x)
    x = _leaky(condition_channels(normalise(x)))

    def blocks(x, count):
      for _ in range(count):
        x = nn.Conv(x.shape[-1], (3, 3), padding='SAME', use_bias=False,
                    kernel_init=keras_kernel_init)(x)
        x = _leaky(condition_channels(normalise(x)))
      return x

    if not self.depth:
      x = convs.ConvTranspose(1, (5, 5), (2, 2), 'SAME', use_bias=False,
                              kernel_init=keras_kernel_init, impl=self.conv_impl)(x)
      return jnp.tanh(x)
    x = blocks(x, self.depth)
    x = convs.ConvTranspose(channels // 4, (5, 5), (2, 2), 'SAME', use_bias=False,
                            kernel_init=keras_kernel_init, impl=self.conv_impl)(x)
    x = blocks(_leaky(condition_channels(normalise(x))), self.depth - 1)
    x = nn.Conv(1, (3, 3), padding='SAME', kernel_init=keras_kernel_init)(x)
    return jnp.tanh(x)


class Discriminator(nn.Module):
  """x -> Conv(32, 5, s2) -> LReLU -> Dropout(0.3) -> Conv(64, 5, s2) -> LReLU -> Dropout(0.3)
  -> Flatten -> Dense(1); `spectral_norm=True` divides every kernel by its spectral norm
  (`jaxgan.layers.spectral_normalised`); `width` multiplies both convolutions' channels;
  `minibatch_std_group` > 0 adds the minibatch standard-deviation feature map of groups of that
  many examples (`jaxgan.layers.minibatch_std`) to the 7x7 features."""
  dropout_rate: float = 0.3
  axis_name: str | None = None  # keys the per-example dropout masks to global batch indices
  conv_impl: str = 'auto'  # jaxgan.convs: auto | phase | xla (same parameters and results)
  spectral_norm: bool = False
  width: int = 1
  minibatch_std_group: int = 0

  @nn.compact
  def __call__(self, x, *, train: bool):
    phi = self.features(x, train=train)  # first: layer names follow creation order
    # nn.Dense's name and parameters, without flattening phi (see FeatureDense).
    head = FeatureDense(1, kernel_init=keras_kernel_init, name='Dense_0')
    return self.layer(head, phi, train=train)[:, 0]

  def layer(self, module: nn.Module, x, *, train: bool):
    return spectral_normalised(module, x, train=train) if self.spectral_norm else module(x)

  def features(self, x, *, train: bool):
    """The feature maps before the output layer (phi(x) of jaxgan.models.conditional, not
    flattened: the heads contract over all their axes, see FeatureDense); called from a
    compact method, whose scope names the layers as before the split."""
    for features in (32 * self.width, 64 * self.width):
      x = self.layer(convs.Conv(features, (5, 5), (2, 2), 'SAME', kernel_init=keras_kernel_init,
                                impl=self.conv_impl), x, train=train)
      x = ExampleDropout(self.dropout_rate, self.axis_name, leaky_slope=KERAS_LEAKY_SLOPE)(
          x, deterministic=not train)
    if self.minibatch_std_group:
      x = minibatch_std(x, self.minibatch_std_group)
    return x
