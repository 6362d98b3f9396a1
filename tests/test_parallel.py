"""Data parallelism: 8 devices reproduce 1 device for the same global batch, and the pmap
path reproduces the mesh (jit + shard_map) path. Runs on the 8 fake CPU devices of conftest.py.

Tolerances: XLA fuses and sums differently per program (8 partial gradient sums instead of
one; a shard_map program instead of a plain one), which changes results by ~1e-9 after one
step; Adam divides by sqrt(v) + eps, which magnifies that near zero gradients, so parameters
after 3 steps at lr 1e-3 agree to 1e-4 absolute (observed ~3e-5). The minibatch standard
deviation magnifies it more: the gradient of sqrt(var + 1e-8) is ~1 / (2 sqrt(var)), large where
a group's features nearly agree, and a few of D's weights then differ between programs (1 device
too): by ~1.3e-4 on the Xeons, by up to 1.8e-3 on an AMD EPYC (4 of 313,600 values), where a
gradient's sign flips and Adam's step, about lr whatever the gradient's size, goes the other
way. That case gets 2 x 3 steps x lr = 6e-3, the most such flips can part two 3-step runs. The
mesh and pmap paths run the same per-device program on 8 devices and agree to 1e-6 in these
cases (observed: equal); with many of D's regularisers combined (README, Determinism and tests)
rounding parts them further.
"""
import jax
import numpy as np
import pytest

from jaxgan import parallel
from tests import stepping

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason='needs 8 (fake) devices')

CASES = {'dcgan-bce': ('dcgan', 'bce', 1, None, {}),  # batch norm + dropout
         'mlp-wgan_gp-ncritic2': ('mlp', 'wgan_gp', 2, None, {}),  # gradient penalty, 2 critics
         # Conditional: class cross-entropy terms; labels chunked like the images, in the penalty.
         'mlp-bce-auxiliary': ('mlp', 'bce', 1, 'auxiliary', {}),
         'mlp-bce-projection_auxiliary': ('mlp', 'bce', 1, 'projection_auxiliary', {}),
         'mlp-wgan_gp-ncritic2-projection': ('mlp', 'wgan_gp', 2, 'projection', {}),
         # Minibatch std over groups of 2 (8 devices x 2 examples: a group never spans devices)
         # and the deeper generator's extra batch norms.
         'dcgan-hinge-minibatch_std-depth': ('dcgan', 'hinge', 1, None,
                                             dict(minibatch_std_group=2, generator_depth=1))}


@pytest.fixture(scope='module', params=sorted(CASES))
def runs(request):
  model, loss, n_critic, conditioning, build_options = CASES[request.param]
  options = dict(conditioning=conditioning, build_options=build_options)
  plain_state, plain_history, _ = stepping.run_single_device(model, loss, n_critic, **options)
  return {
      'atol': 6e-3 if build_options.get('minibatch_std_group') else 1e-4,
      'plain': (plain_state, {k: np.float32(v) for k, v in plain_history[-1].items()}),
      'mesh1': stepping.run_on_mesh(model, loss, jax.devices()[:1], n_critic, **options),
      'mesh8': stepping.run_on_mesh(model, loss, jax.devices()[:8], n_critic, **options),
      'pmap8': stepping.run_pmap(model, loss, n_critic, **options),
      'shard_map8': stepping.run_on_mesh(model, loss, jax.devices()[:8], n_critic,
                                         jax_shard_map=True, **options),
  }


def assert_runs_close(a, b, atol):
  (state_a, measured_a, *_), (state_b, measured_b, *_) = a, b
  for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
    # assert_allclose holds NaN equal to NaN: two runs that both diverged would pass.
    assert np.isfinite(np.asarray(x, np.float64)).all()
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=0,
                               atol=atol)
  for key in measured_a:
    assert np.isfinite(measured_a[key]).all(), key
    np.testing.assert_allclose(measured_a[key], measured_b[key], rtol=max(atol, 1e-6),
                               err_msg=key)


def test_eight_devices_match_one_device(runs):
  assert_runs_close(runs['mesh1'], runs['mesh8'], atol=runs['atol'])


