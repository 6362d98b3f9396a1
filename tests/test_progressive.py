"""Progressive growing: the fade-in schedule, the blended networks at alpha 0 and 1, the cheaper
step before growth, and growth at the configured step of a real (tiny) training run of the
progressive_mnist config, sampled mid-fade by experiments.interpolate."""
from __future__ import annotations

import ast
import functools
import json
import os
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from experiments.configs import progressive_mnist
from jaxgan import generate, images, losses, models, trainer
from jaxgan.models import progressive
from jaxgan.state import generator_variables, init_state
from jaxgan.train_step import make_train_step
from tests.idx_files import write_manual_dir
from tests.test_experiments import REPO, cli


def test_alpha_is_zero_until_the_grow_step_then_rises_linearly_to_one():
  steps = jnp.array([0, 99, 100, 101, 150, 199, 200, 1000])
  np.testing.assert_allclose(progressive.growth_alpha(steps, 100, 100),
                             [0, 0, 0, 0.01, 0.5, 0.99, 1, 1], atol=1e-7)
  np.testing.assert_array_equal(progressive.growth_alpha(steps, 100, 0),
                                [0, 0, 1, 1, 1, 1, 1, 1])
  gan = models.build('progressive', grow_step=10, fade_steps=4)
  assert float(gan.network_kwargs(12)['alpha']) == 0.5
  assert models.build('dcgan').network_kwargs(12) == {}


@pytest.fixture(scope='module')
def networks():
  gan = models.build('progressive', spectral_norm=True, generator_norm='instance')
  z = jax.random.normal(jax.random.key(0), (3, gan.latent_dim))
  g_vars = jax.jit(lambda k: gan.generator.init(k, z, train=False))(jax.random.key(1))
  d_vars = jax.jit(lambda k: gan.discriminator.init(k, jnp.zeros((1, 28, 28, 1)), train=False))(
      jax.random.key(2))
  g = jax.jit(lambda z, alpha: gan.generator.apply(g_vars, z, train=False, alpha=alpha))
  d = jax.jit(lambda x, alpha: gan.discriminator.apply(d_vars, x, train=False, alpha=alpha))
  return gan, z, g, d


def test_generator_at_alpha_zero_is_the_upsampled_14x14_image(networks):
  _, z, g, _ = networks
  low = np.asarray(g(z, 0.0))
  assert low.shape == (3, 28, 28, 1) and np.all(np.abs(low) <= 1.0)
  # Every 2x2 block is one 14x14 pixel repeated.
  blocks = low.reshape(3, 14, 2, 14, 2, 1)
  np.testing.assert_array_equal(blocks, np.broadcast_to(blocks[:, :, :1, :, :1], blocks.shape))
  high = np.asarray(g(z, 1.0))
  assert not np.allclose(high.reshape(3, 14, 2, 14, 2, 1)[:, :, 0], high.reshape(
      3, 14, 2, 14, 2, 1)[:, :, 1])  # full resolution at alpha 1
  # In between, the output is the blend of the two.
  np.testing.assert_allclose(g(z, 0.25), 0.75 * low + 0.25 * high, rtol=1e-5, atol=1e-6)


def test_discriminator_at_alpha_zero_sees_only_14x14_content(networks):
  _, _, _, d = networks
  x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (4, 28, 28, 1)), jnp.float32)
  same_low_pass = progressive.upsample(progressive.downsample(x))
  assert d(x, 0.0).shape == (4,)
  np.testing.assert_allclose(d(x, 0.0), d(same_low_pass, 0.0), rtol=1e-5, atol=1e-6)
  assert not np.allclose(d(x, 1.0), d(same_low_pass, 1.0), atol=1e-4)


@pytest.mark.parametrize('generator_norm, convolutions_kept', [('instance', 43), ('batch', 51)])
def test_the_step_before_growth_drops_the_28x28_convolutions_and_matches_the_full_step(
    generator_norm, convolutions_kept):
  gan = models.build('progressive', spectral_norm=True, generator_norm=generator_norm,
                     grow_step=10, fade_steps=4)
  tx = optax.adam(1e-3)
  loss = losses.get('bce', label_smoothing=0.1)
  start = init_state(gan, tx, tx, jax.random.key(0))
  batch = {'image': jax.random.uniform(jax.random.key(1), (8, 28, 28, 1), minval=-1, maxval=1)}
  states, convolutions = [], []
  for before_growth in (False, True):
    # The compiled program runs the steps too: jit's own cache would compile it again.
    step = jax.jit(make_train_step(gan, loss, tx, tx, before_growth=before_growth)).lower(
        start, batch, jax.random.key(2)).compile()
    convolutions.append(len(re.findall(r'= \S+ convolution\(', step.as_text())))
    state = start
    for _ in range(3):
      state, measurements = step(state, batch, jax.random.key(2))
    assert float(measurements['alpha']) == 0.0
    states.append(state)
  # The full step has 86 convolutions (forward and backward passes of both networks). Before
  # growth the 28x28 ones feed nothing and are dropped, except, with batch norm in G, the
  # forward ones that its running statistics still need.
  assert convolutions == [86, convolutions_kept]
  # Identical states, spectral-norm vectors and batch statistics of the skipped layers included.
  for full, early in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
    np.testing.assert_array_equal(full, early)
  with pytest.raises(ValueError, match='before_growth needs a progressive model'):
    make_train_step(models.build('dcgan'), loss, tx, tx, before_growth=True)


