"""The recipe configs (WGAN with weight clipping, hinge, least squares, DiffAugment) train a few
steps end to end, and run folders written before their config fields and state fields existed
still resume."""
from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
from typing import Any

import flax.struct
import jax
import numpy as np
import pytest

from experiments.configs import cgan_mnist, default
from jaxgan import models, optim, trainer
from jaxgan import state as state_lib
from jaxgan.checkpoint import CheckpointStore
from tests import stepping
from tests.idx_files import write_manual_dir


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory):
  manual = tmp_path_factory.mktemp('manual')
  write_manual_dir(manual, {'mnist': {'train': 200, 'test': 20}})
  return str(manual), str(tmp_path_factory.mktemp('tfds'))


def smoke_config(name, data_dirs):
  """The named config, shrunk to a few steps of the MLP networks on the tiny data (the recipes'
  losses, optimisers, regularisers and state are kept)."""
  config = importlib.import_module(f'experiments.configs.{name}').get_config()
  config.data.manual_dir, config.data.data_dir = data_dirs
  config.data.num_train_examples = 0
  config.model.name = 'mlp'
  config.batch_size, config.num_steps, config.log_every = 16, 2, 1
  config.sample_grid_rows, config.sample_grid_scale = 2, 1
  return config


@pytest.mark.parametrize('name', ['wgan_clip_mnist', 'hinge_mnist', 'lsgan_mnist',
                                  'diffaugment_mnist'])
def test_recipe_config_trains_and_resumes(name, data_dirs, tmp_path):
  config = smoke_config(name, data_dirs)
  state = trainer.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2
  with open(tmp_path / 'metrics.jsonl') as f:
    metrics = [json.loads(line) for line in f]
  assert [m['step'] for m in metrics] == [1, 2]
  assert all(np.isfinite(v) for m in metrics for k, v in m.items() if k != 'images_per_s')
  if config.loss.name == 'wgan':
    assert max(float(np.abs(p).max()) for p in jax.tree.leaves(state.d_params)) <= 0.01
  assert bool(jax.tree.leaves(state.d_state)) == config.model.spectral_norm
  assert bool(jax.tree.leaves(state.g_ema_params)) == (config.ema.decay > 0)
  if name != 'hinge_mnist':
    return
  # The checkpoint holds d_state and g_ema_params: one more step resumes from it.
  config.num_steps = 3
  resumed = trainer.train_and_evaluate(config, str(tmp_path))
  assert int(resumed.step) == 3
  assert jax.tree.structure(resumed) == jax.tree.structure(state)


def test_the_trainer_hands_every_config_field_to_the_step(data_dirs, tmp_path, monkeypatch):
  """The config's augmentation policy, compute dtype, EMA decay, class-loss settings, mode
  seeking and n_critic reach make_train_step, and D's schedule counts n_critic updates per G
  step: a field dropped on the way trains a run without it, and every finite-metrics smoke test
  still passes."""
  config = smoke_config('cgan_mnist', data_dirs)
  config.model.name = 'dcgan'  # its class-conditional batch norm; nothing is trained
  config.augment.policy = 'translation,cutout'
  config.compute_dtype = 'bfloat16'
  config.ema.decay = 0.99
  config.loss.class_weight, config.loss.class_loss_on_fakes = 0.5, True
  config.loss.mode_seeking, config.loss.n_critic = 0.25, 2
  config.schedule.name, config.schedule.warmup_steps = 'warmup', 4
  config.num_steps = 8  # a run the warmup fits in (the spy stops it before the first step)
  policies, calls = [], []
  real_make = trainer.augment.make
  monkeypatch.setattr(trainer.augment, 'make',
                      lambda policy, *args: policies.append(policy) or real_make(policy, *args))

  class Stop(Exception):
    pass

  def spy(*args, **kwargs):
    calls.append(kwargs)
    raise Stop

  monkeypatch.setattr(trainer, 'make_train_step', spy)
  with pytest.raises(Stop):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
  (kwargs,) = calls
  assert policies == ['translation,cutout'] and kwargs['augment'] is not None
  assert {name: kwargs[name] for name in ('compute_dtype', 'ema_decay', 'class_weight',
                                          'class_loss_on_fakes', 'mode_seeking', 'n_critic')} == {
      'compute_dtype': 'bfloat16', 'ema_decay': 0.99, 'class_weight': 0.5,
      'class_loss_on_fakes': True, 'mode_seeking': 0.25, 'n_critic': 2}
  g_schedule, d_schedule = kwargs['g_schedule'], kwargs['d_schedule']
  for step in range(6):  # D's first update of each step, through the warmup and past it
    np.testing.assert_allclose(d_schedule(2 * step), g_schedule(step), rtol=1e-6)
  assert float(g_schedule(1)) < float(g_schedule(4))  # the warmup is there to compare


