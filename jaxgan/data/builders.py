"""tfds builders for the digit datasets and `prepare`, the one entry point to them.

`mnist`, `emnist_digits` (tfds's `emnist/digits`) and `svhn` (tfds's `svhn_cropped`) are
tfds's own catalog entries. `kannada_mnist` is defined here and registered with tfds when this
module is imported. All are prepared either online (tfds downloads and verifies the official
files) or offline from a manual dir holding the official files (IDX .gz, SVHN's .mat) in
`<manual_dir>/<name>/`; the offline preparers are unregistered subclasses that only change
where the files come from, so the prepared copy is the one `tfds.builder(TFDS_NAMES[name],
data_dir=...)` reads in both cases.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from tensorflow_datasets.core import utils as tfds_utils

from jaxgan import locks
from jaxgan.data import svhn
from jaxgan.data.idx import DataError, content_sha256, find_files, read_idx_pair

# Split -> (images file, labels file), as named in the official releases.
IDX_FILES: dict[str, dict[str, tuple[str, str]]] = {
    'mnist': {
        'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
        'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
    },
    'kannada_mnist': {
        'train': ('X_kannada_MNIST_train-idx3-ubyte.gz', 'y_kannada_MNIST_train-idx1-ubyte.gz'),
        'test': ('X_kannada_MNIST_test-idx3-ubyte.gz', 'y_kannada_MNIST_test-idx1-ubyte.gz'),
        'dig': ('X_dig_MNIST-idx3-ubyte.gz', 'y_dig_MNIST-idx1-ubyte.gz'),
    },
    # The digits of EMNIST (Cohen et al. 2017): 240,000 training and 40,000 test digits from
    # NIST Special Database 19, other writers than MNIST's. The files are in the `gzip/` folder
    # of the official gzip.zip.
    'emnist_digits': {
        'train': ('emnist-digits-train-images-idx3-ubyte.gz',
                  'emnist-digits-train-labels-idx1-ubyte.gz'),
        'test': ('emnist-digits-test-images-idx3-ubyte.gz',
                 'emnist-digits-test-labels-idx1-ubyte.gz'),
    },
}
# The SHA-256 of each official file's IDX content (decompressed): a manual dir's file of another
# content (a subset, an edited copy, another dataset under the same name, such as Fashion-MNIST's
# identically named files) still prepares, with a warning. MNIST: LeCun and Cortes's files;
# Kannada-MNIST: the release at KANNADA_MNIST_URL's commit.
ORIGINAL_CONTENT_SHA256: dict[str, dict[str, str]] = {
    'mnist': {
        'train-images-idx3-ubyte.gz':
            'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
        'train-labels-idx1-ubyte.gz':
            '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
        't10k-images-idx3-ubyte.gz':
            '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
        't10k-labels-idx1-ubyte.gz':
            'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
    },
    'kannada_mnist': {
        'X_kannada_MNIST_train-idx3-ubyte.gz':
            '105351b61538741814301e54ee5cfdac7464c0e2554e2a9967c63ef7ceaf7558',
        'y_kannada_MNIST_train-idx1-ubyte.gz':
            '42d8a31792fb59dcec85b8e5b62bd03598c1a96f4edffe6f6a3e95daac9319ef',
        'X_kannada_MNIST_test-idx3-ubyte.gz':
            'be3a7f7fd24b3eb62f28ab1e3f9e5a380738e87000f99417c14f94ca89616cf4',
        'y_kannada_MNIST_test-idx1-ubyte.gz':
            '2a4fb3eec0877aa3d4ab80d8f59374733af9b2b2966e8be0e50efe715f443a4d',
        'X_dig_MNIST-idx3-ubyte.gz':
            '80f10e9328072991d61cc2db57a8793ae4ffcf030aa8b73a37dd64787da464ae',
        'y_dig_MNIST-idx1-ubyte.gz':
            '270a721d62dee2a1e9459e0192e425c086de49f1f9610fb3d7b9f457e3dd83fe',
    },
}
DATASETS: tuple[str, ...] = (*IDX_FILES, 'svhn')
NUM_CLASSES = 10  # every dataset here: the digits 0-9
# jaxgan's dataset name -> the name tfds knows it by.
TFDS_NAMES = {'mnist': 'mnist', 'kannada_mnist': 'kannada_mnist',
              'emnist_digits': 'emnist/digits', 'svhn': 'svhn_cropped'}
# Every split of each dataset (a prepared copy of SVHN may lack `extra`, an optional file).
SPLITS: dict[str, tuple[str, ...]] = {**{name: tuple(files) for name, files in IDX_FILES.items()},
                                      'svhn': tuple(svhn.MAT_FILES)}
# The splits held out from training, scored as test sets (SVHN's `extra` is more training data).
TEST_SPLITS: dict[str, tuple[str, ...]] = {
    **{name: tuple(split for split in files if split != 'train')
       for name, files in IDX_FILES.items()},
    'svhn': ('test',),
}


def _upright(images: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(images.swapaxes(1, 2))


# Datasets whose stored images are not upright 28x28 grey digits, and what makes them so
# (`load_split` applies it): EMNIST's files store every image transposed (mirrored and rotated),
# and tfds keeps them so; SVHN's are 32x32 colour photographs.
TO_DIGITS = {'emnist_digits': _upright, 'svhn': svhn.to_mnist_format}

# Pinned to the commit whose files the checksums describe.
KANNADA_MNIST_URL = (
    'https://raw.githubusercontent.com/vinayprabhu/Kannada_MNIST/'
    'f8390ece0c6990551e6f35189ccc42757bb29c43/data/output_tensors/MNIST_format/'
)
KANNADA_MNIST_CHECKSUMS = Path(__file__).parent / 'checksums' / 'kannada_mnist.tsv'
_KANNADA_MNIST_CITATION = """\
@article{prabhu2019kannada,
  title={Kannada-MNIST: A new handwritten digits dataset for the Kannada language},
  author={Prabhu, Vinay Uday},
  journal={arXiv preprint arXiv:1908.01242},
  year={2019}
}"""


def _file_names(name: str) -> list[str]:
  return [file_name for pair in IDX_FILES[name].values() for file_name in pair]


def _required_files(name: str) -> list[str]:
  """The files a manual dir's `<name>/` folder must hold."""
  if name == 'svhn':
    return [file for split, file in svhn.MAT_FILES.items() if split not in svhn.OPTIONAL_SPLITS]
  return _file_names(name)


