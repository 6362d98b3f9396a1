"""Class-conditional GANs: the models, a tiny conditional run through the CLIs (per-class grids,
progress.gif, sample --labels/--per_class, sample_strings, interpolate, serve) and their
one-line errors.

The multi-device agreement of the conditional step is in tests/test_parallel.py.
"""
from __future__ import annotations

import io
import json
import math
import re
import shutil
import socket
import time
import urllib.error
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from experiments.configs import cgan_mnist
from jaxgan import generate, models, parallel, run_folder, strings, trainer
from jaxgan.evaluation import run_scores
from jaxgan.layers import SPECTRAL
from jaxgan import state as state_lib
from jaxgan.state import generator_variables
from tests.idx_files import tiny_digits
from tests.test_experiments import (TINY_MNIST, cli, data_dirs, tiny_config,  # noqa: F401
                                    train_args)

CELL = 29  # a 28-pixel digit and its 1-pixel gap, tiny config's scale 1
CONDITIONAL = ('--config.model.num_classes=10', '--config.model.conditioning=auxiliary')


@pytest.mark.parametrize('conditioning', models.CONDITIONINGS)
def test_conditional_models_take_labels(conditioning):
  gan = models.build('mlp', num_classes=10, conditioning=conditioning)
  key = jax.random.key(0)
  z, x = jnp.ones((3, gan.latent_dim)), jnp.ones((3, 28, 28, 1))
  labels = jnp.array([0, 1, 2])
  g_vars = gan.generator.init(key, z, labels, train=False)
  fake = gan.generator.apply(g_vars, z, labels, train=False)
  assert fake.shape == (3, 28, 28, 1)
  # Same latent, different class: different digits; one-hot weights equal integer labels.
  assert not np.allclose(fake[0], fake[1])
  one_hot = jax.nn.one_hot(labels, 10)
  np.testing.assert_allclose(gan.generator.apply(g_vars, z, one_hot, train=False), fake,
                             atol=1e-6)
  d_vars = gan.discriminator.init(key, *gan.discriminator_inputs(x, labels), train=False)
  out = gan.discriminator.apply(d_vars, *gan.discriminator_inputs(x, labels), train=False)
  logit, class_logits = (out, None) if conditioning == 'projection' else out
  assert logit.shape == (3,)
  if conditioning != 'auxiliary':  # same image, three classes: three scores
    assert len(np.unique(np.round(np.asarray(logit), 5))) == 3
  if conditioning != 'projection':
    assert class_logits.shape == (3, 10)


def test_conditional_batch_norm_brings_the_label_to_every_layer_and_starts_as_plain_bn():
  gan = models.build('dcgan', num_classes=10, generator_norm='conditional_batch')
  z = jax.random.normal(jax.random.key(1), (4, gan.latent_dim))
  labels = jnp.array([0, 1, 2, 3])
  g_vars = gan.generator.init(jax.random.key(0), z, labels, train=False)
  params = g_vars['params']
  base = params['base']
  assert not any(name.startswith('BatchNorm') for name in base)  # no unconditional scale/shift
  # Cut the input path (the embedding's rows of the first kernel): what is left of the label
  # is what the normalisation layers get.
  kernel = base['Dense_0']['kernel']
  base = dict(base, Dense_0={'kernel': kernel.at[gan.latent_dim:].set(0.0)})
  same_z = jnp.repeat(z[:1], 4, axis=0)

  def outputs(base_params, train):
    variables = dict(g_vars, params=dict(params, base=base_params))
    out = gan.generator.apply(variables, same_z, labels, train=train, mutable=['batch_stats'])
    return np.asarray(out[0])

  for train in (False, True):  # zero-initialised conditional affines: the label has no effect
    np.testing.assert_allclose(outputs(base, train), outputs(base, train)[:1].repeat(4, 0),
                               atol=1e-6)
  # Non-zero conditional scales and shifts (Dense_1..4): each class draws another digit.
  keys = iter(jax.random.split(jax.random.key(2), 4))
  conditioned = {name: ({'kernel': 0.3 * jax.random.normal(next(keys), value['kernel'].shape),
                         'bias': value['bias']} if name in ('Dense_1', 'Dense_2', 'Dense_3',
                                                            'Dense_4') else value)
                 for name, value in base.items()}
  digits = outputs(conditioned, False)
  assert min(np.abs(digits[i] - digits[j]).max() for i in range(4) for j in range(i)) > 1e-3
  one_hot = jax.nn.one_hot(labels, 10)  # class weights mix the conditions linearly
  np.testing.assert_allclose(
      gan.generator.apply(g_vars, z, one_hot, train=False),
      gan.generator.apply(g_vars, z, labels, train=False), atol=1e-6)


def test_cgan_config_trains_its_generator_and_discriminator(data_dirs, tmp_path):  # noqa: F811
  config = cgan_mnist.get_config()  # the real networks; a few steps on the tiny data
  config.data.manual_dir, config.data.data_dir = map(str, data_dirs)
  config.batch_size, config.num_steps, config.log_every = 16, 2, 1
  config.sample_grid_rows, config.sample_grid_scale = 2, 1
  state = trainer.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2
  metrics = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert all(np.isfinite(m['g_loss']) and m['g_mode_seeking'] > 0 for m in metrics)
  # D: spectral norm on every layer, a class head trained on real digits, the hinge loss.
  assert all(m['d_class_loss'] > 0 and m['g_class_loss'] > 0 for m in metrics)
  assert {'label_projection', 'class_logits'} <= set(state.d_params)
  assert len(jax.tree.leaves(state.d_state)) == 2 * 5  # (u, sigma) of 2 convs + 3 head layers
  base = state.g_params['base']
  scales = [base[f'Dense_{i}']['kernel'] for i in (1, 3)]  # the conditional scales learned
  assert all(float(np.abs(kernel).max()) > 0 for kernel in scales)
  assert float(np.abs(state.g_batch_stats['base']['BatchNorm_1']['mean']).max()) > 0
  # The config samples from an EMA of G; after 2 steps at decay 0.999 it is near G's init.
  ema, trained = state.g_ema_params['base'], state.g_params['base']
  assert jax.tree.structure(ema) == jax.tree.structure(trained)
  assert float(np.abs(ema['Dense_1']['kernel'] - trained['Dense_1']['kernel']).max()) > 0


