"""`train_and_evaluate(config, workdir)`: the training loop behind `experiments.train`.

A run folder holds everything about one run:
  config.json      the resolved config
  metrics.jsonl    one JSON object per log interval
  machine.jsonl    one JSON object per session (start or resume): the machine and versions
  samples/         epoch_NNN.png grids from one fixed latent batch (conditional models: one row
                   per class), final.png, and progress.gif of the epoch grids
  checkpoints/     orbax checkpoints of the whole GAN state, the newest few
  training.lock    held by the process training the run, naming it (see run_folder.training_lock)
Running again with the same workdir resumes from the newest checkpoint; a finished run returns.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import re
import time

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from jax.experimental import multihost_utils
from PIL import Image

from jaxgan import atomic, augment, data, generate, images, losses, models, optim, parallel
from jaxgan import class_proportions, provenance, rarity, rng, run_folder
from jaxgan.checkpoint import BEST, LATEST, CheckpointStore
from jaxgan.evaluation import during_training, metrics, suite, weights
from jaxgan.evaluation.during_training import TrainingEvaluator
from jaxgan.models import conditional
from jaxgan.run_folder import write_json_atomic
from jaxgan.state import GANState, generator_variables, init_state
from jaxgan.train_step import make_train_step

# Fields a resumed run may change; any other difference means a different experiment.
RESUMABLE_FIELDS = frozenset({
    'num_epochs', 'num_steps', 'log_every', 'checkpoint_every', 'keep_checkpoints',
    'data.manual_dir', 'data.data_dir', 'parallel', 'steps_per_call', 'donate', 'cpu_devices',
    'prefetch',
    'eval_every', 'eval_num_samples', 'eval_class_proportions', 'max_epoch_grids',
    'sample_latent_scale'})
# Fields added after the first runs were recorded: absent from a config.json means this value.
_ADDED_FIELDS = {'compute_dtype': 'float32', 'steps_per_call': 1, 'donate': True,
                 'cpu_devices': -1, 'model.spectral_norm': False, 'model.generator_norm': 'batch',
                 'loss.weight_clip': 0.01, 'loss.r1_gamma': 0.0, 'optimizer.name': 'adam',
                 'ema.decay': 0.0, 'augment.policy': '', 'model.grow_step': 0,
                 'model.fade_steps': 0, 'model.num_classes': 0,
                 'model.conditioning': 'projection', 'model.label_embed_dim': 50,
                 'loss.class_weight': 1.0, 'loss.class_loss_on_fakes': True,
                 'loss.mode_seeking': 0.0, 'max_epoch_grids': 100, 'model.generator_width': 1,
                 'model.discriminator_width': 1, 'model.generator_depth': 0,
                 'model.minibatch_std_group': 0, 'model.discriminator_dropout': 0.3,
                 'sample_latent_scale': 1.0, 'loss.consistency': 0.0,
                 'loss.consistency_translation': 0.125, 'data.rarity_power': 0.0,
                 'data.rarity_cap': 2.5, 'data.rarity_epochs': 0, 'prefetch': -1,
                 'eval_class_proportions': class_proportions.BALANCED}
# Streams split from the seed: parameter init, train steps, the fixed sample-grid latents.
_INIT, _STEPS, _SAMPLES = range(3)


@dataclasses.dataclass(frozen=True)
class Components:
  gan: models.GAN  # modules for init and sampling (no device axis)
  loss: losses.GANLoss
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  g_schedule: optax.Schedule
  d_schedule: optax.Schedule
  ema: bool = False  # the state keeps an EMA of the generator's parameters


def build_components(config: ml_collections.ConfigDict, total_steps: int) -> Components:
  loss = make_loss(config)
  optimizer = config.optimizer.get('name', 'adam')
  g_tx, g_schedule = optim.make_optimizer(optimizer, config.optimizer.generator, config.schedule,
                                          total_steps)
  d_tx, d_schedule = optim.make_optimizer(optimizer, config.optimizer.discriminator,
                                          config.schedule, total_steps,
                                          updates_per_step=config.loss.n_critic)
  return Components(models.from_config(config.model), loss, g_tx, d_tx, g_schedule, d_schedule,
                    ema=ema_decay(config) > 0)


def trained_steps(workdir: str) -> int | None:
  """The step of a run folder's newest training checkpoint; None if it has none."""
  store = CheckpointStore(workdir, create=False)
  try:
    return store.latest_step()
  finally:
    store.close()


def restore_run_state(workdir: str, config: ml_collections.ConfigDict,
                      folder: str = LATEST) -> tuple[Components, GANState]:
  """The components of a run and the state of its newest checkpoint in `folder` (LATEST or
  BEST), on this process's first device, to sample or evaluate from.

  The schedules never run here, and the optimizer state's structure does not depend on them:
  they are built constant, so a run whose schedule fields a later check refuses (a growing
  "decay", a warmup past its end) can still be sampled and scored, and the true length, which
  needs the training set's size, is not needed.
  """
  restoring = copy.deepcopy(config)
  restoring.schedule.name = 'constant'
  components = build_components(restoring, total_steps=1)
  store = CheckpointStore(workdir, folder=folder, create=False)
  try:
    return components, store.restore(abstract_state(components))
  finally:
    store.close()


