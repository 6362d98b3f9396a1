"""Layers shared by the generator and discriminator modules."""
from __future__ import annotations

import flax.linen as nn
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
  """
  rate: float
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x, *, deterministic: bool):
    if not 0.0 <= self.rate <= 1.0:
      raise ValueError(f'dropout rate must be in [0, 1], got {self.rate}')
    if deterministic or self.rate == 0.0:
      return x
    if self.rate == 1.0:  # x / 0 in the discarded branch would make the gradient NaN
      return jnp.zeros_like(x)
    keep = rng.bernoulli(self.make_rng('dropout'), x.shape[0], x.shape[1:], 1.0 - self.rate,
                         self.axis_name)
    return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


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
