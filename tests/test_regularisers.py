"""Spectral normalisation, instance normalisation, DiffAugment and the generator EMA: against
numpy's SVD and closed forms, and the same results whatever the device count."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxgan import augment, convs, ema, losses, models, optim, parallel, train_step
from jaxgan import state as state_lib
from jaxgan.layers import SPECTRAL, spectral_normalised
from tests import stepping


def _assert_finite(tree):
  """assert_allclose and assert_array_equal take NaN for equal to NaN: two diverged runs
  would compare as the same."""
  for leaf in jax.tree.leaves(jax.device_get(tree)):
    assert np.all(np.isfinite(leaf)), leaf


# --- spectral normalisation ----------------------------------------------------------------


class _Wrapped(nn.Module):
  layer: nn.Module

  @nn.compact
  def __call__(self, x, *, train: bool):
    return spectral_normalised(self.layer, x, train=train)


@pytest.mark.parametrize('layer, shape', [
    (nn.Dense(7), (1, 12)),
    (convs.Conv(8, (5, 5), (2, 2), 'SAME'), (1, 6, 6, 3)),
])
def test_power_iteration_estimate_converges_to_the_largest_singular_value(layer, shape):
  model = _Wrapped(layer)
  x = jnp.ones(shape)
  variables = model.init(jax.random.key(0), x, train=False)
  kernel = np.asarray(variables['params']['layer']['kernel'], np.float64)
  sigma_max = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]

  @jax.jit
  def advance(spectral):
    _, updates = model.apply({'params': variables['params'], SPECTRAL: spectral}, x,
                             train=True, mutable=[SPECTRAL])
    return updates[SPECTRAL]

  spectral = variables[SPECTRAL]
  for _ in range(50):
    spectral = advance(spectral)
  (sigma,) = [v for path, v in jax.tree_util.tree_leaves_with_path(spectral)
              if 'sigma' in jax.tree_util.keystr(path)]
  np.testing.assert_allclose(float(sigma), sigma_max, rtol=1e-4)
  # The layer then computes with kernel / sigma_max: its largest singular value is 1.
  (u,) = [v for path, v in jax.tree_util.tree_leaves_with_path(spectral)
          if jax.tree_util.keystr(path).endswith("/u']")]
  assert u.shape == (1, kernel.shape[-1])
  # Evaluation mode reads u and changes nothing.
  _, updates = model.apply({'params': variables['params'], SPECTRAL: spectral}, x, train=False,
                           mutable=[SPECTRAL])
  jax.tree.map(np.testing.assert_array_equal, updates[SPECTRAL], spectral)


def test_spectral_norm_divides_a_dense_layer_by_its_largest_singular_value():
  model = _Wrapped(nn.Dense(5, use_bias=False))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)), jnp.float32)
  variables = model.init(jax.random.key(1), x, train=False)
  kernel = np.asarray(variables['params']['layer']['kernel'], np.float64)
  spectral = variables[SPECTRAL]
  for _ in range(50):
    _, updates = model.apply({**variables, SPECTRAL: spectral}, x, train=True,
                             mutable=[SPECTRAL])
    spectral = updates[SPECTRAL]
  out = model.apply({**variables, SPECTRAL: spectral}, x, train=False)
  expected = np.asarray(x, np.float64) @ kernel / np.linalg.svd(kernel, compute_uv=False)[0]
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-6)


def test_models_carry_spectral_vectors_only_when_asked():
  def shapes(gan):
    return jax.eval_shape(lambda key: gan.discriminator.init(key, jnp.zeros((1, 28, 28, 1)),
                                                             train=False), jax.random.key(0))

  plain, normed = shapes(models.build('dcgan')), shapes(models.build('dcgan', spectral_norm=True))
  assert set(plain) == {'params'} and set(normed) == {'params', SPECTRAL}
  # Same parameters (names and shapes) as the plain discriminator: only u and sigma are added.
  assert normed['params'] == plain['params']
  assert len(jax.tree.leaves(normed[SPECTRAL])) == 6  # u and sigma of 2 convs and the dense
  with pytest.raises(ValueError, match='spectral_norm.*kannada'):
    models.build('kannada', spectral_norm=True)
  with pytest.raises(ValueError, match='generator_norm.*mlp'):
    models.build('mlp', generator_norm='instance')
  with pytest.raises(ValueError, match="generator_norm 'layer'"):
    models.build('dcgan', generator_norm='layer')


@pytest.mark.parametrize('name', ['mlp', 'dcgan', 'progressive'])
def test_spectral_norm_stores_kernels_of_spectral_norm_about_one_at_initialisation(name):
  """flax's SpectralNorm writes W / sigma-hat into 'params' when it initialises (torch keeps the
  initialiser's W): the forward pass is the same, but under Adam each layer's normalised kernel
  moves at another rate. Documented in the README (Recipes); every figure there was measured
  so. Should flax change it, this fails, and those figures no longer reproduce."""
  def kernels(spectral_norm):
    gan = models.build(name, spectral_norm=spectral_norm)
    x = jnp.zeros((1,) + gan.image_shape)
    params = gan.discriminator.init(jax.random.key(0), x, train=False)['params']
    return [np.asarray(w).reshape(-1, w.shape[-1]) for w in jax.tree.leaves(params)
            if w.ndim >= 2]

  largest = lambda w: np.linalg.svd(w, compute_uv=False)[0]
  for normed, plain in zip(kernels(True), kernels(False)):
    cosine = np.sum(normed * plain) / np.linalg.norm(normed) / np.linalg.norm(plain)
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-5)  # the initialiser's kernel, rescaled
    # sigma-hat, from one power iteration, is at most the largest singular value.
    assert 1.0 - 1e-5 <= largest(normed) < 1.5, largest(normed)
  assert not all(abs(largest(w) - 1.0) < 0.1 for w in kernels(False))


def test_instance_norm_generator_normalises_each_example_and_has_no_batch_stats():
  gan = models.build('dcgan', generator_norm='instance')
  z = jax.random.normal(jax.random.key(0), (3, gan.latent_dim))
  variables = jax.jit(lambda key: gan.generator.init(key, z, train=False))(jax.random.key(1))
  assert set(variables) == {'params'}
  apply = jax.jit(lambda z: gan.generator.apply(variables, z, train=True))
  out = apply(z)
  assert out.shape == (3, 28, 28, 1)
  # No cross-example statistics: an example's output does not depend on the rest of the batch.
  np.testing.assert_allclose(apply(jnp.concatenate([z[:1], -z[1:]]))[:1], out[:1], rtol=1e-5,
                             atol=1e-6)


def _spectral_step(axis_name=None):
  gan = models.build('mlp', spectral_norm=True, axis_name=axis_name)
  g_tx, _ = optim.make_optimizer('adam', stepping.adam_config(), stepping.CONSTANT, 100)
  d_tx, _ = optim.make_optimizer('adam', stepping.adam_config(), stepping.CONSTANT, 100)
  init = lambda key: state_lib.init_state(models.build('mlp', spectral_norm=True), g_tx, d_tx,
                                          key, ema=True)
  # Not the hinge loss: while every output is inside its margin, its gradient for D's last bias
  # is 0 exactly, and the consistency penalty's is 0 up to rounding, which Adam then scales
  # to a full step of either sign, different on 1 and on 8 devices.
  loss = losses.get('bce', r1_gamma=1.0, consistency=10.0)
  step = train_step.make_train_step(gan, loss, g_tx, d_tx, axis_name=axis_name, ema_decay=0.5,
                                    augment=augment.make('translation,cutout', axis_name))
  return init, step


def test_the_consistency_penalty_follows_its_weight_and_translation():
  batch = {'image': stepping.fixed_batches(1, 16)[0]}

  def penalty(**options):
    init, step = stepping.components('mlp', 'bce', loss_options=options)
    state = jax.jit(init)(jax.random.key(0))
    return float(jax.jit(step)(state, batch, jax.random.key(1))[1]['consistency_penalty'])

  one_pixel = penalty(consistency=1.0, consistency_translation=0.04)
  assert 0 < one_pixel < penalty(consistency=1.0)  # 4 pixels move D's outputs further
  np.testing.assert_allclose(penalty(consistency=3.0, consistency_translation=0.04),
                             3 * one_pixel, rtol=1e-5)


def test_the_logged_r1_penalty_is_that_of_the_critic_on_the_real_batch():
  """R1 is gamma / 2 * E||grad_x D(x)||^2 over the real images (not the fakes), with D's
  parameters before the update and its spectral vectors as the real and the fake passes left
  them (one more power iteration inside the penalty pass, not kept). The mlp D has no dropout,
  and its power iteration reads only the kernels, so the critic is rebuilt here exactly."""
  gamma = 2.0
  images = stepping.fixed_batches(1, 16)[0]
  init, step = stepping.components('mlp', 'bce', build_options=dict(spectral_norm=True),
                                   loss_options=dict(r1_gamma=gamma))
  state = jax.jit(init)(jax.random.key(0))
  _, measured = jax.jit(step)(state, {'image': images}, jax.random.key(1))
  discriminator = models.build('mlp', spectral_norm=True).discriminator

  def advance(spectral):  # one training-mode pass: one power iteration
    _, updates = discriminator.apply({'params': state.d_params, **spectral}, images, train=True,
                                     mutable=[SPECTRAL])
    return updates

  after_real_and_fake = advance(advance(state.d_state))
  critic = lambda x: discriminator.apply({'params': state.d_params, **after_real_and_fake}, x,
                                         train=True, mutable=[SPECTRAL])[0]
  expected = losses.r1_penalty(critic, jnp.asarray(images), gamma=gamma)
  assert np.isfinite(float(expected)) and float(expected) > 0
  np.testing.assert_allclose(float(measured['r1_penalty']), float(expected), rtol=1e-5)


def test_step_with_every_option_is_the_same_on_one_and_on_eight_devices():
  """Spectral vectors, R1, the consistency penalty, DiffAugment and EMA under the data-parallel
  step: the state after two steps on 8 devices (shard_map and pmap) equals the single-device
  one, and pmap's copies of the spectral vectors are bitwise identical on every device."""
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices')
  batches = stepping.fixed_batches(2, 16)
  init, step = _spectral_step()
  single = jax.jit(init)(jax.random.key(0))
  for images in batches:
    single, measured = jax.jit(step)(single, {'image': images}, jax.random.key(1))
  assert float(measured['consistency_penalty']) > 0 and float(measured['r1_penalty']) > 0
  _assert_finite((single, measured))

  init, step = _spectral_step(parallel.DATA_AXIS)
  mesh = parallel.make_mesh(jax.devices()[:8])
  sharded = jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.key(0))
  sharded_step = parallel.shard_step(step, mesh)
  pmapped = parallel.pmap_replicate(jax.device_get(jax.jit(init)(jax.random.key(0))), 8)
  pmap_step = parallel.pmap_step(step)
  for images in batches:
    sharded, _ = sharded_step(
        sharded, {'image': jax.device_put(images, parallel.batch_sharded(mesh))},
        jax.random.key(1))
    pmapped, _ = pmap_step(pmapped, {'image': images.reshape((8, -1) + images.shape[1:])},
                           jax.random.key(1))
  assert jax.tree.leaves(single.d_state)
  _assert_finite((sharded, pmapped))
  for copy in jax.tree.leaves(jax.device_get(pmapped.d_state)):
    for device in range(1, 8):
      np.testing.assert_array_equal(copy[device], copy[0])
  for other in (jax.device_get(sharded), parallel.pmap_unreplicate(jax.device_get(pmapped))):
    for a, b in zip(jax.tree.leaves(jax.device_get(single)), jax.tree.leaves(other)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # float summation order


# --- EMA -----------------------------------------------------------------------------------


def test_ema_of_generator_parameters_matches_the_closed_form():
  """ema_t = d * ema_{t-1} + (1 - d) * p_t from ema_0 = p_0, so after 3 steps
  ema = d^3 p_0 + (1 - d) (d^2 p_1 + d p_2 + p_3)."""
  d = 0.5
  gan = models.build('mlp')
  g_tx, _ = optim.make_optimizer('adam', stepping.adam_config(), stepping.CONSTANT, 100)
  d_tx, _ = optim.make_optimizer('adam', stepping.adam_config(), stepping.CONSTANT, 100)
  step = jax.jit(train_step.make_train_step(gan, losses.get('bce'), g_tx, d_tx, ema_decay=d))
  state = jax.jit(lambda k: state_lib.init_state(gan, g_tx, d_tx, k, ema=True))(
      jax.random.key(0))
  params = [jax.device_get(state.g_params)]
  for images in stepping.fixed_batches(3, 16):
    state, _ = step(state, {'image': images}, jax.random.key(1))
    params.append(jax.device_get(state.g_params))
  expected = jax.tree.map(
      lambda p0, p1, p2, p3: d ** 3 * p0 + (1 - d) * (d ** 2 * p1 + d * p2 + p3), *params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               jax.device_get(state.g_ema_params), expected)
  # Sampling uses the EMA parameters when the state has them, else the trained ones.
  assert state_lib.generator_variables(state)['params'] is state.g_ema_params
  assert state_lib.generator_variables(state, ema=False)['params'] is state.g_params
  np.testing.assert_allclose(
      ema.update({'w': jnp.float32(2.0)}, {'w': jnp.float32(4.0)}, 0.75)['w'], 2.5)
  with pytest.raises(ValueError, match='ema.decay'):
    train_step.make_train_step(gan, losses.get('bce'), g_tx, d_tx, ema_decay=1.0)


# --- DiffAugment ---------------------------------------------------------------------------


def _images(batch=8, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (batch, 28, 28, 1)),
                     jnp.float32)