@pytest.mark.parametrize('conditioning,heads', [
    ('projection', {'label_projection'}), ('auxiliary', {'class_logits'}),
    ('projection_auxiliary', {'label_projection', 'class_logits'})])
def test_spectral_norm_reaches_the_conditional_heads(conditioning, heads):
  # SNGAN-projection normalises every D layer, the label embedding included: after enough
  # training-mode power iterations each stored sigma is the matrix's largest singular value.
  gan = models.build('mlp', spectral_norm=True, num_classes=10, conditioning=conditioning)
  inputs = gan.discriminator_inputs(jnp.ones((3, 28, 28, 1)), jnp.array([0, 1, 2]))
  variables = gan.discriminator.init(jax.random.key(0), *inputs, train=False)
  spectral = variables[SPECTRAL]
  for _ in range(100):
    _, updates = gan.discriminator.apply({**variables, SPECTRAL: spectral}, *inputs,
                                         train=True, mutable=[SPECTRAL])
    spectral = updates[SPECTRAL]
  sigmas = {name.rsplit('/', 1)[0]: value for vectors in spectral.values()
            for name, value in vectors.items() if name.endswith('/sigma')}
  assert {path.split('/')[0] for path in sigmas} == {'Dense_0', 'Dense_1', *heads}
  for path, sigma in sigmas.items():
    layer, name = path.split('/')
    matrix = np.asarray(variables['params'][layer][name], np.float64)
    matrix = matrix.reshape(-1, matrix.shape[-1])
    np.testing.assert_allclose(sigma, np.linalg.svd(matrix, compute_uv=False)[0], rtol=1e-4)


def test_bad_conditional_settings_are_refused():
  with pytest.raises(ValueError, match='model.num_classes must be 0 .* or >= 2, got 1'):
    models.build('dcgan', num_classes=1)
  for name, num_classes in (('dcgan', 0), ('mlp', 10)):
    with pytest.raises(ValueError, match='generator_norm=conditional_batch needs a '
                       'class-conditional dcgan'):
      models.build(name, num_classes=num_classes, generator_norm='conditional_batch')
  for num_classes in (10, 0):  # a typo on an unconditional model was ignored
    with pytest.raises(ValueError, match="unknown conditioning 'concat'"):
      models.build('dcgan', num_classes=num_classes, conditioning='concat')


@pytest.mark.parametrize('conditioning', models.CONDITIONINGS)
def test_a_discriminator_called_with_the_wrong_inputs_says_so(conditioning):
  gan = models.build('mlp', num_classes=10, conditioning=conditioning)
  x, labels = jnp.ones((2, 28, 28, 1)), jnp.array([0, 1])
  wrong = (x,) if len(gan.discriminator_inputs(x, labels)) == 2 else (x, labels)
  with pytest.raises(ValueError, match=f'a {conditioning} discriminator takes labels exactly when '
                     'it projects them: call it with gan.discriminator_inputs'):
    gan.discriminator.init(jax.random.key(0), *wrong, train=False)


def test_slerp_keeps_the_ends_and_lerp_is_straight():
  a, b = np.array([3.0, 0.0]), np.array([0.0, 3.0])
  t = np.linspace(0, 1, 5)
  arc, line = generate.slerp(a, b, t), generate.lerp(a, b, t)
  np.testing.assert_allclose(arc[[0, -1]], [a, b], atol=1e-12)
  np.testing.assert_allclose(np.linalg.norm(arc, axis=1), 3.0)  # on the circle
  np.testing.assert_allclose(line[2], (a + b) / 2)
  np.testing.assert_allclose(generate.slerp(a, 2 * a, t), generate.lerp(a, 2 * a, t))
  # From the zero vector there is no angle to follow: the straight line, not NaN.
  np.testing.assert_allclose(generate.slerp(0 * a, b, t), generate.lerp(0 * a, b, t))


def test_generating_no_digits_gives_an_empty_array():
  gan = models.build('mlp')
  variables = gan.generator.init(jax.random.key(0), jnp.zeros((1, gan.latent_dim)), train=False)
  digits = generate.generate(gan, variables, jnp.zeros((0, gan.latent_dim)))
  assert digits.shape == (0, 28, 28) and digits.dtype == np.uint8


@pytest.mark.parametrize('labels, message', [
    (np.array([0, 10, 3]), r'^labels must be classes in 0\.\.9, got 0\.\.10$'),  # 1-based ids
    (np.array([-1, 2, 3]), r'^labels must be classes in 0\.\.9, got -1\.\.3$'),
    (np.array([[1], [2], [3]]), r'^labels must be 3 integer classes \(3,\) or class weights '
                                r'\(3, 10\), one per latent; got int64 \(3, 1\)$'),
    (np.zeros(3, np.float32), r'got float32 \(3,\)$'),
    (np.zeros(4, np.int32), r'got int32 \(4,\)$'),
    (None, r'^a conditional GAN needs one label per latent: pass labels$'),
])
def test_labels_a_generator_would_misread_are_refused(labels, message):
  """Its embedding lookup clamps: class 10 came out as class 9's digits."""
  gan = models.build('mlp', num_classes=10, conditioning='projection')
  z = jnp.zeros((3, gan.latent_dim))
  variables = gan.generator.init(jax.random.key(0), z, jnp.zeros(3, jnp.int32), train=False)
  with pytest.raises(ValueError, match=message):
    generate.generate(gan, variables, z, labels)
  unconditional = models.build('mlp')
  unconditional_variables = unconditional.generator.init(jax.random.key(0), z, train=False)
  with pytest.raises(ValueError, match=r'^labels were given for an unconditional GAN'):
    generate.generate(unconditional, unconditional_variables, z, np.zeros(3, np.int32))
  # One latent without its row axis; another model's width.
  for bad, hint in ((z[0], ': one latent is z[None]'), (z[:, :10], '')):
    with pytest.raises(ValueError, match=rf'^z must hold latents of shape \(N, 100\), got '
                                         rf'{re.escape(str(bad.shape) + hint)}$'):
      generate.generate(unconditional, unconditional_variables, bad)


