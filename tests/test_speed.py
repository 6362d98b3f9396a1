"""Speed options give the same training: CPU-friendly convolutions (jaxgan.convs), the unrolled
dropout hash (jaxgan.rng), several steps per jit call (`steps_per_call`), bfloat16 compute and
buffer donation. No timings are asserted here; benchmarks/ measures them.

Tolerances: a scanned step is a different XLA program from the straight-line one (other fusion
and summation order), which changes results by float rounding (~1e-7 relative per op); Adam at
lr 1e-3 magnifies that near zero gradients, as in tests/test_parallel.py, so parameters after a
few steps agree to 1e-4 absolute (observed ~1e-6).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import tiny
from jaxgan import convs, parallel, rng, trainer
from tests import stepping
from tests.idx_files import write_manual_dir


def _assert_trees_close(a, b, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=0,
                               atol=atol)


# --- jaxgan.convs: same function and gradients as flax's layers ------------------------------

CONV_CASES = [  # (kernel, padding, input shape): the dcgan and kannada layers and odd sizes;
    # a batch over convs.KERNEL_GRAD_CHUNK (two whole chunks and a part) for the kernel gradient
    (5, 'SAME', (2, 14, 14, 3)), (3, 'SAME', (2, 7, 7, 4)), (4, ((1, 2), (2, 1)), (2, 10, 11, 2)),
    (5, 'SAME', (2 * convs.KERNEL_GRAD_CHUNK + 5, 8, 8, 3))]
TRANSPOSE_CASES = [(5, 'SAME', (2, 7, 7, 8)), (3, 'VALID', (2, 5, 6, 3)), (4, 'SAME', (2, 4, 4, 2)),
                   (5, 'SAME', (2 * convs.KERNEL_GRAD_CHUNK + 5, 4, 4, 8))]


def _compare_layers(reference, fast, shape):
  x = jnp.asarray(np.random.RandomState(0).randn(*shape), jnp.float32)
  params = reference.init(jax.random.key(0), x)
  assert (jax.tree.map(jnp.shape, fast.init(jax.random.key(0), x))
          == jax.tree.map(jnp.shape, params))

  @jax.jit
  def outputs_and_gradients(params, x):
    results = []
    for module in (reference, fast):
      loss = lambda p, x, m=module: jnp.sum(jnp.sin(m.apply(p, x)))
      results.append((module.apply(params, x), jax.grad(loss, argnums=(0, 1))(params, x)))
    return results

  want, got = outputs_and_gradients(params, x)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    assert w.shape == g.shape
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kernel,padding,shape', CONV_CASES)
def test_phase_conv_matches_flax_conv(kernel, padding, shape):
  _compare_layers(nn.Conv(6, (kernel, kernel), 2, padding),
                  convs.Conv(6, (kernel, kernel), 2, padding, impl='phase'), shape)


@pytest.mark.parametrize('kernel,padding,shape', TRANSPOSE_CASES)
def test_phase_conv_transpose_matches_flax_conv_transpose(kernel, padding, shape):
  _compare_layers(nn.ConvTranspose(3, (kernel, kernel), 2, padding, use_bias=False),
                  convs.ConvTranspose(3, (kernel, kernel), 2, padding, use_bias=False,
                                      impl='phase'), shape)


def test_phase_conv_supports_second_order_gradients():
  """WGAN-GP differentiates the critic's input gradient again (custom_vjp backward pass)."""
  x = jnp.asarray(np.random.RandomState(1).randn(2, 12, 12, 3), jnp.float32)
  results = []
  for module in (nn.Conv(4, (5, 5), 2), convs.Conv(4, (5, 5), 2, impl='phase')):
    params = module.init(jax.random.key(0), x)
    penalty = lambda p, m=module: jnp.sum(jax.grad(lambda x: jnp.sum(m.apply(p, x) ** 2))(x) ** 2)
    results.append(jax.grad(penalty)(params))
  _assert_trees_close(results[0], results[1], atol=1e-4)


def test_impl_auto_and_unknown():
  assert convs.resolve_impl('auto') == ('phase' if jax.default_backend() == 'cpu' else 'xla')
  with pytest.raises(ValueError, match='unknown convolution impl'):
    convs.resolve_impl('winograd')


