"""Real-time generation: the renderer's pictures and errors, and the HTTP server around it
(the conditional run's CLI is tested in tests/test_conditional.py)."""
import io
import threading
import urllib.error
import urllib.request

import jax
import numpy as np
import pytest
from PIL import Image

from jaxgan import interactive, models, strings


@pytest.fixture(scope='module')
def conditional_renderer():
  gan = models.build('mlp', num_classes=10)
  z = np.zeros((2, gan.latent_dim), np.float32)
  variables = gan.generator.init(jax.random.key(0), z, np.zeros(2, np.int32), train=False)
  return interactive.Renderer(gan, variables)


def pixels(png: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(png)) as picture:
    return np.asarray(picture)


def test_a_digit_string_renders_at_its_scale_and_repeats_for_its_seed(conditional_renderer):
  png = conditional_renderer.render({'text': '90210', 'seed': '3', 'scale': '2'})
  width = strings.canvas_width(5, 28, 4)
  assert pixels(png).shape == (2 * (28 + 2), 2 * (width + 2))  # images.grid's 1-pixel frame
  assert conditional_renderer.render({'text': '90210', 'seed': '3', 'scale': '2'}) == png
  assert conditional_renderer.render({'text': '90210', 'seed': '4', 'scale': '2'}) != png
  # The latent scale draws other digits from the same latents; 1 is the default.
  assert conditional_renderer.render({'text': '90210', 'seed': '3', 'scale': '2',
                                      'latent_scale': '1'}) == png
  assert conditional_renderer.render({'text': '90210', 'seed': '3', 'scale': '2',
                                      'latent_scale': '1.5'}) != png


def test_the_renderers_latent_scale_is_the_default_of_requests_and_of_the_page(
    conditional_renderer):
  wide = interactive.Renderer(conditional_renderer.gan, conditional_renderer.variables,
                              latent_scale=1.5)
  query = {'text': '90210', 'seed': '3'}
  assert wide.render(query) == conditional_renderer.render({**query, 'latent_scale': '1.5'})
  assert wide.render({**query, 'latent_scale': '1'}) == conditional_renderer.render(query)
  assert ('min="0.5"\n  max="2" step="0.05" value="1.5">\n  <output id="latent_scale_value">1.5'
          '</output>') in interactive.page(wide, 'x')


def test_a_run_sampled_wider_than_the_usual_range_serves_at_its_own_scale(conditional_renderer):
  """A range input clamps its value to its bounds, and requests were refused above 10: a run
  whose sample_latent_scale lies outside either range serves and shows its own scale."""
  wide = interactive.Renderer(conditional_renderer.gan, conditional_renderer.variables,
                              latent_scale=12)
  assert wide.render({}) == wide.render({'latent_scale': '12'}) != wide.render({'latent_scale':
                                                                                '10'})
  assert 'min="0.5"\n  max="12" step="0.05" value="12">' in interactive.page(wide, 'x')
  narrow = interactive.Renderer(conditional_renderer.gan, conditional_renderer.variables,
                                latent_scale=0.25)
  assert 'min="0.25"\n  max="2" step="0.05" value="0.25">' in interactive.page(narrow, 'x')
  with pytest.raises(ValueError, match=r"^latent_scale='13' must be a number over 0, at most 12 "):
    wide.render({'latent_scale': '13'})


def test_unconditional_models_render_a_row_of_count_digits():
  gan = models.build('mlp')
  variables = gan.generator.init(jax.random.key(0), np.zeros((2, gan.latent_dim), np.float32),
                                 train=False)
  renderer = interactive.Renderer(gan, variables)
  assert pixels(renderer.render({'count': '3', 'scale': '1'})).shape == (30, 3 * 29 + 1)
  with pytest.raises(ValueError, match=r'^count=33 is outside 1..32$'):
    renderer.render({'count': '33'})
  with pytest.raises(ValueError, match=r'^text is not a parameter of an unconditional model, '
                                       r'which draws count$'):
    renderer.render({'text': '12'})


@pytest.mark.parametrize('query,message', [
    ({'text': '12a'}, "'12a' is not a string of digits 0-9: pass e.g. 90210"),
    ({'text': '1' * 33}, 'text has 33 digits: give at most 32'),
    ({'seed': 'x'}, "seed='x' is not an integer: give one in 0..2147483647"),
    ({'txt': '123', 'bogus': ''},
     'unknown parameter bogus, txt: use text, seed, truncation, latent_scale, scale'),
    ({'count': '3'}, 'count is not a parameter of a class-conditional model, which draws text'),
    ({'scale': '9'}, 'scale=9 is outside 1..8'),
    ({'truncation': '-1'}, "truncation='-1' must be a number in 0..10 (0: none)"),
    ({'latent_scale': '0'}, "latent_scale='0' must be a number over 0, at most 10 (1: none)"),
    ({'latent_scale': 'wide'},
     "latent_scale='wide' must be a number over 0, at most 10 (1: none)"),
])
def test_bad_parameters_are_one_line_errors(conditional_renderer, query, message):
  with pytest.raises(ValueError) as error:
    conditional_renderer.render(query)
  assert str(error.value) == message


def test_the_server_serves_the_page_pictures_and_reasons(conditional_renderer):
  server = interactive.DigitServer('127.0.0.1', 0)
  thread = threading.Thread(target=server.serve, args=(conditional_renderer, 'test run'),
                            daemon=True)
  thread.start()
  base = f'http://127.0.0.1:{server.server_address[1]}'
  try:
    with urllib.request.urlopen(f'{base}/') as response:
      page = response.read().decode()
    assert '<title>jaxgan: test run</title>' in page and 'name="text"' in page
    assert 'name="latent_scale"' in page
    with urllib.request.urlopen(f'{base}/image.png?text=42&seed=1') as response:
      assert response.headers['Content-Type'] == 'image/png'
      assert response.read() == conditional_renderer.render({'text': '42', 'seed': '1'})
    with pytest.raises(urllib.error.HTTPError) as error:
      urllib.request.urlopen(f'{base}/image.png?text=4x2')
    assert error.value.code == 400
    assert error.value.read().decode() == "'4x2' is not a string of digits 0-9: pass e.g. 90210"
    with pytest.raises(urllib.error.HTTPError) as error:
      urllib.request.urlopen(f'{base}/image.png?text=1&seed=2&text=3')
    assert error.value.code == 400
    assert error.value.read().decode() == 'text given more than once: give each parameter once'
    with pytest.raises(urllib.error.HTTPError) as error:
      urllib.request.urlopen(f'{base}/other')
    assert error.value.code == 404
  finally:
    server.shutdown()
    server.server_close()