def test_generate_and_sample_grid_name_their_misuse():
  """A batch size of 0 (ZeroDivisionError), the whole GAN state (a TypeError from flax),
  pmap-replicated variables (flax's shape mismatch), latents as a list (AttributeError), and a
  grid with fewer latents than cells (blank cells, silently)."""
  gan = models.build('mlp')
  z = np.zeros((13, gan.latent_dim), np.float32)
  init = lambda key: state_lib.init_state(gan, optax.adam(1e-3), optax.adam(1e-3), key)
  state = jax.jit(init)(jax.random.key(0))
  variables = generator_variables(state)
  for size in (0, -1):
    with pytest.raises(ValueError, match=rf'^batch_size must be >= 1 \(latents generated at '
                                         rf'once\), got {size}$'):
      generate.generate(gan, variables, z, batch_size=size)
  with pytest.raises(ValueError, match=r"^generate takes the generator's variables, not the "
                                       r'whole GAN state: pass '
                                       r'jaxgan.state.generator_variables\(state\)$'):
    generate.generate(gan, state, z)
  with pytest.raises(ValueError, match=r'^g_variables look pmap-replicated \(every leaf has a '
                                       r'leading axis of 2\): pass '
                                       r'jaxgan.parallel.pmap_unreplicate\(variables\)$'):
    generate.generate(gan, parallel.pmap_replicate(variables, 2), z)
  np.testing.assert_array_equal(generate.generate(gan, variables, z.tolist()),
                                generate.generate(gan, variables, z))
  with pytest.raises(ValueError, match=r'^a grid of 4 rows needs 16 latents, got 13: draw 16, '
                                       r'or make the grid smaller$'):
    generate.sample_grid(gan, variables, z, 4)
  generate.sample_grid(gan, variables, z[:9], 3)  # exactly enough


@pytest.fixture(scope='module')
def conditional_run(data_dirs, tmp_path_factory):  # noqa: F811
  """A tiny auxiliary-classifier run trained through the CLI (2 epochs of 8 steps)."""
  workdir = tmp_path_factory.mktemp('conditional')
  result = cli('train', *train_args(data_dirs, workdir, *CONDITIONAL))
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.fixture(scope='module')
def unconditional_folder(data_dirs, tmp_path_factory):  # noqa: F811
  """A run folder holding only an unconditional config: enough for the flag checks, which
  run before any checkpoint is read."""
  workdir = tmp_path_factory.mktemp('unconditional')
  trainer.record_config(tiny_config(data_dirs), str(workdir))
  return workdir


def test_a_run_s_evaluation_record_names_its_run_folder_by_its_absolute_path(
    conditional_run, monkeypatch):
  """A relative --workdir was recorded as typed: the record could not name its run from
  another folder."""
  monkeypatch.chdir(conditional_run.parent)
  monkeypatch.setattr(run_scores, 'score_digits', lambda *args, **kwargs: {})
  record = run_scores.evaluate_run(conditional_run.name, ['classifier_score'], num_samples=20)
  assert record['workdir'] == str(conditional_run)


def test_scoring_a_run_warns_before_it_when_the_generator_saw_more_labels_than_k(
    conditional_run, monkeypatch, caplog):
  """evaluate_run, which experiments.evaluate --workdir and experiments.sweep both score with,
  says it before it generates (the sweep said nothing)."""
  def stop(*args, **kwargs):
    raise RuntimeError('generating')

  monkeypatch.setattr(run_scores, 'generate_from_run', stop)
  with pytest.raises(RuntimeError, match='generating'):
    run_scores.evaluate_run(str(conditional_run), ['augmentation_gain'])
  assert ("the generator trained on 256 real labelled digits (data.num_train_examples), more "
          "than augmentation_gain's K = 100: ") in caplog.text
  caplog.clear()
  with pytest.raises(RuntimeError, match='generating'):
    run_scores.evaluate_run(str(conditional_run), ['label_accuracy'])
  assert 'real labelled digits' not in caplog.text
  # The run's data.split decides whose digits the generator learnt from.
  real_config = run_scores.load_run_config

  def other_split(workdir):
    config = real_config(workdir)
    config.data.split = 'train[30000:]'
    return config

  monkeypatch.setattr(run_scores, 'load_run_config', other_split)
  with pytest.raises(RuntimeError, match='generating'):
    run_scores.evaluate_run(str(conditional_run), ['augmentation_gain'])
  assert ("the generator trained on real labelled digits of data.split='train[30000:]', not "
          "augmentation_gain's K = 100 and 1,000 of the train split") in caplog.text


def test_epoch_grids_have_one_row_per_class_and_become_a_gif(conditional_run):
  samples = conditional_run / 'samples'
  with Image.open(samples / 'epoch_002.png') as grid:
    assert grid.size == (4 * CELL + 1, 10 * CELL + 1)  # 4 latents (grid rows) x 10 classes
  with Image.open(samples / 'progress.gif') as gif:
    assert gif.n_frames == 2 and gif.size == (4 * CELL + 1, 10 * CELL + 1)
    gif.seek(1)
    with Image.open(samples / 'epoch_002.png') as last:
      np.testing.assert_array_equal(np.asarray(gif.convert('L')), np.asarray(last))
  metrics = [line for line in (conditional_run / 'metrics.jsonl').read_text().splitlines()]
  assert '"d_class_loss"' in metrics[-1] and '"g_class_loss"' in metrics[-1]