def test_new_config_fields_are_validated_with_one_line_errors():
  for field, value, message in [
      ('ema.decay', 1.0, 'ema.decay must be in [0, 1)'),
      ('optimizer.name', 'sgd', 'optimizer.name must be one of adam, rmsprop'),
      ('augment.policy', 'flip', "unknown augment.policy entries 'flip'"),
      ('loss.r1_gamma', -1.0, 'loss.r1_gamma must be finite and >= 0'),
      ('loss.consistency', -1.0, 'loss.consistency must be finite and >= 0'),
      ('model.generator_norm', 'layer', "unknown model.generator_norm 'layer'"),
      ('augment.policy', 'translation,translation',  # would translate twice as far
       "augment.policy='translation,translation' names an augmentation twice: name each once"),
  ]:
    config = default.get_config()
    section, key = field.split('.')
    config[section][key] = value
    with pytest.raises(ValueError, match=None) as excinfo:
      trainer.validate(config)
    assert message in str(excinfo.value) and '\n' not in str(excinfo.value)


def test_a_class_loss_weight_without_a_class_head_is_refused():
  config = cgan_mnist.get_config()
  config.model.conditioning = 'projection'  # a head that does not classify: still trains
  trainer.validate(config)  # (cgan_mnist's class_loss_on_fakes=False, rows rerun this way)
  config.loss.class_weight = 0.3
  with pytest.raises(ValueError) as excinfo:
    trainer.validate(config)
  assert str(excinfo.value) == (
      "bad config: loss.class_weight weighs the auxiliary classifier's loss, which "
      "model.conditioning='projection' has none of: use conditioning='auxiliary' or "
      "'projection_auxiliary', or set it to 1.0 (its default)")
  # Unconditional: every changed field named.
  config = default.get_config()
  config.model.conditioning, config.loss.class_loss_on_fakes = 'auxiliary', False
  with pytest.raises(ValueError, match=re.escape(
      'model.conditioning, loss.class_loss_on_fakes configure class-conditional models only, '
      'which model.num_classes=0 is not: set model.num_classes=10, or leave them at their '
      'defaults')):
    trainer.validate(config)


