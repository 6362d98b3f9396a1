"""jaxgan.atomic: files are replaced whole, and a failed write leaves neither half a file nor
a temporary behind."""
import contextlib
import errno
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxgan import atomic, generate, images
from jaxgan.run_folder import write_json_atomic


def test_a_finished_block_replaces_the_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / 'record.json'
  path.write_text('old')
  with atomic.replacing(path) as tmp:
    assert os.path.dirname(tmp) == str(tmp_path)
    with open(tmp, 'w') as f:
      f.write('new')
    assert path.read_text() == 'old'  # nothing visible until the block ends
  assert path.read_text() == 'new'
  assert os.listdir(tmp_path) == ['record.json']


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
  path = tmp_path / 'record.json'
  path.write_text('old')
  with pytest.raises(RuntimeError, match='disk full'):
    with atomic.replacing(path) as tmp:
      with open(tmp, 'w') as f:
        f.write('half')
      raise RuntimeError('disk full')
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['record.json']


def test_a_full_disk_is_named_with_the_file_and_the_old_file_is_kept(tmp_path):
  path = tmp_path / 'digits.npz'
  path.write_text('old')
  with pytest.raises(OSError, match=rf'^no space left on the disk to write {re.escape(str(path))}'
                                    r': free some, then run the command again \(the file is as '
                                    r'it was\)$'):
    with atomic.replacing(path) as tmp:
      with open(tmp, 'w') as f:
        f.write('half')
      raise OSError(errno.ENOSPC, 'No space left on device')
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['digits.npz']


def test_a_folder_that_cannot_be_written_is_named_not_the_temporary(tmp_path):
  path = tmp_path / 'eval.json'
  with pytest.raises(OSError, match=rf'^cannot write {re.escape(str(path))} \(read-only file '
                                    r'system\): write it to a folder you can write$'):
    with atomic.replacing(path):
      raise OSError(errno.EROFS, 'Read-only file system')


def test_an_unwritable_folder_is_found_before_any_work(tmp_path, monkeypatch):
  """Checked with os.access, which a read-only mount fails even for root (root passes a
  folder's permission bits, so they are faked here)."""
  locked = tmp_path / 'shared_runs'
  locked.mkdir()
  real_access = os.access
  monkeypatch.setattr(atomic.os, 'access',
                      lambda path, mode: path != str(locked) and real_access(path, mode))
  assert atomic.unwritable_folder(locked / 'run' / 'config.json') == str(locked)
  assert atomic.unwritable_folder(locked / 'eval.json') == str(locked)
  assert atomic.unwritable_folder(tmp_path / 'new' / 'deeper' / 'x.npz') is None
  assert atomic.nearest_existing_parent(tmp_path / 'new' / 'deeper' / 'x.npz') == str(tmp_path)


def test_the_writers_leave_nothing_behind_when_the_target_is_a_folder(tmp_path):
  """The rename fails (a folder has the name): an error, the folder untouched, no temporary."""
  for name, write in [
      ('digits.npz', lambda p: generate.save_npz_atomic(p, images=np.zeros((2, 28, 28)))),
      ('grid.png', lambda p: images.save_atomic(images.grid(np.zeros((4, 28, 28), np.uint8),
                                                            2), p)),
      ('eval.json', lambda p: write_json_atomic({'fcd': 1.0}, p)),
  ]:
    (tmp_path / name).mkdir()
    with pytest.raises(OSError):
      write(str(tmp_path / name))
    assert os.listdir(tmp_path / name) == []
  assert sorted(os.listdir(tmp_path)) == ['digits.npz', 'eval.json', 'grid.png']


