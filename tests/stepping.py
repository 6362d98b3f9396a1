"""Shared by the train-step tests: build a step for a model/loss and run it on fixed data."""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

from jaxgan import losses, models, optim, parallel, state as state_lib, train_step


def adam_config(lr=1e-3, b1=0.5):
  return ml_collections.ConfigDict(dict(lr=lr, b1=b1, b2=0.999, eps=1e-7))


CONSTANT = ml_collections.ConfigDict(dict(name='constant', warmup_steps=0))


def components(model: str, loss: str, n_critic: int = 1, axis_name=None, conditioning=None,
               build_options=None, loss_options=None, **step_options):
  """`conditioning` (projection | auxiliary) makes the model conditional on 10 classes;
  `build_options` go to models.build, `loss_options` to losses.get, `step_options` to
  make_train_step."""
  cond = dict(num_classes=10, conditioning=conditioning) if conditioning else {}
  cond.update(build_options or {})
  gan = models.build(model, axis_name=axis_name, **cond)
  g_tx, _ = optim.make_optimizer('adam', adam_config(), CONSTANT, 100)
  d_tx, _ = optim.make_optimizer('adam', adam_config(), CONSTANT, 100)
  step = train_step.make_train_step(gan, losses.get(loss, **(loss_options or {})), g_tx, d_tx,
                                    n_critic=n_critic, axis_name=axis_name, **step_options)
  init = lambda key: state_lib.init_state(models.build(model, **cond), g_tx, d_tx, key,
                                          ema=bool(step_options.get('ema_decay')))
  return init, step


def fixed_batches(num_steps: int, examples_per_step: int, seed: int = 0) -> np.ndarray:
  return np.random.RandomState(seed).uniform(
      -1, 1, (num_steps, examples_per_step, 28, 28, 1)).astype(np.float32)


def fixed_inputs(num_steps: int, examples_per_step: int, conditional: bool) -> list[dict]:
  """Step inputs: `fixed_batches` images and, if `conditional`, fixed labels in 0..9."""
  images = fixed_batches(num_steps, examples_per_step)
  if not conditional:
    return [{'image': batch} for batch in images]
  labels = np.random.RandomState(1).randint(0, 10, images.shape[:2]).astype(np.int32)
  return [{'image': batch, 'label': label} for batch, label in zip(images, labels)]


def run_single_device(model, loss, n_critic=1, num_steps=3, seed=0, batch=16,
                      conditioning=None, **step_options):
  """`num_steps` steps of the plain jitted step (no device axis)."""
  init, step = components(model, loss, n_critic, conditioning=conditioning, **step_options)
  step = jax.jit(step, donate_argnums=0)
  state = jax.jit(init)(jax.random.key(seed))
  history = []
  for batch_data in fixed_inputs(num_steps, batch * n_critic, bool(conditioning)):
    state, measured = step(state, batch_data, jax.random.key(seed + 1))
    history.append({k: float(v) for k, v in measured.items()})
  return jax.device_get(state), history, step


def run_on_mesh(model, loss, devices, n_critic=1, num_steps=3, batch=16, conditioning=None,
                build_options=None, host_batches=False, jax_shard_map=False, **step_options):
  """`host_batches`: hand the step numpy batches (the trainer's feed on CPU) instead of
  batches put on the mesh first. `jax_shard_map`: run the step under a plain
  `jit(jax.shard_map(step))` with JAX's default checks (check_vma on), as a user wiring it up
  would, instead of `parallel.shard_step` (check_vma off)."""
  init, step = components(model, loss, n_critic, axis_name=parallel.DATA_AXIS,
                          conditioning=conditioning, build_options=build_options,
                          **step_options)
  mesh = parallel.make_mesh(devices)
  state = jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.key(0))
  if jax_shard_map:
    specs = dict(in_specs=(P(), P(parallel.DATA_AXIS), P()), out_specs=(P(), P()))
    sharded_step = jax.jit(jax.shard_map(step, mesh=mesh, **specs))
  else:
    sharded_step = parallel.shard_step(step, mesh)
  for batch_data in fixed_inputs(num_steps, batch * n_critic, bool(conditioning)):
    if not host_batches:
      batch_data = jax.device_put(batch_data, parallel.batch_sharded(mesh))
    state, measured = sharded_step(state, batch_data, jax.random.key(1))
  return jax.device_get(state), jax.device_get(measured), sharded_step


def run_pmap(model, loss, n_critic=1, num_steps=3, batch=16, conditioning=None,
             build_options=None):
  init, step = components(model, loss, n_critic, axis_name=parallel.DATA_AXIS,
                          conditioning=conditioning, build_options=build_options)
  count = jax.local_device_count()
  state = parallel.pmap_replicate(jax.device_get(jax.jit(init)(jax.random.key(0))), count)
  pmapped = parallel.pmap_step(step)
  for batch_data in fixed_inputs(num_steps, batch * n_critic, bool(conditioning)):
    state, measured = pmapped(
        state, {k: v.reshape((count, -1) + v.shape[1:]) for k, v in batch_data.items()},
        jax.random.key(1))
  return jax.device_get(parallel.pmap_unreplicate(state)), jax.device_get(
      parallel.pmap_unreplicate(measured))