@pytest.mark.parametrize('field,value,message', [
    ('optimizer.generator.lr', float('nan'),
     'optimizer.generator.lr must be in (0, 1] (the configs here train at 5e-5 to 4e-4), got nan'),
    ('optimizer.discriminator.lr', -1.0,
     'optimizer.discriminator.lr must be in (0, 1] (the configs here train at 5e-5 to 4e-4), got '
     '-1.0'),
    # Trained on without a word: g_loss 2e16, D certain of every digit.
    ('optimizer.discriminator.lr', 1e6,
     'optimizer.discriminator.lr must be in (0, 1] (the configs here train at 5e-5 to 4e-4), got '
     '1000000.0'),
    ('optimizer.generator.b1', 1.0, 'optimizer.generator.b1 must be in [0, 1), got 1.0'),
    ('optimizer.discriminator.eps', 0.0,
     "optimizer.discriminator.eps must be in (0, 1] (the default config's: 1e-7), got 0.0"),
    ('optimizer.generator.eps', 1e30,  # stopped every update, silently
     "optimizer.generator.eps must be in (0, 1] (the default config's: 1e-7), got 1e+30"),
    ('schedule.name', 'linear', 'schedule.name must be one of constant, warmup, cosine, '
     "exponential, got 'linear'"),
    # Trained, then failed at the first evaluation, in a folder no corrected config could resume.
    ('model.num_classes', 20, "model.num_classes must be 0 (unconditional) or mnist's 10 digit "
     'classes, got 20'),
    ('schedule.end_factor', -0.5, 'schedule.end_factor must be in [0, 1] (a decay), got -0.5'),
    ('schedule.decay_rate', 0.0, 'schedule.decay_steps must be > 0 and schedule.decay_rate in '
     '(0, 1] (a decay), got 1000 and 0.0'),
    ('schedule.decay_steps', 0, 'schedule.decay_steps must be > 0 and schedule.decay_rate in '
     '(0, 1] (a decay), got 0 and 0.5'),
    ('sample_latent_scale', 0.0,
     'sample_latent_scale must be finite and > 0 (1: the training distribution), got 0.0'),
    # NaN passed `< 0` and diverged the first steps, in a folder the mended config then could
    # not resume; inf turned weight clipping off.
    ('loss.mode_seeking', float('nan'), 'loss.mode_seeking must be finite and >= 0, got nan'),
    ('loss.class_weight', float('nan'), 'loss.class_weight must be finite and >= 0, got nan'),
    ('loss.gp_weight', float('inf'), 'loss.gp_weight must be finite and >= 0, got inf'),
    ('loss.weight_clip', float('inf'), 'loss.weight_clip must be finite and >= 0, got inf'),
    # Sizes that ran out of memory, some after training had started.
    ('sample_grid_scale', 100000, 'sample_grid_rows=8 and sample_grid_scale=100000 make sample '
     'grids 29,100,000 pixels a side (at most 8,192): lower them'),
    ('eval_num_samples', 100_000_000, 'eval_num_samples must be at most 1,000,000 (each '
     'evaluation generates them at once; experiments.evaluate scores a run afterwards), got '
     '100000000'),
    ('prefetch', 1_000_000, 'prefetch must be at most 64 (batches queued ahead; more buy nothing '
     'but memory), got 1000000'),
    # Settings of a feature the config does not turn on, which were silently ignored.
    ('model.grow_step', 8, "model.grow_step and model.fade_steps grow a progressive model, not "
     "'dcgan': set them to 0, or model.name=progressive"),
    ('loss.weight_clip', 0.5, "loss.weight_clip applies to loss.name='wgan' only, not 'bce': "
     'set it to 0.01 (its default), or loss.name=wgan'),
    ('loss.gp_weight', 5.0, "loss.gp_weight applies to loss.name='wgan_gp' only, not 'bce': set "
     'it to 10.0 (its default), or loss.name=wgan_gp'),
    ('model.label_embed_dim', 20, 'model.label_embed_dim configures class-conditional models '
     'only, which model.num_classes=0 is not: set model.num_classes=10, or leave it at its '
     'default'),
    ('loss.class_weight', 5.0, 'loss.class_weight configures class-conditional models only, '
     'which model.num_classes=0 is not: set model.num_classes=10, or leave it at its default'),
    ('schedule.warmup_steps', 5, "schedule.warmup_steps does nothing with "
     "schedule.name='constant': use schedule.name='warmup' (or cosine, exponential), or set it "
     'to 0'),
    ('data.rarity_epochs', 3, 'data.rarity_epochs limits rarity weighting, which '
     'data.rarity_power=0 turns off: set data.rarity_power > 0, or data.rarity_epochs to 0'),
])
def test_optimizer_schedule_and_sampling_settings_are_validated(field, value, message):
  config = default.get_config()
  # A setting's bad value, checked where it is read (elsewhere a change of it is refused apart).
  config.update_from_flattened_dict({
      'loss.gp_weight': {'loss.name': 'wgan_gp'}, 'loss.weight_clip': {'loss.name': 'wgan'},
      'loss.class_weight': {'model.num_classes': 10, 'model.conditioning': 'auxiliary'},
  }.get(field, {}) if isinstance(value, float) and not math.isfinite(value) else {})
  *sections, key = field.split('.')
  section = config
  for name in sections:
    section = section[name]
  section[key] = value
  schedule = {'end_factor': 'cosine', 'decay_rate': 'exponential', 'decay_steps': 'exponential'}
  if sections == ['schedule'] and key in schedule:
    config.schedule.name = 'constant'  # fields of another schedule are not read: no error
    trainer.validate(config)
    config.schedule.name = schedule[key]
  with pytest.raises(ValueError) as excinfo:
    trainer.validate(config)
  assert str(excinfo.value) == f'bad config: {message}'


