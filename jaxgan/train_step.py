"""One GAN training step: discriminator update(s), then a generator update.

`make_train_step` returns a pure `step(state, batch, key) -> (state, measurements)` for one
device's share of the batch. With `axis_name` set, gradients, batch statistics and measurements
are averaged over that device axis, so the same function runs under `jax.shard_map` on a mesh
or under `jax.pmap` (see `jaxgan.parallel`). All randomness comes from `fold_in(key, step)`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxgan import losses, rng
from jaxgan.models import GAN
from jaxgan.state import GANState

StepFn = Callable[[GANState, dict, jax.Array], tuple[GANState, dict]]


def make_train_step(gan: GAN, loss: losses.GANLoss, g_tx: optax.GradientTransformation,
                    d_tx: optax.GradientTransformation, *, n_critic: int = 1,
                    axis_name: str | None = None,
                    g_schedule: optax.Schedule | None = None,
                    d_schedule: optax.Schedule | None = None,
                    compute_dtype: str | jnp.dtype = 'float32',
                    class_weight: float = 1.0) -> StepFn:
  """`batch['image']` holds `n_critic` real batches per device, interleaved: critic update j
  uses local rows j, j + n_critic, ... (so each chunk is the same set of global examples
  whatever the device count).

  Conditional GANs (gan.num_classes > 0) also read `batch['label']`, laid out like the images.
  Fake images are generated for the labels of the real chunk they are scored against (the
  generator update uses chunk 0's): the fake classes then follow the data's class frequencies,
  the gradient penalty mixes real and fake images of the same class, and the labels, being
  rows of the global batch, are the same whatever the device count. With an auxiliary
  classifier, `class_weight` scales its cross-entropy terms (D: real + fake; G: fake).

  `compute_dtype` (float32 | bfloat16): the dtype the networks compute in. Parameters,
  optimizer state, batch statistics, gradients and losses stay float32; with bfloat16 the
  parameters and inputs are cast on the way into each network and its outputs cast back
  (mixed precision for accelerators; on CPU bfloat16 is emulated and slower).
  """
  if n_critic < 1:
    raise ValueError(f'loss.n_critic must be >= 1, got {n_critic}')
  compute_dtype = jnp.dtype(compute_dtype)
  if compute_dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(f'compute_dtype must be float32 or bfloat16, got {compute_dtype}')

  def to_compute(tree):
    if compute_dtype == jnp.float32:
      return tree
    return jax.tree.map(
        lambda x: x.astype(compute_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

  def to_float32(x):
    return x.astype(jnp.float32)

  def mean_over_devices(tree):
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)

  def generate(g_params, g_batch_stats, z, labels):
    variables = {'params': to_compute(g_params)}
    if g_batch_stats:
      variables['batch_stats'] = g_batch_stats  # running statistics stay float32
    fake, updates = gan.generator.apply(variables, *gan.generator_inputs(to_compute(z), labels),
                                        train=True, mutable=['batch_stats'])
    return fake, updates.get('batch_stats', g_batch_stats)

  def discriminate(d_params, images, labels, dropout_key):
    """(outputs, class logits or None); only the auxiliary-classifier D gives class logits."""
    out = gan.discriminator.apply({'params': to_compute(d_params)},
                                  *gan.discriminator_inputs(to_compute(images), labels),
                                  train=True, rngs={'dropout': dropout_key})
    out = jax.tree.map(to_float32, out)
    return out if gan.auxiliary_classifier else (out, None)

  def class_loss(class_logits, labels):
    return class_weight * optax.softmax_cross_entropy_with_integer_labels(
        class_logits, labels).mean()

  def report(outputs):
    return jax.nn.sigmoid(outputs).mean() if loss.outputs_are_logits else outputs.mean()

  def step(state: GANState, batch: dict, key: jax.Array):
    step_key = jax.random.fold_in(key, state.step)
    critic_key, generator_key = jax.random.split(step_key)
    images = batch['image']
    local_batch = images.shape[0] // n_critic

    def chunks(rows):
      return rows.reshape((local_batch, n_critic) + rows.shape[1:]).swapaxes(0, 1)

    real_chunks = chunks(images)
    label_chunks = chunks(batch['label']) if gan.num_classes else [None] * n_critic

    def critic_update(carry, real, labels, index):
      d_params, d_opt_state, g_batch_stats = carry
      z_key, real_key, fake_key, gp_key = jax.random.split(jax.random.fold_in(critic_key, index),
                                                           4)
      z = rng.normal(z_key, local_batch, (gan.latent_dim,), axis_name)
      fake, g_batch_stats = generate(state.g_params, g_batch_stats, z, labels)

      def d_loss_fn(d_params):
        real_out, real_classes = discriminate(d_params, real, labels, real_key)
        fake_out, fake_classes = discriminate(d_params, fake, labels, fake_key)
        value = loss.discriminator(real_out, fake_out)
        penalty = jnp.zeros(())
        if loss.gradient_penalty_weight:
          penalty = losses.gradient_penalty(
              lambda x: discriminate(d_params, x, labels, real_key)[0], real, fake, gp_key,
              weight=loss.gradient_penalty_weight, axis_name=axis_name)
        aux = dict(gradient_penalty=penalty, d_real=report(real_out), d_fake=report(fake_out))
        if gan.auxiliary_classifier:
          aux['d_class_loss'] = class_loss(real_classes, labels) + class_loss(fake_classes,
                                                                              labels)
          value += aux['d_class_loss']
        return value + penalty, aux

      (d_loss, aux), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d_params)
      penalty = aux.pop('gradient_penalty')
      grads = mean_over_devices(grads)
      updates, d_opt_state = d_tx.update(grads, d_opt_state, d_params)
      d_params = optax.apply_updates(d_params, updates)
      measured = dict(d_loss=d_loss, d_grad_norm=optax.tree.norm(grads), **aux)
      if loss.gradient_penalty_weight:
        measured['gradient_penalty'] = penalty
      return (d_params, d_opt_state, g_batch_stats), measured

    # A Python loop, not lax.scan: XLA:CPU runs a while-loop body ~3x slower than the same ops
    # unrolled (measured on the dcgan step), and n_critic is small.
    carry, critic_measured = (state.d_params, state.d_opt_state, state.g_batch_stats), []
    for index in range(n_critic):
      carry, measured = critic_update(carry, real_chunks[index], label_chunks[index], index)
      critic_measured.append(measured)
    d_params, d_opt_state, g_batch_stats = carry

    z_key, dropout_key = jax.random.split(generator_key)
    z = rng.normal(z_key, local_batch, (gan.latent_dim,), axis_name)

    labels = label_chunks[0]

    def g_loss_fn(g_params):
      fake, new_batch_stats = generate(g_params, g_batch_stats, z, labels)
      fake_out, fake_classes = discriminate(d_params, fake, labels, dropout_key)
      aux = dict(batch_stats=new_batch_stats)
      value = loss.generator(fake_out)
      if gan.auxiliary_classifier:
        aux['g_class_loss'] = class_loss(fake_classes, labels)
        value += aux['g_class_loss']
      return value, aux

    (g_loss, aux), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(state.g_params)
    g_batch_stats = aux.pop('batch_stats')
    grads = mean_over_devices(grads)
    updates, g_opt_state = g_tx.update(grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)

    measurements = {name: jnp.mean(jnp.stack([m[name] for m in critic_measured]))
                    for name in critic_measured[0]}
    measurements.update(g_loss=g_loss, g_grad_norm=optax.tree.norm(grads), **aux)
    measurements = mean_over_devices(measurements)
    if g_schedule is not None:
      measurements['g_lr'] = g_schedule(state.step)
    if d_schedule is not None:
      measurements['d_lr'] = d_schedule(state.step * n_critic)
    new_state = GANState(step=state.step + 1, g_params=g_params, g_batch_stats=g_batch_stats,
                         d_params=d_params, g_opt_state=g_opt_state, d_opt_state=d_opt_state)
    return new_state, measurements

  return step
