"""Sample files for the tests of the scripts that read them."""
import numpy as np


def write_damaged_npz(path, compressed: bool = False) -> None:
  """An .npz whose zip directory is intact but whose images are not: bytes 200-2000 flipped
  (a CRC error uncompressed; a zlib error compressed)."""
  digits = np.random.default_rng(0).integers(0, 256, (10, 28, 28), np.uint8)
  (np.savez_compressed if compressed else np.savez)(path, images=digits)
  data = bytearray(path.read_bytes())
  data[200:2000] = bytes(b ^ 0xFF for b in data[200:2000])
  path.write_bytes(bytes(data))