def test_sample_by_class(conditional_run, tmp_path):
  out, grid = tmp_path / 'd.npz', tmp_path / 'd.png'
  result = cli('sample', f'--workdir={conditional_run}', '--labels=0,1,2', '--per_class=4',
               f'--out={out}', f'--grid={grid}')
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(out) as data:
    assert data['images'].shape == (12, 28, 28)
    np.testing.assert_array_equal(data['labels'], np.repeat([0, 1, 2], 4))
    drawn = json.loads(str(data['provenance']))
    assert (drawn['labels'], drawn['per_class']) == ([0, 1, 2], 4)  # numbers, not flag strings
  with Image.open(grid) as picture:
    assert picture.size == (4 * CELL + 1, 3 * CELL + 1)  # one row per class
  result = cli('sample', f'--workdir={conditional_run}', '--labels=3', '--num=7', f'--out={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(out) as data:
    np.testing.assert_array_equal(data['labels'], [3] * 7)
  result = cli('sample', f'--workdir={conditional_run}', '--num=12', f'--out={out}')
  with np.load(out) as data:  # default: every class in turn
    np.testing.assert_array_equal(data['labels'], np.arange(12) % 10)
  result = cli('sample', f'--workdir={conditional_run}', '--num=3', f'--grid={grid}')
  assert result.returncode == 0, result.stderr[-3000:]
  with Image.open(grid) as picture:  # rows for the classes drawn, 0-2, not for all ten
    assert picture.size == (1 * CELL + 1, 3 * CELL + 1)


def test_sample_strings_sets_the_generated_digits_of_each_string_side_by_side(conditional_run,
                                                                             tmp_path):
  out, grid = tmp_path / 's.npz', tmp_path / 's.png'
  result = cli('sample_strings', f'--workdir={conditional_run}', '--texts=90210,42',
               '--min_gap=1', '--max_gap=3', '--jitter=0', '--seed=5', f'--out={out}',
               f'--grid={grid}')
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(out) as data:
    composed, boxes = data['images'], data['boxes']
    assert composed.shape == (2, 28, strings.canvas_width(5, 28, 3))
    assert data['texts'].tolist() == ['90210', '42']
    np.testing.assert_array_equal(data['labels'], [[9, 0, 2, 1, 0], [4, 2, -1, -1, -1]])
    np.testing.assert_array_equal(data['lengths'], [5, 2])
    drawn = json.loads(str(data['provenance']))
  assert (drawn['texts'], drawn['seed'], drawn['min_gap'], drawn['max_gap'], drawn['jitter'],
          drawn['length']) == (['90210', '42'], 5, 1, 3, 0, None)
  assert drawn['num'] == 2 and 'cpu' in drawn['machine']
  assert (drawn['dataset'], drawn['batch_size']) == ('mnist', generate.DEFAULT_BATCH)
  # The same digits straight from the generator: latents of --seed, one per digit in order.
  config = run_folder.load_run_config(str(conditional_run))
  components, state = trainer.restore_run_state(str(conditional_run), config)
  z = generate.latents(jax.random.key(5), 7, components.gan.latent_dim)
  digits = generate.generate(components.gan, generator_variables(state), z,
                             np.array([9, 0, 2, 1, 0, 4, 2]), step=int(state.step))
  placed = [(0, i) for i in range(5)] + [(1, 0), (1, 1)]
  for digit, (n, i) in zip(digits, placed):
    start, stop = boxes[n, i]
    ink = np.flatnonzero((digit >= strings.INK_THRESHOLD).any(axis=0))
    np.testing.assert_array_equal(composed[n, :, start:stop], digit[:, ink[0]:ink[-1] + 1])
  with Image.open(grid) as picture:
    assert picture.size == (composed.shape[2] + 2, 2 * CELL + 1)  # one string per row

  result = cli('sample_strings', f'--workdir={conditional_run}', '--num=3', '--length=4',
               f'--out={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(out) as data:
    assert data['images'].shape == (3, 28, strings.canvas_width(4, 28, 4))
    assert [len(text) for text in data['texts']] == [4, 4, 4]
    np.testing.assert_array_equal(data['labels'],
                                  [[int(c) for c in text] for text in data['texts']])


@pytest.mark.parametrize('args,message', [
    (('--texts=12a',), "'12a' is not a string of digits 0-9: pass e.g. 90210"),
    (('--min_gap=3', '--max_gap=1'), 'min_gap=3 is above max_gap=1: swap them'),
    (('--texts=12', '--num=7'),
     '--texts gives the strings, so neither --num nor --length applies: drop them'),
])
def test_bad_strings_and_layouts_are_one_line_errors(conditional_run, tmp_path, args, message):
  result = cli('sample_strings', f'--workdir={conditional_run}', f'--out={tmp_path / "x.npz"}',
               *args)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == f'error: {message}'
  assert not (tmp_path / 'x.npz').exists()


@pytest.mark.parametrize('module', ['sample', 'sample_strings'])
@pytest.mark.parametrize('args,message', [
    ((), 'nothing to write: give --out=FILE.npz and/or --grid=FILE.png'),
    (('--out=digits.png',), '--out=digits.png must end in .npz'),
    (('--grid=g.png', 'extra'), 'unexpected arguments: extra'),
    (('--grid={tmp}',), '--grid={tmp} is a folder: name a file to write'),
    (('--grid=g.jpg',), '--grid=g.jpg must end in .png'),
    (('--out={tmp}/config.json/x.npz',),
     '--out={tmp}/config.json/x.npz lies below {tmp}/config.json, a file: name a path in a folder'),
])
def test_export_scripts_refuse_bad_arguments_before_any_work(module, args, message, tmp_path):
  (tmp_path / 'config.json').write_text('{}')
  args = [arg.format(tmp=tmp_path) for arg in args]
  result = cli(module, f'--workdir={tmp_path}', *args)  # an empty folder: not even read
  assert result.returncode == 1
  assert result.stderr.strip() == f'error: {message.format(tmp=tmp_path)}'  # one line only


def test_serve_answers_picture_requests_from_the_run_and_names_a_taken_port(conditional_run,
                                                                           tmp_path):
  with socket.socket() as taken:
    taken.bind(('127.0.0.1', 0))
    taken.listen()
    port = taken.getsockname()[1]
    # An empty folder: the port is checked before any run is read (restoring takes seconds).
    result = cli('serve', f'--workdir={tmp_path}', f'--port={port}')
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        f'error: cannot listen on 127.0.0.1:{port} (')
    assert result.stderr.strip().endswith('): pass another --port')
  # 192.0.2.1 is a documentation address (RFC 5737), no address of this machine: the host's fault.
  result = cli('serve', f'--workdir={tmp_path}', '--host=192.0.2.1', f'--port={port}')
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: cannot listen on 192.0.2.1:{port} (Cannot assign requested address): pass a '
      '--host of this machine, e.g. 127.0.0.1')
  result = cli('serve', f'--workdir={tmp_path}', '--host=', f'--port={port}')  # $HOST unset
  assert result.returncode == 1
  assert result.stderr.strip() == (
      'error: --host is empty, which listens on every interface: pass 127.0.0.1 (this machine '
      'only), or 0.0.0.0 to mean every interface')
  with socket.socket() as probe:  # a port free a moment ago
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
  with open(tmp_path / 'serve.log', 'w') as log:
    server = cli('serve', f'--workdir={conditional_run}', f'--port={port}', log=log)
    try:
      for _ in range(240):  # restore and compile first
        try:
          with urllib.request.urlopen(f'http://127.0.0.1:{port}/image.png?text=7&scale=1') as r:
            picture = np.asarray(Image.open(io.BytesIO(r.read())))
          break
        except urllib.error.URLError:
          assert server.poll() is None, (tmp_path / 'serve.log').read_text()[-3000:]
          time.sleep(0.5)
      else:
        raise AssertionError('no answer in 120 s: ' + (tmp_path / 'serve.log').read_text())
    finally:
      server.terminate()
      server.wait(timeout=30)
  assert picture.shape == (30, strings.canvas_width(1, 28, 4) + 2)
  assert picture[1:-1, 1:-1].any()  # a digit, not a blank canvas


