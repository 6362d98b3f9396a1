"""The train step on one device: golden values on fixed seeds, determinism, no recompiles.

Golden values live in tests/golden/train_step.json. After an intended change to models, losses,
the step or initialisation, regenerate them with
    JAXGAN_REGENERATE_GOLDENS=1 python -m pytest tests/test_train_step.py
and say why in the commit message.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxgan import augment, models, provenance
from tests import stepping

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOLDEN_PATH = os.path.join(os.path.dirname(__file__), 'golden', 'train_step.json')
REGENERATE = os.environ.get('JAXGAN_REGENERATE_GOLDENS') == '1'
# Same jax/XLA version on the same kind of CPU reproduces these bit for bit; the tolerance
# absorbs rounding changes between library versions and processors (XLA:CPU compiles for the
# one it runs on: dcgan-bce's first g_loss differs in its 8th digit between the Xeon that wrote
# it and a family-26 AMD EPYC, which wrote cgan-hinge and progressive-bce; a family-25 one wrote
# the last two cases).
RTOL = 1e-4

# name: (model, loss, n_critic[, options of stepping.run_single_device])
CASES = {
    'mlp-bce': ('mlp', 'bce', 1),
    'dcgan-bce': ('dcgan', 'bce', 1),
    'kannada-bce': ('kannada', 'bce', 1),
    'mlp-wgan_gp-ncritic2': ('mlp', 'wgan_gp', 2),
    # cgan_mnist.py's networks: projection D with a class head, spectral norm, class-conditional
    # BN in G, the hinge loss.
    'cgan-hinge': ('dcgan', 'hinge', 1, dict(
        conditioning='projection_auxiliary', build_options=dict(
            spectral_norm=True, generator_norm='conditional_batch', discriminator_dropout=0.0))),
    # progressive_mnist.py's: instance norm in G, spectral norm in D; grown at step 1 and faded
    # in over 2 steps, so the 3 steps run at 14x14 and then through the fade-in.
    'progressive-bce': ('progressive', 'bce', 1, dict(build_options=dict(
        spectral_norm=True, generator_norm='instance', grow_step=1, fade_steps=2))),
    # Every regulariser at once, on the cheap mlp (test_regularisers' _spectral_step): spectral
    # norm, R1, the consistency penalty, DiffAugment's translation and cutout, and the EMA. The
    # one-versus-eight-devices test there passes for a bug that changes both alike (fakes
    # augmented with the reals' key, R1 taken on the fakes, the penalty passes reading the
    # spectral vectors from before the real and fake passes); these values do not.
    'mlp-bce-every-regulariser': ('mlp', 'bce', 1, dict(
        build_options=dict(spectral_norm=True), loss_options=dict(r1_gamma=1.0, consistency=10.0),
        augment=augment.make('translation,cutout'), ema_decay=0.5)),
    # Mode seeking on a conditional mlp: its term, and G's label pairs (each pair of latents
    # drawn as one class, which the term compares), enter G's loss.
    'mlp-projection-mode-seeking': ('mlp', 'bce', 1, dict(conditioning='projection',
                                                          mode_seeking=1.0)),
}


def run(name):
  model, loss, n_critic, *options = CASES[name]
  return stepping.run_single_device(model, loss, n_critic, **(options[0] if options else {}))


# Measurements pinned besides the losses, where a case has them.
PENALTIES = ('r1_penalty', 'consistency_penalty', 'g_mode_seeking')


def summary(state, history):
  """Losses (and R1, consistency and mode-seeking terms) per step and a fingerprint of every parameter
  tensor after the last step."""
  leaves = jax.tree_util.tree_leaves_with_path(
      {'g': state.g_params, 'd': state.d_params, 'g_batch_stats': state.g_batch_stats,
       'd_state': state.d_state,  # spectral norm's power-iteration vectors and estimates
       'g_ema': state.g_ema_params})  # empty (no entries) without the EMA
  return {
      'losses': [{k: m[k] for k in ('d_loss', 'g_loss') + PENALTIES if k in m}
                 for m in history],
      'param_abs_sums': {jax.tree_util.keystr(path): float(np.abs(leaf).sum())
                         for path, leaf in leaves},
  }


@pytest.fixture(scope='module')
def runs():
  """(state, history, jitted step) of each case, computed once for the module."""
  return {name: run(name) for name in CASES}


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
  second, history_2, _ = run('dcgan-bce')
  assert history_1 == history_2
  # assert_array_equal takes NaN for equal to NaN: two diverged runs would pass.
  assert all(np.isfinite(v) for m in history_1 for v in m.values())
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(first))
  jax.tree.map(np.testing.assert_array_equal, first, second)


# Three dcgan steps on one CPU device in a fresh process on the cores given as arguments: a
# digest of the state's bits, and the XLA:CPU thread count the process's machine record names.
_THREADS_PROBE = """
import hashlib
import os
import sys
os.sched_setaffinity(0, map(int, sys.argv[1:]))  # before jax sizes its thread pool
import jax
import numpy as np
from jaxgan import provenance
from tests import stepping
init, step = stepping.components('dcgan', 'bce')
step, state, key = jax.jit(step), init(jax.random.key(0)), jax.random.key(1)
for images in stepping.fixed_batches(3, 16):
  state, _ = step(state, {'image': images}, key)