def make_loss(config: ml_collections.ConfigDict) -> losses.GANLoss:
  return losses.get(config.loss.name, label_smoothing=config.loss.label_smoothing,
                    gp_weight=config.loss.gp_weight,
                    weight_clip=config.loss.get('weight_clip', 0.01),
                    r1_gamma=config.loss.get('r1_gamma', 0.0),
                    consistency=config.loss.get('consistency', 0.0),
                    consistency_translation=config.loss.get('consistency_translation', 0.125))


def ema_decay(config: ml_collections.ConfigDict) -> float:
  return config.get('ema', {}).get('decay', 0.0)


def augment_policy(config: ml_collections.ConfigDict) -> str:
  return config.get('augment', {}).get('policy', '')


def abstract_state(components: Components, sharding=None) -> GANState:
  """Shapes and dtypes of the state (no computation), laid out with `sharding` for restores
  (default: on this process's first device; a checkpoint saved over another device count,
  e.g. by a run with config.cpu_devices, restores only with an explicit sharding)."""
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  shapes = jax.eval_shape(
      lambda key: init_state(components.gan, components.g_tx, components.d_tx, key,
                             ema=components.ema),
      jax.random.key(0))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(init, step, sample-grid) keys of a run."""
  root = jax.random.key(seed)
  return tuple(jax.random.fold_in(root, stream) for stream in (_INIT, _STEPS, _SAMPLES))


def grid_latents(config: ml_collections.ConfigDict, gan: models.GAN) -> jax.Array:
  return generate.latents(seed_keys(config.seed)[2], config.sample_grid_rows ** 2, gan.latent_dim)


class TrainingDiverged(ValueError):
  """Losses or parameters stopped being finite (a ValueError: the scripts report it in one line)."""


def stop_if_diverged(done: int, not_finite: list[str], store: CheckpointStore,
                     workdir: str, resumed_at: int | None = None) -> None:
  """Raise TrainingDiverged naming what is not finite at step `done`; called before anything
  (sample grid, evaluation, checkpoint) is written from such a state, so the run folder keeps
  the last good checkpoint. `resumed_at`: the checkpoint step this session started from, when
  it diverged in its first log interval (a checkpoint whose bytes were overwritten restores
  and then diverges: checkpoints carry no checksum)."""
  if not not_finite:
    return
  store.wait()
  saved = store.latest_step()
  kept = (f'its checkpoints up to step {saved} are kept' if saved is not None
          else 'no checkpoint was written')
  damaged = ('' if resumed_at is None else
             f'; right after resuming from step {resumed_at}: if the run did not diverge there '
             f'before, that checkpoint may be damaged (move '
             f'{os.path.join(store.directory, str(resumed_at))} away to resume from the one '
             'before it)')
  raise TrainingDiverged(
      f'training diverged by step {done} in {workdir}: {", ".join(not_finite)} not finite; '
      f'{kept}. Lower the learning rates (optimizer.generator.lr, optimizer.discriminator.lr) '
      f'and train into a new run folder{damaged}')


def non_finite_parameters(trees: dict) -> list[str]:
  """The names of the parameter trees in `trees` (name -> host pytree) holding a NaN or inf."""
  return [name for name, tree in trees.items()
          if not all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(tree))]


_MAX_GRID_SIDE = 8192  # pixels: a 64 MB greyscale picture
_MAX_EVAL_SAMPLES = 1_000_000
_MAX_PREFETCH = 64


# Fields read only by class-conditional models (model.num_classes > 0).
_CLASS_FIELDS = ('model.conditioning', 'model.label_embed_dim', 'loss.class_weight',
                 'loss.class_loss_on_fakes')


def _changed(config: ml_collections.ConfigDict, name: str) -> bool:
  """Whether the config's `name` (section.field) differs from its default."""
  section, field = name.split('.')
  return config[section].get(field, _ADDED_FIELDS[name]) != _ADDED_FIELDS[name]


