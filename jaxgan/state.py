"""The GAN training state: one pytree holding everything a step reads and writes."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxgan.models import GAN


@flax.struct.dataclass
class GANState:
  step: jax.Array  # int32 scalar: generator updates done so far
  g_params: Any
  g_batch_stats: Any  # empty dict for generators without batch normalisation
  d_params: Any
  g_opt_state: optax.OptState
  d_opt_state: optax.OptState


def init_state(gan: GAN, g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
               key: jax.Array) -> GANState:
  """A fresh state from `key`; call under jit (or jax.eval_shape for shapes only)."""
  g_key, d_key = jax.random.split(key)
  z = jnp.zeros((1, gan.latent_dim), jnp.float32)
  x = jnp.zeros((1,) + gan.image_shape, jnp.float32)
  labels = jnp.zeros((1,), jnp.int32)
  g_vars = gan.generator.init(g_key, *gan.generator_inputs(z, labels), train=False)
  d_vars = gan.discriminator.init(d_key, *gan.discriminator_inputs(x, labels), train=False)
  g_params, d_params = g_vars['params'], d_vars['params']
  return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params,
                  g_batch_stats=g_vars.get('batch_stats', {}), d_params=d_params,
                  g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params))


def generator_variables(state: GANState) -> dict:
  variables = {'params': state.g_params}
  if state.g_batch_stats:
    variables['batch_stats'] = state.g_batch_stats
  return variables