# --- jaxgan.rng: the unrolled hash is jax's threefry, bit for bit ------------------------------

@pytest.mark.parametrize('key', [jax.random.key(3), jax.random.PRNGKey(5)], ids=['typed', 'raw'])
def test_unrolled_bernoulli_equals_jax_random_bernoulli(key):
  for shape, batch, p in (((6, 6, 4), 5, 0.7), ((7,), 3, 0.3)):
    got = jax.jit(lambda k, s=shape, b=batch, p=p: rng.bernoulli(k, b, s, p))(key)
    want = jax.vmap(lambda i, s=shape, p=p: jax.random.bernoulli(
        jax.random.fold_in(key, i), p, s))(jnp.arange(batch))
    np.testing.assert_array_equal(got, want)


def test_unrolled_threefry_equals_jax_random_bits():
  key = jax.random.key(11)
  data = jax.random.key_data(key)
  counts = jnp.arange(1000, dtype=jnp.uint32)
  bits1, bits2 = rng.threefry2x32(data[0], data[1], jnp.zeros_like(counts), counts)
  np.testing.assert_array_equal(bits1 ^ bits2, jax.random.bits(key, (1000,)))


# --- steps_per_call: k steps in one call equal k calls of one step ----------------------------

@pytest.mark.parametrize('model,loss,n_critic', [('dcgan', 'bce', 1), ('mlp', 'wgan_gp', 2)])
def test_scanned_steps_match_single_steps(model, loss, n_critic):
  init, step = stepping.components(model, loss, n_critic)
  batches = stepping.fixed_batches(4, 4 * n_critic)
  key = jax.random.key(1)
  single = jax.jit(step)
  state = jax.jit(init)(jax.random.key(0))
  history = []
  for images in batches:
    state, measured = single(state, {'image': images}, key)
    history.append(measured)
  multi = jax.jit(parallel.scan_steps(step, 2))
  scanned = jax.jit(init)(jax.random.key(0))
  stacked = []
  for first in (0, 2):
    scanned, measured = multi(scanned, [{'image': batches[first]}, {'image': batches[first + 1]}],
                              key)
    stacked.append(measured)
  assert int(scanned.step) == 4
  _assert_trees_close(jax.device_get(state), jax.device_get(scanned), atol=1e-4)
  for name in history[0]:
    want = np.array([float(m[name]) for m in history])
    got = np.concatenate([np.asarray(m[name]) for m in stacked])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


def test_run_steps_never_crosses_a_boundary():
  calls = []

  def one(state, batch, key):
    calls.append((1, [batch]))
    return state + 1, {'v': jnp.asarray(float(batch))}

  def many(state, batches, key):
    calls.append((len(batches), batches))
    return state + len(batches), {'v': jnp.asarray([float(b) for b in batches])}

  counter = iter(range(1, 100))
  seen = [(done, int(state), float(m['v']), first_call)
          for done, state, m, first_call in parallel.run_steps(
              one, many, 0, lambda: next(counter), None, 1, 11, steps_per_call=3,
              is_boundary=lambda d: d % 4 == 0)]
  assert [s for s, _ in calls] == [3, 3, 1, 3]  # 2-4, 5-7, 8 alone (8-10 would cross 8), 9-11
  assert [done for done, _, _, _ in seen] == list(range(2, 12))
  assert [v for _, _, v, _ in seen] == [float(b) for b in range(1, 11)]  # batches in order
  for done, state, _, _ in seen:
    if done % 4 == 0 or done == 11:
      assert state == done - 1  # the state after `done` steps (started at step 1 with 0)
  # Each program's first call (which compiles it) is named on its steps, by its last step:
  # the 3-step program's at steps 2-4, the 1-step program's at step 8; no other step.
  firsts = {done: first_call for done, _, _, first_call in seen if first_call is not None}
  assert {done: end for done, (end, _) in firsts.items()} == {2: 4, 3: 4, 4: 4, 8: 8}
  assert all(seconds >= 0 for _, seconds in firsts.values())


