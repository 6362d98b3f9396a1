"""Tests of jaxgan.optim: learning-rate schedule values at the points that define them, the
config checks, and that make_optimizer('adam') is optax's Adam with the configured schedule."""

from __future__ import annotations

import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxgan import optim

LR = 2e-4
TOTAL = 1000


def schedule_config(name, warmup_steps=0, end_factor=0.0, decay_steps=1000, decay_rate=0.5):
    return ml_collections.ConfigDict(dict(name=name, warmup_steps=warmup_steps, end_factor=end_factor,
                                          decay_steps=decay_steps, decay_rate=decay_rate))


def values(schedule, steps):
    return np.array([float(schedule(step)) for step in steps])


def test_schedule_names():
    assert set(optim.SCHEDULE_NAMES) == {"constant", "warmup", "cosine", "exponential"}


@pytest.mark.parametrize("warmup", [0, 100])
def test_constant_schedule_ignores_warmup(warmup):
    schedule = optim.make_schedule(LR, schedule_config("constant", warmup_steps=warmup), TOTAL)
    np.testing.assert_allclose(values(schedule, [0, 50, 100, TOTAL - 1, TOTAL, 5 * TOTAL]), LR, rtol=1e-6)


def test_warmup_schedule():
    schedule = optim.make_schedule(LR, schedule_config("warmup", warmup_steps=100), TOTAL)
    steps = [0, 25, 50, 99, 100, 101, 500, TOTAL, 10 * TOTAL]
    expected = [0.0, LR / 4, LR / 2, LR * 0.99, LR, LR, LR, LR, LR]
    np.testing.assert_allclose(values(schedule, steps), expected, rtol=1e-5, atol=LR * 1e-5)


def test_warmup_schedule_without_warmup_starts_at_lr():
    schedule = optim.make_schedule(LR, schedule_config("warmup", warmup_steps=0), TOTAL)
    np.testing.assert_allclose(values(schedule, [0, 1, TOTAL]), LR, rtol=1e-6)