def test_empty_policy_is_no_augmentation_and_unknown_names_are_refused():
  assert augment.make('') is None and augment.parse_policy(' ') == ()
  assert augment.parse_policy('translation, cutout') == ('translation', 'cutout')
  with pytest.raises(ValueError, match="'color'.*translation, cutout"):
    augment.make('translation,color')


def test_translation_shifts_whole_images_and_fills_with_background():
  images = _images()
  moved = augment.translate(images, jax.random.key(0))
  assert moved.shape == images.shape and moved.dtype == images.dtype
  pad = round(augment.TRANSLATION_RATIO * 28)  # shifts up to 4 pixels
  padded = np.pad(np.asarray(images), ((0, 0), (pad, pad), (pad, pad), (0, 0)),
                  constant_values=augment.BACKGROUND)
  shifts = set()
  for image, out in zip(padded, np.asarray(moved)):
    matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
               if np.array_equal(image[dy:dy + 28, dx:dx + 28], out)]
    assert len(matches) == 1
    shifts.add(matches[0])
  assert len(shifts) > 1  # each example draws its own shift


def test_cutout_sets_one_half_size_square_per_image_to_background():
  images = _images() * 0.5  # no pixel is already -1
  cut = np.asarray(augment.cutout(images, jax.random.key(0)))
  changed = cut != np.asarray(images)
  assert np.all(cut[changed] == augment.BACKGROUND)
  for mask in changed[..., 0]:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    # A rectangle (the 14x14 square, clipped at the border) ...
    assert mask.sum() == len(rows) * len(cols) and 0 < len(rows) <= 14 and 0 < len(cols) <= 14
    assert len(rows) == 14 or rows[0] == 0 or rows[-1] == 27


