"""Tests of jaxgan.data on tiny IDX (and SVHN .mat) files written here (and, opt-in, on the real
datasets)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import logging
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds
from jax.sharding import NamedSharding, PartitionSpec

from jaxgan import images as images_lib
from jaxgan.data import DATASETS, BatchIterator, DataError, load_split, prepare, training_batches
from jaxgan.data import builders, svhn
from jaxgan.data.idx import IMAGES_MAGIC, LABELS_MAGIC, find_files
from jaxgan.data.idx import read_idx_images, read_idx_labels, read_idx_pair
from jaxgan.data.pipeline import class_balanced_indices
from tests.idx_files import tiny_digits, tiny_photos, write_idx, write_manual_dir, write_svhn_mat

REPO = Path(__file__).resolve().parent.parent

# Folder holding the real mnist/ and kannada_mnist/ IDX files, for the real_data tests.
REAL_MANUAL_DIR = os.environ.get('JAXGAN_MANUAL_DIR')
needs_real_data = pytest.mark.skipif(
    not REAL_MANUAL_DIR,
    reason='set JAXGAN_MANUAL_DIR to the folder holding mnist/ and kannada_mnist/',
)

# Examples per split of the tiny datasets.
TINY_SIZES = {
    'mnist': {'train': 30, 'test': 10},
    'kannada_mnist': {'train': 30, 'test': 10, 'dig': 20},
    'emnist_digits': {'train': 30, 'test': 10},
    'svhn': {'train': 30, 'test': 10},
}


@pytest.fixture(scope='module')
def manual_dir(tmp_path_factory) -> tuple[Path, dict]:
  """A manual dir with tiny versions of all IDX files, and the arrays: name -> split -> arrays."""
  root = tmp_path_factory.mktemp('manual')
  return root, write_manual_dir(root, TINY_SIZES)


@pytest.fixture(scope='module')
def data_dir(manual_dir, tmp_path_factory) -> Path:
  """A tfds data dir with both tiny datasets prepared from the manual dir."""
  root = tmp_path_factory.mktemp('tfds')
  for name in DATASETS:
    prepare(name, data_dir=root, manual_dir=manual_dir[0])
  return root


def full_split(builder: tfds.core.DatasetBuilder, split: str) -> tuple[np.ndarray, np.ndarray]:
  data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  return data['image'], data['label']


def sorted_examples(images: np.ndarray, labels: np.ndarray) -> list[tuple[int, bytes]]:
  """The examples as an order-free list, to compare splits that tfds stored shuffled."""
  return sorted(
      zip(labels.tolist(), (image.tobytes() for image in images.reshape(len(images), -1)))
  )


def no_download(*args, **kwargs):
  raise AssertionError('download_and_prepare was called on a prepared dataset')


# --- idx.py ---------------------------------------------------------------------------


@pytest.mark.parametrize('compress', [True, False])
def test_read_idx_pair_returns_the_arrays_written(tmp_path, compress):
  images, labels = tiny_digits(7, seed=0)
  read_images, read_labels = read_idx_pair(
      write_idx(tmp_path / 'images', images, compress=compress),
      write_idx(tmp_path / 'labels', labels, compress=compress),
  )
  assert read_images.dtype == np.uint8 and read_images.shape == (7, 28, 28)
  assert read_labels.dtype == np.uint8 and read_labels.shape == (7,)
  np.testing.assert_array_equal(read_images, images)
  np.testing.assert_array_equal(read_labels, labels)


def assert_one_line_error(read, *fragments: str) -> None:
  with pytest.raises(DataError) as error:
    read()
  message = str(error.value)
  assert '\n' not in message
  for fragment in fragments:
    assert fragment in message, f'{fragment!r} not in {message!r}'


def test_wrong_magic_number_names_file_and_both_numbers(tmp_path):
  images, labels = tiny_digits(3, seed=0)
  labels_as_images = write_idx(tmp_path / 'swapped-images.gz', images, magic=LABELS_MAGIC)
  images_as_labels = write_idx(tmp_path / 'swapped-labels.gz', labels, magic=IMAGES_MAGIC)
  assert_one_line_error(
      lambda: read_idx_images(labels_as_images),
      'swapped-images.gz',
      'wrong magic number 2049',
      'expected 2051',
  )
  assert_one_line_error(
      lambda: read_idx_labels(images_as_labels),
      'swapped-labels.gz',
      'wrong magic number 2051',
      'expected 2049',
  )


def test_truncated_file_names_expected_and_found_sizes(tmp_path):
  images, labels = tiny_digits(3, seed=0)
  expected = 16 + 3 * 28 * 28
  short_images = write_idx(tmp_path / 'short-images.gz', images, truncate=100)
  short_labels = write_idx(tmp_path / 'short-labels', labels, truncate=1, compress=False)
  assert_one_line_error(
      lambda: read_idx_images(short_images),
      'short-images.gz',
      'truncated',
      f'{expected} bytes',
      f'found {expected - 100}',
  )
  assert_one_line_error(
      lambda: read_idx_labels(short_labels), 'short-labels', 'truncated', '11 bytes', 'found 10'
  )
  header_only = tmp_path / 'stub.gz'
  header_only.write_bytes(gzip.compress(b'\x00\x00\x08'))
  assert_one_line_error(
      lambda: read_idx_images(header_only), 'stub.gz', 'truncated', '16-byte IDX header'
  )


def test_file_longer_than_its_header_says_is_rejected(tmp_path):
  path = tmp_path / 'long-labels.gz'
  path.write_bytes(gzip.compress(struct.pack('>II', LABELS_MAGIC, 2) + bytes(5)))
  assert_one_line_error(
      lambda: read_idx_labels(path), 'long-labels.gz', 'too long', '10 bytes', 'found 13'
  )


def test_images_that_are_not_28x28_are_rejected(tmp_path):
  path = write_idx(tmp_path / 'small-images.gz', np.zeros((2, 27, 28)))
  assert_one_line_error(lambda: read_idx_images(path), 'small-images.gz', '27x28', 'expected 28x28')


def test_count_mismatch_names_both_files_and_counts(tmp_path):
  images, labels = tiny_digits(5, seed=0)
  images_path = write_idx(tmp_path / 'five-images.gz', images)
  labels_path = write_idx(tmp_path / 'four-labels.gz', labels[:4])
  assert_one_line_error(
      lambda: read_idx_pair(images_path, labels_path),
      'five-images.gz has 5 images',
      'four-labels.gz has 4 labels',
  )


def test_an_idx_path_that_cannot_be_read_names_the_file_and_the_fix(tmp_path, monkeypatch):
  folder = tmp_path / 'train-images-idx3-ubyte.gz'
  folder.mkdir()
  assert_one_line_error(lambda: read_idx_images(folder), f'{folder}: cannot read it (is a '
                        'directory): make it a file this user can read, or copy or download the '
                        'file again to a folder of yours')
  # Permission bits do not stop root, who runs CI here: the error is raised as open() would.
  def denied(path):
    raise PermissionError(13, 'Permission denied', str(path))
  monkeypatch.setattr(Path, 'read_bytes', denied)
  assert_one_line_error(lambda: read_idx_images(folder), f'{folder}: cannot read it '
                        '(permission denied)')


def test_corrupt_gzip_is_reported_as_such(tmp_path):
  images, _ = tiny_digits(5, seed=0)
  path = write_idx(tmp_path / 'cut-images.gz', images)
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  assert_one_line_error(lambda: read_idx_images(path), 'cut-images.gz', 'corrupt gzip')


def test_missing_folder_and_missing_files_list_what_is_expected(tmp_path):
  names = ['a-images.gz', 'a-labels.gz', 'b-images.gz']
  assert_one_line_error(
      lambda: find_files(tmp_path / 'absent', names), 'absent not found', ', '.join(names)
  )
  (tmp_path / 'a-labels.gz').write_bytes(b'')
  assert_one_line_error(
      lambda: find_files(tmp_path, names),
      'missing a-images.gz, b-images.gz',
      f"expected all of: {', '.join(names)}",
  )
  for name in names:
    (tmp_path / name).write_bytes(b'')
  assert find_files(tmp_path, names) == [tmp_path / name for name in names]


# --- builders.py ----------------------------------------------------------------------


def test_unknown_dataset_name_lists_the_known_ones():
  assert_one_line_error(
      lambda: prepare('fashion_mnist'), "unknown dataset 'fashion_mnist'", 'mnist, kannada_mnist'
  )


def test_missing_manual_folder_is_reported_before_anything_is_written(tmp_path):
  """Not even the data folder: a run copied from another machine names that machine's
  folders, which were made here (with the lock and tfds's downloads/) before this error."""
  assert_one_line_error(
      lambda: prepare('kannada_mnist', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'nowhere'),
      str(tmp_path / 'nowhere' / 'kannada_mnist'),
      'not found',
      'X_dig_MNIST-idx3-ubyte.gz',
      '(JAXGAN_MANUAL_DIR, --config.data.manual_dir, --manual_dir) or at a data folder where '
      'the dataset is prepared (TFDS_DATA_DIR, --config.data.data_dir, --data_dir)',
  )
  write_manual_dir(tmp_path / 'manual', {'svhn': {'train': 2}})
  assert_one_line_error(
      lambda: prepare('svhn', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual'),
      'missing test_32x32.mat')
  assert os.listdir(tmp_path) == ['manual']


def test_a_split_the_dataset_does_not_have_lists_those_it_has(tmp_path):
  write_manual_dir(tmp_path / 'manual', {'mnist': {'train': 5, 'test': 3},
                                         'kannada_mnist': {'train': 2, 'test': 2, 'dig': 2}})
  for split in ('validation', 'trian[:10]', 'train+tset'):
    assert_one_line_error(
        lambda: load_split('mnist', split, data_dir=tmp_path / 'tfds',
                           manual_dir=tmp_path / 'manual'),
        f'mnist has no split {split.split("+")[-1].partition("[")[0]}: use one of train, test '
        '(a tfds split expression such as train[:1000])')
  assert not (tmp_path / 'tfds').exists()  # said before minutes of preparing, not after
  images, _ = load_split('mnist', 'all', data_dir=tmp_path / 'tfds',
                         manual_dir=tmp_path / 'manual')
  assert len(images) == 8  # tfds's name for every split
  assert_one_line_error(
      lambda: load_split('kannada_mnist', 'validation', data_dir=tmp_path / 'tfds',
                         manual_dir=tmp_path / 'manual'),
      'kannada_mnist has no split validation: use one of train, test, dig ')


def test_a_split_selecting_no_examples_or_past_the_end_is_named_with_the_field(tmp_path):
  """tfds said 'Instruction [] corresponds to no data!' for an empty slice and TensorFlow
  raised a FailedPreconditionError traceback for a reversed one, also inside a sum."""
  write_manual_dir(tmp_path / 'manual', {'kannada_mnist': {'train': 6, 'test': 3, 'dig': 2}})
  load = lambda split: load_split('kannada_mnist', split, data_dir=tmp_path / 'tfds',
                                  manual_dir=tmp_path / 'manual')
  for split, part, count in (('train[:0]', 'train[:0]', 0), ('train[6:]', 'train[6:]', 0),
                             ('train[4:2]', 'train[4:2]', -2),
                             ('test+train[4:2]', 'train[4:2]', -2)):
    assert_one_line_error(lambda: load(split), (
        f'kannada_mnist split {split!r}: {part} selects {count} examples: give a slice '
        '[start:end] with start before end, within the split (config field data.split)'))
  assert_one_line_error(lambda: load('train[:7]'), (
      "kannada_mnist split 'train[:7]' does not fit the data (Requested slice [:7] incompatible "
      'with 6 examples.): give a slice within the split (config field data.split)'))
  assert len(load('train[4:]+test[:1]')[1]) == 3
  assert len(load('train[4:] + test[:1]')[1]) == 3  # tfds reads spaces around + too


@pytest.mark.parametrize('split', ['', 'train[:abc]'])
def test_a_split_that_is_no_tfds_expression_names_the_form_and_the_field(tmp_path, split):
  assert_one_line_error(
      lambda: load_split('mnist', split, data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'm'),
      f'split {split!r} is not a tfds split expression: give e.g. train, train[:1000], '
      'train[:50%] or train+extra (config field data.split)')
  assert not (tmp_path / 'tfds').exists()


def test_kannada_mnist_is_registered_with_its_declared_info(tmp_path):
  builder = tfds.builder('kannada_mnist', data_dir=tmp_path)
  assert isinstance(builder, builders.KannadaMnist)
  assert str(builder.version) == '1.0.0'
  assert builder.info.features['image'].shape == (28, 28, 1)
  assert builder.info.features['image'].np_dtype == np.uint8
  assert builder.info.features['label'].num_classes == 10
  assert builder.info.supervised_keys == ('image', 'label')


def test_kannada_mnist_prepared_from_manual_dir_reads_back_through_plain_tfds(
    manual_dir, data_dir, monkeypatch
):
  builder = tfds.builder('kannada_mnist', data_dir=data_dir)
  split_sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
  assert split_sizes == TINY_SIZES['kannada_mnist']
  for split, (images, labels) in manual_dir[1]['kannada_mnist'].items():
    read_images, read_labels = full_split(builder, split)
    np.testing.assert_array_equal(read_images, images[..., np.newaxis])  # official order kept
    np.testing.assert_array_equal(read_labels, labels)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_download)
  again = prepare('kannada_mnist', data_dir=data_dir)  # no manual dir needed any more
  assert isinstance(again, builders.KannadaMnist) and again.data_dir == builder.data_dir


def test_mnist_prepared_from_manual_dir_reads_back_through_plain_tfds(
    manual_dir, data_dir, monkeypatch
):
  builder = tfds.builder('mnist', data_dir=data_dir)
  assert type(builder) is tfds.image_classification.MNIST
  assert Path(builder.data_dir) == data_dir / 'mnist' / '3.0.1'
  split_sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
  assert split_sizes == TINY_SIZES['mnist']
  for split, (images, labels) in manual_dir[1]['mnist'].items():
    read_images, read_labels = full_split(builder, split)
    assert read_images.shape == (len(images), 28, 28, 1)
    assert sorted_examples(read_images, read_labels) == sorted_examples(images, labels)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_download)
  assert prepare('mnist', data_dir=data_dir).data_dir == builder.data_dir