def _checked_idx_pair(images_path: os.PathLike,
                      labels_path: os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """A split's images and labels (`read_idx_pair`), whose labels must be digits' classes."""
  images, labels = read_idx_pair(images_path, labels_path)
  if labels.size and labels.max() >= NUM_CLASSES:  # tfds would fail with a dump of the image
    raise DataError(f'{labels_path} holds label {labels.max()}, but the digits\' classes are '
                    '0-9: use the official file')
  return images, labels


def _idx_examples(images: np.ndarray, labels: np.ndarray) -> Iterator[tuple[int, dict]]:
  """Examples keyed by position, in the record format of tfds's MNIST generator."""
  for index, (image, label) in enumerate(zip(images[..., np.newaxis], labels.astype(np.int64))):
    yield index, {'image': image, 'label': label}


class KannadaMnist(tfds.core.GeneratorBasedBuilder):
  """Kannada-MNIST (Prabhu 2019): handwritten Kannada digits, plus the Dig-MNIST split."""

  name = 'kannada_mnist'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Official IDX release; splits train, test and dig (Dig-MNIST).'}

  @tfds_utils.classproperty
  @classmethod
  def _checksums_path(cls) -> Path:
    return KANNADA_MNIST_CHECKSUMS

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            'Kannada-MNIST: 28x28 grayscale handwritten digits 0-9 in the Kannada script, in '
            'the MNIST format. Dig-MNIST is a harder out-of-domain set written by other volunteers.'
        ),
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://github.com/vinayprabhu/Kannada_MNIST',
        citation=_KANNADA_MNIST_CITATION,
        # Keep the official order, so example i of a split is image i of the official file.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    file_names = _file_names(self.name)
    paths = dl_manager.download_and_extract({f: KANNADA_MNIST_URL + f for f in file_names})
    return {
        split: self._generate_examples(paths[images], paths[labels])
        for split, (images, labels) in IDX_FILES[self.name].items()
    }

  def _generate_examples(self, images_path: os.PathLike, labels_path: os.PathLike):
    yield from _idx_examples(*_checked_idx_pair(images_path, labels_path))