def test_pmap_matches_mesh(runs):
  assert_runs_close(runs['mesh8'], runs['pmap8'], atol=1e-6)


def test_the_step_under_jax_shard_map_with_its_default_checks_matches_the_mesh_path(runs):
  """With check_vma on, autodiff sums the replicated params' gradients over the devices
  itself; the step must average that sum, not average it again (which left it 8 times the
  mean). Other reduction order, so the 8-vs-1-device tolerance."""
  assert_runs_close(runs['mesh8'], runs['shard_map8'], atol=runs['atol'])


def test_one_device_mesh_matches_the_plain_jitted_step(runs):
  assert_runs_close(runs['plain'], runs['mesh1'], atol=runs['atol'])


def test_sharded_step_compiles_once_and_keeps_step_count(runs):
  state, _, step = runs['mesh8']
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert int(state.step) == 3


def test_the_sharded_step_takes_host_batches_as_it_takes_device_batches():
  """shard_step's jit splits numpy batches over the devices itself (the trainer's feed on CPU,
  `data.training_batches`): the same state bit for bit as batches put on the mesh first, and
  one compilation for the run."""
  devices = jax.devices()[:8]
  on_mesh = stepping.run_on_mesh('dcgan', 'bce', devices)
  from_host = stepping.run_on_mesh('dcgan', 'bce', devices, host_batches=True)
  for x, y in zip(jax.tree.leaves(on_mesh[:2]), jax.tree.leaves(from_host[:2])):
    np.testing.assert_array_equal(x, y)
  assert from_host[2]._cache_size() == 1  # pylint: disable=protected-access


def test_cpu_step_schedule_changes_speed_not_results(monkeypatch):
  """Several CPU devices compile the step with XLA's memory-optimised op order
  (`parallel.step_compiler_options`); XLA's default order gives the same state bit for bit."""
  mesh = parallel.make_mesh(jax.devices()[:8])
  assert parallel.step_compiler_options(mesh) == {
      'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'}
  assert parallel.step_compiler_options(parallel.make_mesh(jax.devices()[:1])) is None
  scheduled = stepping.run_on_mesh('dcgan', 'bce', jax.devices()[:8])
  monkeypatch.setattr(parallel, 'step_compiler_options', lambda mesh: None)
  default = stepping.run_on_mesh('dcgan', 'bce', jax.devices()[:8])
  for x, y in zip(jax.tree.leaves((scheduled[0], scheduled[1])),
                  jax.tree.leaves((default[0], default[1]))):
    np.testing.assert_array_equal(x, y)


def test_arguments_the_devices_cannot_take_are_named_with_the_fix():
  """jax's own errors name neither the argument nor the fix (pmap: an IndexError for a state
  not replicated over the devices)."""
  init, step = stepping.components('mlp', 'bce', axis_name=parallel.DATA_AXIS)
  state = jax.jit(init)(jax.random.key(0))
  images = stepping.fixed_batches(1, 12)[0]
  sharded = parallel.shard_step(step, parallel.make_mesh(jax.devices()[:8]), donate=False)
  with pytest.raises(ValueError, match=r"^batch\['image'\] has shape \(12, 28, 28, 1\), whose "
                                       r"first axis the 8 devices of the mesh cannot split: "
                                       r"make the batch size a multiple of 8$"):
    sharded(state, {'image': images}, jax.random.key(1))
  count = jax.local_device_count()
  pmapped = parallel.pmap_step(step, donate=False)
  per_device = {'image': np.zeros((count, 2, 28, 28, 1), np.float32)}
  with pytest.raises(ValueError, match=rf"^state.step has shape \(\), but pmap needs a leading "
                                       rf"axis of the {count} local devices: pass "
                                       rf"parallel.pmap_replicate\(state\)$"):
    pmapped(state, per_device, jax.random.key(1))
  with pytest.raises(ValueError, match=rf"^batch\['image'\] has shape \(12, 28, 28, 1\), but "
                                       rf"pmap needs a leading axis of the {count} local "
                                       rf"devices: reshape each array to \({count}, "):
    pmapped(parallel.pmap_replicate(state), {'image': images}, jax.random.key(1))