def test_augmentation_is_the_same_on_one_and_eight_devices():
  if jax.device_count() < 8:
    pytest.skip('needs 8 devices')
  images, key = _images(16), jax.random.key(3)
  single = augment.make('translation,cutout')(images, key)
  mesh = Mesh(np.array(jax.devices()[:8]), ('data',))
  sharded_fn = augment.make('translation,cutout', 'data')
  sharded = jax.jit(jax.shard_map(sharded_fn, mesh=mesh, in_specs=(P('data'), P()),
                                  out_specs=P('data')))(images, key)
  _assert_finite((single, sharded))
  np.testing.assert_array_equal(single, sharded)


def test_gradients_flow_through_the_augmentation_to_the_kept_pixels():
  images, key = _images(4), jax.random.key(5)
  policy = augment.make('translation,cutout')
  grad = jax.grad(lambda x: jnp.sum(policy(x, key) * 2.0))(images)
  # Each output pixel copies one input pixel or is background: the gradient is 2 on the input
  # pixels that survive (at least one per image) and 0 elsewhere.
  assert set(np.unique(np.asarray(grad))) <= {0.0, 2.0}
  assert np.all(np.asarray(grad).reshape(4, -1).max(axis=1) == 2.0)


# DiffAugment's definition (Zhao et al. 2020), written out here rather than taken from
# jaxgan.augment: a 28x28 image is shifted by whole pixels, independently in y and x, uniformly
# in [-4, 4] (1/8 of 28, rounded); a 14x14 square (half the size) centred uniformly anywhere in
# the image is cut out, clipped at the border (at least 7 rows and 7 columns remain inside).
MAX_SHIFT, CUT_SIZE = 4, 14