_PREPARE = """
import sys
from jaxgan.data import prepare
prepare('mnist', data_dir=sys.argv[1], manual_dir=sys.argv[2])
"""


def test_processes_preparing_one_dataset_at_once_wait_for_each_other(tmp_path):
  """Two scripts started together on a new data folder: tfds alone let both prepare, and the
  second to finish failed renaming its folder onto the first's (FileExistsError)."""
  manual = tmp_path / 'manual'
  write_manual_dir(manual, {'mnist': {'train': 40, 'test': 10}})
  processes = [subprocess.Popen([sys.executable, '-c', _PREPARE, str(tmp_path / 'tfds'),
                                 str(manual)], cwd=REPO, stderr=subprocess.PIPE, text=True)
               for _ in range(3)]
  errors = [p.communicate(timeout=300)[1] for p in processes]
  assert [p.returncode for p in processes] == [0, 0, 0], errors
  assert sorted(os.listdir(tmp_path / 'tfds' / 'mnist')) == ['3.0.1']


def test_emnist_digits_prepared_from_manual_dir_is_tfds_emnist_and_loads_upright(
    manual_dir, data_dir, monkeypatch
):
  builder = tfds.builder('emnist/digits', data_dir=data_dir)
  assert type(builder) is tfds.image_classification.EMNIST
  assert Path(builder.data_dir) == data_dir / 'emnist' / 'digits' / '3.1.0'
  assert builder.info.features['label'].num_classes == 10
  split_sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
  assert split_sizes == TINY_SIZES['emnist_digits']
  for split, (images, labels) in manual_dir[1]['emnist_digits'].items():
    # tfds keeps the files' transposed images; load_split turns them upright.
    assert sorted_examples(*full_split(builder, split)) == sorted_examples(images, labels)
    upright, read_labels = load_split('emnist_digits', split, data_dir=data_dir)
    assert upright.shape == (len(images), 28, 28, 1) and upright.flags.c_contiguous
    assert sorted_examples(upright, read_labels) == sorted_examples(images.swapaxes(1, 2), labels)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_download)
  assert prepare('emnist_digits', data_dir=data_dir).data_dir == builder.data_dir


