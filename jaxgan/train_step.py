"""One GAN training step: discriminator update(s), then a generator update.

`make_train_step` returns a pure `step(state, batch, key) -> (state, measurements)` for one
device's share of the batch. With `axis_name` set, gradients, batch statistics and measurements
are averaged over that device axis, so the same function runs under `jax.shard_map` on a mesh
(with `check_vma` on, JAX's default, or off, as `jaxgan.parallel.shard_step` runs it) or under
`jax.pmap`. All randomness comes from `fold_in(key, step)`.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgan import augment as augment_lib, ema, losses, rng
from jaxgan import images as images_lib
from jaxgan.models import GAN
from jaxgan.state import GANState

# fold_in streams of a discriminator pass's dropout key: its augmentation, and the translation
# of the consistency penalty.
_AUGMENT_STREAM, _CONSISTENCY_STREAM = 1, 2

StepFn = Callable[[GANState, dict, jax.Array], tuple[GANState, dict]]


def make_train_step(gan: GAN, loss: losses.GANLoss, g_tx: optax.GradientTransformation,
                    d_tx: optax.GradientTransformation, *, n_critic: int = 1,
                    axis_name: str | None = None,
                    g_schedule: optax.Schedule | None = None,
                    d_schedule: optax.Schedule | None = None,
                    compute_dtype: str | jnp.dtype = 'float32',
                    augment: augment_lib.Augment | None = None,
                    ema_decay: float = 0.0, class_weight: float = 1.0,
                    class_loss_on_fakes: bool = True,
                    mode_seeking: float = 0.0, before_growth: bool = False) -> StepFn:
  """`batch['image']`, uint8 pixels (as BatchIterator gives them, mapped to [-1, 1] here) or
  floats in [-1, 1], holds `n_critic` real batches per device, interleaved: critic update j
  uses local rows j, j + n_critic, ... (so each chunk is the same set of global examples
  whatever the device count).

  Conditional GANs (gan.num_classes > 0) also read `batch['label']`, laid out like the images.
  Fake images are generated for the labels of the real chunk they are scored against (the
  generator update uses chunk 0's): the fake classes then follow the data's class frequencies,
  the gradient penalty mixes real and fake images of the same class, and the labels, being
  rows of the global batch, are the same whatever the device count. With an auxiliary
  classifier, `class_weight` scales its cross-entropy terms (D: real + fake, as in AC-GAN, or
  real only if not `class_loss_on_fakes`; G: fake).
  `mode_seeking` > 0 adds that multiple of `losses.mode_seeking_penalty` to G's loss; its
  generator update then gives fake rows 2k and 2k + 1 the label of real row 2k, so each pair
  differs only in its latent.

  `g_schedule` / `d_schedule`: the learning-rate schedules inside `g_tx` / `d_tx`, for the
  measurements only (`g_lr`, `d_lr`; D's counted in its own updates): the rates the updates use
  are the optimizers' own.

  `compute_dtype` (float32 | bfloat16): the dtype the networks compute in. Parameters,
  optimizer state, batch statistics, gradients and losses stay float32; with bfloat16 the
  parameters and inputs are cast on the way into each network and its outputs cast back
  (mixed precision for accelerators; on CPU bfloat16 is emulated and slower).

  Options: `augment` (jaxgan.augment) is applied to every batch the discriminator sees, real
  and fake, in both updates; `ema_decay` > 0 updates `state.g_ema_params` after each generator
  update (jaxgan.ema); the loss's `r1_gamma`, `consistency` and `weight_clip` add the R1
  penalty, add the balanced consistency penalty (real and fake images against their random
  translations, `augment.translate`) and clip the critic's parameters after each of its
  updates. The discriminator's non-parameter variables (`state.d_state`: spectral-norm
  vectors) advance on each training-mode pass over real and fake images; penalty passes start
  from them (one more power iteration inside the pass, as in every training-mode pass) and do
  not keep what they advance.

  `before_growth` (progressive growing): the step skips the networks' 28x28 layers and is only
  correct for states before `gan.grow_step`, where those layers are faded out; the trainer
  switches to the full step there. The two give the same states up to float rounding.
  """
  if not 0.0 <= ema_decay < 1.0:
    raise ValueError(f'ema.decay must be in [0, 1) (0 = off), got {ema_decay}')
  if not isinstance(n_critic, (int, np.integer)) or n_critic < 1:
    raise ValueError(f'loss.n_critic must be an integer >= 1, got {n_critic!r}')
  if before_growth and gan.grow_step is None:
    raise ValueError(f'before_growth needs a progressive model, got {gan.name!r}')
  for field, value in (('mode_seeking', mode_seeking), ('class_weight', class_weight)):
    if not 0 <= value < math.inf:  # NaN and inf diverge the first step
      raise ValueError(f'loss.{field} must be finite and >= 0, got {value}')
  # Otherwise batch norm would average over other devices than the gradients are, and an
  # augmentation would draw per device rather than by global example.
  for part, part_axis in (('model', gan.axis_name),
                          ('augmentation', getattr(augment, 'axis_name', axis_name))):
    if part_axis != axis_name:
      raise ValueError(f'the {part} was built with axis_name={part_axis!r} but the step with '
                       f'axis_name={axis_name!r}: build both with the same one '
                       '(parallel.DATA_AXIS to run under parallel.shard_step or pmap_step)')
  compute_dtype = jnp.dtype(compute_dtype)
  if compute_dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(f'compute_dtype must be float32 or bfloat16, got {compute_dtype}')

  def to_compute(tree):
    if compute_dtype == jnp.float32:
      return tree
    return jax.tree.map(
        lambda x: x.astype(compute_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

  def to_float32(x):
    return x.astype(jnp.float32)

  def mean_over_devices(tree):
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)

  def generate(g_params, g_batch_stats, z, labels, net):
    variables = {'params': to_compute(g_params)}
    if g_batch_stats:
      variables['batch_stats'] = g_batch_stats  # running statistics stay float32
    fake, updates = gan.generator.apply(variables, *gan.generator_inputs(to_compute(z), labels),
                                        train=True, mutable=['batch_stats'], **net)
    return to_float32(fake), updates.get('batch_stats', g_batch_stats)

  def discriminate(d_params, d_state, images, labels, dropout_key, net):
    """(outputs, class logits or None, d_state advanced by this pass); only the
    auxiliary-classifier D gives class logits."""
    variables = {'params': to_compute(d_params), **d_state}
    inputs = gan.discriminator_inputs(to_compute(images), labels)
    kwargs = dict(train=True, rngs={'dropout': dropout_key}, **net)
    if d_state:
      out, d_state = gan.discriminator.apply(variables, *inputs, mutable=list(d_state), **kwargs)
    else:
      out = gan.discriminator.apply(variables, *inputs, **kwargs)
    out = jax.tree.map(to_float32, out)
    out, classes = out if gan.auxiliary_classifier else (out, None)
    return out, classes, d_state

  def class_loss(class_logits, labels):
    return class_weight * optax.softmax_cross_entropy_with_integer_labels(
        class_logits, labels).mean()

  def maybe_augment(images, pass_key):
    """DiffAugment keyed by a stream of the pass's dropout key (no new splits: the other
    draws, and the goldens, stay as they were)."""
    if augment is None:
      return images
    return augment(images, jax.random.fold_in(pass_key, _AUGMENT_STREAM))

  def report(outputs):
    return jax.nn.sigmoid(outputs).mean() if loss.outputs_are_logits else outputs.mean()

  def on_each_device() -> str:
    """Where the step runs split over devices, the shapes it checks are each device's share of
    the caller's batch: say so (' on each of 8 devices'), or the rows read as the caller's."""
    try:
      return '' if axis_name is None else f' on each of {jax.lax.axis_size(axis_name)} devices'
    except NameError:  # built with an axis name, but called without the axis mapped
      return ''

  def check_inputs(state: GANState, batch: dict) -> None:
    """Shape and structure errors, named at trace time rather than deep inside the step."""
    shape = batch['image'].shape
    if tuple(shape[1:]) != tuple(gan.image_shape):
      raise ValueError(f"batch['image'] must hold images of shape {tuple(gan.image_shape)} "
                       f'(rows, height, width, channels), got {tuple(shape)}{on_each_device()}')
    rows = shape[0]
    if not rows:
      raise ValueError(f"batch['image'] holds no images{on_each_device()}: pass at least "
                       'n_critic images per device')
    if rows % n_critic:
      raise ValueError(f'the per-device batch of {rows} images does not split into n_critic='
                       f'{n_critic} chunks: make the batch a multiple of n_critic x the devices')
    if mode_seeking:  # before the conditional label pairing, which fails less clearly
      losses.check_pairs(rows // n_critic)
    if not (batch['image'].dtype == jnp.uint8 or jnp.issubdtype(batch['image'].dtype,
                                                                jnp.floating)):
      raise ValueError(f"batch['image'] must be uint8 pixels or floats in [-1, 1], got "
                       f"{batch['image'].dtype}: pass the pixels as uint8 (the step maps them)")
    if ema_decay and not state.g_ema_params:
      raise ValueError('ema_decay > 0 updates state.g_ema_params, which this state lacks: make '
                       'it with state.init_state(..., ema=True)')
    if state.g_ema_params and not ema_decay:  # generator_variables would give the EMA, unmoved
      raise ValueError('this state has state.g_ema_params, which a step with ema_decay=0 never '
                       'updates (sampling would use the untrained generator): pass ema_decay > 0 '
                       'to the step, or make the state with ema=False')
    if gan.num_classes:
      labels = batch.get('label')
      if labels is None or labels.shape != (rows,) or not jnp.issubdtype(labels.dtype,
                                                                           jnp.integer):
        found = 'none' if labels is None else f'{labels.dtype} {labels.shape}'
        raise ValueError(f"a conditional model's step needs batch['label'], integer class ids "
                         f'of shape ({rows},) like the images\' rows; got {found}'
                         f'{on_each_device()}')

  def step(state: GANState, batch: dict, key: jax.Array):
    rng.check_key(key)
    step_key = jax.random.fold_in(key, state.step)
    # Progressive growing's alpha (and which layers run); {} for other models.
    net = gan.network_kwargs(state.step, before_growth=before_growth)
    critic_key, generator_key = jax.random.split(step_key)
    images = batch['image']
    check_inputs(state, batch)
    if images.dtype == jnp.uint8:  # BatchIterator's pixels
      images = images_lib.from_pixels(images)
    local_batch = images.shape[0] // n_critic

    def chunks(rows):
      return rows.reshape((local_batch, n_critic) + rows.shape[1:]).swapaxes(0, 1)

    real_chunks = chunks(images)
    label_chunks = chunks(batch['label']) if gan.num_classes else [None] * n_critic

    def mean_gradients(grads):
      # Under shard_map with check_vma=True (JAX's default) the batch is typed as varying over
      # the axis, and autodiff has already summed the replicated params' gradients over the
      # devices (the transpose of their implicit broadcast): a pmean would leave that sum, N
      # times the mean. Under pmap, or shard_map with check_vma=False, nothing is typed so and
      # each device holds its own gradient.
      if axis_name is not None and axis_name in jax.typeof(images).manual_axis_type.varying:
        size = jax.lax.axis_size(axis_name)
        return jax.tree.map(lambda g: g / size, grads)
      return mean_over_devices(grads)

    def critic_update(carry, real, labels, index):
      d_params, d_state, d_opt_state, g_batch_stats = carry
      z_key, real_key, fake_key, gp_key = jax.random.split(jax.random.fold_in(critic_key, index),
                                                           4)
      z = rng.normal(z_key, local_batch, (gan.latent_dim,), axis_name)
      fake, g_batch_stats = generate(state.g_params, g_batch_stats, z, labels, net)
      real = maybe_augment(real, real_key)
      fake = maybe_augment(fake, fake_key)

      def d_loss_fn(d_params):
        real_out, real_classes, new_d_state = discriminate(d_params, d_state, real, labels,
                                                           real_key, net)
        fake_out, fake_classes, new_d_state = discriminate(d_params, new_d_state, fake, labels,
                                                           fake_key, net)
        value = loss.discriminator(real_out, fake_out)
        critic = lambda x: discriminate(d_params, new_d_state, x, labels, real_key, net)[0]
        penalties = {}
        if loss.gradient_penalty_weight:
          penalties['gradient_penalty'] = losses.gradient_penalty(
              critic, real, fake, gp_key, weight=loss.gradient_penalty_weight,
              axis_name=axis_name)
        if loss.r1_gamma:
          penalties['r1_penalty'] = losses.r1_penalty(critic, real, gamma=loss.r1_gamma)
        if loss.consistency:
          # bCR: each pass again on translated images, with the pass's own dropout draws.
          def consistency(images, outputs, pass_key):
            shifted = augment_lib.translate(
                images, jax.random.fold_in(pass_key, _CONSISTENCY_STREAM), axis_name,
                ratio=loss.consistency_translation)
            return losses.consistency_penalty(
                lambda x: discriminate(d_params, new_d_state, x, labels, pass_key, net)[0],
                shifted, outputs, weight=loss.consistency)

          penalties['consistency_penalty'] = (consistency(real, real_out, real_key) +
                                              consistency(fake, fake_out, fake_key))
        extra = {}
        if gan.auxiliary_classifier:
          extra['d_class_loss'] = class_loss(real_classes, labels)
          if class_loss_on_fakes:
            extra['d_class_loss'] += class_loss(fake_classes, labels)
        total = value + sum(penalties.values()) + sum(extra.values())
        return total, ({**penalties, **extra}, report(real_out), report(fake_out), new_d_state)

      (d_loss, (extra, d_real, d_fake, d_state)), grads = jax.value_and_grad(
          d_loss_fn, has_aux=True)(d_params)
      grads = mean_gradients(grads)
      updates, d_opt_state = d_tx.update(grads, d_opt_state, d_params)
      d_params = optax.apply_updates(d_params, updates)
      if loss.weight_clip:
        d_params = losses.clip_weights(d_params, loss.weight_clip)
      measured = dict(d_loss=d_loss, d_real=d_real, d_fake=d_fake,
                      d_grad_norm=optax.tree.norm(grads), **extra)
      return (d_params, d_state, d_opt_state, g_batch_stats), measured

    # A Python loop, not lax.scan: XLA:CPU runs a while-loop body ~3x slower than the same ops
    # unrolled (measured on the dcgan step), and n_critic is small.
    carry = (state.d_params, state.d_state, state.d_opt_state, state.g_batch_stats)
    critic_measured = []
    for index in range(n_critic):
      carry, measured = critic_update(carry, real_chunks[index], label_chunks[index], index)
      critic_measured.append(measured)
    d_params, d_state, d_opt_state, g_batch_stats = carry

    z_key, dropout_key = jax.random.split(generator_key)
    z = rng.normal(z_key, local_batch, (gan.latent_dim,), axis_name)

    labels = label_chunks[0]
    if mode_seeking and gan.num_classes:
      labels = jnp.repeat(labels[0::2], 2)

    def g_loss_fn(g_params):
      fake, new_batch_stats = generate(g_params, g_batch_stats, z, labels, net)
      extra = {}
      if mode_seeking:
        extra['g_mode_seeking'] = losses.mode_seeking_penalty(fake, z)
      fake = maybe_augment(fake, dropout_key)
      fake_out, fake_classes, new_d_state = discriminate(d_params, d_state, fake, labels,
                                                         dropout_key, net)
      value = loss.generator(fake_out)
      if mode_seeking:
        value += mode_seeking * extra['g_mode_seeking']
      if gan.auxiliary_classifier:
        extra['g_class_loss'] = class_loss(fake_classes, labels)
        value += extra['g_class_loss']
      return value, (new_batch_stats, new_d_state, extra)

    (g_loss, (g_batch_stats, d_state, g_extra)), grads = jax.value_and_grad(
        g_loss_fn, has_aux=True)(state.g_params)
    grads = mean_gradients(grads)
    updates, g_opt_state = g_tx.update(grads, state.g_opt_state, state.g_params)
    g_params = optax.apply_updates(state.g_params, updates)
    g_ema_params = state.g_ema_params
    if ema_decay:
      g_ema_params = ema.update(g_ema_params, g_params, ema_decay)

    measurements = {name: jnp.mean(jnp.stack([m[name] for m in critic_measured]))
                    for name in critic_measured[0]}
    measurements.update(g_loss=g_loss, **g_extra)
    # The gradient norms come from gradients already averaged over devices, so they are the
    # same on every device: averaging them again would cost one more all-reduce at the end of
    # the step (a wait for the slowest device).
    d_grad_norm = measurements.pop('d_grad_norm')
    measurements = dict(mean_over_devices(measurements), d_grad_norm=d_grad_norm,
                        g_grad_norm=optax.tree.norm(grads))
    if 'alpha' in net:
      measurements['alpha'] = net['alpha']
    if g_schedule is not None:
      measurements['g_lr'] = g_schedule(state.step)
    if d_schedule is not None:
      measurements['d_lr'] = d_schedule(state.step * n_critic)
    new_state = GANState(step=state.step + 1, g_params=g_params, g_batch_stats=g_batch_stats,
                         d_params=d_params, g_opt_state=g_opt_state, d_opt_state=d_opt_state,
                         d_state=d_state, g_ema_params=g_ema_params)
    return new_state, measurements

  def check_values(batch: dict) -> None:
    """What tracing cannot see (the step compiles for shapes and dtypes): labels outside the
    model's classes (one-based ones: NaN losses or other classes, silently) and float images
    outside [-1, 1] (pixels as floats: D tells them apart at once). jaxgan.parallel's wrappers
    call it on their first call."""
    if jnp.issubdtype(batch['image'].dtype, jnp.floating):  # pixels (uint8): no copy
      images = _local_values(batch['image'])
      if images.size and not -1.001 <= images.min() <= images.max() <= 1.001:  # float rounding
        raise ValueError(f"batch['image'] holds floats in [{images.min():.4g}, "
                         f'{images.max():.4g}], not [-1, 1]: pass uint8 pixels (the step maps '
                         'them), or pixels / 127.5 - 1')
    if gan.num_classes and 'label' in batch:  # no labels: named when the step is traced
      labels = _local_values(batch['label'])
      outside = labels[(labels < 0) | (labels >= gan.num_classes)]
      if outside.size:
        raise ValueError(f"batch['label'] holds {outside[0]}, outside the model's classes "
                         f'0..{gan.num_classes - 1}: give class ids 0..{gan.num_classes - 1}')

  step.axis_name = axis_name  # checked by jaxgan.parallel's wrappers
  step.check_values = check_values  # called by them once
  return step


def _local_values(array) -> np.ndarray:
  """This process's values of a host or jax array (a global array's addressable shards)."""
  if isinstance(array, jax.Array) and not array.is_fully_addressable:
    return np.concatenate([np.ravel(shard.data) for shard in array.addressable_shards])
  return np.asarray(array)