def test_pictures_written_together_are_all_replaced_or_none_is(tmp_path):
  """interpolate's strip and GIF: a full disk at the GIF left a new strip beside the old GIF."""
  strip, gif = str(tmp_path / 'walk.png'), str(tmp_path / 'walk.gif')
  old = images.grid(np.zeros((4, 28, 28), np.uint8), 2)
  first, settings = images.gif_settings([old, old], 100)
  images.save_together([(old, strip, {}), (first, gif, settings)])
  before = {path: open(path, 'rb').read() for path in (strip, gif)}

  class DiskFull:
    def save(self, path, **kwargs):
      del kwargs
      with open(path, 'wb') as f:
        f.write(b'half')
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  new = images.grid(np.full((4, 28, 28), 255, np.uint8), 2)
  with pytest.raises(OSError, match=f'^no space left on the disk to write {re.escape(gif)}: '):
    images.save_together([(new, strip, {}), (DiskFull(), gif, {})])
  assert {path: open(path, 'rb').read() for path in (strip, gif)} == before
  assert sorted(os.listdir(tmp_path)) == ['walk.gif', 'walk.png']
  images.save_together([(new, strip, {}), (first, gif, settings)])
  assert open(strip, 'rb').read() != before[strip]


def test_digits_and_their_grid_are_renamed_together(tmp_path):
  """experiments.sample --out --grid: a grid that cannot be written leaves the old digits."""
  out, grid = tmp_path / 'digits.npz', tmp_path / 'digits.png'
  generate.save_npz_atomic(str(out), images=np.zeros((2, 28, 28), np.uint8))
  before = out.read_bytes()
  with pytest.raises(OSError):
    with contextlib.ExitStack() as outputs:
      outputs.enter_context(generate.npz_written(str(out), images=np.ones((2, 28, 28), np.uint8)))
      (tmp_path / 'digits.png').mkdir()  # the grid's rename fails
      outputs.enter_context(images.picture_written(images.grid(np.ones((4, 28, 28), np.uint8), 2),
                                                   str(grid)))
  assert out.read_bytes() == before
  assert sorted(os.listdir(tmp_path)) == ['digits.npz', 'digits.png']


def test_temporaries_left_by_a_killed_writer_on_this_machine_are_removed(tmp_path, caplog):
  """SIGKILL runs no clean-up: the next write of the same file removes what such a writer left,
  and only that (a live writer's temporary, or another host's, is not this write's to remove)."""
  ended = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                         capture_output=True, text=True, check=True)
  host = socket.gethostname()
  orphan = f'digits.npz.tmp-{host}-{int(ended.stdout)}.npz'
  kept = [f'digits.npz.tmp-{host}-{os.getppid()}.npz',  # a live process
          f'digits.npz.tmp-elsewhere-{int(ended.stdout)}.npz',
          f'other.npz.tmp-{host}-{int(ended.stdout)}.npz']
  for name in [orphan, *kept]:
    (tmp_path / name).write_bytes(b'half')
  generate.save_npz_atomic(str(tmp_path / 'digits.npz'), images=np.zeros((2, 28, 28), np.uint8))
  assert sorted(os.listdir(tmp_path)) == sorted(['digits.npz', *kept])
  assert f'removed {orphan}, left by a writer of {tmp_path / "digits.npz"} that was killed' in (
      caplog.text)


def test_on_windows_temporaries_are_kept_as_no_writer_can_be_asked_about(tmp_path, monkeypatch):
  """os.kill there ends the process it names: whether a writer lives cannot be asked."""
  ended = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                         capture_output=True, text=True, check=True)
  orphan = tmp_path / f'record.json.tmp-{socket.gethostname()}-{int(ended.stdout)}'
  orphan.write_text('half')
  monkeypatch.setattr(atomic.os, 'name', 'nt')
  monkeypatch.setattr(atomic.os, 'kill', lambda *args: pytest.fail('os.kill called'))
  with atomic.replacing(tmp_path / 'record.json') as tmp, open(tmp, 'w') as f:
    f.write('{}')
  assert orphan.exists()


def test_a_name_too_long_for_a_temporary_suffix_is_still_written(tmp_path):
  """255 bytes is the most a name may have; the temporary added `.tmp-HOST-PID.npz` to it."""
  path = tmp_path / ('d' * 246 + '.npz')
  generate.save_npz_atomic(str(path), images=np.zeros((2, 28, 28), np.uint8))
  assert os.listdir(tmp_path) == [path.name]
  assert np.load(path)['images'].shape == (2, 28, 28)