def warn_unless_original(dataset: str, paths: dict[str, Path]) -> list[str]:
  """Warns about each of `paths` (file name -> path) whose content is not the official file's
  (ORIGINAL_CONTENT_SHA256); returns their names. Figures from such a copy do not compare with
  figures from the original dataset."""
  originals = ORIGINAL_CONTENT_SHA256.get(dataset, {})
  others = [name for name, path in paths.items()
            if name in originals and content_sha256(path) != originals[name]]
  for name in others:
    logging.warning('%s is not the original %s file (its content\'s SHA-256 differs from '
                    '%s...): preparing from it anyway, but no figure from this copy compares '
                    'with figures from the original dataset', paths[name], dataset,
                    originals[name][:16])
  return others


class _FromManualDir:
  """Mixin for a builder: read dataset `dataset`'s official files (IDX, unless the builder says
  otherwise) from a folder instead of downloading them."""

  dataset: str
  config_name: str | None = None  # the tfds builder config, for builders that have several

  def __init__(self, *, folder: os.PathLike, **kwargs):
    self._folder = Path(folder)
    if self.config_name:
      kwargs['config'] = self.config_name
    super().__init__(**kwargs)

  # Nothing is downloaded, so no checksums file. (This also skips tfds's lookup of
  # the builder's code path, which needs importlib_resources: tensorflow/datasets#11212.)
  @tfds_utils.classproperty
  @classmethod
  def _checksums_path(cls) -> None:
    return None

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    del dl_manager  # Nothing to download.
    file_names = _file_names(self.dataset)
    paths = dict(zip(file_names, find_files(self._folder, file_names)))
    # Every file read and checked first: a damaged one is named at once, not after a warning
    # that its content differs from the original's and a preparation of the splits before it.
    splits = {split: _checked_idx_pair(paths[images], paths[labels])
              for split, (images, labels) in IDX_FILES[self.dataset].items()}
    warn_unless_original(self.dataset, paths)
    return {split: _idx_examples(*arrays) for split, arrays in splits.items()}


class _MnistFromManualDir(_FromManualDir, tfds.image_classification.MNIST, skip_registration=True):
  """tfds's `mnist` (same name, version and info) prepared from local IDX files.

  tfds's own download would fail offline, and local .gz files may differ from the
  original downloads in their gzip headers, so they cannot pass its checksums.
  """

  name = 'mnist'
  dataset = 'mnist'


class _KannadaMnistFromManualDir(_FromManualDir, KannadaMnist, skip_registration=True):
  name = 'kannada_mnist'
  dataset = 'kannada_mnist'


class _EmnistFromManualDir(_FromManualDir, tfds.image_classification.EMNIST,
                           skip_registration=True):
  """tfds's `emnist/digits` prepared from local IDX files (the official download is one 535 MB
  zip of all six configs)."""

  name = 'emnist'
  dataset = 'emnist_digits'
  config_name = 'digits'


_SvhnCropped = tfds.builder_cls('svhn_cropped')


