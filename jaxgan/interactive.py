"""Real-time generation in a browser: a trained generator behind a small HTTP server.

`Renderer` turns a query (digit string or digit count, latent seed, truncation, scale) into a
PNG; `DigitServer` serves it with a page whose controls re-request the picture on every change.
Every request generates a fixed-size batch, so the generator compiles once and each picture
takes milliseconds (experiments.serve logs the time of each).
"""
from __future__ import annotations

import html
import http.server
import io
import threading
import time
import urllib.parse

import jax
import numpy as np
from absl import logging

from jaxgan import generate, images, strings
from jaxgan.models import GAN

MAX_DIGITS = 32  # per picture; also the batch every request generates
MAX_SCALE = 8


def _int(query: dict, name: str, default: int, low: int, high: int) -> int:
  text = query.get(name, str(default))
  try:
    value = int(text)
  except ValueError:
    raise ValueError(f'{name}={text!r} is not an integer: give one in {low}..{high}') from None
  if not low <= value <= high:
    raise ValueError(f'{name}={value} is outside {low}..{high}')
  return value


def _float(query: dict, name: str, default: str, valid, valid_text: str) -> float:
  """query[name] as a number for which `valid` holds, else a ValueError saying `valid_text`."""
  text = query.get(name, default)
  try:
    value = float(text)
  except ValueError:
    value = None
  if value is None or not valid(value):
    raise ValueError(f'{name}={text!r} must be a number {valid_text}')
  return value


_PARAMETERS = ('seed', 'truncation', 'latent_scale', 'scale')


def _check_names(query: dict, conditional: bool) -> None:
  """A misspelt parameter, or one for the other kind of model, would be ignored and its
  default drawn, as if it had been taken."""
  first, other = ('text', 'count') if conditional else ('count', 'text')
  if other in query:
    kind = 'a class-conditional' if conditional else 'an unconditional'
    raise ValueError(f'{other} is not a parameter of {kind} model, which draws {first}')
  unknown = sorted(set(query) - {first, *_PARAMETERS})
  if unknown:
    raise ValueError(f'unknown parameter {", ".join(unknown)}: use '
                     f'{", ".join((first, *_PARAMETERS))}')


def _truncation(query: dict) -> float:
  return _float(query, 'truncation', '0', lambda v: 0.0 <= v <= 10.0, 'in 0..10 (0: none)')


def _latent_scale(query: dict, default: float) -> float:
  """Up to 10, or up to the run's own scale where that is wider."""
  high = max(10.0, default)
  return _float(query, 'latent_scale', str(default), lambda v: 0.0 < v <= high,
                f'over 0, at most {high:g} (1: none)')


class Renderer:
  """Pictures from one generator. Conditional models draw the digit string `text` (default
  0123456789) with the layout of jaxgan.strings; unconditional ones draw `count` digits in a
  row. `seed` picks the latents (digit i of a picture always uses latent i of the seed),
  `truncation` is the truncation trick, `latent_scale` widens the latents (see
  `generate.latents`; default: the renderer's `latent_scale`, the run's sample_latent_scale in
  experiments.serve), `scale` is the pixel size."""

  def __init__(self, gan: GAN, g_variables: dict, step: int | None = None, *,
               latent_scale: float = 1.0):
    self.gan = gan
    self.variables = g_variables
    self.step = step
    self.latent_scale = latent_scale
    self._lock = threading.Lock()  # one generation at a time: requests arrive on threads
    self.render({'truncation': '1'})  # compile now (both latent draws), not on a request
    self.render({})

  def digits(self, labels: np.ndarray | None, count: int, seed: int, truncation: float,
             latent_scale: float = 1.0) -> np.ndarray:
    """uint8 (count, H, W): the first `count` of a fixed batch of MAX_DIGITS."""
    z = generate.latents(jax.random.key(seed), MAX_DIGITS, self.gan.latent_dim, truncation,
                         latent_scale)
    padded = None
    if labels is not None:
      padded = np.zeros(MAX_DIGITS, np.int32)
      padded[:count] = labels
    with self._lock:
      return generate.generate(self.gan, self.variables, z, padded, batch_size=MAX_DIGITS,
                               devices=jax.local_devices()[:1], step=self.step)[:count]

  def render(self, query: dict[str, str]) -> bytes:
    """PNG bytes for `query`; a ValueError names a bad parameter and its valid values."""
    _check_names(query, self.gan.num_classes > 0)
    seed = _int(query, 'seed', 0, 0, 2**31 - 1)
    scale = _int(query, 'scale', 4, 1, MAX_SCALE)
    truncation, latent_scale = _truncation(query), _latent_scale(query, self.latent_scale)
    if self.gan.num_classes:
      text = query.get('text', '0123456789')
      if len(text) > MAX_DIGITS:
        raise ValueError(f'text has {len(text)} digits: give at most {MAX_DIGITS}')
      classes, lengths = strings.parse_strings([text], self.gan.num_classes)
      digits = self.digits(classes[0], len(text), seed, truncation, latent_scale)
      picture, _ = strings.compose(digits[None], lengths, np.random.default_rng(seed))
      picture = images.grid(picture, 1, 1, scale=scale)
    else:
      count = _int(query, 'count', 10, 1, MAX_DIGITS)
      picture = images.grid(self.digits(None, count, seed, truncation, latent_scale), 1, count,
                            scale=scale)
    buffer = io.BytesIO()
    picture.save(buffer, format='PNG')
    return buffer.getvalue()


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>jaxgan: {title}</title>
<style>body {{ font-family: sans-serif; margin: 2em; }} label {{ margin-right: 1.5em; }}
img {{ display: block; margin-top: 1.5em; image-rendering: pixelated; }}
#error {{ color: #b00; }}</style></head>
<body><h2>{title}</h2>
<form id="controls" onsubmit="return false">
{first_control}
<label>seed <input name="seed" type="range" min="0" max="999" value="0">
  <output id="seed_value">0</output></label>