# The default config's fields outside trainer._ADDED_FIELDS, as the oldest run folders hold them.
_FIRST_FIELDS = frozenset({
    'batch_size', 'checkpoint_every', 'data.data_dir', 'data.manual_dir', 'data.name',
    'data.num_train_examples', 'data.split', 'eval_every', 'eval_num_samples',
    'keep_checkpoints', 'log_every', 'loss.gp_weight', 'loss.label_smoothing', 'loss.n_critic',
    'loss.name', 'model.name', 'num_epochs', 'num_steps', 'optimizer.discriminator.b1',
    'optimizer.discriminator.b2', 'optimizer.discriminator.eps', 'optimizer.discriminator.lr',
    'optimizer.generator.b1', 'optimizer.generator.b2', 'optimizer.generator.eps',
    'optimizer.generator.lr', 'parallel', 'sample_grid_rows', 'sample_grid_scale',
    'schedule.decay_rate', 'schedule.decay_steps', 'schedule.end_factor', 'schedule.name',
    'schedule.warmup_steps', 'seed'})


def test_every_new_config_field_has_the_default_that_older_runs_had():
  fields = trainer._flatten(json.loads(default.get_config().to_json()))
  unregistered = sorted(set(fields) - _FIRST_FIELDS - set(trainer._ADDED_FIELDS))
  assert not unregistered, (
      f'new config fields {unregistered}: add each to trainer._ADDED_FIELDS with the value '
      'that reproduces older runs, or run folders written before it cannot be resumed')
  for name, value in trainer._ADDED_FIELDS.items():
    assert fields[name] == value, name  # the default is the old behaviour


def test_a_run_folder_from_before_the_new_fields_resumes(tmp_path):
  """config.json without the new fields matches the defaults (old behaviour), and a checkpoint
  of the state without d_state and g_ema_params restores into the current GANState."""
  old_config = json.loads(default.get_config().to_json())
  for section, key in [(s, k) for s, k in (f.split('.') for f in trainer._ADDED_FIELDS
                                           if '.' in f)]:
    del old_config[section][key]
  for section in ('ema', 'augment'):
    assert not old_config[section]
    del old_config[section]
  (tmp_path / 'config.json').write_text(json.dumps(old_config))
  trainer.record_config(default.get_config(), str(tmp_path))  # no error: same experiment

  @flax.struct.dataclass
  class OldState:  # GANState before d_state and g_ema_params
    step: Any
    g_params: Any
    g_batch_stats: Any
    d_params: Any
    g_opt_state: Any
    d_opt_state: Any

  tx, _ = optim.make_optimizer('adam', stepping.adam_config(), stepping.CONSTANT, 10)
  state = jax.jit(lambda key: state_lib.init_state(models.build('mlp'), tx, tx, key))(
      jax.random.key(0))
  store = CheckpointStore(str(tmp_path))
  store.save(OldState(**{f.name: getattr(state, f.name)
                         for f in dataclasses.fields(OldState)}))
  store.wait()
  store.close()
  store = CheckpointStore(str(tmp_path))  # a fresh store, as a resumed run opens it
  restored = store.restore(jax.eval_shape(lambda: state))
  assert restored.d_state == {} and restored.g_ema_params == {}
  jax.tree.map(np.testing.assert_array_equal, restored, state)
  # A config that needs arrays the old checkpoint lacks (an EMA) is refused, with the fix.
  with_ema = jax.eval_shape(lambda: state.replace(g_ema_params=state.g_params))
  with pytest.raises(ValueError, match='has no g_ema_params.*new --workdir'):
    store.restore(with_ema)
  store.close()