def test_step_pacer_waits_for_the_call_limit_back(monkeypatch):
  waited = []
  monkeypatch.setattr(parallel.jax, 'block_until_ready', waited.append)
  pacer = parallel.StepPacer(limit=3)
  for call in range(12):
    pacer.dispatched(call)
    assert pacer.in_flight == min(call + 1, 3)
  assert waited == list(range(9))  # call c waited for call c - 3
  with pytest.raises(ValueError, match='StepPacer limit must be >= 1, got 0'):
    parallel.StepPacer(limit=0)


# Many cheap collective steps over 2 CPU devices of one process: with the host free to run
# ahead, XLA:CPU's queue of 32 programs per device fills and its all-reduce deadlocks within a
# few steps (then aborts: rc -6); run_steps' pacing must keep it out of that state.
_PACED_PROBE = '''
import os
os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=2 "
                           "--xla_cpu_collective_call_terminate_timeout_seconds=15")
import jax, jax.numpy as jnp
from jaxgan import parallel
mesh = parallel.make_mesh()
def step_fn(state, batch, key):
  total = jax.lax.psum(jnp.sum(batch), parallel.DATA_AXIS)
  return state + total, {"total": total}
step = parallel.shard_step(step_fn, mesh)
batch = jax.device_put(jnp.ones((8, 4)), parallel.batch_sharded(mesh))
state = jax.device_put(jnp.zeros(()), parallel.replicated(mesh))
for done, state, measured, _ in parallel.run_steps(step, None, state, lambda: batch, None, 0,
                                                  3000):
  pass
print(done, float(state))
'''