digest = hashlib.sha256()
for leaf in jax.tree.leaves(jax.device_get(state)):
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  digest.update(np.asarray(leaf).tobytes())
print(digest.hexdigest(), provenance.host_record()['cpu_threads'])
"""


@pytest.mark.skipif(not hasattr(os, 'sched_setaffinity') or len(os.sched_getaffinity(0)) < 2,
                    reason='needs 2 cores to run on and the Linux affinity call')
def test_the_bits_follow_xla_cpus_thread_count_not_the_cores_it_runs_on():
  """XLA:CPU splits sums (YNNPACK's reductions, a convolution's kernel gradient) over its
  thread pool, sized by the cores a process may use unless PJRT_NPROC says otherwise: one step
  on 1 core differs from the same on 2, and PJRT_NPROC=2 on 1 core gives the 2-core bits. So
  machine records hold `cpu_threads` as part of the kind (README, Determinism and tests)."""
  two_cores = sorted(os.sched_getaffinity(0))[:2]

  def probe(cores, **environ):
    env = {k: v for k, v in os.environ.items() if k not in provenance.THREAD_ENV}
    # One CPU device, not conftest's 8; on the CPU whatever accelerator jax has.
    env.update(environ, XLA_FLAGS='', JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, '-c', _THREADS_PROBE, *map(str, cores)], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    digest, threads = result.stdout.split()
    return digest, int(threads)

  on_two = probe(two_cores)
  assert on_two[1] == 2
  assert probe(two_cores[:1], PJRT_NPROC='2') == on_two
  on_one = probe(two_cores[:1])
  assert on_one[1] == 1 and on_one[0] != on_two[0]


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
    assert np.all(np.isfinite(a))  # NaN would equal NaN below
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _misuse(model='mlp', step_axis=None, model_axis=None, conditioning=None, ema=False,
            **step_options):
  """(step, state) for a misuse: the model and the step may get different axes."""
  from jaxgan import losses, optim, state as state_lib, train_step
  cond = dict(num_classes=10, conditioning=conditioning) if conditioning else {}
  gan = models.build(model, axis_name=model_axis, **cond)
  tx, _ = optim.make_optimizer('adam', stepping.adam_config(), stepping.CONSTANT, 100)
  step = train_step.make_train_step(gan, losses.get('bce'), tx, tx, axis_name=step_axis,
                                    **step_options)
  state = jax.eval_shape(lambda key: state_lib.init_state(gan, tx, tx, key, ema=ema),
                         jax.random.key(0))
  return step, state


IMAGES = np.zeros((6, 28, 28, 1), np.float32)


@pytest.mark.parametrize('options, batch, message', [
    (dict(), {'image': IMAGES[..., 0]},
     r"^batch\['image'\] must hold images of shape \(28, 28, 1\) \(rows, height, width, "
     r'channels\), got \(6, 28, 28\)$'),
    (dict(), {'image': IMAGES[:0]},  # a ZeroDivisionError inside the model
     r"^batch\['image'\] holds no images: pass at least n_critic images per device$"),
    (dict(n_critic=4), {'image': IMAGES},
     r'^the per-device batch of 6 images does not split into n_critic=4 chunks: make the batch '
     r'a multiple of n_critic x the devices$'),
    (dict(conditioning='projection', mode_seeking=0.2, n_critic=2),
     {'image': IMAGES, 'label': np.zeros(6, np.int32)},
     r'^the mode-seeking term pairs rows, so the per-device batch must be even, got 3: change '),
    (dict(ema_decay=0.999), {'image': IMAGES},
     r'^ema_decay > 0 updates state.g_ema_params, which this state lacks: make it with '
     r'state.init_state\(..., ema=True\)$'),
    (dict(conditioning='projection'), {'image': IMAGES},
     r"^a conditional model's step needs batch\['label'\], integer class ids of shape \(6,\) "
     r"like the images' rows; got none$"),
    (dict(conditioning='auxiliary'), {'image': IMAGES, 'label': np.zeros((6, 1), np.int32)},
     r'got int32 \(6, 1\)$'),
    (dict(conditioning='auxiliary'), {'image': IMAGES, 'label': np.zeros(6, np.float32)},
     r'got float32 \(6,\)$'),
    (dict(), {'image': IMAGES.astype(np.int32)},  # would be trained on as floats 0..255
     r"^batch\['image'\] must be uint8 pixels or floats in \[-1, 1\], got int32: pass the "
     r'pixels as uint8 \(the step maps them\)$'),
    (dict(ema=True), {'image': IMAGES},  # sampling would use the EMA, never updated
     r'^this state has state.g_ema_params, which a step with ema_decay=0 never updates '
     r'\(sampling would use the untrained generator\): pass ema_decay > 0 to the step, or make '
     r'the state with ema=False$'),
])
def test_misuse_of_the_step_is_named_when_it_is_traced(options, batch, message):
  step, state = _misuse(**options)
  with pytest.raises(ValueError, match='(?m)' + message):  # jax appends a line of its own
    jax.eval_shape(step, state, batch, jax.random.key(1))


def test_a_seed_where_a_key_goes_is_named_with_the_fix():
  """jax's own error ('invalid PRNG key data: expected key_data.ndim >= 1') names no fix."""
  import optax
  from jaxgan import generate, state as state_lib
  step, state = _misuse()
  gan = models.build('mlp')
  init = lambda key: state_lib.init_state(gan, optax.adam(1e-3), optax.adam(1e-3), key)
  message = r'(?m)^key must be one jax PRNG key, got {}: make it with jax.random.key\(seed\)$'
  for call, key, got in (
      (lambda key: jax.eval_shape(step, state, {'image': IMAGES}, key), 0, r'int32 \(\)'),
      (lambda key: jax.eval_shape(init, key), np.int32(0), r'int32 \(\)'),
      (lambda key: generate.latents(key, 3, 100), 0, 'int'),
      (lambda key: generate.latents(key, 3, 100), np.zeros(2, np.float32), r'float32 \(2,\)'),
      (lambda key: jax.eval_shape(init, key), jax.random.split(jax.random.key(0), 3),
       r'key<fry> \(3,\)')):
    with pytest.raises(ValueError, match=message.format(got)):
      call(key)
  for key in (jax.random.key(0), jax.random.PRNGKey(0)):  # typed and raw keys both work
    jax.eval_shape(init, key)
    generate.latents(key, 3, 100)


