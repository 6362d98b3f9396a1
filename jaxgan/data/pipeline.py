"""In-memory splits and the deterministic, resumable, sharded batch iterator."""

from __future__ import annotations

import os
import queue
import re
import threading
import weakref

import jax
import numpy as np
import tensorflow_datasets as tfds

from jaxgan.data.builders import SPLITS, TO_DIGITS, prepare
from jaxgan.data.idx import DataError

# Read in batches, not with batch_size=-1: that asks tfds for one batch of its total
# example count, which under tfds.testing.mock_data (no metadata) is sys.maxsize and aborts.
_READ_BATCH_SIZE = 10_000


def read_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """A split as tfds stores it: (images uint8 (N, 28, 28, 1), or (N, 32, 32, 3) for SVHN,
  labels int32 (N,)), in its stored order: tfds's own builders (mnist, emnist, svhn) shuffle
  the files' order once, by a hash of each example's key; Kannada-MNIST keeps the files'.

  The dataset is prepared first if needed (see `prepare`). `split` is any tfds
  split expression ("train", "test[:1000]", ...).
  """
  # The expression and its split names ('all' is tfds's for every split), checked before a
  # preparation that may take minutes.
  try:
    tfds.core.ReadInstruction.from_spec(split)
  except ValueError:  # tfds's two lines named neither the field nor the form
    raise DataError(f'split {split!r} is not a tfds split expression: give e.g. train, '
                    'train[:1000], train[:50%] or train+extra (config field data.split)') from None
  names = [s for s in re.findall(r'([A-Za-z_]+)(?:\[[^\]]*\])?', split) if s != 'all']
  unknown = [s for s in names if s not in SPLITS.get(name, names)]
  if unknown:
    raise DataError(f'{name} has no split {", ".join(unknown)}: use one of '
                    f'{", ".join(SPLITS[name])} (a tfds split expression such as train[:1000])')
  builder = prepare(name, data_dir=data_dir, manual_dir=manual_dir)
  # A split whose files were missing when the copy was prepared (SVHN's extra) is not in it.
  # (tfds.testing.mock_data's builders list no splits: nothing to check there.)
  prepared = set(builder.info.splits)
  missing = [s for s in names if s not in prepared]
  if prepared and missing:
    raise DataError(f'the prepared copy of {name} in {builder.data_dir} has the splits '
                    f'{", ".join(sorted(prepared))}, not {", ".join(missing)}: if its files '
                    'were added after it was prepared, delete that folder to prepare it again')
  for part in split.split('+') if prepared else ():  # a sum hides an empty or reversed part
    part = part.strip()  # tfds reads 'train + test' too
    try:
      count = builder.info.splits[part].num_examples
    except ValueError as error:  # a slice past the split's end (the expression parsed above)
      reason = ' '.join(str(error).split())
      raise DataError(f'{name} split {split!r} does not fit the data ({reason}): give a slice '
                      'within the split (config field data.split)') from None
    if count <= 0:  # tfds then failed with an error naming no split, or a TensorFlow traceback
      raise DataError(f'{name} split {split!r}: {part} selects {count} examples: give a slice '
                      '[start:end] with start before end, within the split (config field '
                      'data.split)')
  chunks = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=_READ_BATCH_SIZE)))
  images = np.concatenate([chunk['image'] for chunk in chunks])
  labels = np.concatenate([chunk['label'] for chunk in chunks]).astype(np.int32)
  return images, labels


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    num_examples: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """A whole split in memory (`read_split`) as 28x28 grey digits, upright: EMNIST's images,
  stored transposed, come back upright like MNIST's; SVHN's 32x32 colour photographs come back
  in that format too (`builders.TO_DIGITS`). With `num_examples`, only that many examples are
  kept, chosen by `class_balanced_indices` (no seed involved); 0 or None keeps all.
  """
  images, labels = read_split(name, split, data_dir=data_dir, manual_dir=manual_dir)
  if name in TO_DIGITS:
    images = TO_DIGITS[name](images)
  if num_examples:  # None or 0: all (config.data.num_train_examples' 0)
    if not 1 <= num_examples <= len(labels):
      raise DataError(
          f'num_examples={num_examples} but {name} {split!r} has {len(labels)} examples: pass '
          f'1..{len(labels)}, or 0 for all (a config: --config.data.num_train_examples)'
      )
    keep = class_balanced_indices(labels, num_examples)
    images, labels = images[keep], labels[keep]
  return images, labels


def class_balanced_indices(labels: np.ndarray, num_examples: int) -> np.ndarray:
  """Sorted indices of `num_examples` examples, as evenly spread over the classes as possible.

  Classes are visited round-robin in ascending label order, each contributing its
  next example in split order: first the first example of every class, then the
  second of every class, and so on. Class counts thus differ by at most one, unless
  a class runs out of examples.
  """
  rank_in_class = np.empty(len(labels), dtype=np.int64)
  for label in np.unique(labels):
    members = labels == label
    rank_in_class[members] = np.arange(np.count_nonzero(members))
  round_robin = np.lexsort((labels, rank_in_class))  # by rank, then label
  return np.sort(round_robin[:num_examples])