def test_progressive_config_grows_at_the_configured_step(tmp_path_factory):
  manual = tmp_path_factory.mktemp('manual')
  write_manual_dir(manual, {'mnist': {'train': 100, 'test': 10}})
  config = progressive_mnist.get_config()
  config.data.manual_dir, config.data.data_dir = str(manual), str(tmp_path_factory.mktemp('t'))
  config.batch_size, config.num_steps, config.log_every = 16, 6, 1
  config.model.grow_step, config.model.fade_steps = 2, 2
  config.schedule.warmup_steps = 1
  config.sample_grid_rows, config.sample_grid_scale = 2, 1
  config.checkpoint_every = 3  # one checkpoint in the middle of the fade-in
  workdir = tmp_path_factory.mktemp('run')
  state = trainer.train_and_evaluate(config, str(workdir))
  with open(workdir / 'metrics.jsonl') as f:
    alphas = [json.loads(line)['alpha'] for line in f]
  # alpha of the state each step started from: steps 0..5.
  assert alphas == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
  assert jax.tree.leaves(state.d_state) and not state.g_batch_stats  # spectral norm, IN
  gan = trainer.build_components(config, config.num_steps).gan
  digits = generate.generate(gan, generator_variables(state), jnp.zeros((2, gan.latent_dim)),
                             step=state.step)
  assert digits.shape == (2, 28, 28) and digits.dtype == np.uint8
  # experiments.interpolate on the checkpoint of step 3 (alpha 0.5) draws it as it trained.
  mid_fade = tmp_path_factory.mktemp('mid_fade') / 'run'
  shutil.copytree(workdir, mid_fade)
  shutil.rmtree(mid_fade / 'checkpoints' / str(config.num_steps))
  result = cli('interpolate', f'--workdir={mid_fade}', '--steps=2', '--rows=1', '--method=lerp')
  assert result.returncode == 0, result.stderr[-3000:]
  state_3 = trainer.restore_run_state(str(mid_fade), config)[1]
  assert int(state_3.step) == 3
  ends = generate.latents(jax.random.key(0), 2, gan.latent_dim)  # interpolate's --seed=0
  drawn = lambda step: generate.generate(gan, generator_variables(state_3), ends, step=step)
  with Image.open(mid_fade / 'interpolation.png') as strip:
    np.testing.assert_array_equal(np.asarray(strip), np.asarray(images.grid(drawn(3), 1, 2)))
  assert not np.array_equal(drawn(3), drawn(None))  # the fully grown networks draw otherwise
  # Growth past the end, or at its very end (the 28x28 layers sampled, never trained): refused.
  for grow_step, fade_steps in ((5, 2), (6, 0)):
    config.model.grow_step, config.model.fade_steps = grow_step, fade_steps
    with pytest.raises(ValueError, match='never be fully grown and trained'):
      trainer.train_and_evaluate(config, str(tmp_path_factory.mktemp('bad')))


@pytest.mark.parametrize('steps', [234, 2340])  # the README's command and the script's default
def test_every_variant_of_the_ablation_script_is_a_valid_config(tmp_path, steps):
  """experiments/ablate_progressive.sh (the README's ablation table) trains seven variants of
  progressive_mnist: each one's flags, as the script passes them, must make a config that the
  trainer accepts (its no_schedule variant kept a warmup that the constant schedule refuses),
  growing and fading within the run."""
  calls = tmp_path / 'calls'
  stub = tmp_path / 'bin' / 'python'  # records each call instead of training or evaluating
  stub.parent.mkdir()
  stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
  stub.chmod(0o755)
  path = f'{stub.parent}:{os.environ["PATH"]}'
  result = subprocess.run(['bash', 'experiments/ablate_progressive.sh', str(tmp_path / 'runs'),
                           str(steps)],
                          cwd=REPO, env=dict(os.environ, PATH=path), capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 0, result.stdout + result.stderr
  trainings = [line.split() for line in calls.read_text().splitlines()
               if line.startswith('-m experiments.train ')]
  variants = {args[3].rpartition('/')[2]: args[4:] for args in trainings}
  assert sorted(variants) == sorted(['full', 'no_growing', 'no_instance_norm', 'no_spectral_norm',
                                     'no_schedule', 'no_label_smoothing', 'no_large_batch'])
  for name, overrides in variants.items():
    config = progressive_mnist.get_config()
    for override in overrides:  # --config.a.b=value, later ones winning as absl's do
      path, _, value = override.removeprefix('--config.').partition('=')
      *groups, field = path.split('.')
      try:
        value = ast.literal_eval(value)
      except ValueError:  # a name, such as constant
        pass
      functools.reduce(getattr, groups, config)[field] = value
    trainer.validate(config)  # raises naming the field
    trainer.build_components(config, config.num_steps)  # the schedules, for this length
    assert config.num_steps == (4 if name == 'no_large_batch' else 1) * steps, name
    assert config.model.grow_step + max(config.model.fade_steps, 1) <= config.num_steps, name
