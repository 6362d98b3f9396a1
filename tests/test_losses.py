"""Tests of jaxgan.losses against closed forms: BCE (with one-sided label smoothing), the
Wasserstein losses, the WGAN-GP gradient penalty, and `losses.get`.

Inputs are made with numpy and the gradient penalty is compiled once per critic, so the file
stays fast; nothing depends on the number of devices (the shard_map test skips itself).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxgan import augment, losses, rng

LOG2 = math.log(2.0)


def softplus(x):
    """log(1 + e^x) in float64, stable for large |x|."""
    x = np.asarray(x, np.float64)
    return np.logaddexp(0.0, x)


def _rand(seed, shape, scale=1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


# --- BCE -----------------------------------------------------------------------------------


def test_bce_discriminator_loss_at_zero_logits_is_two_log_two():
    zeros = jnp.zeros(8)
    np.testing.assert_allclose(losses.bce_discriminator_loss(zeros, zeros), 2 * LOG2, rtol=1e-6)
    # Smoothing moves the real target, but at logit 0 both targets cost log 2.
    np.testing.assert_allclose(losses.bce_discriminator_loss(zeros, zeros, 0.1), 2 * LOG2, rtol=1e-6)
    np.testing.assert_allclose(losses.bce_generator_loss(zeros), LOG2, rtol=1e-6)


def test_bce_discriminator_loss_closed_form():
    real, fake = _rand(0, (16,), 3.0), _rand(1, (12,), 3.0)  # batch sizes may differ
    expected = softplus(-real).mean() + softplus(fake).mean()
    np.testing.assert_allclose(losses.bce_discriminator_loss(real, fake), expected, rtol=1e-5)

    # Scalar cases: -log sigmoid(r) - log(1 - sigmoid(f)).
    r, f = 2.0, -1.5
    value = losses.bce_discriminator_loss(jnp.array([r]), jnp.array([f]))
    np.testing.assert_allclose(value, -math.log(1 / (1 + math.exp(-r))) - math.log(1 - 1 / (1 + math.exp(-f))),
                               rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_bce_one_sided_label_smoothing_closed_form(smoothing):
    real, fake = _rand(2, (16,), 3.0), _rand(3, (16,), 3.0)
    # Real target t = 1 - s: t * softplus(-r) + (1 - t) * softplus(r); fake target stays 0.
    t = 1.0 - smoothing
    real_term = (t * softplus(-real) + (1 - t) * softplus(real)).mean()
    fake_term = softplus(fake).mean()
    np.testing.assert_allclose(losses.bce_discriminator_loss(real, fake, smoothing),
                               real_term + fake_term, rtol=1e-5)
    # The same through the configured loss.
    np.testing.assert_allclose(losses.get("bce", label_smoothing=smoothing).discriminator(real, fake),
                               real_term + fake_term, rtol=1e-5)


def test_bce_label_smoothing_is_one_sided():
    real, fake, fake2 = _rand(4, (16,), 2.0), _rand(5, (16,), 2.0), _rand(6, (16,), 2.0)
    # The fake term is unaffected by smoothing: changing the fakes shifts the loss equally.
    for s in (0.0, 0.2):
        delta = (losses.bce_discriminator_loss(real, fake2, s)
                 - losses.bce_discriminator_loss(real, fake, s))
        np.testing.assert_allclose(delta, softplus(fake2).mean() - softplus(fake).mean(), rtol=1e-5, atol=1e-6)
    # With only fakes varying, all-smoothed = unsmoothed + a real-only constant.
    shift = losses.bce_discriminator_loss(real, fake, 0.2) - losses.bce_discriminator_loss(real, fake, 0.0)
    np.testing.assert_allclose(shift, 0.2 * (softplus(real) - softplus(-real)).mean(), rtol=1e-5, atol=1e-6)

    # The smoothed real term is minimised where sigmoid(r) = 1 - s, i.e. r = log((1 - s) / s).
    s = 0.1
    r_star = math.log((1 - s) / s)
    grad = jax.grad(lambda r: losses.bce_discriminator_loss(r, jnp.zeros(1), s))(jnp.array([r_star]))
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_bce_generator_loss_is_non_saturating_softplus():
    fake = _rand(7, (32,), 4.0)
    np.testing.assert_allclose(losses.bce_generator_loss(fake), softplus(-fake).mean(), rtol=1e-5)
    # -log D(G(z)): large for confidently-fake logits, with a gradient that does not vanish.
    value = losses.bce_generator_loss(jnp.array([-100.0]))
    np.testing.assert_allclose(value, 100.0, rtol=1e-6)
    grad = jax.grad(lambda f: losses.bce_generator_loss(f))(jnp.array([-100.0]))
    np.testing.assert_allclose(grad, -1.0, rtol=1e-6)
    assert np.isfinite(losses.bce_discriminator_loss(jnp.array([-100.0]), jnp.array([100.0])))


# --- Wasserstein ---------------------------------------------------------------------------


def test_wasserstein_losses_closed_form():
    real, fake = _rand(8, (16,), 5.0), _rand(9, (10,), 5.0)
    np.testing.assert_allclose(losses.wasserstein_critic_loss(real, fake),
                               np.mean(np.asarray(fake, np.float64)) - np.mean(np.asarray(real, np.float64)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses.wasserstein_generator_loss(fake),
                               -np.mean(np.asarray(fake, np.float64)), rtol=1e-5, atol=1e-6)
    # Simple numbers: critic = mean(fake) - mean(real); generator = -mean(fake).
    np.testing.assert_allclose(losses.wasserstein_critic_loss(jnp.array([1.0, 3.0]), jnp.array([-2.0, 0.0, 5.0])),
                               1.0 - 2.0, rtol=1e-6)
    np.testing.assert_allclose(losses.wasserstein_generator_loss(jnp.array([-2.0, 0.0, 5.0])), -1.0, rtol=1e-6)


# --- gradient penalty ----------------------------------------------------------------------

GP_WEIGHT = 10.0
GP_SHAPE = (6, 5, 4, 2)  # (batch, ...): the norm runs over all non-batch axes


def _linear_critic(w):
    """f(x) = <w, x> per example, summed over all non-batch axes: grad_x f = w everywhere."""
    return lambda x: jnp.sum(x * w, axis=tuple(range(1, x.ndim)))


@jax.jit
def _linear_gp(w, real, fake, key):
    return losses.gradient_penalty(_linear_critic(w), real, fake, key, weight=GP_WEIGHT)


def _w_with_norm(norm, seed=0):
    w = np.random.default_rng(seed).standard_normal(GP_SHAPE[1:])
    return jnp.asarray(norm * w / np.linalg.norm(w), jnp.float32)


@pytest.mark.parametrize("norm", [0.0, 0.25, 0.9, 1.0, 1.5, 3.0])
def test_gradient_penalty_of_linear_critic_is_exact(norm):
    w = _w_with_norm(norm)
    expected = GP_WEIGHT * (norm - 1.0) ** 2
    # Any real/fake pair and any key: the gradient of a linear critic is w everywhere.
    for seed in range(3):
        real = _rand(10 + seed, GP_SHAPE, 2.0)
        fake = _rand(20 + seed, GP_SHAPE, 0.5)
        value = _linear_gp(w, real, fake, jax.random.key(seed))
        np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)


def test_gradient_penalty_weight_scales_linearly():
    real, fake, key = _rand(1, (3, 4)), _rand(2, (3, 4)), jax.random.key(0)
    w = jnp.array([2.0, 0.0, 0.0, 0.0])  # ||w|| = 2
    for weight in (1.0, 10.0, 0.5):
        value = losses.gradient_penalty(_linear_critic(w), real, fake, key, weight=weight)
        np.testing.assert_allclose(value, weight * (2.0 - 1.0) ** 2, rtol=1e-6)
    # The default weight is the paper's lambda = 10.
    np.testing.assert_allclose(losses.gradient_penalty(_linear_critic(w), real, fake, key), 10.0, rtol=1e-6)


def test_gradient_penalty_gradient_wrt_critic_parameters():
    # The critic is trained through the penalty (double backprop): for the linear critic
    # d/dw [lambda (||w|| - 1)^2] = 2 lambda (||w|| - 1) w / ||w||.
    w, norm = _w_with_norm(2.5, seed=3), 2.5
    real, fake = _rand(30, GP_SHAPE), _rand(31, GP_SHAPE)
    grad = jax.grad(lambda w: _linear_gp(w, real, fake, jax.random.key(0)))(w)
    np.testing.assert_allclose(grad, 2 * GP_WEIGHT * (norm - 1.0) * np.asarray(w) / norm, rtol=1e-4, atol=1e-5)


def _quadratic_critic(c):
    """f(x) = c * ||x||^2 per example: grad_x f = 2 c x."""
    return lambda x: c * jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim)))


@pytest.mark.parametrize("c", [0.5, -0.3])
def test_gradient_penalty_of_quadratic_critic_matches_hand_computation(c):
    real = np.random.default_rng(40).standard_normal(GP_SHAPE)
    fake = np.random.default_rng(41).standard_normal(GP_SHAPE) * 0.3 + 1.0
    key = jax.random.key(5)
    value = losses.gradient_penalty(_quadratic_critic(c), jnp.asarray(real, jnp.float32),
                                    jnp.asarray(fake, jnp.float32), key, weight=GP_WEIGHT)

    # eps ~ U[0, 1), one per example, drawn as jaxgan.rng.uniform with the same key.
    eps = np.asarray(rng.uniform(key, GP_SHAPE[0], (1, 1, 1)), np.float64)
    assert eps.shape == (GP_SHAPE[0], 1, 1, 1)
    assert len(np.unique(eps)) == GP_SHAPE[0] and eps.min() >= 0.0 and eps.max() < 1.0
    mixed = eps * real + (1.0 - eps) * fake  # x_hat = eps * real + (1 - eps) * fake
    norms = 2.0 * abs(c) * np.sqrt(np.sum(np.square(mixed).reshape(GP_SHAPE[0], -1), axis=1))
    expected = GP_WEIGHT * np.mean(np.square(norms - 1.0))
    np.testing.assert_allclose(value, expected, rtol=1e-5)

    # Interpolating the other way (eps on the fakes) gives a different number, so the check
    # above pins the direction of the interpolation.
    swapped = eps * fake + (1.0 - eps) * real
    swapped_norms = 2.0 * abs(c) * np.sqrt(np.sum(np.square(swapped).reshape(GP_SHAPE[0], -1), axis=1))
    assert abs(GP_WEIGHT * np.mean(np.square(swapped_norms - 1.0)) - expected) > 1e-2 * expected


def test_gradient_penalty_small_hand_example():
    # One example in 2-d: real = (3, 4), fake = 0; with f(x) = ||x||^2 / 2 the gradient is x_hat
    # = eps * (3, 4), whose norm is 5 eps, so the penalty is 10 * (5 eps - 1)^2.
    key = jax.random.key(11)
    real, fake = jnp.array([[3.0, 4.0]]), jnp.zeros((1, 2))
    eps = float(rng.uniform(key, 1, (1,))[0, 0])
    value = losses.gradient_penalty(_quadratic_critic(0.5), real, fake, key)
    np.testing.assert_allclose(value, 10.0 * (5.0 * eps - 1.0) ** 2, rtol=1e-5, atol=1e-6)
    # real == fake: x_hat = real whatever eps is.
    value = losses.gradient_penalty(_quadratic_critic(0.5), real, real, key)
    np.testing.assert_allclose(value, 10.0 * (5.0 - 1.0) ** 2, rtol=1e-6)


def test_gradient_penalty_under_shard_map_matches_global_batch():
    n_devices = 2
    if jax.device_count() < n_devices:
        pytest.skip(f"needs {n_devices} devices, have {jax.device_count()}")
    mesh = Mesh(np.array(jax.devices()[:n_devices]), ("data",))
    critic = _quadratic_critic(0.7)
    real, fake = _rand(50, GP_SHAPE), _rand(51, GP_SHAPE)
    key = jax.random.key(3)

    def local(real, fake, key):
        gp = losses.gradient_penalty(critic, real, fake, key, weight=GP_WEIGHT, axis_name="data")
        return jax.lax.pmean(gp, "data")

    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("data"), P("data"), P()),
                                    out_specs=P()))(real, fake, key)
    reference = losses.gradient_penalty(critic, real, fake, key, weight=GP_WEIGHT)
    # Each example's eps is keyed to its global index, so the split changes nothing.
    np.testing.assert_allclose(sharded, reference, rtol=1e-5)


# --- losses.get ----------------------------------------------------------------------------


def test_get_bce_and_wgan_gp():
    bce = losses.get("bce")
    assert bce.name == "bce" and bce.outputs_are_logits and bce.gradient_penalty_weight == 0.0
    real, fake = _rand(60, (8,)), _rand(61, (8,))
    np.testing.assert_allclose(bce.discriminator(real, fake), losses.bce_discriminator_loss(real, fake), rtol=1e-6)
    np.testing.assert_allclose(bce.generator(fake), losses.bce_generator_loss(fake), rtol=1e-6)

    wgan = losses.get("wgan_gp", gp_weight=5.0)
    assert wgan.name == "wgan_gp" and not wgan.outputs_are_logits
    assert wgan.gradient_penalty_weight == 5.0
    assert losses.get("wgan_gp").gradient_penalty_weight == 10.0
    np.testing.assert_allclose(wgan.discriminator(real, fake), losses.wasserstein_critic_loss(real, fake), rtol=1e-6)
    np.testing.assert_allclose(wgan.generator(fake), losses.wasserstein_generator_loss(fake), rtol=1e-6)
    assert set(losses.LOSS_NAMES) == {"bce", "wgan", "wgan_gp", "hinge", "lsgan"}


def test_get_unknown_name_raises_naming_choices():
    with pytest.raises(ValueError) as excinfo:
        losses.get("wasserstein")
    message = str(excinfo.value)
    assert "wasserstein" in message and "bce" in message and "wgan_gp" in message


@pytest.mark.parametrize("gp_weight", [0.0, -1.0, float("nan"), float("inf")])
def test_get_wgan_gp_needs_positive_gp_weight(gp_weight):
    with pytest.raises(ValueError, match=rf"^wgan_gp needs a finite loss.gp_weight > 0, got {gp_weight} "):
        losses.get("wgan_gp", gp_weight=gp_weight)


@pytest.mark.parametrize("weight_clip", [0.0, -0.01, float("nan"), float("inf")])
def test_get_wgan_needs_a_finite_positive_clip(weight_clip):
    # NaN clipped every weight to NaN in the first step; inf clipped nothing.
    with pytest.raises(ValueError, match=rf"^wgan needs a finite loss.weight_clip > 0, got {weight_clip} "):
        losses.get("wgan", weight_clip=weight_clip)


def test_gradient_penalty_has_a_finite_gradient_where_the_input_gradient_is_zero():
  """A critic whose input gradient vanishes (w = 0: every ReLU off) must not NaN its params."""
  real, fake = jnp.ones((2, 3)), jnp.zeros((2, 3))

  def penalty(w):
    return losses.gradient_penalty(lambda x: x @ w, real, fake, jax.random.key(0), weight=10.0)

  grad = jax.grad(penalty)(jnp.zeros(3))
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(penalty(jnp.zeros(3)), 10.0)


# --- hinge, least squares, weight clipping, R1 ---------------------------------------------


def test_hinge_losses_closed_form():
    real = jnp.array([2.0, 0.5, -1.0, 0.0])  # relu(1 - r): 0, 0.5, 2, 1 -> mean 0.875
    fake = jnp.array([-2.0, -0.5, 1.0, 0.0])  # relu(1 + f): 0, 0.5, 2, 1 -> mean 0.875
    hinge = losses.get("hinge")
    assert not hinge.outputs_are_logits
    np.testing.assert_allclose(hinge.discriminator(real, fake), 1.75, rtol=1e-6)
    np.testing.assert_allclose(hinge.generator(fake), -(-2.0 - 0.5 + 1.0 + 0.0) / 4, rtol=1e-6)


def test_least_squares_losses_closed_form():
    real = jnp.array([1.0, 3.0])  # (r - 1)^2: 0, 4 -> mean 2
    fake = jnp.array([0.0, 2.0])  # f^2: 0, 4 -> mean 2; (f - 1)^2: 1, 1 -> mean 1
    lsgan = losses.get("lsgan")
    np.testing.assert_allclose(lsgan.discriminator(real, fake), 0.5 * (2.0 + 2.0), rtol=1e-6)
    np.testing.assert_allclose(lsgan.generator(fake), 0.5 * 1.0, rtol=1e-6)


def test_wgan_uses_the_wasserstein_losses_and_clips_the_critic():
    wgan = losses.get("wgan", weight_clip=0.05)
    assert wgan.weight_clip == 0.05 and wgan.gradient_penalty_weight == 0.0
    real, fake = _rand(70, (8,)), _rand(71, (8,))
    np.testing.assert_allclose(wgan.discriminator(real, fake),
                               losses.wasserstein_critic_loss(real, fake), rtol=1e-6)
    params = {"w": jnp.array([-1.0, -0.01, 0.0, 0.02, 3.0]), "b": jnp.array(0.5)}
    clipped = losses.clip_weights(params, 0.05)
    np.testing.assert_array_equal(clipped["w"], np.float32([-0.05, -0.01, 0.0, 0.02, 0.05]))
    np.testing.assert_array_equal(clipped["b"], np.float32(0.05))
    with pytest.raises(ValueError, match="weight_clip"):
        losses.get("wgan", weight_clip=0.0)


def test_r1_penalty_of_linear_critic_is_half_gamma_squared_norm():
    """D(x) = <w, x>: grad = w for every example, so R1 = gamma / 2 * ||w||^2."""
    w = _rand(72, GP_SHAPE[1:])
    critic = lambda x: jnp.sum(x * w, axis=tuple(range(1, x.ndim)))
    value = losses.r1_penalty(critic, _rand(73, GP_SHAPE), gamma=4.0)
    np.testing.assert_allclose(value, 2.0 * float(np.sum(np.square(np.asarray(w, np.float64)))),
                               rtol=1e-5)


def test_r1_penalty_of_quadratic_critic_averages_per_example_norms():
    """D(x) = c * sum(x^2): grad = 2 c x, so R1 = gamma / 2 * mean_i 4 c^2 ||x_i||^2."""
    c, gamma = 0.3, 10.0
    real = _rand(74, GP_SHAPE)
    value = losses.r1_penalty(_quadratic_critic(c), real, gamma=gamma)
    norms = np.sum(np.square(np.asarray(real, np.float64)).reshape(GP_SHAPE[0], -1), axis=1)
    np.testing.assert_allclose(value, gamma / 2 * np.mean(4 * c * c * norms), rtol=1e-5)


def test_r1_penalty_under_shard_map_matches_global_batch():
    if jax.device_count() < 2:
        pytest.skip("needs 2 devices")
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    critic, real = _quadratic_critic(0.7), _rand(75, GP_SHAPE)
    local = lambda x: jax.lax.pmean(losses.r1_penalty(critic, x, gamma=1.0), "data")
    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=P("data"), out_specs=P()))(real)
    np.testing.assert_allclose(sharded, losses.r1_penalty(critic, real, gamma=1.0), rtol=1e-5)


def test_consistency_penalty_is_the_weighted_mean_squared_change_of_the_scores():
    images, scores = _rand(76, (4, 28, 28, 1)), _rand(77, (4, 1))
    critic = lambda x: x.mean(axis=(1, 2, 3))[:, None]
    expected = 10.0 * np.mean(np.square(np.asarray(images).mean(axis=(1, 2, 3)) -
                                        np.asarray(scores)[:, 0]))
    np.testing.assert_allclose(losses.consistency_penalty(critic, images, scores, weight=10.0),
                               expected, rtol=1e-5)


def test_consistency_penalty_of_a_translated_digit_is_zero_only_for_a_shift_blind_critic():
    """A blob away from the border, shifted: a critic of the pixel sum sees no change (the
    vacated pixels are background, like those that left), one weighting positions does."""
    digit = np.full((8, 28, 28, 1), -1.0, np.float32)
    digit[:, 10:16, 11:17] = 1.0
    digit = jnp.asarray(digit)
    shifted = augment.translate(digit, jax.random.key(0))
    assert not np.array_equal(shifted, digit)
    pixel_sum = lambda x: x.sum(axis=(1, 2, 3))
    np.testing.assert_allclose(
        losses.consistency_penalty(pixel_sum, shifted, pixel_sum(digit), weight=1.0), 0.0,
        atol=1e-6)
    ramp = jnp.arange(28.0)[None, :, None, None]
    positional = lambda x: (x * ramp).sum(axis=(1, 2, 3))
    assert losses.consistency_penalty(positional, shifted, positional(digit), weight=1.0) > 1.0


def test_r1_consistency_and_label_smoothing_options_are_checked():
    assert losses.get("hinge", r1_gamma=2.0).r1_gamma == 2.0
    assert losses.get("wgan_gp", consistency=10.0).consistency == 10.0
    assert losses.get("wgan_gp", consistency=10.0).gradient_penalty_weight == 10.0
    for field in ("r1_gamma", "consistency"):
        for bad in (-1.0, float("nan"), float("inf")):  # inf: an infinite loss in the first step
            with pytest.raises(ValueError, match=rf"^loss.{field} must be finite and >= 0 \(0 = off\), got {bad}$"):
                losses.get("hinge", **{field: bad})
    assert losses.get("hinge", consistency_translation=0.04).consistency_translation == 0.04
    for bad in (0.0, 0.6, float("nan")):
        with pytest.raises(ValueError, match=r"consistency_translation must be in \(0, 0.5\]"):
            losses.get("hinge", consistency=1.0, consistency_translation=bad)
    losses.get("hinge", consistency_translation=0.0)  # unused while the penalty is off
    with pytest.raises(ValueError, match="label_smoothing.*bce"):
        losses.get("hinge", label_smoothing=0.1)
    for bad in (1.0, 1.5, -0.1, float("nan")):  # 1.5 made real targets negative, unrefused
        with pytest.raises(ValueError, match=rf"^loss.label_smoothing must be in \[0, 1\), got {bad}$"):
            losses.get("bce", label_smoothing=bad)


def test_mode_seeking_penalty_closed_form():
  """Pairs (0, 1), (2, 3): image gaps 0.5 and 2.0 for latent gaps 1.0 and 4.0 -> ratios 0.5
  and 0.5 -> mean 1 / (0.5 + eps)."""
  images = jnp.stack([jnp.zeros((2, 2)), jnp.full((2, 2), 0.5),
                      jnp.ones((2, 2)), jnp.full((2, 2), 3.0)])[..., None]
  z = jnp.array([[0.0, 0.0], [1.0, -1.0], [0.0, 0.0], [4.0, 4.0]])
  np.testing.assert_allclose(losses.mode_seeking_penalty(images, z, eps=1e-5),
                             1.0 / (0.5 + 1e-5), rtol=1e-6)
  # Identical images for different latents: the penalty is 1 / eps, as large as it gets.
  same = jnp.zeros((2, 3, 3, 1))
  np.testing.assert_allclose(losses.mode_seeking_penalty(same, z[:2], eps=1e-3), 1e3, rtol=1e-6)


def test_mode_seeking_penalty_needs_pairs():
  with pytest.raises(ValueError, match='per-device batch must be even, got 3'):
    losses.mode_seeking_penalty(jnp.zeros((3, 2, 2, 1)), jnp.zeros((3, 2)))