<label>truncation <input name="truncation" type="range" min="0" max="3" step="0.1" value="0">
  <output id="truncation_value">0</output></label>
<label>latent scale <input name="latent_scale" type="range" min="{latent_scale_min}"
  max="{latent_scale_max}" step="0.05" value="{latent_scale}">
  <output id="latent_scale_value">{latent_scale}</output></label>
<label>scale <input name="scale" type="number" min="1" max="{max_scale}" value="4"></label>
</form>
<div id="error"></div><img id="picture" alt="generated digits">
<script>
const form = document.getElementById('controls');
const picture = document.getElementById('picture');
const error = document.getElementById('error');
function update() {{
  const query = new URLSearchParams(new FormData(form));
  document.getElementById('seed_value').textContent = form.seed.value;
  document.getElementById('truncation_value').textContent = form.truncation.value;
  document.getElementById('latent_scale_value').textContent = form.latent_scale.value;
  fetch('/image.png?' + query).then(async response => {{
    if (!response.ok) {{ error.textContent = await response.text(); return; }}
    error.textContent = '';
    picture.src = URL.createObjectURL(await response.blob());
  }});
}}
form.addEventListener('input', update);
update();
</script></body></html>
"""


def page(renderer: Renderer, title: str) -> str:
  """The control page: a text field (conditional) or a digit count, sliders for seed,
  truncation and latent scale (its range holds the renderer's own); every change fetches a new
  picture."""
  if renderer.gan.num_classes:
    first = ('<label>digits <input name="text" value="0123456789" '
             f'maxlength="{MAX_DIGITS}" pattern="[0-9]+"></label>')
  else:
    first = (f'<label>count <input name="count" type="number" min="1" max="{MAX_DIGITS}" '
             'value="10"></label>')
  # A range input clamps its value to [min, max]: the run's own scale must lie inside.
  scale = renderer.latent_scale
  return _PAGE.format(title=html.escape(title), first_control=first, max_scale=MAX_SCALE,
                      latent_scale=scale, latent_scale_min=min(0.5, scale),
                      latent_scale_max=max(2, scale))


class DigitServer(http.server.ThreadingHTTPServer):
  """The HTTP server of a Renderer: `/` (the page) and `/image.png?QUERY` (a picture, or status
  400 and the one-line reason). It binds its address when made, so that a taken port fails
  before a run is restored and compiled; `serve(renderer, title)` then answers requests until
  `shutdown()`."""

  def __init__(self, host: str, port: int):
    super().__init__((host, port), _Handler)
    self.renderer: Renderer | None = None
    self.body_of_page = b''

  def serve(self, renderer: Renderer, title: str = 'digits') -> None:
    self.renderer = renderer
    self.body_of_page = page(renderer, title).encode()
    self.serve_forever()


def _query(text: str) -> dict:
  """The parameters of a query string; one given twice would have its last value drawn."""
  pairs = urllib.parse.parse_qsl(text, keep_blank_values=True)
  names = [name for name, _ in pairs]
  repeated = sorted({name for name in names if names.count(name) > 1})
  if repeated:
    raise ValueError(f'{", ".join(repeated)} given more than once: give each parameter once')
  return dict(pairs)


class _Handler(http.server.BaseHTTPRequestHandler):
  server: DigitServer

  def do_GET(self):  # pylint: disable=invalid-name
    url = urllib.parse.urlsplit(self.path)
    if url.path == '/':
      self._send(200, 'text/html; charset=utf-8', self.server.body_of_page)
    elif url.path == '/image.png':
      start = time.perf_counter()
      try:
        png = self.server.renderer.render(_query(url.query))
      except ValueError as error:
        self._send(400, 'text/plain; charset=utf-8', str(error).encode())
        return
      logging.info('%s in %.1f ms', self.path, 1e3 * (time.perf_counter() - start))
      self._send(200, 'image/png', png)
    else:
      self._send(404, 'text/plain; charset=utf-8', b'not found: try / or /image.png')

  def _send(self, status: int, content_type: str, body: bytes) -> None:
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.send_header('Cache-Control', 'no-store')
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    del format, args  # requests are logged above, with their render time