@pytest.mark.parametrize('n_critic', [0, 1.5])
def test_n_critic_must_be_a_whole_number_of_critic_updates(n_critic):
  """1.5 was accepted, and the first call blamed the batch ('does not split into n_critic=1.5
  chunks')."""
  with pytest.raises(ValueError, match=rf'^loss.n_critic must be an integer >= 1, got {n_critic}$'):
    _misuse(n_critic=n_critic)


@pytest.mark.parametrize('field', ['mode_seeking', 'class_weight'])
@pytest.mark.parametrize('value', [-1.0, float('nan'), float('inf')])
def test_loss_weights_of_the_step_must_be_finite_and_non_negative(field, value):
  """NaN passed `< 0` (class_weight had no check) and left NaN parameters after one step."""
  with pytest.raises(ValueError, match=rf'^loss.{field} must be finite and >= 0, got {value}$'):
    _misuse(**{field: value})


@pytest.mark.parametrize('wrap', ['shard', 'pmap'])
def test_the_first_batch_is_checked_for_values_the_compiled_step_cannot_see(wrap):
  """One-based labels gave NaN losses (projection) or other classes, silently; pixels as
  floats trained a discriminator that tells them apart at once. The parallel wrappers check
  the first call's batch; the step itself is not called for a refused one."""
  from jaxgan import parallel
  step, abstract = _misuse(step_axis=parallel.DATA_AXIS, model_axis=parallel.DATA_AXIS,
                           conditioning='projection')
  count = jax.local_device_count()
  wrapped = (parallel.shard_step(step, parallel.make_mesh()) if wrap == 'shard'
             else parallel.pmap_step(step))
  calls = []
  wrapped._compiled = lambda *args: calls.append(args) or ('state', {})  # the checks alone
  def batch(images, labels):
    images, labels = np.repeat(images[:1], 2 * count, 0), np.resize(labels, 2 * count)
    if wrap == 'pmap':
      return {'image': images.reshape((count, 2) + images.shape[1:]),
              'label': labels.reshape(count, 2)}
    return {'image': images, 'label': labels}
  pixels = np.full((1, 28, 28, 1), 255, np.uint8)
  with pytest.raises(ValueError, match=r"^batch\['label'\] holds 10, outside the model's "
                                       r'classes 0..9: give class ids 0..9$'):
    wrapped(abstract, batch(pixels, np.asarray([1, 10])), jax.random.key(0))
  with pytest.raises(ValueError, match=r"^batch\['image'\] holds floats in \[255, 255\], not "
                                       r'\[-1, 1\]: pass uint8 pixels \(the step maps them\), '):
    wrapped(abstract, batch(pixels.astype(np.float32), np.asarray([0, 1])), jax.random.key(0))
  assert calls == []
  good = batch(pixels, np.asarray([0, 9]))
  wrapped(abstract, good, jax.random.key(0))
  wrapped(abstract, batch(pixels, np.asarray([1, 10])), jax.random.key(0))  # once only
  assert len(calls) == 2