class _SvhnFromManualDir(_FromManualDir, _SvhnCropped, skip_registration=True):
  """tfds's `svhn_cropped` prepared from the official .mat files; `extra_32x32.mat` (1.3 GB) may
  be left out, and the prepared copy then holds the train and test splits only."""

  name = 'svhn_cropped'
  dataset = 'svhn'

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    del dl_manager  # Nothing to download.
    find_files(self._folder, _required_files(self.dataset))
    return {split: self._mat_examples(split, self._folder / file)
            for split, file in svhn.MAT_FILES.items() if (self._folder / file).is_file()}

  def _mat_examples(self, split: str, path: Path) -> Iterator[tuple[int, dict]]:
    """The records of tfds's own generator: keys by position, ids `<split>_<position>`."""
    images, labels = svhn.read_mat(path)
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {'image': image, 'label': label, 'id': f'{split}_{index:06d}'}


_FROM_MANUAL_DIR = {'mnist': _MnistFromManualDir, 'kannada_mnist': _KannadaMnistFromManualDir,
                    'emnist_digits': _EmnistFromManualDir, 'svhn': _SvhnFromManualDir}
# What a manual dir's `<name>/` folder holds, for error messages.
MANUAL_FILES = {**{name: 'the IDX .gz files' for name in IDX_FILES},
                'svhn': "SVHN's train_32x32.mat and test_32x32.mat (extra_32x32.mat optional)"}

# Where each dataset's official files come from (tfds's MNIST mirror; ours above; NIST's;
# Stanford's).
DOWNLOAD_URLS = {
    'mnist': 'https://storage.googleapis.com/cvdf-datasets/mnist/',
    'kannada_mnist': KANNADA_MNIST_URL,
    'emnist_digits': tfds.image_classification.EMNIST.URL,
    'svhn': svhn.DOWNLOAD_URL,
}


def check_reachable(url: str, timeout_s: float = 10.0) -> None:
  """Raises OSError unless `url`'s server answers.

  tfds retries a failed download for minutes; one request first makes an offline
  machine fail in seconds. Any HTTP answer, even an error status, means the network
  works, so only a failed connection counts.
  """
  try:
    urllib.request.urlopen(urllib.request.Request(url, method='HEAD'), timeout=timeout_s).close()
  except urllib.error.HTTPError:
    pass
  except urllib.error.URLError as error:
    raise OSError(f'{url}: {error.reason}') from error


def _downloads_for_real(builder: tfds.core.DatasetBuilder) -> bool:
  # tfds.testing.mock_data swaps download_and_prepare for a no-op defined in its own
  # module: then there is nothing to download, and offline machines must not fail.
  return not type(builder).download_and_prepare.__module__.startswith(
      'tensorflow_datasets.testing')


def prepare(
    name: str,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
) -> tfds.core.DatasetBuilder:
  """The tfds builder of dataset `name`, prepared in `data_dir` and ready to read.

  If `data_dir` (default: tfds's, which respects TFDS_DATA_DIR) already holds the
  prepared dataset, nothing else happens. Otherwise the dataset is prepared from
  official files in `<manual_dir>/<name>/` (MANUAL_FILES) when `manual_dir` is given, else
  from the official files downloaded by tfds.
  """
  data_dir = None if data_dir is None else os.fspath(data_dir)
  builder = check_preparable(name, data_dir, manual_dir)
  if builder.is_prepared():
    return builder
  with _preparing_alone(builder.data_dir_root, TFDS_NAMES[name]):
    builder = tfds.builder(TFDS_NAMES[name], data_dir=data_dir)
    if builder.is_prepared():  # by the process this one waited for
      return builder
    # tfds removes its temporary folders when preparing fails, not the dataset's own folder.
    folder = os.path.join(builder.data_dir_root, TFDS_NAMES[name].split('/')[0])
    made_here = not os.path.exists(folder)
    try:
      return _prepare(name, builder, data_dir, manual_dir)
    except BaseException:
      if made_here:
        _remove_failed_preparation(folder)
      raise