def test_evaluate_generates_balanced_labelled_digits(conditional_run):
  config = run_folder.load_run_config(str(conditional_run))
  step, digits, labels, resampled = run_scores.generate_from_run(str(conditional_run), config,
                                                                 20, 0)
  assert step == 16 and digits.shape == (20, 28, 28) and digits.dtype == np.uint8
  assert resampled is None
  np.testing.assert_array_equal(labels, np.arange(20) % 10)
  _, truncated, same_labels, _ = run_scores.generate_from_run(str(conditional_run), config, 20,
                                                            0, truncation=0.5)
  np.testing.assert_array_equal(same_labels, labels)
  assert (truncated != digits).any()
  _, wide, wide_labels, _ = run_scores.generate_from_run(str(conditional_run), config, 20, 0,
                                                         latent_scale=1.5)
  np.testing.assert_array_equal(wide_labels, labels)
  assert (wide != digits).any()


# MNIST's train split: 5,923 zeros, 6,742 ones, ...
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_class_counts_are_the_largest_remainder_apportionment():
  # 1,123.67 ones, 1,021.8 threes, 973.67 fours, 903.5 fives, 991.5 nines: the four digits left
  # after the floors go to the largest remainders, the tie at .5 to the lower class.
  np.testing.assert_array_equal(generate.class_counts(10000, MNIST_TRAIN_COUNTS),
                                [987, 1124, 993, 1022, 974, 904, 986, 1044, 975, 991])
  np.testing.assert_array_equal(generate.class_counts(7, [1, 0, 2]), [2, 0, 5])
  np.testing.assert_array_equal(generate.class_counts(3, [0.1] * 3), [1, 1, 1])
  # Remainders of exactly 2/3 for classes 0, 4, 6, 7, 8 and 9, and five digits left after the
  # floors: the five lowest of those classes get one, class 9 none (in floats, class 9 got
  # class 4's).
  np.testing.assert_array_equal(generate.class_counts(10, [1, 2, 2, 0, 4, 2, 1, 1, 1, 1]),
                                [1, 1, 1, 0, 3, 1, 1, 1, 1, 0])
  # Weights near the float maximum: num * weight overflowed.
  np.testing.assert_array_equal(generate.class_counts(20, [1e308] + [1] * 9), [20] + [0] * 9)
  np.testing.assert_array_equal(generate.class_counts(20, [1e308] * 10), [2] * 10)
  for bad in ([0, 0], [1, -1], [1, math.inf], [math.nan, 1]):
    with pytest.raises(ValueError, match='class weights must be finite and >= 0, and not all 0'):
      generate.class_counts(10, bad)


def test_class_labels_interleave_the_classes_in_every_prefix():
  for num_classes in (1, 3, 10):  # equal weights: the balanced cycle at every length
    for num in (0, 1, 9, 10, 11, 57, 1000):
      np.testing.assert_array_equal(generate.class_labels(num, np.ones(num_classes)),
                                    np.arange(num) % num_classes)
  cases = [(10000, MNIST_TRAIN_COUNTS), (5000, [1000] + [1] * 46), (777, [3, 0, 1, 0.5]),
           (3000, [1] * 40 + [1000] * 2), (61, np.random.default_rng(0).random(10))]
  for num, weights in cases:
    labels = generate.class_labels(num, weights)
    counts = generate.class_counts(num, weights)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(labels, minlength=len(counts)), counts)
    # Each prefix holds every class's share of it to within one and a half digits (the
    # largest-shortfall rule measures 0.89 on MNIST's proportions, 1.42 at worst here).
    so_far = np.cumsum(np.eye(len(counts))[labels], axis=0)
    share = np.arange(1, num + 1)[:, None] * counts / num
    assert np.abs(so_far - share).max() <= 1.5, (num, weights)