def test_first_call_checks_each_batch_of_a_multi_step_call_and_leaves_no_labels_to_the_trace():
  from jaxgan import parallel
  step, abstract = _misuse(step_axis=parallel.DATA_AXIS, model_axis=parallel.DATA_AXIS,
                           conditioning='projection')
  rows = 2 * jax.local_device_count()
  pixels = np.zeros((rows, 28, 28, 1), np.uint8)
  wrapped = parallel.shard_step(step, parallel.make_mesh(), steps_per_call=2)
  wrapped._compiled = lambda *args: ('state', {})  # the checks alone
  with pytest.raises(ValueError, match=r"^batch\['label'\] holds -1, outside the model's "):
    wrapped(abstract, [{'image': pixels, 'label': np.zeros(rows, np.int32)},
                       {'image': pixels, 'label': np.full(rows, -1, np.int32)}],
            jax.random.key(0))
  # Without labels: the traced step names what is missing (a KeyError here named nothing).
  wrapped = parallel.shard_step(step, parallel.make_mesh())
  with pytest.raises(ValueError, match=r"needs batch\['label'\], integer class ids"):
    wrapped(abstract, {'image': pixels}, jax.random.key(0))


def test_a_model_and_step_on_different_device_axes_are_refused():
  """Batch norm would average over other devices than the gradients (or none)."""
  from jaxgan import parallel
  with pytest.raises(ValueError, match=r"^the model was built with axis_name=None but the step "
                                       r"with axis_name='data': build both with the same one "):
    _misuse(step_axis=parallel.DATA_AXIS)
  with pytest.raises(ValueError, match=r"^the augmentation was built with axis_name=None but "
                                       r"the step with axis_name='data': build both "):
    _misuse(step_axis=parallel.DATA_AXIS, model_axis=parallel.DATA_AXIS,
            augment=augment.make('translation'))
  step, _ = _misuse(step_axis='batch', model_axis='batch')
  for wrap in (lambda: parallel.shard_step(step, parallel.make_mesh()),
               lambda: parallel.pmap_step(step)):
    with pytest.raises(ValueError, match=r"^the step was built with axis_name='batch', but runs "
                                         r"over the 'data' axis here: build the model and the "):
      wrap()


def test_the_step_logs_the_rates_it_trained_with_and_d_outputs_as_the_loss_reads_them():
  """g_lr is the G rate of the step that ran (schedule(step)), d_lr D's first update's
  (schedule(step * n_critic)); d_real / d_fake are D's mean probability for logit losses and
  its mean raw output for critics (a sigmoid of a critic's output means nothing)."""
  g_schedule = lambda step: 1.0 + step
  d_schedule = lambda update: 100.0 + update
  _, history, _ = stepping.run_single_device('mlp', 'bce', n_critic=2, g_schedule=g_schedule,
                                             d_schedule=d_schedule)
  assert [m['g_lr'] for m in history] == [1.0, 2.0, 3.0]
  assert [m['d_lr'] for m in history] == [100.0, 102.0, 104.0]
  gan = models.build('mlp')  # no dropout: D's training pass is its plain forward pass
  real = stepping.fixed_inputs(1, 16, False)[0]['image']
  for loss, read in (('wgan_gp', np.mean), ('bce', lambda x: np.mean(1 / (1 + np.exp(-x))))):
    init, _ = stepping.components('mlp', loss)
    state = jax.jit(init)(jax.random.key(0))
    _, history, _ = stepping.run_single_device('mlp', loss, num_steps=1)
    outputs = np.asarray(gan.discriminator.apply({'params': state.d_params}, real, train=True),
                         np.float64)
    np.testing.assert_allclose(history[0]['d_real'], read(outputs), rtol=1e-5)