def validate(config: ml_collections.ConfigDict) -> None:
  """Fail early, with the field to fix, before anything is written."""
  problems = []
  if config.batch_size <= 0:
    problems.append(f'batch_size must be > 0, got {config.batch_size}')
  if not 0 <= config.seed <= rng.MAX_SEED:
    problems.append(f'seed must be in 0..{rng.MAX_SEED} (numpy seeds the batch order with '
                    f'it, jax the keys), got {config.seed}')
  if config.num_steps < 0:
    problems.append(f'num_steps must be >= 0 (0: num_epochs decides), got {config.num_steps}')
  elif config.num_steps == 0 and config.num_epochs <= 0:
    problems.append('set num_epochs > 0 or num_steps > 0 '
                    f'(got num_epochs={config.num_epochs}, num_steps={config.num_steps})')
  if config.data.get('num_train_examples', 0) < 0:
    problems.append('data.num_train_examples must be >= 0 (0: the whole split), got '
                    f'{config.data.num_train_examples}')
  if config.loss.n_critic < 1:
    problems.append(f'loss.n_critic must be >= 1, got {config.loss.n_critic}')
  num_classes = config.model.get('num_classes', 0)
  if num_classes not in (0, data.builders.NUM_CLASSES):  # 20 broke the first evaluation
    problems.append(f'model.num_classes must be 0 (unconditional) or {config.data.name}\'s '
                    f'{data.builders.NUM_CLASSES} digit classes, got {num_classes}')
  for field in ('log_every', 'checkpoint_every', 'keep_checkpoints', 'sample_grid_rows',
                'sample_grid_scale', 'max_epoch_grids'):
    if config.get(field, 1) <= 0:
      problems.append(f'{field} must be > 0, got {config[field]}')
  if config.parallel not in ('mesh', 'pmap'):
    problems.append(f"parallel must be 'mesh' or 'pmap', got {config.parallel!r}")
  if config.get('eval_every', 0) < 0:
    problems.append(f'eval_every must be >= 0 (0: no evaluation), got {config.eval_every}')
  fewest = suite.min_samples(metrics.DEFAULT_METRICS)
  if config.get('eval_every', 0) and config.get('eval_num_samples', 5000) < fewest:
    problems.append(f'eval_num_samples must be >= {fewest} (the periodic metrics need that '
                    f'many), got {config.eval_num_samples}')
  try:
    class_proportions.parse(
        config.get('eval_class_proportions', class_proportions.BALANCED),
        config.model.get('num_classes', 0), name='eval_class_proportions')
  except ValueError as error:
    problems.append(str(error))
  if config.get('eval_every', 0) and config.data.name not in weights.TRAIN_COMMANDS:
    problems.append(f'eval_every needs an evaluation classifier, which exists for '
                    f'{", ".join(weights.TRAIN_COMMANDS)}, not {config.data.name!r}: '
                    'set --config.eval_every=0')
  rarity_power = config.data.get('rarity_power', 0.0)
  rarity_cap = config.data.get('rarity_cap', 2.5)
  if not 0.0 <= rarity_power < math.inf or not 1.0 <= rarity_cap < math.inf:
    problems.append(f'data.rarity_power must be finite and >= 0 (0: off) and data.rarity_cap '
                    f'finite and >= 1, got {rarity_power} and {rarity_cap}')
  if config.data.get('rarity_epochs', 0) < 0:
    problems.append(f'data.rarity_epochs must be >= 0 (0: every epoch), got '
                    f'{config.data.rarity_epochs}')
  if config.get('steps_per_call', 1) < 1:
    problems.append(f'steps_per_call must be >= 1, got {config.steps_per_call}')
  if config.get('prefetch', -1) < -1:
    problems.append(f'prefetch must be >= -1 (-1: 0 on CPU, 2 on accelerators; 0: no prefetch '
                    f'thread), got {config.prefetch}')
  if config.get('cpu_devices', -1) < -1:
    problems.append(f'cpu_devices must be >= -1 (-1: jax default, 0: one per core), got '
                    f'{config.cpu_devices}')
  # NaN passes `< 0`: a NaN or infinite weight made the first steps diverge, blamed on the
  # learning rates, in a run folder that the mended config could then not resume.
  for field in ('class_weight', 'mode_seeking', 'gp_weight', 'weight_clip', 'r1_gamma',
                'consistency', 'consistency_translation'):
    if field in config.loss and not 0.0 <= config.loss[field] < math.inf:
      problems.append(f'loss.{field} must be finite and >= 0, got {config.loss[field]}')
  # Bounds on what is drawn or held each time (the process ran out of memory mid-run at 100,000).
  grid_side = max(images.grid_size(config.sample_grid_rows, max(config.sample_grid_rows, 10),
                                   models.IMAGE_SHAPE[:2], scale=config.sample_grid_scale))
  if config.sample_grid_rows > 0 and config.sample_grid_scale > 0 and grid_side > _MAX_GRID_SIDE:
    problems.append(f'sample_grid_rows={config.sample_grid_rows} and sample_grid_scale='
                    f'{config.sample_grid_scale} make sample grids {grid_side:,} pixels a side '
                    f'(at most {_MAX_GRID_SIDE:,}): lower them')
  if config.get('eval_num_samples', 5000) > _MAX_EVAL_SAMPLES:
    problems.append(f'eval_num_samples must be at most {_MAX_EVAL_SAMPLES:,} (each evaluation '
                    f'generates them at once; experiments.evaluate scores a run afterwards), got '
                    f'{config.eval_num_samples}')
  if config.get('prefetch', -1) > _MAX_PREFETCH:
    problems.append(f'prefetch must be at most {_MAX_PREFETCH} (batches queued ahead; more buy '
                    f'nothing but memory), got {config.prefetch}')
  # Settings of a feature the config does not turn on were silently ignored.
  if config.model.name != 'progressive' and (config.model.get('grow_step', 0)
                                             or config.model.get('fade_steps', 0)):
    problems.append(f'model.grow_step and model.fade_steps grow a progressive model, not '
                    f'{config.model.name!r}: set them to 0, or model.name=progressive')
  if config.schedule.get('warmup_steps', 0) and config.schedule.name == 'constant':
    problems.append("schedule.warmup_steps does nothing with schedule.name='constant': use "
                    "schedule.name='warmup' (or cosine, exponential), or set it to 0")
  for field, default, used_by in (('weight_clip', 0.01, 'wgan'), ('gp_weight', 10.0, 'wgan_gp')):
    if config.loss.get(field, default) != default and config.loss.name != used_by:
      problems.append(f'loss.{field} applies to loss.name={used_by!r} only, not '
                      f'{config.loss.name!r}: set it to {default} (its default), or '
                      f'loss.name={used_by}')
  class_fields = [name for name in _CLASS_FIELDS if _changed(config, name)]
  if class_fields and not num_classes:
    several = len(class_fields) > 1
    problems.append(f'{", ".join(class_fields)} configure{"" if several else "s"} '
                    'class-conditional models only, which model.num_classes=0 is not: set '
                    'model.num_classes=10, or leave '
                    f'{"them at their defaults" if several else "it at its default"}')
  conditioning = config.model.get('conditioning', 'projection')
  heads = conditional.HEADS.get(conditioning)
  # Not class_loss_on_fakes: cgan_mnist sets it, and its runs are rerun with a projection head.
  if num_classes and heads and not heads.classifier and _changed(config, 'loss.class_weight'):
    problems.append(f'loss.class_weight weighs the auxiliary classifier\'s loss, which '
                    f'model.conditioning={conditioning!r} has none of: use '
                    "conditioning='auxiliary' or 'projection_auxiliary', or set it to 1.0 (its "
                    'default)')
  if config.data.get('rarity_epochs', 0) > 0 and not config.data.get('rarity_power', 0.0):
    problems.append('data.rarity_epochs limits rarity weighting, which data.rarity_power=0 '
                    'turns off: set data.rarity_power > 0, or data.rarity_epochs to 0')
  if config.get('compute_dtype', 'float32') not in ('float32', 'bfloat16'):
    problems.append(f"compute_dtype must be 'float32' or 'bfloat16', got "
                    f'{config.compute_dtype!r}')
  if not 0.0 < run_folder.latent_scale(config) < math.inf:
    problems.append(f'sample_latent_scale must be finite and > 0 (1: the training '
                    f'distribution), got {config.sample_latent_scale}')
  if not 0.0 <= ema_decay(config) < 1.0:
    problems.append(f'ema.decay must be in [0, 1) (0 = off), got {ema_decay(config)}')
  for net in ('generator', 'discriminator'):
    opt = config.optimizer[net]
    # Above 1 a run trained on without a word (lr 1e6: g_loss 2e16, D certain of every digit).
    if not 0.0 < opt.lr <= 1.0:
      problems.append(f'optimizer.{net}.lr must be in (0, 1] (the configs here train at '
                      f'5e-5 to 4e-4), got {opt.lr}')
    for field in ('b1', 'b2'):
      if not 0.0 <= opt[field] < 1.0:
        problems.append(f'optimizer.{net}.{field} must be in [0, 1), got {opt[field]}')
    if not 0.0 < opt.eps <= 1.0:  # a large eps silently stops every update
      problems.append(f'optimizer.{net}.eps must be in (0, 1] (the default config\'s: 1e-7), '
                      f'got {opt.eps}')
  problems.extend(optim.schedule_problems(config.schedule))
  if config.optimizer.get('name', 'adam') not in optim.OPTIMIZER_NAMES:
    problems.append(f'optimizer.name must be one of {", ".join(optim.OPTIMIZER_NAMES)}, got '
                    f'{config.optimizer.name!r}')
  if problems:
    raise ValueError('bad config: ' + '; '.join(problems))
  models.from_config(config.model)  # raises on an unknown model or normalisation
  make_loss(config)  # raises on a bad loss setting
  augment.parse_policy(augment_policy(config))


