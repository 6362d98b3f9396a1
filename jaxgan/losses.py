"""GAN losses as pure functions of discriminator outputs, apart from any network.

Discriminator outputs are logits (BCE) or critic values (Wasserstein), one per example. Every
loss is a mean over the local batch; the train step averages over devices.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxgan import rng

LOSS_NAMES = ('bce', 'wgan_gp')


def bce_discriminator_loss(real_logits, fake_logits, label_smoothing: float = 0.0):
  """Binary cross-entropy with real target 1 - label_smoothing (one-sided) and fake target 0."""
  real_target = jnp.full_like(real_logits, 1.0 - label_smoothing)
  return (optax.sigmoid_binary_cross_entropy(real_logits, real_target).mean()
          + optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits)).mean())


def bce_generator_loss(fake_logits):
  """Non-saturating generator loss: -log D(G(z)) = softplus(-logit)."""
  return jax.nn.softplus(-fake_logits).mean()


def wasserstein_critic_loss(real_scores, fake_scores):
  return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores):
  return -fake_scores.mean()


def gradient_penalty(critic: Callable[[jax.Array], jax.Array], real, fake, key, *,
                     weight: float = 10.0, axis_name: str | None = None):
  """WGAN-GP: weight * E[(||grad_x critic(x_hat)|| - 1)^2], x_hat = eps*real + (1-eps)*fake.

  One eps ~ U[0, 1) per example (keyed to its global batch index); the norm runs over all
  non-batch axes. `critic` maps a batch to one score per example and must not mix examples
  (no batch normalisation), so the gradient of the summed scores is per-example.
  """
  batch = real.shape[0]
  eps = rng.uniform(key, batch, (1,) * (real.ndim - 1), axis_name)
  mixed = eps * real + (1.0 - eps) * fake
  grads = jax.grad(lambda x: critic(x).sum())(mixed)
  # safe_norm: a zero input gradient (all ReLUs off) must not give a NaN parameter gradient.
  norms = optax.safe_norm(grads.reshape(batch, -1), 0.0, axis=1)
  return weight * jnp.mean(jnp.square(norms - 1.0))


@dataclasses.dataclass(frozen=True)
class GANLoss:
  """A loss family: how the train step scores the discriminator and the generator."""
  name: str
  discriminator: Callable  # (real_out, fake_out) -> scalar
  generator: Callable  # (fake_out) -> scalar
  gradient_penalty_weight: float = 0.0  # > 0 adds `gradient_penalty` to the critic loss
  outputs_are_logits: bool = True  # reported D(real)/D(fake) are sigmoid probabilities if so


def get(name: str, *, label_smoothing: float = 0.0, gp_weight: float = 10.0) -> GANLoss:
  if name == 'bce':
    return GANLoss('bce', lambda r, f: bce_discriminator_loss(r, f, label_smoothing),
                   bce_generator_loss)
  if name == 'wgan_gp':
    if gp_weight <= 0:
      raise ValueError(f'wgan_gp needs loss.gp_weight > 0, got {gp_weight} (the paper uses 10)')
    return GANLoss('wgan_gp', wasserstein_critic_loss, wasserstein_generator_loss,
                   gradient_penalty_weight=gp_weight, outputs_are_logits=False)
  raise ValueError(f'unknown loss {name!r}: choose one of {", ".join(LOSS_NAMES)} '
                   '(config field loss.name)')