def test_sample_reads_real_digits_where_flags_say_for_a_run_moved_from_another_machine(
    conditional_run, data_dirs, tmp_path, monkeypatch):  # noqa: F811
  moved = tmp_path / 'moved'
  shutil.copytree(conditional_run, moved)
  config = json.loads((moved / 'config.json').read_text())
  config['data']['manual_dir'] = config['data']['data_dir'] = str(tmp_path / 'gone')
  (moved / 'config.json').write_text(json.dumps(config))
  monkeypatch.delenv('JAXGAN_MANUAL_DIR', raising=False)
  args = ('sample', f'--workdir={moved}', '--num=40', '--class_proportions=train',
          f'--out={tmp_path / "d.npz"}')
  result = cli(*args)
  assert result.returncode == 1
  assert str(tmp_path / 'gone') in result.stderr.strip().splitlines()[-1]
  manual, data_dir = data_dirs
  result = cli(*args, f'--manual_dir={manual}', f'--data_dir={data_dir}')
  assert result.returncode == 0, result.stderr[-3000:]
  train_counts = np.bincount(tiny_digits(TINY_MNIST['mnist']['train'], seed=300)[1],
                             minlength=10)
  with np.load(tmp_path / 'd.npz') as npz:
    np.testing.assert_array_equal(npz['labels'], generate.class_labels(40, train_counts))