def test_svhn_prepared_from_manual_dir_is_tfds_svhn_cropped_and_loads_as_grey_28x28(
    manual_dir, data_dir, monkeypatch
):
  builder = tfds.builder('svhn_cropped', data_dir=data_dir)
  assert type(builder) is tfds.builder_cls('svhn_cropped')
  assert Path(builder.data_dir) == data_dir / 'svhn_cropped' / '3.1.0'
  split_sizes = {split: info.num_examples for split, info in builder.info.splits.items()}
  assert split_sizes == TINY_SIZES['svhn']  # no extra_32x32.mat, so no extra split
  for split, (photos, labels) in manual_dir[1]['svhn'].items():
    assert sorted_examples(*full_split(builder, split)) == sorted_examples(photos, labels)
    images, read_labels = load_split('svhn', split, data_dir=data_dir)
    assert images.dtype == np.uint8 and images.shape == (len(photos), 28, 28, 1)
    assert sorted_examples(images, read_labels) == sorted_examples(
        svhn.to_mnist_format(photos), labels)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_download)
  assert prepare('svhn', data_dir=data_dir).data_dir == builder.data_dir


def test_a_split_added_after_preparing_names_the_folder_to_delete(tmp_path):
  write_manual_dir(tmp_path / 'manual', {'svhn': {'train': 6, 'test': 4}})
  load_split('svhn', 'test', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual')
  folder = tfds.builder('svhn_cropped', data_dir=tmp_path / 'tfds').data_dir
  assert_one_line_error(
      lambda: load_split('svhn', 'train+extra[:3]', data_dir=tmp_path / 'tfds'),
      f'the prepared copy of svhn in {folder} has the splits test, train, not extra: if its '
      'files were added after it was prepared, delete that folder to prepare it again')


def test_files_other_than_the_official_ones_prepare_with_a_warning_naming_each(tmp_path, caplog):
  """Fashion-MNIST's files carry MNIST's names: only their content tells them apart."""
  write_manual_dir(tmp_path / 'manual', {'mnist': {'train': 5, 'test': 3}})
  folder = tmp_path / 'manual' / 'mnist'
  official = folder / 'train-labels-idx1-ubyte.gz'
  with pytest.MonkeyPatch.context() as patch:  # one file "official": the others are named
    patch.setitem(builders.ORIGINAL_CONTENT_SHA256['mnist'], official.name,
                  hashlib.sha256(gzip.decompress(official.read_bytes())).hexdigest())
    images, _ = load_split('mnist', 'test', data_dir=tmp_path / 'tfds',
                           manual_dir=tmp_path / 'manual')
  assert images.shape == (3, 28, 28, 1)  # prepared anyway
  warned = [record.getMessage() for record in caplog.records
            if 'is not the original' in record.getMessage()]
  assert sorted(warned) == sorted(
      f'{folder / name} is not the original mnist file (its content\'s SHA-256 differs from '
      f'{builders.ORIGINAL_CONTENT_SHA256["mnist"][name][:16]}...): preparing from it anyway, but '
      'no figure from this copy compares with figures from the original dataset'
      for name in ('train-images-idx3-ubyte.gz', 't10k-images-idx3-ubyte.gz',
                   't10k-labels-idx1-ubyte.gz'))
  # Datasets without recorded digests are not checked.
  assert builders.warn_unless_original('emnist_digits', {'x': official}) == []


def test_a_label_outside_0_to_9_is_one_line_naming_the_file(tmp_path):
  arrays = write_manual_dir(tmp_path / 'manual', {'mnist': {'train': 5, 'test': 3}})
  labels = arrays['mnist']['test'][1].copy()
  labels[1] = 12
  path = tmp_path / 'manual' / 'mnist' / 't10k-labels-idx1-ubyte.gz'
  write_idx(path, labels)
  assert_one_line_error(
      lambda: load_split('mnist', 'test', data_dir=tmp_path / 'tfds',
                         manual_dir=tmp_path / 'manual'),
      f"{path} holds label 12, but the digits' classes are 0-9: use the official file")


@pytest.mark.parametrize('name', ['mnist', 'emnist_digits'])
def test_a_failed_preparation_leaves_no_dataset_folder_and_the_next_one_succeeds(name, tmp_path):
  """A damaged file: the error names it, and the dataset folder that tfds had made is gone
  (emnist's held tfds's note of the builder config, .config/metadata.json)."""
  write_manual_dir(tmp_path / 'manual', {name: {'train': 5, 'test': 3}})
  path = tmp_path / 'manual' / name / builders.IDX_FILES[name]['test'][0]
  whole = path.read_bytes()
  path.write_bytes(whole[:len(whole) // 2])
  assert_one_line_error(
      lambda: prepare(name, data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual'),
      str(path), 'corrupt gzip')
  assert not (tmp_path / 'tfds' / builders.TFDS_NAMES[name].split('/')[0]).exists()
  path.write_bytes(whole)
  assert prepare(name, data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual').is_prepared()


def test_a_damaged_file_is_named_before_any_split_is_prepared_or_content_warned_of(tmp_path,
                                                                                  caplog):
  """A test file of gzip that holds no IDX images (a labels file under its name) was named only
  after the train split was prepared, and after a warning that its content was not the
  original's."""
  write_manual_dir(tmp_path / 'manual', {'mnist': {'train': 5, 'test': 3}})
  path = tmp_path / 'manual' / 'mnist' / builders.IDX_FILES['mnist']['test'][0]
  write_idx(path, tiny_digits(3, seed=0)[1], magic=LABELS_MAGIC)
  with caplog.at_level(logging.WARNING):
    assert_one_line_error(
        lambda: prepare('mnist', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual'),
        str(path), 'truncated: found 11 bytes, shorter than the 16-byte IDX header')
  assert 'is not the original' not in caplog.text
  assert not (tmp_path / 'tfds' / 'mnist').exists()


def test_svhn_extra_split_is_prepared_when_its_file_is_there(tmp_path):
  arrays = write_manual_dir(tmp_path / 'manual', {'svhn': {'train': 6, 'test': 4, 'extra': 5}})
  builder = prepare('svhn', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual')
  assert {split: info.num_examples for split, info in builder.info.splits.items()} == {
      'train': 6, 'test': 4, 'extra': 5}
  images, labels = load_split('svhn', 'train+extra', data_dir=tmp_path / 'tfds')
  photos = np.concatenate([arrays['svhn'][split][0] for split in ('train', 'extra')])
  stored_labels = np.concatenate([arrays['svhn'][split][1] for split in ('train', 'extra')])
  assert sorted_examples(images, labels) == sorted_examples(svhn.to_mnist_format(photos),
                                                             stored_labels)


def test_offline_svhn_generates_what_tfds_svhn_cropped_generates(tmp_path):
  """Same keys and records (ids included) as tfds's own generator reading the same file."""
  photos, labels = tiny_photos(7, seed=5)
  path = write_svhn_mat(tmp_path / 'svhn' / 'test_32x32.mat', photos, labels)
  write_svhn_mat(tmp_path / 'svhn' / 'train_32x32.mat', *tiny_photos(2, seed=6))
  tfds_svhn = tfds.builder_cls('svhn_cropped')(data_dir=tmp_path / 'tfds')
  theirs = list(tfds_svhn._generate_examples(split_prefix='test_', filepath=path))
  offline = builders._SvhnFromManualDir(folder=tmp_path / 'svhn', data_dir=tmp_path / 'tfds')
  ours = list(offline._split_generators(dl_manager=None)['test'])
  assert offline.name == tfds_svhn.name and offline.version == tfds_svhn.version
  features = offline.info.features.get_serialized_info()
  assert features == tfds_svhn.info.features.get_serialized_info()
  assert [key for key, _ in ours] == [key for key, _ in theirs] == list(range(7))
  for (_, our_record), (_, their_record) in zip(ours, theirs):
    assert our_record['id'] == their_record['id']
    for feature in ('image', 'label'):
      assert our_record[feature].dtype == their_record[feature].dtype
      np.testing.assert_array_equal(our_record[feature], their_record[feature])
  np.testing.assert_array_equal([record['label'] for _, record in ours], labels)


def test_svhn_online_downloads_the_official_files_and_prepares_what_offline_does(
    manual_dir, data_dir, tmp_path, monkeypatch
):
  """The online path (tfds's own svhn_cropped builder), the network replaced by the tiny files
  (and a one-digit extra split, which tfds always downloads)."""
  requested, checked = [], []

  def download(self, urls):
    requested.extend(sorted(urls.values()))
    folder = tmp_path / 'downloads'
    files = {split: folder / Path(url).name for split, url in urls.items()}
    for split, path in files.items():
      if split == 'extra':
        write_svhn_mat(path, *tiny_photos(1, seed=0))
      else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((manual_dir[0] / 'svhn' / svhn.MAT_FILES[split]).read_bytes())
    return files

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', download)
  monkeypatch.setattr(builders, 'check_reachable', checked.append)
  online = prepare('svhn', data_dir=tmp_path / 'tfds')
  assert requested == sorted(svhn.DOWNLOAD_URL + file for file in svhn.MAT_FILES.values())
  assert checked == [svhn.DOWNLOAD_URL]
  assert type(online) is tfds.builder_cls('svhn_cropped')
  offline = tfds.builder('svhn_cropped', data_dir=data_dir)
  for split in TINY_SIZES['svhn']:
    assert sorted_examples(*full_split(online, split)) == sorted_examples(
        *full_split(offline, split))


def test_svhn_files_that_are_missing_or_malformed_are_named_with_the_fix(tmp_path):
  folder = tmp_path / 'manual' / 'svhn'
  assert_one_line_error(
      lambda: prepare('svhn', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual'),
      str(folder), 'not found', 'train_32x32.mat, test_32x32.mat')
  write_svhn_mat(folder / 'train_32x32.mat', *tiny_photos(3, seed=0))
  assert_one_line_error(
      lambda: prepare('svhn', data_dir=tmp_path / 'tfds', manual_dir=tmp_path / 'manual'),
      'missing test_32x32.mat', 'copy the missing files there')
  assert not tfds.builder('svhn_cropped', data_dir=tmp_path / 'tfds').is_prepared()
  path = folder / 'test_32x32.mat'
  whole = write_svhn_mat(tmp_path / 'whole.mat', *tiny_photos(3, seed=1)).read_bytes()
  # scipy fails in other ways at other lengths (IndexError for 4-126 bytes).
  for contents in (b'not a MATLAB file', b'not a mat file at all', whole[:100], whole[:200]):
    path.write_bytes(contents)
    assert_one_line_error(lambda: svhn.read_mat(path), str(path), 'not a readable MATLAB file',
                          'ufldl.stanford.edu/housenumbers')
  photos, labels = tiny_photos(3, seed=1)
  for arrays, problem in (
      ({'images': np.moveaxis(photos, 0, 3)}, 'holds no X (images) and y (labels)'),
      ({'X': np.moveaxis(photos, 0, 3)[:28, :28], 'y': labels[:, None] + 1},
       'X is uint8 (28, 28, 3, 3), expected uint8 (32, 32, 3, N)'),
      ({'X': np.moveaxis(photos, 0, 3), 'y': labels[:2, None] + 1},
       'X holds 3 images but y has shape (2, 1), expected (3, 1)'),
      ({'X': np.moveaxis(photos, 0, 3), 'y': np.array([[3], [0], [10]])},
       'labels range over 0..10, expected 1..10 (10 for the digit 0)'),
  ):
    scipy.io.savemat(path, arrays)
    assert_one_line_error(lambda: svhn.read_mat(path), str(path), problem)
  assert_one_line_error(lambda: svhn.read_mat(tmp_path / 'absent.mat'), 'absent.mat',
                        'file not found')


def test_svhn_photographs_become_grey_28x28_digits_by_luma_and_area_averaging():
  weights = svhn.area_weights(32, 28)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0)
  np.testing.assert_allclose(weights.sum(axis=0), 28 / 32)  # every source pixel counts alike
  np.testing.assert_allclose(weights[0, :2], [7 / 8, 1 / 8])  # output pixel 0 covers [0, 8/7)
  flat = np.zeros((2, 32, 32, 3), np.uint8)
  flat[0] = (200, 100, 50)
  flat[1] = (255, 255, 255)
  grey = svhn.to_mnist_format(flat)
  assert grey.dtype == np.uint8 and grey.shape == (2, 28, 28, 1)
  assert (grey[0] == round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)).all()  # 124
  assert (grey[1] == 255).all()
  # A white square over source pixels [2, 10) each way: output pixel 1 ([8/7, 16/7)) is a
  # quarter covered, 2..7 wholly, 8 ([64/7, 80/7)) three quarters.
  square = np.zeros((1, 32, 32, 3), np.uint8)
  square[0, 2:10, 2:10] = 255
  small = svhn.to_mnist_format(square)[0, ..., 0]
  expected = [0, 64, 255, 255, 255, 255, 255, 255, 191, 0, 0]
  np.testing.assert_array_equal(small[5, :11], expected)
  np.testing.assert_array_equal(small[:11, 5], expected)
  # A bar, not a square, so that a transposed photograph shows: source rows [2, 10), columns
  # [16, 32) stay in rows 1..8 and columns 14..27 (a square's test cannot tell the axes apart).
  bar = np.zeros((1, 32, 32, 3), np.uint8)
  bar[0, 2:10, 16:] = 255
  small = svhn.to_mnist_format(bar)[0, ..., 0]
  rows, cols = np.nonzero(small)
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (1, 8, 14, 27)
  assert_one_line_error(lambda: svhn.to_mnist_format(np.zeros((1, 28, 28, 1), np.uint8)),
                        'expected uint8 (32, 32, 3)')


def test_offline_mnist_generates_what_tfds_mnist_generates(tmp_path):
  """Same keys and records as tfds's own generator (which reads the decompressed downloads)."""
  images, labels = tiny_digits(12, seed=3)
  train_images, train_labels = builders.IDX_FILES['mnist']['train']
  write_idx(tmp_path / 'mnist' / train_images, images)
  write_idx(tmp_path / 'mnist' / train_labels, labels)
  for test_file, array in zip(builders.IDX_FILES['mnist']['test'], tiny_digits(2, seed=4)):
    write_idx(tmp_path / 'mnist' / test_file, array)
  tfds_mnist = tfds.image_classification.MNIST(data_dir=tmp_path / 'tfds')
  theirs = list(
      tfds_mnist._generate_examples(
          num_examples=12,
          data_path=write_idx(tmp_path / 'plain-images', images, compress=False),
          label_path=write_idx(tmp_path / 'plain-labels', labels, compress=False),
      )
  )
  offline = builders._MnistFromManualDir(folder=tmp_path / 'mnist', data_dir=tmp_path / 'tfds')
  ours = list(offline._split_generators(dl_manager=None)['train'])
  assert offline.name == tfds_mnist.name and offline.version == tfds_mnist.version
  features = offline.info.features.get_serialized_info()
  assert features == tfds_mnist.info.features.get_serialized_info()
  assert [key for key, _ in ours] == [key for key, _ in theirs]
  for (_, our_record), (_, their_record) in zip(ours, theirs):
    for feature in ('image', 'label'):
      assert type(our_record[feature]) is type(their_record[feature])
      assert our_record[feature].dtype == their_record[feature].dtype
      np.testing.assert_array_equal(our_record[feature], their_record[feature])


def test_kannada_mnist_online_downloads_the_checksummed_official_files(
    manual_dir, tmp_path, monkeypatch
):
  """The online path, the network replaced by the tiny files; each URL must have a checksum."""
  requested = []

  def download_and_extract(self, urls):
    requested.extend(urls.values())
    paths = {}
    for file_name, url in urls.items():
      assert url == builders.KANNADA_MNIST_URL + file_name
      # tfds hands over the decompressed download.
      plain = tmp_path / 'extracted' / file_name.removesuffix('.gz')
      plain.parent.mkdir(exist_ok=True)
      plain.write_bytes(gzip.decompress((manual_dir[0] / 'kannada_mnist' / file_name).read_bytes()))
      paths[file_name] = plain
    return paths

  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract', download_and_extract)
  monkeypatch.setattr(builders, 'check_reachable', lambda url: None)
  builder = prepare('kannada_mnist', data_dir=tmp_path / 'tfds')
  url_infos = builders.KannadaMnist.url_infos
  assert sorted(requested) == sorted(url_infos)
  assert {info.filename for info in url_infos.values()} == {Path(url).name for url in requested}
  np.testing.assert_array_equal(
      full_split(builder, 'dig')[1], manual_dir[1]['kannada_mnist']['dig'][1]
  )


def test_emnist_digits_online_reads_the_digits_files_of_nists_zip_as_offline_does(
    manual_dir, data_dir, tmp_path, monkeypatch
):
  """The online path (tfds's own EMNIST builder), the network replaced by the tiny files: the
  prepared copy holds what the manual dir's does."""
  requested, checked = [], []

  def download_and_extract(self, url):
    requested.append(url)
    folder = tmp_path / 'gzip.zip' / 'gzip'  # the zip's layout, extracted
    folder.mkdir(parents=True)
    for file_name in builders._file_names('emnist_digits'):
      (folder / file_name).write_bytes((manual_dir[0] / 'emnist_digits' / file_name).read_bytes())
    return tmp_path / 'gzip.zip'

  def extract(self, paths):  # tfds hands over the decompressed files
    plain = {key: Path(str(path).removesuffix('.gz')) for key, path in paths.items()}
    for key, path in paths.items():
      plain[key].write_bytes(gzip.decompress(Path(path).read_bytes()))
    return plain

  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract', download_and_extract)
  monkeypatch.setattr(tfds.download.DownloadManager, 'extract', extract)
  monkeypatch.setattr(builders, 'check_reachable', checked.append)
  # tfds's EMNIST reads as many digits as its config says the official files hold.
  digits = tfds.image_classification.EMNIST.builder_configs['digits']
  monkeypatch.setattr(digits, 'train_examples', TINY_SIZES['emnist_digits']['train'])
  monkeypatch.setattr(digits, 'test_examples', TINY_SIZES['emnist_digits']['test'])
  online = prepare('emnist_digits', data_dir=tmp_path / 'tfds')
  assert requested == checked == [tfds.image_classification.EMNIST.URL]
  assert type(online) is tfds.image_classification.EMNIST
  offline = tfds.builder('emnist/digits', data_dir=data_dir)
  for split in TINY_SIZES['emnist_digits']:
    assert sorted_examples(*full_split(online, split)) == sorted_examples(
        *full_split(offline, split))


def test_failed_download_says_to_use_a_manual_dir(tmp_path, monkeypatch):
  def unreachable(self, **kwargs):
    raise ConnectionError("Failed to resolve 'raw.githubusercontent.com'\n(retries exhausted)")

  monkeypatch.setattr(builders.KannadaMnist, 'download_and_prepare', unreachable)
  monkeypatch.setattr(builders, 'check_reachable', lambda url: None)
  assert_one_line_error(
      lambda: prepare('kannada_mnist', data_dir=tmp_path),
      'could not download and prepare kannada_mnist',
      'raw.githubusercontent.com',
      'manual_dir=DIR',
      'DIR/kannada_mnist/',
  )


def test_offline_without_a_manual_dir_fails_before_tfds_retries(tmp_path, monkeypatch):
  """A refused connection stops at once, with the fix, before tfds's minutes of retries."""
  def no_download(self, **kwargs):
    raise AssertionError('download_and_prepare ran although the server is unreachable')

  # Port 9 (discard) on localhost: nothing listens, so the connection is refused.
  monkeypatch.setitem(builders.DOWNLOAD_URLS, 'mnist', 'http://127.0.0.1:9/mnist/')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_download)
  assert_one_line_error(
      lambda: prepare('mnist', data_dir=tmp_path),
      'could not download and prepare mnist',
      'http://127.0.0.1:9/mnist/',
      'manual_dir=DIR',
  )


def test_any_http_answer_counts_as_reachable():
  """An error status still proves the network works; tfds then reports what it got."""
  class NotFound(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
      self.send_error(404)

    def log_message(self, *args):
      pass

  with http.server.ThreadingHTTPServer(('127.0.0.1', 0), NotFound) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    builders.check_reachable(f'http://127.0.0.1:{server.server_port}/missing/')
    server.shutdown()


# --- pipeline.py: load_split ----------------------------------------------------------


def test_load_split_returns_the_whole_split_in_memory(manual_dir, data_dir):
  images, labels = load_split('kannada_mnist', 'test', data_dir=data_dir)
  expected_images, expected_labels = manual_dir[1]['kannada_mnist']['test']
  assert images.dtype == np.uint8 and images.shape == (10, 28, 28, 1)
  assert labels.dtype == np.int32 and labels.shape == (10,)
  np.testing.assert_array_equal(images[..., 0], expected_images)
  np.testing.assert_array_equal(labels, expected_labels)


def test_load_split_num_examples_is_a_deterministic_class_balanced_subset(data_dir):
  images, labels = load_split('mnist', 'train', data_dir=data_dir)
  some_images, some_labels = load_split('mnist', 'train', data_dir=data_dir, num_examples=12)
  again_images, again_labels = load_split('mnist', 'train', data_dir=data_dir, num_examples=12)
  np.testing.assert_array_equal(some_images, again_images)
  np.testing.assert_array_equal(some_labels, again_labels)
  keep = class_balanced_indices(labels, 12)
  np.testing.assert_array_equal(some_images, images[keep])
  np.testing.assert_array_equal(some_labels, labels[keep])
  assert_one_line_error(
      lambda: load_split('mnist', 'train', data_dir=data_dir, num_examples=31),
      'num_examples=31',
      '30 examples',
      'pass 1..30, or 0 for all (a config: --config.data.num_train_examples)',
  )
  all_images, _ = load_split('mnist', 'train', data_dir=data_dir, num_examples=0)
  np.testing.assert_array_equal(all_images, images)  # the config field's 0


def test_class_balanced_indices_go_round_robin_over_the_classes():
  labels = np.array([2, 0, 0, 0, 1, 2, 2, 0])
  # Round 1: first 0 (index 1), first 1 (4), first 2 (0); round 2: second 0 (2), second 2 (5); ...
  np.testing.assert_array_equal(class_balanced_indices(labels, 3), [0, 1, 4])
  np.testing.assert_array_equal(class_balanced_indices(labels, 4), [0, 1, 2, 4])  # mid-round
  np.testing.assert_array_equal(class_balanced_indices(labels, 5), [0, 1, 2, 4, 5])
  np.testing.assert_array_equal(class_balanced_indices(labels, 8), np.arange(8))


def test_load_split_works_on_tfds_mock_data_offline(monkeypatch):
  # Offline (a refused connection): mock data has nothing to download, so no reachability check.
  monkeypatch.setattr(builders, 'DOWNLOAD_URLS',
                      {name: 'http://127.0.0.1:9/' for name in builders.DOWNLOAD_URLS})
  with tfds.testing.mock_data(num_examples=8):
    for name, split in (('mnist', 'train'), ('kannada_mnist', 'dig'), ('emnist_digits', 'test'),
                        ('svhn', 'test')):
      images, labels = load_split(name, split)
      assert images.dtype == np.uint8 and images.shape == (8, 28, 28, 1)
      assert labels.dtype == np.int32 and labels.shape == (8,)
      with BatchIterator(images, labels, batch_size=4, seed=0) as batches:
        assert next(batches)['image'].shape == (4, 28, 28, 1)


# --- pipeline.py: BatchIterator -------------------------------------------------------


def indexed_examples(count: int) -> tuple[np.ndarray, np.ndarray]:
  """Images whose every pixel is the example's index, so a batch shows which examples it holds."""
  indices = np.arange(count, dtype=np.uint8)[:, None, None, None]
  images = np.broadcast_to(indices, (count, 28, 28, 1)).copy()
  return images, (np.arange(count) % 10).astype(np.int32)


def example_indices(batch: dict) -> np.ndarray:
  return np.asarray(batch['image'])[:, 0, 0, 0].astype(int)


def take(count: int, *args, **kwargs) -> list[dict]:
  with BatchIterator(*args, **kwargs) as batches:
    return [next(batches) for _ in range(count)]


def test_batches_have_the_right_shapes_dtypes_and_values():
  """Batches carry the examples' pixels (uint8) and labels; the step maps pixels to [-1, 1]."""
  images, labels = indexed_examples(23)
  for batch in take(12, images, labels, batch_size=5, seed=0):
    assert batch['image'].dtype == np.uint8 and batch['image'].shape == (5, 28, 28, 1)
    assert batch['label'].dtype == np.int32 and batch['label'].shape == (5,)
    np.testing.assert_array_equal(batch['image'], images[example_indices(batch)])
    np.testing.assert_array_equal(batch['label'], labels[example_indices(batch)])


def test_images_other_than_pixels_are_refused():
  images, labels = indexed_examples(8)
  with pytest.raises(ValueError, match='^images are float32, not uint8 pixels: pass them as '
                     r'load_split returns them \(the train step maps pixels to \[-1, 1\]\)$'):
    BatchIterator(images.astype(np.float32), labels, batch_size=4, seed=0)


def test_pixels_map_onto_minus_one_to_one_as_numpy_divides_them():
  """All 256 values, on the device and on the host, bit for bit numpy's x / 127.5 - 1 (XLA's own
  division by a constant rounds 205 of them differently)."""
  pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
  expected = pixels.astype(np.float32) / 127.5 - 1.0
  for converted in (images_lib.from_pixels(pixels), jax.jit(images_lib.from_pixels)(pixels)):
    converted = np.asarray(converted)
    assert converted.dtype == np.float32
    np.testing.assert_array_equal(converted.view(np.uint32), expected.view(np.uint32))
  assert expected.min() == -1.0 and expected.max() == 1.0


def test_each_epoch_visits_every_example_exactly_once():
  images, labels = indexed_examples(20)
  batches = take(12, images, labels, batch_size=5, seed=7)
  epochs = [
      np.concatenate([example_indices(b) for b in batches[start : start + 4]])
      for start in (0, 4, 8)
  ]
  for epoch in epochs:
    assert sorted(epoch) == list(range(20))
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch


def test_the_remainder_is_dropped():
  images, labels = indexed_examples(23)
  with BatchIterator(images, labels, batch_size=5, seed=1) as batches:
    assert batches.steps_per_epoch == 4
    assert [batches.epoch_of(step) for step in (0, 3, 4, 7, 8)] == [0, 0, 1, 1, 2]
    for epoch in range(3):
      indices = np.concatenate([example_indices(next(batches)) for _ in range(4)])
      np.testing.assert_array_equal(indices, batches.epoch_order(epoch)[:20])
    assert batches.step == 12


def test_same_seed_same_batches_and_other_seed_other_batches():
  images, labels = indexed_examples(23)
  first = take(6, images, labels, batch_size=5, seed=3)
  second = take(6, images, labels, batch_size=5, seed=3)
  other = take(6, images, labels, batch_size=5, seed=4)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  assert not all(
      np.array_equal(example_indices(a), example_indices(c)) for a, c in zip(first, other)
  )
  epoch_zero = np.random.default_rng([3, 0]).permutation(23)
  np.testing.assert_array_equal(example_indices(first[0]), epoch_zero[:5])


@pytest.mark.parametrize('start_step', [1, 4, 9])
def test_starting_at_a_step_resumes_the_uninterrupted_stream(start_step):
  images, labels = indexed_examples(23)
  uninterrupted = take(start_step + 5, images, labels, batch_size=5, seed=11)
  resumed = take(5, images, labels, batch_size=5, seed=11, start_step=start_step)
  for expected, batch in zip(uninterrupted[start_step:], resumed):
    np.testing.assert_array_equal(batch['image'], expected['image'])
    np.testing.assert_array_equal(batch['label'], expected['label'])


def test_example_weights_make_epochs_of_weighted_draws_with_replacement():
  images, labels = indexed_examples(20)
  weights = np.zeros(20)
  weights[[2, 5, 11]] = [0.5, 0.25, 0.25]
  batches = take(8, images, labels, batch_size=5, seed=7, example_weights=weights)
  drawn = np.concatenate([example_indices(b) for b in batches])
  assert set(drawn) == {2, 5, 11}  # weight 0: never drawn; an epoch repeats examples
  np.testing.assert_array_equal(
      drawn[:20], np.random.default_rng([7, 0]).choice(20, size=20, p=weights))
  resumed = take(3, images, labels, batch_size=5, seed=7, start_step=5, example_weights=weights)
  for expected, batch in zip(batches[5:], resumed):
    np.testing.assert_array_equal(batch['image'], expected['image'])
  # Weights np.isclose takes for probabilities but rng.choice would refuse: renormalised.
  nearly = take(4, images, labels, batch_size=5, seed=7, example_weights=weights * (1 + 5e-6))
  for expected, batch in zip(batches, nearly):
    np.testing.assert_array_equal(batch['image'], expected['image'])


def test_weighted_epochs_limits_the_weighted_draws_to_the_first_epochs():
  images, labels = indexed_examples(20)
  weights = np.zeros(20)
  weights[[2, 5, 11]] = [0.5, 0.25, 0.25]
  batches = take(12, images, labels, batch_size=5, seed=7, example_weights=weights,
                 weighted_epochs=2)
  drawn = np.concatenate([example_indices(b) for b in batches])
  assert set(drawn[:40]) == {2, 5, 11}  # epochs 0 and 1: weighted draws
  np.testing.assert_array_equal(drawn[40:], np.random.default_rng([7, 2]).permutation(20))
  resumed = take(3, images, labels, batch_size=5, seed=7, start_step=7, example_weights=weights,
                 weighted_epochs=2)
  for expected, batch in zip(batches[7:], resumed):
    np.testing.assert_array_equal(batch['image'], expected['image'])


def test_each_process_gets_its_contiguous_part_of_the_global_batch(monkeypatch):
  images, labels = indexed_examples(23)
  global_batches = take(5, images, labels, batch_size=6, seed=2)
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  for process in (0, 1):
    monkeypatch.setattr(jax, 'process_index', lambda: process)
    local_batches = take(5, images, labels, batch_size=6, seed=2)
    for local, full in zip(local_batches, global_batches):
      np.testing.assert_array_equal(local['image'], full['image'][3 * process : 3 * process + 3])
      np.testing.assert_array_equal(local['label'], full['label'][3 * process : 3 * process + 3])
  with pytest.raises(ValueError, match='batch_size=5 is not divisible by the 2 processes'):
    BatchIterator(images, labels, batch_size=5, seed=2)


def test_batches_are_sharded_onto_a_one_device_mesh():
  images, labels = indexed_examples(23)
  sharding = NamedSharding(jax.make_mesh((1,), ('data',)), PartitionSpec('data'))
  expected = take(3, images, labels, batch_size=5, seed=5)
  sharded = take(3, images, labels, batch_size=5, seed=5, sharding=sharding)
  for batch, reference in zip(sharded, expected):
    for key in ('image', 'label'):
      assert isinstance(batch[key], jax.Array) and batch[key].sharding == sharding
      assert batch[key].dtype == reference[key].dtype
      np.testing.assert_array_equal(np.asarray(batch[key]), reference[key])


@pytest.mark.skipif(jax.device_count() < 2, reason='needs several (possibly fake) devices')
def test_batches_are_sharded_over_all_devices():
  devices = jax.device_count()
  images, labels = indexed_examples(4 * devices + 3)
  sharding = NamedSharding(jax.make_mesh((devices,), ('data',)), PartitionSpec('data'))
  (expected,) = take(1, images, labels, batch_size=2 * devices, seed=6)
  (batch,) = take(1, images, labels, batch_size=2 * devices, seed=6, sharding=sharding)
  for key in ('image', 'label'):
    assert batch[key].sharding == sharding
    for shard in batch[key].addressable_shards:
      assert shard.data.shape[0] == 2
      np.testing.assert_array_equal(np.asarray(shard.data), expected[key][shard.index])
  with pytest.raises(ValueError, match=f"over the sharding's {devices} devices"):
    BatchIterator(images, labels, batch_size=devices + 1, seed=6, sharding=sharding)


@pytest.mark.parametrize('prefetch', [2, 0])
def test_an_error_making_a_batch_reaches_the_consumer(monkeypatch, prefetch):
  batch_at = BatchIterator.batch_at

  def fails_at_step_two(self, step):
    if step == 2:
      raise RuntimeError('no batch for step 2')
    return batch_at(self, step)

  monkeypatch.setattr(BatchIterator, 'batch_at', fails_at_step_two)
  images, labels = indexed_examples(23)
  with BatchIterator(images, labels, batch_size=5, seed=0, prefetch=prefetch) as batches:
    next(batches), next(batches)
    for _ in range(2):  # and again on every later call
      with pytest.raises(RuntimeError, match='no batch for step 2'):
        next(batches)


def test_close_stops_the_thread_and_ends_the_iteration():
  images, labels = indexed_examples(23)
  with BatchIterator(images, labels, batch_size=5, seed=0, prefetch=1) as batches:
    next(batches)
    time.sleep(0.1)  # let the thread block on the full queue
  assert not batches._thread.is_alive()
  with pytest.raises(StopIteration):
    next(batches)


@pytest.mark.parametrize('start_step', [0, 7])
def test_without_a_prefetch_thread_the_stream_is_the_same(start_step):
  images, labels = indexed_examples(23)
  weights = np.arange(1, 24) / np.arange(1, 24).sum()
  for options in ({}, dict(example_weights=weights, weighted_epochs=2)):
    options.update(batch_size=5, seed=3, start_step=start_step)
    with BatchIterator(images, labels, prefetch=0, **options) as batches:
      assert batches._thread is None
      inline = [next(batches) for _ in range(11)]  # past two epoch ends
    for batch, expected in zip(inline, take(11, images, labels, **options)):
      np.testing.assert_array_equal(batch['image'], expected['image'])
      np.testing.assert_array_equal(batch['label'], expected['label'])
    with pytest.raises(StopIteration):  # closed
      next(batches)


def test_training_batches_on_cpu_are_host_arrays_made_without_a_thread():
  """The trainer's default (prefetch -1) on CPU: no thread, numpy batches even with a
  sharding, which the step's jit copies itself; prefetch > 0 keeps the thread and the copy."""
  images, labels = indexed_examples(23)
  sharding = NamedSharding(jax.make_mesh((1,), ('data',)), PartitionSpec('data'))
  expected = take(2, images, labels, batch_size=5, seed=4)
  with training_batches(images, labels, batch_size=5, seed=4, sharding=sharding) as batches:
    assert batches._thread is None and batches.sharding is None
    for reference in expected:
      batch = next(batches)
      assert isinstance(batch['image'], np.ndarray) and isinstance(batch['label'], np.ndarray)
      np.testing.assert_array_equal(batch['image'], reference['image'])
  with training_batches(images, labels, batch_size=5, seed=4, sharding=sharding,
                        prefetch=2) as batches:
    assert batches._thread is not None and next(batches)['image'].sharding == sharding
  with pytest.raises(ValueError, match=r'^prefetch=-2 must be >= -1 \(-1: 0 on CPU, 2 on '
                     r'accelerators\)$'):
    training_batches(images, labels, batch_size=5, seed=4, sharding=None, prefetch=-2)


_LEFT_OPEN = """
import jax
import jax.numpy as jnp
import numpy as np
from jaxgan.data import BatchIterator

@jax.jit
def slow(x):  # about a second of XLA work, inside which the thread sits when Python exits
  return jax.lax.fori_loop(0, 200, lambda i, y: jnp.tanh(y @ y), x)

class SlowBatches(BatchIterator):
  def batch_at(self, step):
    jax.block_until_ready(slow(jnp.full((256, 256), 0.01)))
    return super().batch_at(step)

images, labels = np.zeros((64, 28, 28), np.uint8), np.zeros(64, np.int64)
batches = SlowBatches(images, labels, batch_size=8, seed=0)
next(batches)
raise RuntimeError('a failed step')  # leaves the iterator open, its thread inside jax
"""


def test_an_iterator_left_open_does_not_abort_the_interpreter_at_exit():
  """Without the stop at exit this run ends in a C++ abort after the traceback (rc 134,
  "terminate called ... FATAL: exception not rethrown"), 3 times out of 3."""
  result = subprocess.run([sys.executable, '-c', _LEFT_OPEN], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 1, result.stderr[-2000:]
  assert result.stderr.rstrip().endswith('RuntimeError: a failed step'), result.stderr[-2000:]


def test_invalid_arguments_are_rejected_with_the_fix():
  images, labels = indexed_examples(23)
  with pytest.raises(ValueError, match='batch_size=24 must be in 1..23'):
    BatchIterator(images, labels, batch_size=24, seed=0)
  with pytest.raises(ValueError, match='23 images but 22 labels'):
    BatchIterator(images, labels[:22], batch_size=4, seed=0)
  with pytest.raises(ValueError, match=r'prefetch=-1 must be >= 0 \(0: no prefetch thread\)'):
    BatchIterator(images, labels, batch_size=4, seed=0, prefetch=-1)
  for weights in (np.full(22, 1 / 22), np.full(23, 0.1), -np.eye(23)[0] + 2 * np.eye(23)[1]):
    with pytest.raises(ValueError, match='example_weights must be 23 probabilities >= 0 summing '
                                         'to 1, one per example'):
      BatchIterator(images, labels, batch_size=4, seed=0, example_weights=weights)
  with pytest.raises(ValueError, match=r'weighted_epochs=-1 must be >= 0 \(0: every epoch\)'):
    BatchIterator(images, labels, batch_size=4, seed=0, weighted_epochs=-1)


# --- real data (opt-in) ---------------------------------------------------------------


def split_labels(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
  """The labels of a split, read without decoding its images (which takes most of the time)."""
  skip_images = {'image': tfds.decode.SkipDecoding()}
  dataset = builder.as_dataset(split=split, batch_size=-1, decoders=skip_images)
  return tfds.as_numpy(dataset)['label']


@pytest.mark.real_data
@needs_real_data
def test_real_datasets_prepare_with_the_published_sizes_and_class_counts():
  # tfds's default data dir (TFDS_DATA_DIR), so the other real-data tests read this copy instead
  # of preparing their own (~50 s each); preparing from IDX files is pinned on tiny data above.
  manual_dir = Path(REAL_MANUAL_DIR)
  mnist = prepare('mnist', manual_dir=manual_dir)
  splits = mnist.info.splits
  assert {split: info.num_examples for split, info in splits.items()} == {
      'train': 60000,
      'test': 10000,
  }
  # The same bytes as tfds's own prepared mnist 3.0.1 (sizes from its published metadata).
  assert {split: info.num_bytes for split, info in splits.items()} == {
      'train': 18872042,
      'test': 3150056,
  }
  # tfds stores mnist in key-hash order, so the original order is checked in the files themselves.
  assert read_idx_labels(manual_dir / 'mnist' / 'train-labels-idx1-ubyte.gz')[0] == 5
  assert read_idx_labels(manual_dir / 'mnist' / 't10k-labels-idx1-ubyte.gz')[0] == 7
  mnist_class_counts = {
      'train': [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
      'test': [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
  }
  for split, class_counts in mnist_class_counts.items():
    assert np.bincount(split_labels(mnist, split)).tolist() == class_counts

  kannada = prepare('kannada_mnist', manual_dir=manual_dir)
  split_sizes = {'train': 60000, 'test': 10000, 'dig': 10240}
  assert {split: info.num_examples for split, info in kannada.info.splits.items()} == split_sizes
  for split, size in split_sizes.items():
    labels = split_labels(kannada, split)
    assert np.bincount(labels).tolist() == [size // 10] * 10
    np.testing.assert_array_equal(labels, np.arange(size) % 10)  # official order: position mod 10

  images, labels = load_split('mnist', 'test')  # prepared: no manual dir
  assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
  assert (images.min(), images.max()) == (0, 255)
  assert np.bincount(labels).tolist() == mnist_class_counts['test']


@pytest.mark.real_data
@needs_real_data
def test_the_shared_files_are_the_official_ones_by_their_content_digests():
  for dataset in builders.ORIGINAL_CONTENT_SHA256:
    folder = Path(REAL_MANUAL_DIR) / dataset
    paths = {name: folder / name for name in builders.ORIGINAL_CONTENT_SHA256[dataset]}
    assert sorted(paths) == sorted(builders._file_names(dataset))
    assert builders.warn_unless_original(dataset, paths) == []


@pytest.mark.real_data
@needs_real_data
def test_kannada_checksums_are_those_of_the_release_rebuilt_from_the_manual_dir():
  """The official .gz files: the IDX content gzipped by Python (level 9, stored name, mtimes)."""
  header_mtimes = {
      'X_kannada_MNIST_train-idx3-ubyte.gz': 1564465188,
      'y_kannada_MNIST_train-idx1-ubyte.gz': 1564465205,
      'X_kannada_MNIST_test-idx3-ubyte.gz': 1564465205,
      'y_kannada_MNIST_test-idx1-ubyte.gz': 1564465208,
      'X_dig_MNIST-idx3-ubyte.gz': 1564466096,
      'y_dig_MNIST-idx1-ubyte.gz': 1564465188,
  }
  url_infos = builders.KannadaMnist.url_infos
  assert sorted(info.filename for info in url_infos.values()) == sorted(header_mtimes)
  for url, info in url_infos.items():
    shared_file = Path(REAL_MANUAL_DIR) / 'kannada_mnist' / info.filename
    content = gzip.decompress(shared_file.read_bytes())
    release = io.BytesIO()
    stored_name = info.filename.removesuffix('.gz')
    with gzip.GzipFile(stored_name, 'wb', 9, release, mtime=header_mtimes[info.filename]) as gz:
      gz.write(content)
    release_bytes = release.getvalue()
    digest = hashlib.sha256(release_bytes).hexdigest()
    assert (len(release_bytes), digest) == (info.size, info.checksum), url
