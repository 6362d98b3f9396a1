"""The GAN training state: one pytree holding everything a step reads and writes."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxgan import rng
from jaxgan.models import GAN


@flax.struct.dataclass
class GANState:
  step: jax.Array  # int32 scalar: generator updates done so far
  g_params: Any
  g_batch_stats: Any  # empty dict for generators without batch normalisation
  d_params: Any
  g_opt_state: optax.OptState
  d_opt_state: optax.OptState
  # Discriminator variables other than params (spectral normalisation's power-iteration
  # vectors, jaxgan.layers.SPECTRAL); empty dict when there are none.
  d_state: Any = flax.struct.field(default_factory=dict)
  # Exponential moving average of g_params (jaxgan.ema); empty dict when EMA is off.
  g_ema_params: Any = flax.struct.field(default_factory=dict)


def init_state(gan: GAN, g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
               key: jax.Array, *, ema: bool = False) -> GANState:
  """A fresh state from `key`; call under jit (or jax.eval_shape for shapes only). With `ema`
  the moving average of the generator's parameters starts at its initial parameters."""
  rng.check_key(key)
  g_key, d_key = jax.random.split(key)
  z = jnp.zeros((1, gan.latent_dim), jnp.float32)
  x = jnp.zeros((1,) + gan.image_shape, jnp.float32)
  labels = jnp.zeros((1,), jnp.int32)
  g_vars = gan.generator.init(g_key, *gan.generator_inputs(z, labels), train=False)
  d_vars = gan.discriminator.init(d_key, *gan.discriminator_inputs(x, labels), train=False)
  g_params, d_params = g_vars['params'], d_vars['params']
  return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params,
                  g_batch_stats=g_vars.get('batch_stats', {}), d_params=d_params,
                  g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params),
                  d_state={k: v for k, v in d_vars.items() if k != 'params'},
                  g_ema_params=jax.tree.map(jnp.copy, g_params) if ema else {})


def generator_variables(state: GANState, *, ema: bool = True) -> dict:
  """The generator's variables for sampling: the EMA parameters when the run keeps them (and
  `ema`), else the trained ones. Batch statistics are the running ones of the trained
  generator in both cases (BN running averages already average over steps; see jaxgan.ema)."""
  params = state.g_ema_params if ema and state.g_ema_params else state.g_params
  variables = {'params': params}
  if state.g_batch_stats:
    variables['batch_stats'] = state.g_batch_stats
  return variables