def test_run_steps_keeps_many_collective_steps_on_two_cpu_devices_alive():
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  out = subprocess.run([sys.executable, '-c', _PACED_PROBE], capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split()[-2:] == ['3000', '96000.0']  # 3000 steps of sum 32


def _tiny_config(tmp_path, **overrides):
  manual = tmp_path / 'manual'
  if not manual.exists():
    write_manual_dir(manual, {'mnist': {'train': 300, 'test': 50}})
  config = tiny.get_config()
  config.data.manual_dir, config.data.data_dir = str(manual), str(tmp_path / 'tfds')
  for field, value in overrides.items():
    config[field] = value
  return config


def _read(path):
  import json  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_trainer_with_steps_per_call_matches_one_step_per_call(tmp_path):
  """16 steps (8 per epoch), checkpoints every 4, logs every 2: chunks of 3 steps must stop at
  every checkpoint and epoch end, and log and checkpoint the same steps as one step per call."""
  runs = {}
  for k in (1, 3):
    config = _tiny_config(tmp_path, steps_per_call=k)
    workdir = tmp_path / f'k{k}'
    runs[k] = (trainer.train_and_evaluate(config, str(workdir)), _read(workdir / 'metrics.jsonl'),
               sorted(p.name for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit()))
  (state_1, metrics_1, ckpts_1), (state_3, metrics_3, ckpts_3) = runs[1], runs[3]
  assert int(state_3.step) == 16 and ckpts_1 == ckpts_3 == ['12', '16']
  assert [m['step'] for m in metrics_1] == [m['step'] for m in metrics_3] == list(range(2, 17, 2))
  for a, b in zip(metrics_1, metrics_3):
    for name in ('d_loss', 'g_loss', 'd_real', 'd_fake'):
      np.testing.assert_allclose(b[name], a[name], rtol=1e-4, err_msg=f'step {a["step"]} {name}')
  _assert_trees_close(state_1, state_3, atol=1e-4)


def test_trainer_with_a_prefetch_thread_matches_the_inline_feed(tmp_path):
  """prefetch=2 (a thread, batches put on the mesh) against the CPU default (no thread, numpy
  batches copied by the step's jit): the same run bit for bit."""
  runs = {}
  for prefetch in (-1, 2):
    config = _tiny_config(tmp_path, prefetch=prefetch, num_steps=6, log_every=2)
    workdir = tmp_path / f'prefetch{prefetch}'
    runs[prefetch] = (trainer.train_and_evaluate(config, str(workdir)),
                      [{k: v for k, v in m.items() if k not in ('time_s', 'images_per_s')}
                       for m in _read(workdir / 'metrics.jsonl')])
  assert runs[-1][1] == runs[2][1] and len(runs[-1][1]) == 3
  for x, y in zip(jax.tree.leaves(runs[-1][0]), jax.tree.leaves(runs[2][0]), strict=True):
    np.testing.assert_array_equal(x, y)


def test_validate_rejects_a_prefetch_below_minus_one():
  config = tiny.get_config()
  config.prefetch = -2
  with pytest.raises(ValueError, match=r'prefetch must be >= -1 \(-1: 0 on CPU, 2 on '
                     r'accelerators; 0: no prefetch thread\), got -2'):
    trainer.validate(config)


# --- compute_dtype and donate -------------------------------------------------------------------

def test_bfloat16_compute_keeps_float32_state_and_tracks_float32():
  from jaxgan import losses, models, optim, train_step  # pylint: disable=g-import-not-at-top
  from jaxgan import state as state_lib  # pylint: disable=g-import-not-at-top
  gan = models.build('dcgan')
  g_tx, _ = optim.make_optimizer('adam', stepping.adam_config(), stepping.CONSTANT, 10)
  d_tx, _ = optim.make_optimizer('adam', stepping.adam_config(), stepping.CONSTANT, 10)
  state = jax.jit(lambda k: state_lib.init_state(gan, g_tx, d_tx, k))(jax.random.key(0))
  batch = {'image': stepping.fixed_batches(1, 16)[0]}
  out = {}
  for dtype in ('float32', 'bfloat16'):
    step = train_step.make_train_step(gan, losses.get('bce'), g_tx, d_tx, compute_dtype=dtype)
    out[dtype] = jax.jit(step)(state, batch, jax.random.key(1))
  new_state, measured = out['bfloat16']
  assert {leaf.dtype for leaf in jax.tree.leaves(new_state) if leaf.ndim} == {jnp.dtype('float32')}
  assert jax.tree.structure(new_state) == jax.tree.structure(out['float32'][0])
  for name in ('d_loss', 'g_loss', 'd_real', 'd_fake'):
    assert measured[name].dtype == jnp.float32 and np.isfinite(measured[name])
    np.testing.assert_allclose(measured[name], out['float32'][1][name], rtol=0.05, err_msg=name)
  with pytest.raises(ValueError, match='compute_dtype'):
    train_step.make_train_step(gan, losses.get('bce'), g_tx, d_tx, compute_dtype='float16')


@pytest.mark.parametrize('donate', [True, False])
def test_donate_reuses_or_keeps_the_input_state(donate):
  init, step = stepping.components('mlp', 'bce', axis_name=parallel.DATA_AXIS)
  mesh = parallel.make_mesh(jax.devices()[:1])
  state = jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.key(0))
  sharded = parallel.shard_step(step, mesh, donate=donate)
  images = jax.device_put(stepping.fixed_batches(1, 8)[0], parallel.batch_sharded(mesh))
  new_state, _ = sharded(state, {'image': images}, jax.random.key(1))
  assert int(new_state.step) == 1
  old_leaf = jax.tree.leaves(state.g_params)[0]
  assert old_leaf.is_deleted() == donate
  if donate:  # as the README says (Using the library), on one device
    with pytest.raises(RuntimeError, match='Array has been deleted'):
      np.asarray(old_leaf)
    with pytest.raises(ValueError, match='Buffer has been deleted or donated'):
      sharded(state, {'image': images}, jax.random.key(1))


# --- cpu_devices: the default is jax's one device, whatever the core count ----------------

_DEVICES_PROBE = '''
import os, sys
os.environ.pop("XLA_FLAGS", None)
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # a 1-core machine
from experiments.configs import default
from jaxgan import parallel
import jax
count = int(sys.argv[1]) if len(sys.argv) > 1 else default.get_config().cpu_devices
set_to = parallel.configure_cpu_devices(count, divides=64)
print(set_to, jax.device_count())
'''


@pytest.mark.parametrize('count,want', [(None, 'None 1'), (0, '1 1'), (2, '2 2'), (-1, 'None 1')])
def test_cpu_devices_default_does_not_depend_on_the_core_count(count, want):
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  argv = [sys.executable, '-c', _DEVICES_PROBE] + ([] if count is None else [str(count)])
  out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
  assert out.stdout.split('\n')[-2] == want, out.stderr


def test_validate_rejects_a_negative_cpu_devices():
  config = tiny.get_config()
  config.cpu_devices = -2
  with pytest.raises(ValueError, match='cpu_devices must be >= -1'):
    trainer.validate(config)