def test_a_state_or_batch_laid_out_for_another_wrapper_is_named_with_the_fix():
  """jax's words: 'fold_in accepts a scalar, but was given an array of shape (8,)' for a pmap
  state given to shard_step, 'Sharding passed to jit does not match ...' for a batch on one
  device, 'cannot reshape array' for unreplicating a state never replicated."""
  init, step = stepping.components('mlp', 'bce', axis_name=parallel.DATA_AXIS)
  state = jax.jit(init)(jax.random.key(0))
  mesh = parallel.make_mesh(jax.devices()[:8])
  sharded = parallel.shard_step(step, mesh, donate=False)
  images = np.zeros((16, 28, 28, 1), np.float32)
  with pytest.raises(ValueError, match=r"^state.step has shape \(8,\): the state has a leading "
                                       r"axis of devices \(pmap_replicate's\), but shard_step "
                                       r"takes one state: pass parallel.pmap_unreplicate\(state\)$"):
    sharded(parallel.pmap_replicate(state, 8), {'image': images}, jax.random.key(1))
  with pytest.raises(ValueError, match=r"^batch\['image'\] is placed on SingleDeviceSharding\("
                                       r".*not split over the mesh's 8 devices: pass host "):
    sharded(state, {'image': jax.device_put(images, jax.devices()[1])}, jax.random.key(1))
  placed = jax.device_put(images, parallel.batch_sharded(mesh))  # the documented placement
  sharded(state, {'image': placed}, jax.random.key(1))
  with pytest.raises(ValueError, match=r'^pmap_unreplicate takes a pytree with a leading axis of '
                                       r'devices .* the tree is not replicated, use it as it is$'):
    parallel.pmap_unreplicate(state)


def test_shapes_the_step_checks_per_device_are_said_to_be_per_device():
  """Under the wrappers the step sees each device's share: (2, 28, 28) read as the caller's
  batch when the caller passed (16, 28, 28)."""
  init, step = stepping.components('mlp', 'bce', axis_name=parallel.DATA_AXIS,
                                   conditioning='projection')
  state = jax.jit(init)(jax.random.key(0))
  sharded = parallel.shard_step(step, parallel.make_mesh(jax.devices()[:8]), donate=False)
  images = np.zeros((16, 28, 28, 1), np.float32)
  with pytest.raises(ValueError, match=r"(?m)got \(2, 28, 28\) on each of 8 devices$"):
    sharded(state, {'image': images[..., 0], 'label': np.zeros(16, np.int32)}, jax.random.key(1))
  with pytest.raises(ValueError, match=r"(?m)shape \(2,\) like the images' rows; got int32 "
                                       r"\(1,\) on each of 8 devices$"):
    sharded(state, {'image': images, 'label': np.zeros(8, np.int32)}, jax.random.key(1))


@pytest.mark.parametrize('wrap', ['shard', 'pmap'])
def test_one_batch_where_steps_per_call_takes_a_list_is_named(wrap):
  """A dict's keys were counted as batches ('expected 3 batches, got 1'), or a stacked batch was
  blamed on the devices' split."""
  init, step = stepping.components('mlp', 'bce', axis_name=parallel.DATA_AXIS)
  state = jax.jit(init)(jax.random.key(0))
  count = 8 if wrap == 'shard' else jax.local_device_count()
  if wrap == 'shard':
    wrapped = parallel.shard_step(step, parallel.make_mesh(jax.devices()[:8]), donate=False,
                                  steps_per_call=3)
  else:
    wrapped, state = parallel.pmap_step(step, donate=False, steps_per_call=3), \
        parallel.pmap_replicate(state)
  rows = (2 * count,) if wrap == 'shard' else (count, 2)
  one = {'image': np.zeros(rows + (28, 28, 1), np.float32)}
  stacked = {'image': np.zeros((3,) + rows + (28, 28, 1), np.float32)}
  for batch, got in ((one, 'a dict'), (stacked, 'a dict'), ([one, one], '2')):
    with pytest.raises(ValueError, match=(
        rf'^steps_per_call=3 takes a list of 3 batches, got {got}: pass one batch per step')):
      wrapped(state, batch, jax.random.key(1))