def _remove_failed_preparation(top: str) -> None:
  """Removes the dataset folder `top` that a failed preparation made: tfds's note of the
  builder config it was asked for (`.config/metadata.json`, datasets with configs such as
  emnist/digits), then `top` and the folders below it that hold no files, deepest first."""
  with contextlib.suppress(OSError):
    os.remove(os.path.join(top, '.config', 'metadata.json'))
  for folder, _, _ in os.walk(top, topdown=False):
    try:
      os.rmdir(folder)
    except OSError:  # holds a file, or is not ours to remove
      pass


def check_preparable(name: str, data_dir: str | os.PathLike | None = None,
                     manual_dir: str | os.PathLike | None = None) -> tfds.core.DatasetBuilder:
  """The tfds builder of dataset `name` in `data_dir`, prepared or not; a DataError, before
  anything is made in `data_dir` (which may be another machine's, named by a copied run), if
  it is not prepared there and `manual_dir` lacks its files. Each process of a multi-process
  run asks first: all of them say what is missing, not just the one that prepares."""
  if name not in DATASETS:
    raise DataError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
  builder = tfds.builder(TFDS_NAMES[name], data_dir=data_dir)
  if manual_dir is not None and _downloads_for_real(builder) and not builder.is_prepared():
    find_files(Path(manual_dir) / name, _required_files(name))
  return builder


@contextlib.contextmanager
def _preparing_alone(root: os.PathLike, tfds_name: str) -> Iterator[None]:
  """Waits for, then holds, a lock beside the prepared copies in `root`: processes of one machine
  preparing a dataset there at once (two scripts started together on a new data folder) raced
  to rename tfds's folder, and all but one failed. Remote folders (gs://), systems without
  flock (Windows) and file systems that take no locks go unguarded."""
  root = os.fspath(root)
  if '://' in root:
    yield
    return
  lock_name = f'.{tfds_name.replace("/", "_")}.preparing.lock'  # emnist/digits: no folder
  lock_path = os.path.join(root, lock_name)
  try:
    os.makedirs(root, exist_ok=True)
    lock_file = open(lock_path, 'a')  # pylint: disable=consider-using-with
  except OSError as error:  # not a folder, not writable: errno's line named neither setting
    raise DataError(f'cannot prepare {tfds_name} in {root} ({error.strerror.lower()}): set '
                    'TFDS_DATA_DIR or --config.data.data_dir (scripts that read a run: '
                    '--data_dir) to a folder you can write') from None
  with lock_file as f:
    unlockable = locks.lock(f, wait=True)
    if unlockable:
      logging.warning('%s cannot be locked (%s): preparing %s unguarded', f.name, unlockable,
                      tfds_name)
    yield


def _prepare(name: str, builder: tfds.core.DatasetBuilder, data_dir: str | None,
             manual_dir: str | os.PathLike | None) -> tfds.core.DatasetBuilder:
  if manual_dir is None:
    try:
      if _downloads_for_real(builder):
        check_reachable(DOWNLOAD_URLS[name])
      builder.download_and_prepare()
    except OSError as error:  # includes requests' connection errors
      reason = ' '.join(f'{type(error).__name__}: {error}'.split())
      raise DataError(
          f'could not download and prepare {name} in {builder.data_dir_root} ({reason}): check '
          f'the network and disk, or pass manual_dir=DIR with {MANUAL_FILES[name]} in DIR/{name}/ '
          f'(experiment scripts: JAXGAN_MANUAL_DIR=DIR or --config.data.manual_dir=DIR)'
      ) from error
    return builder
  preparer = _FROM_MANUAL_DIR[name](folder=Path(manual_dir) / name, data_dir=data_dir)
  preparer.download_and_prepare()
  return tfds.builder(TFDS_NAMES[name], data_dir=data_dir)
