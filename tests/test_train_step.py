"""The train step on one device: golden values on fixed seeds, determinism, no recompiles.

Golden values live in tests/golden/train_step.json. After an intended change to models, losses,
the step or initialisation, regenerate them with
    JAXGAN_REGENERATE_GOLDENS=1 python -m pytest tests/test_train_step.py
and say why in the commit message.
"""
import json
import os

import jax
import numpy as np
import pytest

from tests import stepping

GOLDEN_PATH = os.path.join(os.path.dirname(__file__), 'golden', 'train_step.json')
REGENERATE = os.environ.get('JAXGAN_REGENERATE_GOLDENS') == '1'
# Same jax/XLA version on CPU reproduces these bit for bit; the tolerance only absorbs
# rounding changes between library versions.
RTOL = 1e-4

CASES = {
    'mlp-bce': ('mlp', 'bce', 1),
    'dcgan-bce': ('dcgan', 'bce', 1),
    'kannada-bce': ('kannada', 'bce', 1),
    'mlp-wgan_gp-ncritic2': ('mlp', 'wgan_gp', 2),
}


def summary(state, history):
  """Losses per step and a fingerprint of every parameter tensor after the last step."""
  leaves = jax.tree_util.tree_leaves_with_path(
      {'g': state.g_params, 'd': state.d_params, 'g_batch_stats': state.g_batch_stats})
  return {
      'losses': [{k: m[k] for k in ('d_loss', 'g_loss')} for m in history],
      'param_abs_sums': {jax.tree_util.keystr(path): float(np.abs(leaf).sum())
                         for path, leaf in leaves},
  }


@pytest.fixture(scope='module')
def runs():
  """(state, history, jitted step) of each case, computed once for the module."""
  return {name: stepping.run_single_device(*case) for name, case in CASES.items()}


@pytest.fixture(scope='module')
def goldens(runs):
  if REGENERATE:
    with open(GOLDEN_PATH, 'w') as f:
      json.dump({name: summary(*runs[name][:2]) for name in CASES}, f, indent=1, sort_keys=True)
  with open(GOLDEN_PATH) as f:
    return json.load(f)


@pytest.mark.parametrize('name', sorted(CASES))
def test_three_steps_reproduce_the_golden_values(name, runs, goldens):
  got, want = summary(*runs[name][:2]), goldens[name]
  for step, (g, w) in enumerate(zip(got['losses'], want['losses'])):
    for key in w:
      np.testing.assert_allclose(g[key], w[key], rtol=RTOL, err_msg=f'{name} step {step} {key}')
  assert got['param_abs_sums'].keys() == want['param_abs_sums'].keys()
  for path, value in want['param_abs_sums'].items():
    np.testing.assert_allclose(got['param_abs_sums'][path], value, rtol=RTOL, err_msg=path)


def test_same_seed_gives_bitwise_identical_parameters(runs):
  first, history_1, _ = runs['dcgan-bce']
  second, history_2, _ = stepping.run_single_device(*CASES['dcgan-bce'])
  assert history_1 == history_2
  jax.tree.map(np.testing.assert_array_equal, first, second)


def test_another_seed_gives_other_parameters(runs):
  first = runs['mlp-bce'][0]
  second, _, _ = stepping.run_single_device('mlp', 'bce', seed=5)
  assert not np.array_equal(first.g_params['Dense_0']['kernel'],
                            second.g_params['Dense_0']['kernel'])


@pytest.mark.parametrize('name', sorted(CASES))
def test_step_compiles_once(name, runs):
  assert runs[name][2]._cache_size() == 1  # pylint: disable=protected-access


def test_measurements_report_losses_probabilities_and_gradient_norms(runs):
  measured = runs['dcgan-bce'][1][0]
  assert {'d_loss', 'g_loss', 'd_real', 'd_fake', 'd_grad_norm', 'g_grad_norm'} <= measured.keys()
  assert 0.0 < measured['d_real'] < 1.0 and 0.0 < measured['d_fake'] < 1.0
  assert all(np.isfinite(v) for v in measured.values())
  assert runs['mlp-wgan_gp-ncritic2'][1][0]['gradient_penalty'] > 0.0


def test_state_step_counts_generator_updates(runs):
  state = runs['mlp-wgan_gp-ncritic2'][0]
  assert int(state.step) == 3
  # Adam's own count: 2 critic updates per step for D, 1 for G.
  assert int(state.d_opt_state[0].count) == 6 and int(state.g_opt_state[0].count) == 3


def test_pixels_train_exactly_as_their_floats():
  """BatchIterator ships uint8 pixels; the step maps them on the device to the very floats the
  host used to send (x / 127.5 - 1), so a step on pixels equals the step on those floats."""
  init, step = stepping.components('dcgan', 'bce')
  step = jax.jit(step)
  state = jax.jit(init)(jax.random.key(0))
  pixels = np.random.RandomState(0).randint(0, 256, (8, 28, 28, 1)).astype(np.uint8)
  from_pixels, _ = step(state, {'image': pixels}, jax.random.key(1))
  from_floats, _ = step(state, {'image': pixels.astype(np.float32) / 127.5 - 1.0},
                        jax.random.key(1))
  for a, b in zip(jax.tree.leaves(from_pixels), jax.tree.leaves(from_floats)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