def test_sample_and_evaluate_draw_classes_in_the_train_split_s_proportions(
    conditional_run, tmp_path, monkeypatch):
  # The tiny train split's labels, as tests/idx_files.py's write_manual_dir drew them.
  train_counts = np.bincount(tiny_digits(TINY_MNIST['mnist']['train'], seed=300)[1],
                             minlength=10)
  assert len(set(train_counts)) > 1  # not balanced: the test can tell
  out = tmp_path / 'd.npz'
  result = cli('sample', f'--workdir={conditional_run}', '--num=40', '--class_proportions=train',
               f'--out={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(out) as npz:
    np.testing.assert_array_equal(npz['labels'], generate.class_labels(40, train_counts))
    assert npz['images'].shape == (40, 28, 28)
  # The scoring path draws the same way, and records how (the scores themselves are another
  # test's: here they would score the labels handed over).
  monkeypatch.setattr(run_scores, 'score_digits',
                      lambda images, labels, *_, **__: dict(scored_labels=labels.tolist()))
  record = run_scores.evaluate_run(str(conditional_run), ['label_accuracy'], num_samples=40,
                                   proportions='train')
  assert record['scored_labels'] == generate.class_labels(40, train_counts).tolist()
  assert record['class_proportions'] == 'train'
  assert record['class_counts'] == generate.class_counts(40, train_counts).tolist()
  record = run_scores.evaluate_run(str(conditional_run), ['label_accuracy'], num_samples=40,
                                   proportions='0,0,0,1,1,0,0,0,0,2')
  assert record['class_counts'] == [0, 0, 0, 10, 10, 0, 0, 0, 0, 20]
  balanced = run_scores.evaluate_run(str(conditional_run), ['label_accuracy'], num_samples=40)
  assert balanced['class_proportions'] == 'balanced' and balanced['class_counts'] == [4] * 10
  assert balanced['scored_labels'] == (np.arange(40) % 10).tolist()


@pytest.mark.parametrize('args,message', [
    (('--labels=1', '--per_class=2', '--num=4'),
     '--per_class=N draws N digits of each class instead of --num: drop --num'),
    (('--class_proportions=train', '--per_class=3'),
     '--class_proportions draws --num digits of every class: drop --labels and --per_class, or '
     'give a weight of 0 to the classes to leave out'),
    (('--class_proportions=1,2',),
     '--class_proportions=1,2 has 2 weights but the model has 10 classes: give balanced, train '
     'or 10 weights >= 0, one per class, e.g. 2,1,1,1,1,1,1,1,1,1'),
    (('--class_proportions=1,x,1,1,1,1,1,1,1,1',),
     '--class_proportions=1,x,1,1,1,1,1,1,1,1: give balanced, train or 10 weights >= 0, one per '
     'class, e.g. 2,1,1,1,1,1,1,1,1,1'),
    (('--class_proportions=0,0,0,0,0,0,0,0,0,0',),
     '--class_proportions=0,0,0,0,0,0,0,0,0,0: weights must be finite and >= 0, and not all 0: '
     'give balanced, train or 10 weights >= 0, one per class, e.g. 2,1,1,1,1,1,1,1,1,1'),
])
def test_bad_class_choices_are_one_line_errors(conditional_run, tmp_path, args, message):
  result = cli('sample', f'--workdir={conditional_run}', f'--out={tmp_path / "x.npz"}', *args)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == f'error: {message}'
  assert not (tmp_path / 'x.npz').exists()


def test_generation_is_the_same_on_one_and_on_eight_devices():
  gan = models.build('dcgan', num_classes=10, generator_norm='conditional_batch')
  z = generate.latents(jax.random.key(4), 50, gan.latent_dim)
  labels = generate.balanced_labels(50, 10)
  variables = gan.generator.init(jax.random.key(0), z[:2], labels[:2], train=False)
  one = generate.generate(gan, variables, z, labels, batch_size=16, devices=jax.devices()[:1])
  eight = generate.generate(gan, variables, z, labels, batch_size=16, devices=jax.devices()[:8])
  assert len(jax.devices()) == 8  # tests/conftest.py's fake CPU devices
  np.testing.assert_array_equal(one, eight)
  # Each pixel is the grey level nearest the generator's output in [-1, 1] (the inverse of the
  # pipeline's pixels / 127.5 - 1): flooring instead darkened every exported digit by a level.
  drawn = np.asarray(gan.generator.apply(variables, z, labels, train=False), np.float64)[..., 0]
  levels = (drawn + 1.0) * 127.5
  assert np.all(np.abs(one - levels) <= 0.5 + 1e-4)  # float32 network, float64 reference
  assert np.mean(one == np.clip(np.round(levels), 0, 255)) > 0.999


def test_truncated_latents_stay_in_bounds_and_keep_prefixes():
  key = jax.random.key(3)
  z = np.asarray(generate.latents(key, 2000, 100, truncation=0.5))
  assert np.abs(z).max() <= 0.5 and z.std() > 0.25  # uniform-like on [-0.5, 0.5]: std 0.29
  np.testing.assert_array_equal(generate.latents(key, 10, 100, truncation=0.5), z[:10])
  full = np.asarray(generate.latents(key, 2000, 100))
  assert np.abs(full).max() > 3.0
  with pytest.raises(ValueError,
                     match='truncation must be finite and > 0, or 0 for none, got -1'):
    generate.latents(key, 10, 100, truncation=-1.0)


def test_latent_scale_multiplies_the_draws_and_keeps_prefixes():
  key = jax.random.key(3)
  z = np.asarray(generate.latents(key, 500, 100))
  wide = np.asarray(generate.latents(key, 500, 100, scale=1.25))
  np.testing.assert_array_equal(wide, z * np.float32(1.25))
  np.testing.assert_array_equal(generate.latents(key, 10, 100, scale=1.25), wide[:10])
  # Truncation first, then the scale: the bound scales with it.
  both = np.asarray(generate.latents(key, 500, 100, truncation=0.5, scale=2.0))
  assert 0.9 < np.abs(both).max() <= 1.0
  for bad in (0.0, -1.0, math.inf, math.nan):
    with pytest.raises(ValueError, match=rf'latent scale must be finite and > 0 \(1: the '
                                         rf'training distribution\), got {bad}'):
      generate.latents(key, 10, 100, scale=bad)
  for bad in (math.inf, math.nan):
    with pytest.raises(ValueError, match=f'truncation must be finite and > 0, or 0 for none, '
                                         f'got {bad}'):
      generate.latents(key, 10, 100, truncation=bad)


@pytest.mark.parametrize('args,message', [
    (('--labels=12',), '--labels=12: class 12 is out of range, the model has classes 0..9'),
    (('--labels=1,x',), '--labels=1,x: give integer classes in 0..9, e.g. --labels=0,1,2'),
    (('--labels=3,5,3', '--per_class=2'), '--labels=3,5,3: class 3 is given more than once: '
     'give each class once (--per_class or --class_proportions set how many)'),
])
def test_bad_labels_are_one_line_errors(conditional_run, tmp_path, args, message):
  result = cli('sample', f'--workdir={conditional_run}', f'--out={tmp_path / "x.npz"}', *args)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == f'error: {message}'
  assert not (tmp_path / 'x.npz').exists()


def test_labels_on_an_unconditional_model_are_one_line_errors(unconditional_folder, tmp_path):
  result = cli('sample', f'--workdir={unconditional_folder}', f'--out={tmp_path / "x.npz"}',
               '--per_class=3')
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --labels and --per_class need a conditional model, but this run's model is "
      'unconditional (model.num_classes = 0): drop them')
  result = cli('sample', f'--workdir={unconditional_folder}', f'--out={tmp_path / "x.npz"}',
               '--class_proportions=train')
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --class_proportions=train needs a conditional model, but this run's model is "
      'unconditional (model.num_classes = 0): drop it')
  result = cli('sample_strings', f'--workdir={unconditional_folder}', '--texts=1',
               f'--out={tmp_path / "s.npz"}')
  assert result.stderr.strip().splitlines()[-1] == (
      "error: digit strings need a conditional model, but this run's model is unconditional "
      '(model.num_classes = 0): train a cgan_* or acgan_* config')
  result = cli('interpolate', f'--workdir={unconditional_folder}', '--from_label=1')
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --from_label/--to_label need a conditional model, but this run's model is "
      'unconditional (model.num_classes = 0): drop them')


