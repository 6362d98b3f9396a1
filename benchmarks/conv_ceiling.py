r"""How near jaxgan's stride-2 convolution runs to what the CPU gives: one layer timed in the
forms training runs it, beside a matmul of the same multiply-adds.

  python benchmarks/conv_ceiling.py --threads=1      # D's Conv_1 at batch 128, one core

The defaults are the dcgan discriminator's `Conv_1` (5x5, stride 2, SAME, 14x14x32 -> 7x7x64)
with one device's share of a batch of 256 on a 2-core CPU (128). After a header line, one JSON
line per form, each on jax's one CPU device: `ms` (median over `--repeats` of the mean of
`--calls` calls), `gflop_per_s` (2 x the multiply-adds of the layer, as every form does them):
  forward             the forward convolution as `jaxgan.convs.Conv` runs it
  matmul              a (batch*7*7, 5*5*32) x (5*5*32, 64) matmul: the same multiply-adds with no
                      window to gather, a practical ceiling for the convolution
  kernel_grad         the kernel gradient as training computes it (`strided_conv_fast_grad`'s
                      custom gradient: summed over chunks of `convs.KERNEL_GRAD_CHUNK` examples)
  kernel_grad_laid_out  the same sums from operands handed over already laid out as XLA's
                      kernel-gradient convolution reads them ((in, h, w, batch) and (h, w, batch,
                      out)), so the difference to kernel_grad is what laying them out costs
`max_abs_diff` compares kernel_grad_laid_out with kernel_grad.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import _common  # pylint: disable=g-import-not-at-top,wrong-import-position


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  positive = _common.int_at_least(1)
  parser.add_argument('--batch', type=positive, default=128)
  parser.add_argument('--size', type=positive, default=14, help='input height and width')
  parser.add_argument('--in-features', type=positive, default=32)
  parser.add_argument('--features', type=positive, default=64)
  parser.add_argument('--kernel', type=positive, default=5)
  parser.add_argument('--calls', type=positive, default=20)
  parser.add_argument('--repeats', type=positive, default=7)
  parser.add_argument('--threads', type=_common.int_at_least(0), default=0,
                      help='CPUs to use (0: all)')
  parser.add_argument('--max-wait', type=float, default=600)
  return parser.parse_args(argv)


def median_ms(fn, args, calls: int, repeats: int, jax) -> float:
  jax.block_until_ready(fn(*args))  # compile
  means = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    means.append((time.perf_counter() - start) / calls)
  return statistics.median(means) * 1e3


def laid_out_operands(x, dy, padding, chunk, jnp):
  """Per chunk of examples: the padded input as (in, h, w, batch) and dy as (h, w, batch, out)."""
  padded = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  starts = range(0, x.shape[0], chunk)
  return (tuple(padded[s:s + chunk].transpose(3, 1, 2, 0) for s in starts),
          tuple(dy[s:s + chunk].transpose(1, 2, 0, 3) for s in starts))


def kernel_grad_laid_out(x_chunks, dy_chunks, kernel_size, lax):
  """sum over chunks of the stride-2 kernel gradient: dy as a window dilated by the stride."""
  total = 0
  for x_chunk, dy_chunk in zip(x_chunks, dy_chunks):
    total = total + lax.conv_general_dilated(
        x_chunk, dy_chunk, (1, 1), 'VALID', rhs_dilation=(2, 2),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))[:, :kernel_size, :kernel_size]
  return total.transpose(1, 2, 0, 3)  # (in, kh, kw, out) -> (kh, kw, in, out)


def main(argv=None):
  args = parse_args(argv)
  _common.pin_threads(args.threads)
  quiet = _common.wait_quiet(max_wait=args.max_wait) if args.max_wait > 0 else {}
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top

  from jaxgan import convs  # pylint: disable=g-import-not-at-top

  k, size = args.kernel, args.size
  padding = tuple(map(tuple, convs.conv_padding('SAME', (size, size), (k, k), (2, 2))))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((args.batch, size, size, args.in_features), np.float32))
  kernel = jnp.asarray(rng.standard_normal((k, k, args.in_features, args.features), np.float32))
  forward = jax.jit(lambda x, kernel: convs.strided_conv_fast_grad(x, kernel, padding))
  out_size = forward(x, kernel).shape[1]
  dy = jnp.asarray(rng.standard_normal((args.batch, out_size, out_size, args.features),
                                       np.float32))
  rows, depth = args.batch * out_size * out_size, k * k * args.in_features
  patches = jnp.asarray(rng.standard_normal((rows, depth), np.float32))
  flat_kernel = kernel.reshape(depth, args.features)
  kernel_grad = jax.jit(lambda x, kernel, dy: jax.vjp(
      lambda kernel: convs.strided_conv_fast_grad(x, kernel, padding), kernel)[1](dy)[0])
  x_chunks, dy_chunks = laid_out_operands(x, dy, padding, convs.KERNEL_GRAD_CHUNK, jnp)
  laid_out = jax.jit(lambda xs, dys: kernel_grad_laid_out(xs, dys, k, lax))
  flop = 2 * rows * depth * args.features

  print(json.dumps(dict(
      benchmark='conv_ceiling', batch=args.batch, input=[size, size, args.in_features],
      output=[out_size, out_size, args.features], kernel=k, stride=2,
      kernel_grad_chunk=convs.KERNEL_GRAD_CHUNK, mflop=round(flop / 1e6, 1),
      calls=args.calls, repeats=args.repeats, machine=_common.machine(), **quiet,
      **_common.versions())), flush=True)
  forms = dict(forward=(forward, (x, kernel)),
               matmul=(jax.jit(jnp.matmul), (patches, flat_kernel)),
               kernel_grad=(kernel_grad, (x, kernel, dy)),
               kernel_grad_laid_out=(laid_out, (x_chunks, dy_chunks)))
  for name, (fn, fn_args) in forms.items():
    with _common.ForeignLoad() as load:
      ms = median_ms(fn, fn_args, args.calls, args.repeats, jax)
    line = dict(form=name, ms=round(ms, 3), gflop_per_s=round(flop / ms / 1e6, 1),
                foreign_load_cores=load.cores)
    if name == 'kernel_grad_laid_out':
      line['max_abs_diff'] = float(jnp.max(jnp.abs(fn(*fn_args) - kernel_grad(x, kernel, dy))))
    print(json.dumps(line), flush=True)


if __name__ == '__main__':
  main()