class BatchIterator:
  """Endless, deterministic stream of training batches, prefetched in a background thread
  (`prefetch` > 0) or gathered when asked for (`prefetch=0`).

  Epoch e visits the examples in the order `np.random.default_rng([seed, e]).permutation(N)`,
  cut into `N // batch_size` batches (the remainder is dropped). With `example_weights`
  (probabilities, one per example, e.g. `jaxgan.rarity.rarity_weights`) an epoch is instead
  N draws with replacement, `np.random.default_rng([seed, e]).choice(N, N, p=example_weights)`;
  with `weighted_epochs=E` > 0 only epochs 0..E-1 are drawn so, later ones are permutations.
  Step s is batch `s % steps_per_epoch` of epoch `s // steps_per_epoch`, so an iterator started
  at `start_step=k` yields exactly what an uninterrupted one yields from its step k on.

  Each batch is `{"image": uint8 (B, H, W, C) pixels, "label": int32 (B,)}` where B =
  `batch_size` is the global batch: pixels, not floats, so that a quarter of the bytes are
  gathered and copied to the devices; the train step maps them to [-1, 1] there
  (`jaxgan.images.from_pixels`). Process p of P (jax.process_index/count)
  converts only rows [p*B/P, (p+1)*B/P) of it. With a `sharding` (for example
  `NamedSharding(mesh, PartitionSpec("data"))`) those rows become a global jax.Array
  sharded over the mesh; without one the process's rows are returned as numpy arrays.

  `prefetch` > 0: a background thread prepares up to that many batches ahead. Use as a context
  manager, or call `close()`, to stop it (an iterator still open when Python exits is closed
  then); an exception in the thread is raised by the `next()` call that would have returned its
  batch. `prefetch=0`: no thread, `next()` computes its batch then (see `training_batches`).
  """

  def __init__(
      self,
      images: np.ndarray,
      labels: np.ndarray,
      *,
      batch_size: int,
      seed: int,
      start_step: int = 0,
      sharding: jax.sharding.Sharding | None = None,
      prefetch: int = 2,
      example_weights: np.ndarray | None = None,
      weighted_epochs: int = 0,
  ):
    if images.dtype != np.uint8:
      raise ValueError(f'images are {images.dtype}, not uint8 pixels: pass them as load_split '
                       'returns them (the train step maps pixels to [-1, 1])')
    if len(images) != len(labels):
      raise ValueError(
          f'{len(images)} images but {len(labels)} labels: pass the arrays of one split'
      )
    if not 1 <= batch_size <= len(images):
      raise ValueError(
          f'batch_size={batch_size} must be in 1..{len(images)} (the number of examples)'
      )
    if start_step < 0:
      raise ValueError(f'start_step={start_step} must be >= 0')
    if prefetch < 0:
      raise ValueError(f'prefetch={prefetch} must be >= 0 (0: no prefetch thread)')
    if example_weights is not None and (
        np.shape(example_weights) != (len(images),) or not np.all(example_weights >= 0)
        or not np.isclose(np.sum(example_weights), 1.0)):
      raise ValueError(f'example_weights must be {len(images)} probabilities >= 0 summing to 1, '
                       'one per example')
    if weighted_epochs < 0:
      raise ValueError(f'weighted_epochs={weighted_epochs} must be >= 0 (0: every epoch)')
    self.images = images
    self.labels = labels
    self.batch_size = batch_size
    self.seed = seed
    self.sharding = sharding
    # np.isclose's tolerance is wider than rng.choice's (~1e-8): weights off by more are
    # renormalised; nearer ones are kept as they are, so that the draws stay the same.
    if example_weights is not None and abs(np.sum(example_weights) - 1.0) > 1e-9:
      example_weights = np.asarray(example_weights, np.float64) / np.sum(example_weights)
    self.example_weights = example_weights
    self.weighted_epochs = weighted_epochs
    self.steps_per_epoch = len(images) // batch_size
    self.local_rows = _local_rows(batch_size, sharding, images.shape[1:])
    self.step = start_step  # the step of the batch next() returns
    self._cached_order = (-1, np.empty(0, dtype=np.int64))  # (epoch, its epoch_order)
    self._stop = threading.Event()
    self._failure: BaseException | None = None
    self._thread = None
    if prefetch:
      self._ready: queue.Queue = queue.Queue(maxsize=prefetch)
      self._thread = threading.Thread(
          target=self._produce, args=(start_step,), daemon=True, name='BatchIterator'
      )
      self._thread.start()
    # A thread still inside jax when the interpreter exits aborts the process (rc 134,
    # "terminate called ... FATAL: exception not rethrown", after any traceback): an open
    # iterator, for example one left behind by an exception, is stopped at exit instead.
    self._stop_thread = weakref.finalize(self, _stop_and_join, self._stop, self._thread)

  def epoch_of(self, step: int) -> int:
    """The epoch that step `step` belongs to."""
    return step // self.steps_per_epoch

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The examples epoch `epoch` visits, in order: a permutation, or with `example_weights`
    (in the first `weighted_epochs`, if > 0) N weighted draws with replacement."""
    rng = np.random.default_rng([self.seed, epoch])
    if self.example_weights is None or 0 < self.weighted_epochs <= epoch:
      return rng.permutation(len(self.images))
    return rng.choice(len(self.images), size=len(self.images), p=self.example_weights)

  def batch_at(self, step: int) -> dict:
    """The (process-local part of the) batch of step `step`, computed now."""
    epoch = self.epoch_of(step)
    cached_epoch, order = self._cached_order  # one read: batch_at may run in two threads
    if cached_epoch != epoch:
      order = self.epoch_order(epoch)
      self._cached_order = (epoch, order)
    start = (step % self.steps_per_epoch) * self.batch_size
    rows = order[start + self.local_rows.start : start + self.local_rows.stop]
    batch = {
        'image': self.images[rows],
        'label': self.labels[rows].astype(np.int32),
    }
    if self.sharding is None:
      return batch
    if jax.process_count() == 1:  # the whole batch is local: one transfer call for both arrays
      return jax.device_put(batch, self.sharding)
    return {
        key: jax.make_array_from_process_local_data(
            self.sharding, local, (self.batch_size, *local.shape[1:])
        )
        for key, local in batch.items()
    }

  def __iter__(self) -> BatchIterator:
    return self

  def __next__(self) -> dict:
    if self._failure is not None:
      raise self._failure
    if self._stop.is_set():
      raise StopIteration
    batch = self.batch_at(self.step) if self._thread is None else self._ready.get()
    if isinstance(batch, BaseException):
      self._failure = batch
      raise batch
    self.step += 1
    return batch

  def close(self) -> None:
    """Stop the prefetch thread, if any; further next() calls raise StopIteration."""
    self._stop_thread()

  def __enter__(self) -> BatchIterator:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def _produce(self, step: int) -> None:
    try:
      while not self._stop.is_set():
        self._put(self.batch_at(step))
        step += 1
    except BaseException as error:  # handed to the consumer, which re-raises it
      self._put(error)

  def _put(self, item) -> None:
    """Queue `item`, waiting for room but giving up once close() is called."""
    while not self._stop.is_set():
      try:
        self._ready.put(item, timeout=0.05)
        return
      except queue.Full:
        continue


def training_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int, seed: int,
                     sharding: jax.sharding.Sharding | None, prefetch: int = -1,
                     **kwargs) -> BatchIterator:
  """The BatchIterator a training loop feeds a step from `parallel.shard_step` or `pmap_step`
  with; `kwargs` go to BatchIterator.

  `prefetch=-1` picks 0 on CPU and 2 on accelerators. With 0 there is no thread (on CPU the
  host's cores are the devices' too, and a thread handing batches over cost the mlp step more
  than it saved), and in a single process the batch stays host arrays, which the step's jit
  copies to `sharding`'s devices itself: ~10 us per batch against ~80 us for jax.device_put
  of the same arrays. With `prefetch` > 0 a thread gathers batches ahead and copies them to
  `sharding`. Batches of several processes are always global arrays on `sharding`.
  """
  if prefetch < -1:
    raise ValueError(f'prefetch={prefetch} must be >= -1 (-1: 0 on CPU, 2 on accelerators)')
  if prefetch == -1:
    prefetch = 0 if jax.default_backend() == 'cpu' else 2
  if prefetch == 0 and jax.process_count() == 1:
    sharding = None
  return BatchIterator(images, labels, batch_size=batch_size, seed=seed, sharding=sharding,
                       prefetch=prefetch, **kwargs)


def _stop_and_join(stop: threading.Event, thread: threading.Thread | None) -> None:
  stop.set()
  if thread is not None:
    thread.join()


def _local_rows(
    batch_size: int, sharding: jax.sharding.Sharding | None, example_shape: tuple
) -> slice:
  """This process's rows of every global batch; checks that the sharding agrees."""
  process_count, process_index = jax.process_count(), jax.process_index()
  if batch_size % process_count:
    raise ValueError(
        f'batch_size={batch_size} is not divisible by the {process_count} processes: '
        'pick a multiple'
    )
  rows_per_process = batch_size // process_count
  rows = slice(process_index * rows_per_process, (process_index + 1) * rows_per_process)
  if sharding is None:
    return rows
  global_shape = (batch_size, *example_shape)
  try:
    device_slices = sharding.addressable_devices_indices_map(global_shape).values()
  except ValueError:  # jax: the batch axis does not divide evenly over the devices
    raise ValueError(
        f"batch_size={batch_size} does not divide evenly over the sharding's "
        f'{len(sharding.device_set)} devices: pick a multiple of the number of devices on the '
        'batch axis'
    ) from None
  covered = [index[0].indices(batch_size)[:2] for index in device_slices]
  first_row, end_row = min(start for start, _ in covered), max(stop for _, stop in covered)
  if (first_row, end_row) != (rows.start, rows.stop):
    raise ValueError(
        f"process {process_index}'s devices hold rows [{first_row}, {end_row}) of the batch, not "
        f'[{rows.start}, {rows.stop}): build the mesh so that the devices of each process are '
        'contiguous on the batch axis (jax.make_mesh does)'
    )
  return rows