def test_interpolate_writes_a_strip_and_a_gif(conditional_run, tmp_path):
  out = tmp_path / 'walk'
  result = cli('interpolate', f'--workdir={conditional_run}', '--steps=5', '--rows=2',
               '--method=lerp', '--from_label=3', '--to_label=8', f'--out={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'class 3 to 8' in result.stderr
  with Image.open(f'{out}.png') as strip:
    assert strip.size == (5 * CELL + 1, 2 * CELL + 1)
    strip = np.asarray(strip)
  with Image.open(f'{out}.gif') as gif:
    assert gif.n_frames == 2 * 5 - 2 and gif.size == (2 * CELL + 1, CELL + 1)  # there and back
    first = np.asarray(gif.convert('L'))
  # Frame 0 shows the walks' first digits, the strip's first column.
  np.testing.assert_array_equal(first[1:29, 1:29], strip[1:29, 1:29])
  # Another walk to the same files says it replaces them; a bad flag says only what is wrong.
  # The end points are drawn at the run's sample_latent_scale (1 here) unless --latent_scale.
  strips, logs = [], []
  for scale, name in ((None, 'walk'), (1.5, 'wide')):
    result = cli('interpolate', f'--workdir={conditional_run}', '--steps=2', '--rows=1',
                 '--seed=1', f'--out={tmp_path / name}',
                 *([] if scale is None else [f'--latent_scale={scale}']))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'at latent scale {scale or 1}, class 0 to 1' in result.stderr
    logs.append(result.stderr)
    with Image.open(tmp_path / f'{name}.png') as strip:
      strips.append(np.asarray(strip))
  assert f'{out}.png and {out}.gif: replaced by this interpolation when it is done' in logs[0]
  assert 'replaced' not in logs[1] and not np.array_equal(*strips)
  result = cli('interpolate', f'--workdir={conditional_run}', '--to_label=10', f'--out={out}')
  assert result.stderr.strip().splitlines()[-1] == (
      'error: --to_label=10 is out of range: the model has classes 0..9')
  assert 'replaced' not in result.stderr
  for bad in (f'{out}.png', f'{tmp_path}/'):  # .png and .gif are added to --out
    result = cli('interpolate', f'--workdir={conditional_run}', f'--out={bad}')
    assert result.stderr.strip() == (
        f'error: --out={bad} must be a file name without extension (.png and .gif are added), '
        'e.g. --out=runs/walk')
  (tmp_path / 'gif_a_folder.gif').mkdir()  # the .png would be written, then the .gif fail
  result = cli('interpolate', f'--workdir={conditional_run}', f'--out={tmp_path / "gif_a_folder"}')
  assert result.stderr.strip() == (
      f'error: --out={tmp_path / "gif_a_folder.gif"} is a folder: name a file to write')
  assert not (tmp_path / 'gif_a_folder.png').exists()
  # Nothing is written for a folder as --out (the files went beside it) or for pictures a GIF
  # cannot hold (the .png was written, then Pillow's OverflowError).
  result = cli('interpolate', f'--workdir={conditional_run}', f'--out={tmp_path}')
  assert result.stderr.strip() == (
      f'error: --out={tmp_path} is a folder: name the files to write in it, e.g. '
      f'--out={tmp_path / "walk"}')
  result = cli('interpolate', f'--workdir={conditional_run}', '--rows=2300', f'--out={out}_big')
  assert result.stderr.strip().splitlines()[-1] == (
      "error: --rows=2300 and --steps=10 make pictures of up to 66,701 pixels a side at the "
      "run's scale of 1, more than the 65,535 a GIF holds: lower them")
  # Longer than a GIF holds; as short as browsers play at 100 ms.
  for frame_ms in (700000, 10):
    result = cli('interpolate', f'--workdir={conditional_run}', f'--frame_ms={frame_ms}',
                 f'--out={out}_big')
    assert result.returncode == 1 and 'frame_ms' in result.stderr.strip().splitlines()[-1]
  assert not list(tmp_path.glob('walk_big*'))
  assert not (tmp_path.parent / f'{tmp_path.name}.png').exists()


@pytest.mark.parametrize('conditioning', ['auxiliary', 'projection_auxiliary'])
def test_class_loss_on_fakes_decides_what_d_classifies(conditioning):
  """D's class loss is AC-GAN's real + fake cross-entropy, or the real one alone; G's loss
  has its class term either way."""
  from tests import stepping  # pylint: disable=import-outside-toplevel
  init, _ = stepping.components('mlp', 'bce', conditioning=conditioning)
  state = jax.jit(init)(jax.random.key(0))
  batch = stepping.fixed_inputs(1, 16, conditional=True)[0]
  gan = models.build('mlp', num_classes=10, conditioning=conditioning)
  # The MLP discriminator has no dropout or state: its first real pass is reproducible here.
  _, class_logits = gan.discriminator.apply(
      {'params': state.d_params}, *gan.discriminator_inputs(batch['image'], batch['label']),
      train=True)
  real_only = float(np.mean(-jax.nn.log_softmax(class_logits)[np.arange(16), batch['label']]))
  measured = {}
  for on_fakes in (True, False):
    _, history, _ = stepping.run_single_device('mlp', 'bce', num_steps=1,
                                               conditioning=conditioning,
                                               class_loss_on_fakes=on_fakes)
    measured[on_fakes] = history[0]
  np.testing.assert_allclose(measured[False]['d_class_loss'], real_only, rtol=1e-5)
  assert measured[True]['d_class_loss'] > real_only + 1  # plus a fake term of about log(10)
  assert all(np.isfinite(measured[on_fakes]['g_class_loss']) for on_fakes in (True, False))


def test_mode_seeking_step_is_the_same_on_one_and_on_eight_devices():
  """Conditional projection MLP with the mode-seeking term (label pairs, per-pair penalty):
  8 devices reproduce 1 device, and the term changes the update and is logged."""
  if jax.device_count() < 8:
    pytest.skip('needs 8 (fake) devices')
  from tests import stepping  # pylint: disable=import-outside-toplevel
  single, history, _ = stepping.run_single_device('mlp', 'bce', conditioning='projection',
                                                  mode_seeking=1.0)
  mesh, measured, _ = stepping.run_on_mesh('mlp', 'bce', jax.devices()[:8],
                                           conditioning='projection', mode_seeking=1.0)
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(mesh)):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=1e-4)
  np.testing.assert_allclose(measured['g_mode_seeking'], history[-1]['g_mode_seeking'],
                             rtol=1e-5)
  plain, plain_history, _ = stepping.run_single_device('mlp', 'bce', conditioning='projection')
  assert 'g_mode_seeking' not in plain_history[-1]
  assert history[-1]['g_loss'] > plain_history[-1]['g_loss']  # the term is > 0 and added
  # Added with its weight: the first step's G loss (same D update, latents and label pairs at
  # any weight) moves by the weight's change times the logged term.
  _, half_history, _ = stepping.run_single_device('mlp', 'bce', num_steps=1,
                                                  conditioning='projection', mode_seeking=0.5)
  np.testing.assert_allclose(history[0]['g_loss'] - half_history[0]['g_loss'],
                             0.5 * history[0]['g_mode_seeking'], rtol=1e-4)
