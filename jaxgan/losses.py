"""GAN losses as pure functions of discriminator outputs, apart from any network.

Discriminator outputs are logits (BCE) or critic values (Wasserstein), one per example. Every
loss is a mean over the local batch; the train step averages over devices.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxgan import rng

LOSS_NAMES = ('bce', 'wgan', 'wgan_gp', 'hinge', 'lsgan')


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


def hinge_discriminator_loss(real_scores, fake_scores):
  """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
  return jax.nn.relu(1.0 - real_scores).mean() + jax.nn.relu(1.0 + fake_scores).mean()


def least_squares_discriminator_loss(real_scores, fake_scores):
  """LSGAN (Mao et al. 2017) with targets b = 1 (real) and a = 0 (fake):
  E[(D(x) - 1)^2] / 2 + E[D(G(z))^2] / 2."""
  return 0.5 * (jnp.square(real_scores - 1.0).mean() + jnp.square(fake_scores).mean())


def least_squares_generator_loss(fake_scores):
  """LSGAN generator loss with target c = 1: E[(D(G(z)) - 1)^2] / 2."""
  return 0.5 * jnp.square(fake_scores - 1.0).mean()


def r1_penalty(critic: Callable[[jax.Array], jax.Array], real, *, gamma: float):
  """R1 (Mescheder et al. 2018): gamma / 2 * E[||grad_x D(x)||^2] on real data.

  As with `gradient_penalty`, `critic` must not mix examples, so the gradient of the summed
  scores is per-example; no randomness, so any split of the batch over devices gives the same
  mean once the step averages it.
  """
  grads = jax.grad(lambda x: critic(x).sum())(real)
  return 0.5 * gamma * jnp.mean(jnp.sum(jnp.square(grads.reshape(real.shape[0], -1)), axis=1))


def consistency_penalty(critic: Callable[[jax.Array], jax.Array], images, scores, *,
                        weight: float):
  """Consistency regularisation (CR-GAN, Zhang et al. 2020; bCR, Zhao et al. 2021):
  weight * E[(critic(images) - scores)^2], where `scores` are the discriminator's outputs for
  the same images before an augmentation that should not change them and `critic` sees the
  augmented images. Gradients flow through both terms, as in the papers. Per example, so its
  mean over devices is the global batch's."""
  return weight * jnp.mean(jnp.square(critic(images).reshape(scores.shape) - scores))


def check_pairs(rows: int) -> None:
  """The mode-seeking term's batch: rows it can pair."""
  if rows % 2:
    raise ValueError(f'the mode-seeking term pairs rows, so the per-device batch must be even, '
                     f'got {rows}: change batch_size or the device count')


def mode_seeking_penalty(images, z, eps: float = 1e-5):
  """Mode-seeking term of MSGAN (Mao et al. 2019), pairing rows (0, 1), (2, 3), ...

  For each pair, ratio = mean |x_a - x_b| / mean |z_a - z_b|: how far apart two latents put
  their images. The term is the mean over pairs of 1 / (ratio + eps); adding it to G's loss
  pushes latents apart in image space, so a conditional generator cannot draw one digit per
  class whatever the latent. Per pair rather than per batch, so its mean over devices is the
  mean over the global batch.
  """
  check_pairs(images.shape[0])
  images = images.reshape((images.shape[0] // 2, 2, -1))
  z = z.reshape((z.shape[0] // 2, 2, -1))
  image_gap = jnp.abs(images[:, 0] - images[:, 1]).mean(axis=-1)
  latent_gap = jnp.abs(z[:, 0] - z[:, 1]).mean(axis=-1)
  return (1.0 / (image_gap / latent_gap + eps)).mean()


def clip_weights(params, clip: float):
  """The WGAN paper's Lipschitz constraint: every parameter clipped into [-clip, clip]."""
  return jax.tree.map(lambda p: jnp.clip(p, -clip, clip), params)


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
  r1_gamma: float = 0.0  # > 0 adds `r1_penalty` to the discriminator loss
  weight_clip: float = 0.0  # > 0 clips the critic's parameters after each update (`clip_weights`)
  # > 0: `consistency_penalty` weight for real and fake images (bCR) under a random translation
  # of up to this fraction of the image size (augment.translate's ratio)
  consistency: float = 0.0
  consistency_translation: float = 0.125


def get(name: str, *, label_smoothing: float = 0.0, gp_weight: float = 10.0,
        weight_clip: float = 0.01, r1_gamma: float = 0.0, consistency: float = 0.0,
        consistency_translation: float = 0.125) -> GANLoss:
  """The loss family `name`; `r1_gamma` > 0 adds the R1 penalty and `consistency` > 0 the
  balanced consistency penalty (translations of up to `consistency_translation` of the image
  size) to any of them."""
  for field, value in (('r1_gamma', r1_gamma), ('consistency', consistency)):
    if not 0 <= value < math.inf:  # NaN and inf diverge the first step
      raise ValueError(f'loss.{field} must be finite and >= 0 (0 = off), got {value}')
  if consistency and not 0 < consistency_translation <= 0.5:
    raise ValueError('loss.consistency_translation must be in (0, 0.5] (a fraction of the '
                     f'image size), got {consistency_translation}')
  if not 0.0 <= label_smoothing < 1.0:  # 1 makes real targets 0, above it negative
    raise ValueError(f'loss.label_smoothing must be in [0, 1), got {label_smoothing}')
  if label_smoothing and name != 'bce':
    raise ValueError(f'loss.label_smoothing={label_smoothing} applies to the bce loss only, '
                     f'not {name!r}: set it to 0')
  return dataclasses.replace(_family(name, label_smoothing, gp_weight, weight_clip),
                             r1_gamma=r1_gamma, consistency=consistency,
                             consistency_translation=consistency_translation)


def _family(name: str, label_smoothing: float, gp_weight: float, weight_clip: float) -> GANLoss:
  if name == 'bce':
    return GANLoss('bce', lambda r, f: bce_discriminator_loss(r, f, label_smoothing),
                   bce_generator_loss)
  if name == 'wgan':
    if not 0 < weight_clip < math.inf:
      raise ValueError(f'wgan needs a finite loss.weight_clip > 0, got {weight_clip} (the paper '
                       'uses 0.01)')
    return GANLoss('wgan', wasserstein_critic_loss, wasserstein_generator_loss,
                   outputs_are_logits=False, weight_clip=weight_clip)
  if name == 'wgan_gp':
    if not 0 < gp_weight < math.inf:
      raise ValueError(f'wgan_gp needs a finite loss.gp_weight > 0, got {gp_weight} (the paper '
                       'uses 10)')
    return GANLoss('wgan_gp', wasserstein_critic_loss, wasserstein_generator_loss,
                   gradient_penalty_weight=gp_weight, outputs_are_logits=False)
  if name == 'hinge':
    return GANLoss('hinge', hinge_discriminator_loss, wasserstein_generator_loss,
                   outputs_are_logits=False)
  if name == 'lsgan':
    return GANLoss('lsgan', least_squares_discriminator_loss, least_squares_generator_loss,
                   outputs_are_logits=False)
  raise ValueError(f'unknown loss {name!r}: choose one of {", ".join(LOSS_NAMES)} '
                   '(config field loss.name)')