@pytest.mark.parametrize("end_factor", [0.0, 0.1])
def test_cosine_schedule(end_factor):
    warmup = 100
    schedule = optim.make_schedule(LR, schedule_config("cosine", warmup_steps=warmup, end_factor=end_factor),
                                   TOTAL)
    end = LR * end_factor

    def cosine(step):  # after warmup: end + (lr - end) * (1 + cos(pi * progress)) / 2
        progress = (step - warmup) / (TOTAL - warmup)
        return end + (LR - end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    steps = [0, 50, warmup, 325, 550, 775, TOTAL - 1, TOTAL, 3 * TOTAL]
    expected = [0.0, LR / 2, LR, cosine(325), (LR + end) / 2, cosine(775), cosine(TOTAL - 1), end, end]
    np.testing.assert_allclose(values(schedule, steps), expected, rtol=1e-5, atol=LR * 1e-5)
    # Monotone non-increasing after warmup.
    decay = values(schedule, range(warmup, TOTAL + 1, 50))
    assert np.all(np.diff(decay) <= 1e-12)


def test_cosine_schedule_without_warmup_starts_at_lr():
    schedule = optim.make_schedule(LR, schedule_config("cosine", end_factor=0.1), TOTAL)
    np.testing.assert_allclose(values(schedule, [0, TOTAL // 2, TOTAL]), [LR, 0.55 * LR, 0.1 * LR], rtol=1e-5)


def test_exponential_schedule_with_warmup():
    warmup, decay_steps, rate = 100, 200, 0.5
    schedule = optim.make_schedule(
        LR, schedule_config("exponential", warmup_steps=warmup, decay_steps=decay_steps, decay_rate=rate), TOTAL)
    # Linear warmup from 0, then lr * rate ** (t / decay_steps) with t counted from the end of
    # warmup (continuous at the boundary, not staircase).
    steps = [0, 50, warmup, warmup + 100, warmup + 200, warmup + 300, TOTAL]
    expected = [0.0, LR / 2] + [LR * rate ** ((s - warmup) / decay_steps) for s in steps[2:]]
    np.testing.assert_allclose(values(schedule, steps), expected, rtol=1e-5, atol=LR * 1e-5)
    np.testing.assert_allclose(float(schedule(warmup + 200)), LR / 2, rtol=1e-5)  # one decay period: halved


def test_exponential_schedule_without_warmup():
    schedule = optim.make_schedule(LR, schedule_config("exponential", decay_steps=1000, decay_rate=0.1), TOTAL)
    steps = [0, 500, 1000, 2000]
    np.testing.assert_allclose(values(schedule, steps), [LR * 0.1 ** (s / 1000) for s in steps], rtol=1e-5)


@pytest.mark.parametrize("fields, message", [
    (dict(name="exponential", decay_steps=0),
     r"decay_steps must be > 0 and schedule.decay_rate in \(0, 1\] \(a decay\), got 0 and 0.5"),
    (dict(name="exponential", decay_rate=0.0),
     r"decay_steps must be > 0 and schedule.decay_rate in \(0, 1\] \(a decay\), got 1000 and 0.0"),
    (dict(name="exponential", decay_rate=1.5),
     r"decay_steps must be > 0 and schedule.decay_rate in \(0, 1\] \(a decay\), got 1000 and 1.5"),
    (dict(name="cosine", end_factor=-1.0), r"end_factor must be in \[0, 1\] \(a decay\), got -1.0"),
    (dict(name="cosine", end_factor=5.0), r"end_factor must be in \[0, 1\] \(a decay\), got 5.0"),
])
def test_make_schedule_refuses_what_the_trainer_refuses(fields, message):
    """Called directly, a decay rate of 0 or over 0 steps gave lr at every step, a negative end
    factor negative rates, an end factor or decay rate above 1 rates that grew."""
    with pytest.raises(ValueError, match=rf"^schedule\.{message}$"):
        optim.make_schedule(LR, schedule_config(**fields), TOTAL)


@pytest.mark.parametrize("name", ["warmup", "cosine", "exponential"])
def test_a_schedule_read_per_critic_update_follows_the_training_steps(name):
    # The discriminator's optimizer updates n_critic times per training step: at update
    # n_critic * s its rate is the generator's at step s.
    config = schedule_config(name, warmup_steps=100, decay_steps=100)
    per_step = optim.make_schedule(LR, config, TOTAL)
    per_update = optim.make_schedule(LR, config, TOTAL, updates_per_step=5)
    steps = [0, 20, 100, 300, 700, TOTAL]
    np.testing.assert_allclose(values(per_update, [5 * s for s in steps]), values(per_step, steps),
                               rtol=1e-5, atol=LR * 1e-6)


def test_unknown_schedule_raises_naming_choices():
    with pytest.raises(ValueError) as excinfo:
        optim.make_schedule(LR, schedule_config("linear_decay"), TOTAL)
    message = str(excinfo.value)
    assert "linear_decay" in message
    for name in ("constant", "warmup", "cosine", "exponential"):
        assert name in message


@pytest.mark.parametrize("name", ["constant", "warmup", "cosine", "exponential"])
def test_negative_warmup_raises(name):
    with pytest.raises(ValueError, match="warmup_steps"):
        optim.make_schedule(LR, schedule_config(name, warmup_steps=-1), TOTAL)


@pytest.mark.parametrize("warmup", [TOTAL, TOTAL + 1])
def test_cosine_warmup_must_end_before_training_does(warmup):
    with pytest.raises(ValueError, match=rf"^schedule.warmup_steps={warmup} must be >= 0 and at "
                       rf"most the {TOTAL} training steps \(below them for cosine\)$"):
        optim.make_schedule(LR, schedule_config("cosine", warmup_steps=warmup), TOTAL)


@pytest.mark.parametrize("name", ["warmup", "exponential"])
def test_a_warmup_longer_than_the_run_is_refused(name):
    # The rate would never reach lr (TOTAL / warmup of it at the run's end).
    with pytest.raises(ValueError, match=f"warmup_steps={TOTAL + 1} must be >= 0 and at most"):
        optim.make_schedule(LR, schedule_config(name, warmup_steps=TOTAL + 1), TOTAL)
    # One as long as the run reaches lr at its end.
    schedule = optim.make_schedule(LR, schedule_config(name, warmup_steps=TOTAL), TOTAL)
    np.testing.assert_allclose(values(schedule, [TOTAL // 2, TOTAL]), [LR / 2, LR], rtol=1e-5)
    # The constant schedule has no warmup to reach lr by.
    optim.make_schedule(LR, schedule_config("constant", warmup_steps=TOTAL + 1), TOTAL)


# --- make_optimizer('adam') ----------------------------------------------------------------


def optimizer_config(lr=1e-3, b1=0.5, b2=0.9, eps=1e-3):
    return ml_collections.ConfigDict(dict(lr=lr, b1=b1, b2=b2, eps=eps))


def _params_and_grads():
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32), "b": jnp.zeros(4)}
    grads = [{"w": jnp.asarray(rng.standard_normal((3, 4)) * 0.01, jnp.float32),
              "b": jnp.asarray(rng.standard_normal(4) * 0.01, jnp.float32)} for _ in range(3)]
    return params, grads


def _updates(tx, params, grads):
    state = tx.init(params)
    out = []
    for grad in grads:
        update, state = tx.update(grad, state, params)
        params = optax.apply_updates(params, update)
        out.append(update)
    return out


def test_make_optimizer_adam_first_update_is_adams():
    opt = optimizer_config()
    tx, schedule = optim.make_optimizer("adam", opt, schedule_config("constant"), TOTAL)
    assert isinstance(tx, optax.GradientTransformation)
    np.testing.assert_allclose(float(schedule(0)), opt.lr, rtol=1e-6)
    params, grads = _params_and_grads()
    ours = _updates(tx, params, grads)
    reference = _updates(optax.adam(opt.lr, b1=opt.b1, b2=opt.b2, eps=opt.eps), params, grads)

    # First step, closed form: the bias-corrected moments are g and g^2, so the update is
    # -lr * g / (|g| + eps) (eps matters here: |g| ~ 0.01 against eps = 1e-3).
    for name in params:
        g = np.asarray(grads[0][name], np.float64)
        np.testing.assert_allclose(ours[0][name], -opt.lr * g / (np.abs(g) + opt.eps), rtol=1e-5, atol=1e-9)
    # Every step equals optax.adam with the same hyper-parameters (later steps depend on b1, b2).
    for mine, theirs in zip(ours, reference):
        for name in params:
            np.testing.assert_allclose(mine[name], theirs[name], rtol=1e-6, atol=1e-10)
    # And the configured b1/b2/eps are really used: Adam's defaults give other later steps.
    default = _updates(optax.adam(opt.lr), params, grads)
    assert not np.allclose(ours[2]["w"], default[2]["w"], rtol=1e-3)


def test_make_optimizer_adam_uses_the_schedule():
    opt = optimizer_config(lr=1e-2)
    sched_cfg = schedule_config("warmup", warmup_steps=2)
    tx, schedule = optim.make_optimizer("adam", opt, sched_cfg, TOTAL)
    np.testing.assert_allclose(values(schedule, [0, 1, 2, 10]), [0.0, 5e-3, 1e-2, 1e-2], rtol=1e-6)
    params, grads = _params_and_grads()
    ours = _updates(tx, params, grads)
    reference = _updates(optax.adam(optim.make_schedule(opt.lr, sched_cfg, TOTAL), b1=opt.b1, b2=opt.b2,
                                     eps=opt.eps), params, grads)
    for mine, theirs in zip(ours, reference):
        for name in params:
            np.testing.assert_allclose(mine[name], theirs[name], rtol=1e-6, atol=1e-10)
    # Step 0 runs at lr 0 (the warmup starts from zero); step 1 at half the lr.
    np.testing.assert_array_equal(ours[0]["w"], 0.0)
    assert np.abs(np.asarray(ours[1]["w"])).max() > 0.0


def test_make_optimizer_rmsprop_is_kerass_with_decay_b2():
    """Keras's RMSprop (the WGAN paper's optimiser): v = b2 v + (1 - b2) g^2, step
    -lr g / sqrt(v + eps), from v = 0. b1 is not RMSprop's: the WGAN config's b1 = b2 = 0.9
    would hide a decay read from b1, so here they differ."""
    opt = optimizer_config(b1=0.5, b2=0.9)
    tx, _ = optim.make_optimizer("rmsprop", opt, schedule_config("constant"), TOTAL)
    params, grads = _params_and_grads()
    ours = _updates(tx, params, grads)
    velocity = {name: np.zeros(np.shape(params[name])) for name in params}
    for step, grad in enumerate(grads):
        for name in params:
            g = np.asarray(grad[name], np.float64)
            velocity[name] = opt.b2 * velocity[name] + (1 - opt.b2) * g ** 2
            expected = -opt.lr * g / np.sqrt(velocity[name] + opt.eps)
            np.testing.assert_allclose(ours[step][name], expected, rtol=1e-5, atol=1e-10)