def _flatten(config: dict, prefix: str = '') -> dict:
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def check_same_experiment(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuse a workdir whose run was started with a different experiment (fields other than
  RESUMABLE_FIELDS)."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  before = {**_ADDED_FIELDS, **_flatten(run_folder.read_config_json(path))}
  now = _flatten(json.loads(config.to_json()))
  changed = sorted(k for k in before.keys() | now.keys()
                   if k not in RESUMABLE_FIELDS and before.get(k) != now.get(k))
  if changed:
    diffs = ', '.join(f'{k}: {before.get(k)!r} there, {now.get(k)!r} now' for k in changed)
    raise ValueError(f'{workdir} holds a run with a different config ({diffs}): use a new '
                     '--workdir, or the same config to resume it')


def record_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Write config.json; refuse a workdir whose run was started with a different experiment."""
  # check_inputs asked already, before the lock; asked again under it, the answer holds for
  # what is written (another training may have started the folder in between).
  check_same_experiment(config, workdir)
  write_json_atomic(json.loads(config.to_json()), os.path.join(workdir, 'config.json'))


class MetricsLog:
  """metrics.jsonl, appended one line per log interval and flushed at once."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, 'metrics.jsonl')

  def drop_after(self, step: int) -> None:
    """Forget lines logged after the checkpoint a resumed run starts from (they will be
    logged again), so the file reads as one uninterrupted run."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = f.read().splitlines(keepends=True)
    kept = []
    for number, line in enumerate(lines, 1):
      try:
        record = json.loads(line) if line.strip() else None
      except json.JSONDecodeError as error:
        if number == len(lines) and not line.endswith('\n'):
          # Half a line: the session was killed while appending it.
          logging.warning('%s: dropping the half-written last line', self.path)
          continue
        raise ValueError(f'{self.path} line {number} is not JSON ({error}): restore the file '
                         'from a copy of the run folder, or delete that line') from None
      if record is not None and not (isinstance(record, dict)
                                     and isinstance(record.get('step'), int)):
        raise ValueError(f'{self.path} line {number} is not a line experiments.train writes (no '
                         'step): restore the file from a copy of the run folder, or delete that '
                         'line')
      if record is not None and record['step'] <= step:
        kept.append(line)
    with atomic.replacing(self.path) as tmp, open(tmp, 'w') as f:
      f.writelines(kept)

  def append(self, record: dict) -> None:
    with atomic.naming(self.path), open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
      f.flush()


class _MeshRunner:
  """jit(shard_map(step)) over a mesh of all devices; state arrays replicated."""

  def __init__(self, components: Components, step_fn, mesh, donate=True, steps_per_call=1):
    self.mesh = mesh
    self.batch_sharding, self.state_sharding = self._shardings()
    self._init = jax.jit(
        lambda key: init_state(components.gan, components.g_tx, components.d_tx, key,
                               ema=components.ema),
        out_shardings=parallel.replicated(mesh))
    self.step = self._wrap(step_fn, donate, 1)
    self.multi_step = None if steps_per_call == 1 else self._wrap(step_fn, donate,
                                                                  steps_per_call)

  def _shardings(self):
    """(the batch's, the state's)."""
    return parallel.batch_sharded(self.mesh), parallel.replicated(self.mesh)

  def _wrap(self, step_fn, donate: bool, steps_per_call: int):
    return parallel.shard_step(step_fn, self.mesh, donate=donate, steps_per_call=steps_per_call)

  def init(self, key):
    return self._init(key)

  def from_checkpoint(self, state):
    return state

  def to_checkpoint(self, state):
    return state

  def to_host(self, tree):
    return jax.device_get(tree)

  def prepare_batch(self, batch):
    return batch

  def abstract_state(self, components: Components) -> GANState:
    return abstract_state(components, self.state_sharding)

  def trace_step(self, components: Components, batch: dict) -> None:
    """Trace (not compile) the step for `batch`'s shapes, raising what tracing raises."""
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          self.prepare_batch(batch))
    self._trace(self.abstract_state(components), shapes, jax.random.key(0))

  def _trace(self, *args) -> None:
    self.step.trace(*args)