def _shifted(image, dy, dx):
  """`image` moved dy rows down and dx columns right, the vacated pixels background."""
  out = np.full_like(image, augment.BACKGROUND)
  height, width = image.shape[:2]
  out[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = (
      image[max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)])
  return out


def _shift_of(image, out):
  """The one (dy, dx) in [-6, 6]^2 (wider than DiffAugment's range) under which every pixel of
  `out` that is not background is `image`'s, shifted."""
  kept = out != augment.BACKGROUND
  matches = [(dy, dx) for dy in range(-6, 7) for dx in range(-6, 7)
             if np.array_equal(_shifted(image, dy, dx)[kept], out[kept])]
  assert len(matches) == 1, matches
  return matches[0]


def _distinct_images(batch, seed=0):
  """Images whose pixels are all different and none background, so a shift is recoverable."""
  values = np.random.default_rng(seed).permutation(batch * 28 * 28)
  return (0.9 * (2 * values / values.size - 1)).reshape(batch, 28, 28, 1).astype(np.float32)


def test_translation_draws_shifts_uniformly_from_minus_to_plus_one_eighth_of_the_size():
  """Over 576 images, each of the 9 shifts -4..4 occurs in each direction (a range of
  [-4, 3] or [-3, 4] would miss one end) and the mean shift is near 0."""
  images = _distinct_images(576)
  moved = np.asarray(augment.translate(jnp.asarray(images), jax.random.key(7)))
  shifts = np.array([_shift_of(image, out) for image, out in zip(images, moved)])
  for image, out, (dy, dx) in zip(images, moved, shifts):
    np.testing.assert_array_equal(out, _shifted(image, dy, dx))  # background moved in
  for axis in range(2):
    counts = np.bincount(shifts[:, axis] + MAX_SHIFT, minlength=2 * MAX_SHIFT + 1)
    assert len(counts) == 2 * MAX_SHIFT + 1 and counts.min() >= 30, counts  # 64 expected
    # The mean of 576 uniform draws from -4..4 has standard deviation 0.11.
    assert abs(shifts[:, axis].mean()) < 0.35, shifts[:, axis].mean()