class _PmapRunner(_MeshRunner):
  """pmap(step) over this process's devices; state arrays carry a leading device axis."""

  def __init__(self, components: Components, step_fn, mesh, donate=True, steps_per_call=1):
    if jax.process_count() > 1:
      raise ValueError("parallel='pmap' runs on one process; use --config.parallel=mesh")
    super().__init__(components, step_fn, mesh, donate, steps_per_call)

  def _shardings(self):
    # Host batches, split on a leading device axis below.
    return None, jax.sharding.SingleDeviceSharding(jax.devices()[0])

  def _wrap(self, step_fn, donate: bool, steps_per_call: int):
    return parallel.pmap_step(step_fn, donate=donate, steps_per_call=steps_per_call)

  def init(self, key):
    return self.from_checkpoint(self._init(key))

  def _trace(self, *args) -> None:
    self.step.lower(*args)  # pmap has no trace()

  def abstract_state(self, components: Components) -> GANState:
    count = jax.local_device_count()
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((count,) + x.shape, x.dtype),
                        abstract_state(components))

  def from_checkpoint(self, state):
    return parallel.pmap_replicate(jax.device_get(state), jax.local_device_count())

  def to_checkpoint(self, state):
    return parallel.pmap_unreplicate(state)

  def to_host(self, tree):
    return jax.device_get(parallel.pmap_unreplicate(tree))

  def prepare_batch(self, batch):
    count = jax.local_device_count()
    return {k: v.reshape((count, -1) + v.shape[1:]) for k, v in batch.items()}


PROGRESS_GIF = 'progress.gif'


def write_progress_gif(samples_dir: str, duration_ms: int = 400) -> None:
  """samples/progress.gif: the epoch grids in order, one frame each (nothing if none). A grid
  that cannot be read (damaged on disk) is left out with a warning: the GIF is a summary of
  the run, not worth failing it for."""
  names = sorted((n for n in os.listdir(samples_dir) if re.fullmatch(r'epoch_\d+\.png', n)),
                 key=lambda n: int(n[len('epoch_'):-len('.png')])  # epoch_1128 after epoch_141
                 ) if os.path.isdir(samples_dir) else []
  frames = []
  for name in names:
    path = os.path.join(samples_dir, name)
    try:
      with Image.open(path) as picture:
        picture.load()
        frames.append(picture.copy())
    except (OSError, SyntaxError) as error:  # what PIL raises for damaged images
      logging.warning('%s left out of %s: it cannot be read (%s)', path, PROGRESS_GIF, error)
  if frames:
    images.save_gif_atomic(frames, os.path.join(samples_dir, PROGRESS_GIF),
                           duration_ms=duration_ms)


def _format_seconds(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'


def with_absolute_data_folders(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose non-empty data.manual_dir and data.data_dir are absolute paths, so
  that config.json names the folders whatever directory a later script runs from."""
  config = copy.deepcopy(config)
  for field in ('manual_dir', 'data_dir'):
    if config.data.get(field):
      config.data[field] = os.path.abspath(os.path.expanduser(config.data[field]))
  return config


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> GANState:
  """Train (or resume) the run in `workdir`; returns the final state (host layout). The folder
  is locked while it trains (`run_folder.training_lock`): a second training of it is refused."""
  # The lock is taken part way, once the folder may be made; the stack lets it go at return.
  with contextlib.ExitStack() as held:
    return _train_and_evaluate(config, workdir, held)


def check_inputs(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Refuses, in one line, what can be refused before any jax work: the config's fields, a run
  folder that cannot be one (empty, a file, unwritable, a path its checkpoints cannot take),
  that another process trains or that holds another experiment, a missing evaluation classifier
  or data files. Returns the
  config with absolute data folders. experiments.train asks before the processes of a
  multi-process run join one another: each then names such a problem itself (once joined, the
  first to exit aborts the others)."""
  validate(config)
  config = with_absolute_data_folders(config)
  if not workdir:
    raise ValueError('--workdir is empty: name the run folder, e.g. --workdir=runs/dcgan_mnist')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir {workdir} is a file, not a run folder: pass a new folder or '
                     'a run folder to resume')
  # Every process writes checkpoints; the folders a resumed run writes into are checked too.
  unwritable = next(filter(None, (
      atomic.unwritable_folder(os.path.join(workdir, folder, 'config.json'))
      for folder in ('', LATEST, 'samples', BEST))), None)
  if unwritable:
    raise OSError(f'--workdir {workdir}: {unwritable} is not writable here, and training writes '
                  'the run folder: name a folder you can write (copy a run there to resume it)')
  problem = run_folder.path_problem(workdir, training=True)
  if problem:
    shown = workdir if len(workdir) <= 100 else f'{workdir[:48]}...{workdir[-48:]}'
    raise ValueError(f'--workdir {shown}: {problem}')
  run_folder.check_not_training(workdir)
  # Before the dataset is read: a changed field such as data.num_train_examples also changes
  # the run's length, which was refused first, and then, once mended, the field itself.
  check_same_experiment(config, workdir)
  if config.get('eval_every', 0) or config.data.get('rarity_power', 0.0):
    weights.check_available(config.data.name)  # the evaluation classifier, before any work
  data.check_preparable(config.data.name, data_dir=config.data.data_dir or None,
                        manual_dir=config.data.manual_dir or None)
  return config


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                        held: contextlib.ExitStack) -> GANState:
  config = check_inputs(config, workdir)
  mesh = parallel.make_mesh()
  parallel.check_batch_divides(config.batch_size, mesh)
  if jax.process_count() > 1:
    # Process 0 prepares the dataset before the others look for it: on a data folder they
    # share, processes preparing at once race to rename one folder and all but one fail.
    if jax.process_index() == 0:
      data.prepare(config.data.name, data_dir=config.data.data_dir or None,
                   manual_dir=config.data.manual_dir or None)
    multihost_utils.sync_global_devices('jaxgan: process 0 has prepared the training data')
  train_images, train_labels = data.load_split(
      config.data.name, config.data.split, data_dir=config.data.data_dir or None,
      manual_dir=config.data.manual_dir or None,
      num_examples=config.data.num_train_examples or None)
  examples_per_step = config.batch_size * config.loss.n_critic
  steps_per_epoch = len(train_images) // examples_per_step
  if steps_per_epoch == 0:
    raise ValueError(f'{len(train_images)} training examples are fewer than one step needs '
                     f'(batch_size x loss.n_critic = {examples_per_step}): lower batch_size '
                     'or loss.n_critic, or train on more (data.num_train_examples)')
  total_steps = config.num_steps or config.num_epochs * steps_per_epoch
  # Epoch grids and epoch-end checkpoints at every k-th epoch, k = ceil(epochs / max_epoch_grids):
  # a few real digits make epochs of one step (100 digits: 14,055 epochs).
  epochs_per_grid = -(-total_steps // (steps_per_epoch * config.get('max_epoch_grids', 100)))
  grid_steps = steps_per_epoch * epochs_per_grid
  # A fade of 0 steps still needs one step of the grown model.
  if config.model.name == 'progressive' and (
      config.model.grow_step + max(config.model.fade_steps, 1) > total_steps):
    raise ValueError(f'model.grow_step + model.fade_steps = {config.model.grow_step} + '
                     f'{config.model.fade_steps} is past the {total_steps} training steps (or '
                     'growth starts at the end): the model would never be fully grown and '
                     'trained; lower them or train longer')

  trained = trained_steps(workdir)
  if trained is not None and trained > total_steps:
    # Its config.json would then name a length the run does not have (a sweep would mix it in).
    raise ValueError(f'{workdir} holds a run trained for {trained} steps, more than the '
                     f'{total_steps} this config asks for: ask for at least {trained} steps '
                     '(num_epochs or num_steps), or use a new --workdir')
  is_writer = jax.process_index() == 0
  if is_writer and trained is not None and not os.path.exists(
      os.path.join(workdir, 'config.json')):
    raise ValueError(f'{workdir} holds checkpoints but no config.json, which this config would '
                     "replace unchecked: put the run's config.json back, or use a new --workdir")
  if config.get('eval_every', 0):
    during_training.read_best(workdir)  # raises on a damaged best.json, before any write
  components = build_components(config, total_steps)
  step_gan = models.from_config(config.model, axis_name=parallel.DATA_AXIS)

  def make_runner(before_growth: bool = False):
    step_fn = make_train_step(step_gan, components.loss, components.g_tx, components.d_tx,
                              n_critic=config.loss.n_critic, axis_name=parallel.DATA_AXIS,
                              g_schedule=components.g_schedule, d_schedule=components.d_schedule,
                              compute_dtype=config.get('compute_dtype', 'float32'),
                              augment=augment.make(augment_policy(config), parallel.DATA_AXIS),
                              ema_decay=ema_decay(config),
                              class_weight=config.loss.get('class_weight', 1.0),
                              class_loss_on_fakes=config.loss.get('class_loss_on_fakes', True),
                              mode_seeking=config.loss.get('mode_seeking', 0.0),
                              before_growth=before_growth)
    return (_PmapRunner if config.parallel == 'pmap' else _MeshRunner)(
        components, step_fn, mesh, config.get('donate', True), config.get('steps_per_call', 1))

  runner = make_runner()
  # The step names some settings' errors only when traced (mode seeking's pairs, minibatch-std
  # groups): trace it now, on abstract inputs, so that they come before anything is written.
  runner.trace_step(components, {'image': np.zeros((examples_per_step,) + train_images.shape[1:],
                                                   np.uint8),
                                 'label': np.zeros(examples_per_step, np.int32)})
  init_key, step_key, _ = seed_keys(config.seed)
  # A new run's parameters are made before anything is written: a model too big for memory
  # left a config.json that the corrected config could then not resume.
  new_state = runner.init(init_key) if trained is None else None
  os.makedirs(workdir, exist_ok=True)
  if is_writer:
    held.enter_context(run_folder.training_lock(workdir))
    record_config(config, workdir)

  store = CheckpointStore(workdir, keep=config.keep_checkpoints)
  if store.latest_step() is None:  # None before too, unless its checkpoints went meanwhile
    state = runner.init(init_key) if new_state is None else new_state
  else:
    state = runner.from_checkpoint(
        store.restore(abstract_state(components, runner.state_sharding)))
    logging.info('resuming %s from its checkpoint at step %d', workdir, store.latest_step())
  start_step = int(runner.to_host(state.step))
  metrics_log = MetricsLog(workdir)
  samples_dir = os.path.join(workdir, 'samples')
  z_grid = grid_latents(config, components.gan)

  def write_grid(name: str) -> None:
    if is_writer:
      host = runner.to_host(state)
      picture = generate.sample_grid(components.gan, generator_variables(host), z_grid,
                                     config.sample_grid_rows, scale=config.sample_grid_scale,
                                     step=host.step)
      images.save_atomic(picture, os.path.join(samples_dir, name))

  if start_step >= total_steps:
    logging.info('run in %s already finished at step %d of %d: nothing to do', workdir,
                 start_step, total_steps)
    # Written again, not kept: a session killed after training further may have left the
    # grid and GIF of an earlier end.
    write_grid('final.png')
    if is_writer:
      write_progress_gif(samples_dir)
    store.close()
    return runner.to_host(state)
  if is_writer:
    metrics_log.drop_after(start_step)
    provenance.record_session(workdir, start_step)
  # Programs and the step each runs up to: progressive growing runs the steps before growth
  # with a cheaper program that skips the faded-out 28x28 layers (a second compile at growth).
  phases = [(total_steps, runner)]
  if step_gan.grow_step is not None and start_step < step_gan.grow_step:
    phases.insert(0, (step_gan.grow_step, make_runner(before_growth=True)))

  def resumed_at(done: int) -> int | None:
    """The checkpoint step this session resumed from, within its first log interval."""
    return start_step if 0 < start_step and done - start_step <= config.log_every else None

  def run_phases(state):
    done = start_step
    for stop, phase_runner in phases:
      for done, state, measurements, first_call in parallel.run_steps(
          phase_runner.step, phase_runner.multi_step, state,
          lambda: runner.prepare_batch(next(batches)), step_key, done, stop,
          steps_per_call=config.get('steps_per_call', 1),
          is_boundary=writes_after,
          wants_measurements=lambda d: d % config.log_every == 0 or d == total_steps):
        yield done, state, measurements, first_call

  logging.info('training %s (%s loss) on %s: %d examples, %d steps (%d per epoch), '
               'global batch %d over %d devices (%s)', config.model.name, config.loss.name,
               config.data.name, len(train_images), total_steps, steps_per_epoch,
               config.batch_size, mesh.size, config.parallel)
  example_weights = None
  weighted_epochs = config.data.get('rarity_epochs', 0)
  # A run resumed past its weighted epochs draws uniformly from then on: no weights needed.
  if (config.data.get('rarity_power', 0.0)
      and not 0 < weighted_epochs <= start_step // steps_per_epoch):
    example_weights = rarity.rarity_weights(
        config.data.name, train_images, train_labels, power=config.data.rarity_power,
        cap=config.data.rarity_cap)
    top_tenth = 100 * np.sort(example_weights)[-len(example_weights) // 10:].sum()
    logging.info("rarity weighting: the 10%% of training digits weighted most make %.1f%% of D's "
                 'real digits, in %s', top_tenth,
                 f'the first {weighted_epochs} epochs' if weighted_epochs else 'every epoch')
  eval_every = config.get('eval_every', 0)
  evaluator = None
  if eval_every:
    evaluator = TrainingEvaluator(config, components.gan, workdir, append=metrics_log.append,
                                  is_writer=is_writer)
  # Last before the loop's try (which closes it): its prefetch thread starts here.
  batches = data.training_batches(train_images, train_labels, batch_size=examples_per_step,
                                  seed=config.seed, sharding=runner.batch_sharding,
                                  prefetch=config.get('prefetch', -1), start_step=start_step,
                                  example_weights=example_weights,
                                  weighted_epochs=weighted_epochs)

  def is_eval_step(done: int) -> bool:
    return bool(eval_every) and (done % eval_every == 0 or done == total_steps)

  def writes_after(done: int) -> bool:
    """Whether a grid, an evaluation or a checkpoint is written from the state after `done`."""
    return done % grid_steps == 0 or done % config.checkpoint_every == 0 or is_eval_step(done)

  interval_start, interval_first_step = time.perf_counter(), start_step
  try:
    for done, state, measurements, first_call in run_phases(state):
      if first_call is not None:  # a program's first call compiles it: not in img/s
        call_end, seconds = first_call
        if done == call_end:
          logging.info('step %d (a compiled program\'s first call, compilation included) took '
                       '%.1f s', done, seconds)
        interval_start, interval_first_step = time.perf_counter(), done
      if done % config.log_every == 0 or done == total_steps:
        measured = {k: float(v) for k, v in runner.to_host(measurements).items()}
        now = time.perf_counter()
        steps_timed = done - interval_first_step
        step_seconds = (now - interval_start) / steps_timed if steps_timed else float('nan')
        images_per_s = config.batch_size / step_seconds if steps_timed else float('nan')
        interval_start, interval_first_step = now, done
        # null, not NaN (no JSON), where nothing was timed: a log at a program's first step.
        record = dict(step=done, epoch=round(done / steps_per_epoch, 4),
                      images_per_s=round(images_per_s, 1) if steps_timed else None, **measured)
        if is_writer:
          metrics_log.append(record)
        eta = _format_seconds((total_steps - done) * step_seconds) if steps_timed else '?'
        logging.info('epoch %.2f step %d/%d  d_loss %.4f  g_loss %.4f  D(real) %.3f  '
                     'D(fake) %.3f  %.0f img/s  eta %s', record['epoch'], done, total_steps,
                     measured['d_loss'], measured['g_loss'], measured['d_real'],
                     measured['d_fake'], images_per_s, eta)
        stop_if_diverged(done, sorted(k for k, v in measured.items() if not math.isfinite(v)),
                         store, workdir, resumed_at(done))
      if writes_after(done) or done == total_steps:  # the final checkpoint follows the loop
        stop_if_diverged(done, non_finite_parameters(runner.to_host(
            {'generator parameters': state.g_params, 'discriminator parameters': state.d_params,
             'EMA generator parameters': state.g_ema_params})), store, workdir,
                         resumed_at(done))
      if is_eval_step(done):
        evaluator(done, round(done / steps_per_epoch, 4),
                  generator_variables(runner.to_host(state)), runner.to_checkpoint(state))
      if done % grid_steps == 0:
        write_grid(f'epoch_{done // steps_per_epoch:03d}.png')
      if done % grid_steps == 0 or done % config.checkpoint_every == 0:
        store.save(runner.to_checkpoint(state))
  finally:
    batches.close()
    store.wait()
    if evaluator is not None:
      evaluator.close()
  store.save(runner.to_checkpoint(state))
  store.wait()
  write_grid('final.png')
  if is_writer:
    write_progress_gif(samples_dir)
  store.close()
  logging.info('finished: %d steps; run folder %s', total_steps, workdir)
  return runner.to_host(state)