def _cut_boxes(images, cut):
  """(top, bottom, left, right) of the rectangle of background `cut` set in each image."""
  assert np.all(cut[cut != images] == augment.BACKGROUND)
  boxes = []
  for mask in (cut != images)[..., 0]:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    assert mask.sum() == len(rows) * len(cols)  # one rectangle
    boxes.append((rows[0], rows[-1] + 1, cols[0], cols[-1] + 1))
  return np.array(boxes)


def test_cutout_centres_its_square_anywhere_and_clips_it_at_the_border():
  """The centre is uniform over the image, so the 14x14 square often sticks out: over 576
  images it is clipped at each of the four borders down to 7 rows or columns, and is whole in
  about (15/29)^2 = 27% of the images only."""
  images = _distinct_images(576)
  boxes = _cut_boxes(images, np.asarray(augment.cutout(jnp.asarray(images), jax.random.key(8))))
  heights, widths = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
  for sizes, low, high in ((heights, boxes[:, 0], boxes[:, 1]),
                           (widths, boxes[:, 2], boxes[:, 3])):
    assert set(sizes) == set(range(CUT_SIZE // 2, CUT_SIZE + 1)), sorted(set(sizes))
    assert np.all((sizes == CUT_SIZE) | (low == 0) | (high == 28))  # smaller only where clipped
    assert np.any((sizes == CUT_SIZE // 2) & (low == 0))
    assert np.any((sizes == CUT_SIZE // 2) & (high == 28))
  whole = np.mean((heights == CUT_SIZE) & (widths == CUT_SIZE))
  assert 0.2 < whole < 0.35, whole  # standard deviation 0.02


def test_translation_and_cutout_of_one_policy_draw_independently():
  """'translation,cutout' draws the cutout's position independently of the shift: were both
  drawn from one key, the square's position would follow the shift (correlation near -1)."""
  images = _distinct_images(576, seed=1)
  out = np.asarray(augment.make('translation,cutout')(jnp.asarray(images), jax.random.key(9)))
  shifts, centres = [], []
  for image, result in zip(images, out):
    dy, dx = _shift_of(image, result)
    moved = _shifted(image, dy, dx)
    cut = (result != moved)[..., 0]
    assert cut.any() and np.all(result[..., 0][cut] == augment.BACKGROUND)
    rows, cols = np.nonzero(cut)
    shifts.append((dy, dx))
    centres.append((rows.mean(), cols.mean()))
  shifts, centres = np.array(shifts, np.float64), np.array(centres)
  for axis in range(2):
    correlation = np.corrcoef(shifts[:, axis], centres[:, axis])[0, 1]
    # The cut pixels inside the band of background the shift moved in are not seen: a small
    # dependence remains (about 0.1 here); one key for both gives about -0.9.
    assert abs(correlation) < 0.3, correlation
