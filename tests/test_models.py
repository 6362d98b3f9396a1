"""Tests of the generator/discriminator modules (jaxgan.models), ExampleDropout and jaxgan.rng.

Kept cheap (every jit costs about a second of compile on CPU): parameter structure is read with
`jax.eval_shape` (traced, never compiled), the forward tests run on variables filled with numpy
draws of the traced shapes rather than on compiled initialisers, and compiled functions are
shared between tests. Nothing depends on the number of devices: the shard_map tests skip
themselves when fewer (fake) devices exist than they need.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from jaxgan import layers, models, rng
from jaxgan.layers import ExampleDropout
from jaxgan.models import dcgan

BATCH = 4
IMAGE_SHAPE = (28, 28, 1)


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    """{'Layer/param': shape} for a nested variable dict."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


@functools.lru_cache(maxsize=None)
def _abstract_variables(name: str, **build_options):
    """Shapes of (generator variables, discriminator variables), traced but never compiled."""
    gan = models.build(name, **build_options)
    z = jax.ShapeDtypeStruct((BATCH, gan.latent_dim), jnp.float32)
    x = jax.ShapeDtypeStruct((BATCH,) + IMAGE_SHAPE, jnp.float32)
    g_vars = jax.eval_shape(lambda z: gan.generator.init(jax.random.key(0), z, train=False), z)
    d_vars = jax.eval_shape(lambda x: gan.discriminator.init(jax.random.key(0), x, train=False), x)
    return g_vars, d_vars


def _normal(seed: int, shape) -> jax.Array:
    """Test inputs drawn with numpy, so that making them costs no XLA compile."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _images(seed: int, batch: int = BATCH) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).uniform(-1.0, 1.0, (batch,) + IMAGE_SHAPE),
                       jnp.float32)


def _fill(abstract, seed: int):
    """Concrete variables of the traced shapes: kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2),
    BatchNorm scales near 1, running means near 0 and running variances in [1, 1.5)."""
    rng_np = np.random.default_rng(seed)

    def leaf(path, spec):
        name, shape = path[-1].key, spec.shape
        noise = rng_np.standard_normal(shape)
        if name == "kernel":
            value = noise / np.sqrt(np.prod(shape[:-1]))
        elif name == "scale":
            value = 1.0 + 0.1 * noise
        elif name == "var":
            value = 1.0 + 0.5 * rng_np.uniform(size=shape)
        else:  # bias, mean
            value = 0.1 * noise
        return jnp.asarray(value, spec.dtype)

    return jax.tree_util.tree_map_with_path(leaf, abstract)


@functools.lru_cache(maxsize=None)
def _variables(name: str):
    """(generator variables, discriminator variables) with the real shapes, no compile."""
    g_abstract, d_abstract = _abstract_variables(name)
    return _fill(g_abstract, seed=100), _fill(d_abstract, seed=200)


@functools.lru_cache(maxsize=None)
def _eval_outputs(name: str):
    """An eval-mode forward pass of both networks, in a single compile per model.

    The inputs are batches of 2 * BATCH: rows [0, BATCH) are latents z and images x, rows
    [BATCH, 2 * BATCH) are 1e3 * z (to saturate the output tanh) and x with example 1 negated
    (to check that discriminator scores are per-example).
    """
    gan = models.build(name)
    g_vars, d_vars = _variables(name)
    z = _normal(1, (BATCH, gan.latent_dim))
    x = _images(2)
    z_all = jnp.concatenate([z, 1e3 * z])
    x_all = jnp.concatenate([x, x.at[1].set(-x[1])])

    @jax.jit
    def forward(g_vars, d_vars, z_all, x_all):
        fake, state = gan.generator.apply(g_vars, z_all, train=False, capture_intermediates=True,
                                          mutable=["intermediates"])
        return dict(fake=fake, g_intermediates=state["intermediates"],
                    fake_logits=gan.discriminator.apply(d_vars, fake, train=False),
                    real_logits=gan.discriminator.apply(d_vars, x_all, train=False))

    return dict(forward(g_vars, d_vars, z_all, x_all), z=z_all, x=x_all)


# The generator's last layer, whose output goes through tanh.
# progressive: at alpha = 1 (the default) the output is tanh of the 28x28 path's toImage.
LAST_GENERATOR_LAYER = {"mlp": "Dense_1", "dcgan": "ConvTranspose_1", "kannada": "Conv_2",
                        "progressive": "Conv_1"}


# Exact parameter counts, computed by hand from the layer shapes (kernel + bias per layer).
EXPECTED_COUNTS = {
    # progressive (batch norm after the reshape to 7x7x64, over channels):
    # G: Dense 100*3136 (no bias) + BN 2*64 + ConvT 5*5*64*64 + BN 2*64 + ConvT 5*5*64*32
    #   + BN 2*32 + toImage14 64+1 + toImage28 32+1 = 467,618; batch_stats 2*(64+64+32) = 320.
    # D: fromImage14 1*64+64 + fromImage28 1*32+32 + Conv 5*5*32*64+64 + Conv 5*5*64*128+128
    #   + Dense 7*7*128+1 = 262,657.
    "progressive": dict(latent_dim=100, generator=467_618, batch_stats=320,
                        discriminator=262_657),
    # G: Dense 100*128+128 = 12,928; Dense 128*784+784 = 101,136.
    # D: Dense 784*128+128 = 100,480; Dense 128+1 = 129.
    "mlp": dict(latent_dim=100, generator=114_064, batch_stats=0, discriminator=100_609),
    # The papers' Keras DCGAN (TensorFlow DCGAN tutorial); these equal Keras's model.summary():
    # G trainable = Dense 100*3136 (no bias) + BN 2*3136 (gamma, beta) + ConvT 5*5*64*32
    #   (no bias) + BN 2*32 + ConvT 5*5*32*1 (no bias)
    #   = 313,600 + 6,272 + 51,200 + 64 + 800 = 371,936;
    # G non-trainable (Keras) = BN moving mean/variance 2*3136 + 2*32 = 6,336 (flax batch_stats);
    # D = conv 5*5*1*32+32 + conv 5*5*32*64+64 + dense 3136+1 = 832 + 51,264 + 3,137 = 55,233.
    "dcgan": dict(latent_dim=100, generator=371_936, batch_stats=6_336, discriminator=55_233),
    # G: Dense 128*6272+6272 = 809,088; Conv 3*3*128*128+128 = 147,584;
    #    Conv 3*3*128*64+64 = 73,792; Conv 7*7*64*1+1 = 3,137.
    # D: Conv 3*3*1*64+64 = 640; Conv 3*3*64*128+128 = 73,856; Conv 3*3*128*256+256 = 295,168;
    #    Dense 4*4*256+1 = 4,097.
    "kannada": dict(latent_dim=128, generator=1_033_601, batch_stats=0, discriminator=373_761),
}


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_parameter_counts_are_pinned(name):
    expected = EXPECTED_COUNTS[name]
    g_vars, d_vars = _abstract_variables(name)
    assert models.build(name).latent_dim == expected["latent_dim"]
    assert _count(g_vars["params"]) == expected["generator"]
    assert _count(g_vars.get("batch_stats", {})) == expected["batch_stats"]
    assert set(g_vars) <= {"params", "batch_stats"}
    assert set(d_vars) == {"params"}  # no normalisation state in any discriminator
    assert _count(d_vars["params"]) == expected["discriminator"]


def test_model_names_cover_all_pinned_models():
    assert set(models.MODEL_NAMES) == set(EXPECTED_COUNTS)


def _dcgan_discriminator_shapes(channels_0: int, channels_1: int) -> dict:
    return {
        "Conv_0/kernel": (5, 5, 1, channels_0),
        "Conv_0/bias": (channels_0,),
        "Conv_1/kernel": (5, 5, channels_0, channels_1),
        "Conv_1/bias": (channels_1,),
        "Dense_0/kernel": (7 * 7 * channels_1, 1),
        "Dense_0/bias": (1,),
    }


def test_dcgan_layer_structure_is_pinned():
    g_vars, d_vars = _abstract_variables("dcgan")
    assert _shapes(g_vars["params"]) == {
        "Dense_0/kernel": (100, 3136),  # use_bias=False, as in Keras
        "BatchNorm_0/scale": (3136,),
        "BatchNorm_0/bias": (3136,),
        "ConvTranspose_0/kernel": (5, 5, 64, 32),
        "BatchNorm_1/scale": (32,),
        "BatchNorm_1/bias": (32,),
        "ConvTranspose_1/kernel": (5, 5, 32, 1),
    }
    assert _shapes(g_vars["batch_stats"]) == {
        "BatchNorm_0/mean": (3136,),
        "BatchNorm_0/var": (3136,),
        "BatchNorm_1/mean": (32,),
        "BatchNorm_1/var": (32,),
    }
    assert _shapes(d_vars["params"]) == _dcgan_discriminator_shapes(32, 64)


def test_generator_width_multiplies_the_dcgan_generators_hidden_channels():
    g_vars, d_vars = _abstract_variables("dcgan", generator_width=2)
    shapes = _shapes(g_vars["params"])
    assert shapes["Dense_0/kernel"] == (100, 7 * 7 * 128)
    assert shapes["ConvTranspose_0/kernel"] == (5, 5, 128, 64)
    assert shapes["ConvTranspose_1/kernel"] == (5, 5, 64, 1)
    # 100*6272 + BN 2*6272 + 5*5*128*64 + BN 2*64 + 5*5*64 = 846,272
    assert _count(g_vars["params"]) == 846_272
    assert _count(d_vars["params"]) == EXPECTED_COUNTS["dcgan"]["discriminator"]  # D unchanged
    gan = models.build("dcgan", generator_width=2)
    z = _normal(0, (BATCH, gan.latent_dim))
    images, _ = gan.generator.init_with_output(jax.random.key(0), z, train=False)
    assert images.shape == (BATCH,) + IMAGE_SHAPE


def test_discriminator_width_multiplies_the_dcgan_discriminators_channels():
    g_vars, d_vars = _abstract_variables("dcgan", discriminator_width=2)
    assert _shapes(d_vars["params"]) == _dcgan_discriminator_shapes(64, 128)
    assert _count(g_vars["params"]) == EXPECTED_COUNTS["dcgan"]["generator"]  # G unchanged


def test_generator_depth_adds_3x3_blocks_and_a_28x28_feature_stage():
    g_vars, d_vars = _abstract_variables("dcgan", generator_depth=2)
    shapes = _shapes(g_vars["params"])
    assert {k: v for k, v in shapes.items() if k.endswith("kernel")} == {
        "Dense_0/kernel": (100, 3136),
        "ConvTranspose_0/kernel": (5, 5, 64, 32),
        "Conv_0/kernel": (3, 3, 32, 32),  # depth 2: two blocks at 14x14
        "Conv_1/kernel": (3, 3, 32, 32),
        "ConvTranspose_1/kernel": (5, 5, 32, 16),  # 28x28 features, not the image
        "Conv_2/kernel": (3, 3, 16, 16),  # depth - 1 blocks at 28x28
        "Conv_3/kernel": (3, 3, 16, 1),  # the image
    }
    # Every block but the last conv is normalised (BN scale and bias per channel).
    assert len([k for k in shapes if k.startswith("BatchNorm")]) == 2 * 6
    assert _shapes(d_vars["params"]) == _dcgan_discriminator_shapes(32, 64)  # D unchanged
    gan = models.build("dcgan", generator_depth=1)
    z = _normal(0, (BATCH, gan.latent_dim))
    images, _ = gan.generator.init_with_output(jax.random.key(0), z, train=False)
    assert images.shape == (BATCH,) + IMAGE_SHAPE
    assert float(jnp.abs(images).max()) <= 1.0


def test_minibatch_std_feature_is_each_groups_mean_standard_deviation():
    x = np.random.default_rng(0).standard_normal((8, 7, 7, 3)).astype(np.float32)
    out = np.asarray(layers.minibatch_std(jnp.asarray(x), 4))
    assert out.shape == (8, 7, 7, 4)
    np.testing.assert_array_equal(out[..., :3], x)
    for group in (slice(0, 4), slice(4, 8)):
        expected = np.sqrt(x[group].var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(out[group, :, :, 3], expected, rtol=1e-5)
    # Groups are independent: changing the second group leaves the first group's feature.
    changed = x.copy()
    changed[4:] *= 3.0
    out_changed = np.asarray(layers.minibatch_std(jnp.asarray(changed), 4))
    np.testing.assert_array_equal(out_changed[:4], out[:4])
    assert not np.allclose(out_changed[4:, :, :, 3], out[4:, :, :, 3])
    # Init's dummy batch of one is one group; a training batch smaller than the group was too,
    # silently (config.json said 64, the step used 32).
    assert layers.minibatch_std(jnp.asarray(x[:1]), 4).shape == (1, 7, 7, 4)
    for rows in (6, 2):
      with pytest.raises(ValueError, match=r"model.minibatch_std_group=4 must divide the batch "
                                           rf"each device gives the discriminator \({rows}\)"):
          layers.minibatch_std(jnp.asarray(x[:rows]), 4)


def test_minibatch_std_group_gives_the_dcgan_discriminator_one_more_feature_map():
    g_vars, d_vars = _abstract_variables("dcgan", minibatch_std_group=4)
    shapes = _shapes(d_vars["params"])
    assert shapes["Dense_0/kernel"] == (7 * 7 * (64 + 1), 1)
    assert _count(g_vars["params"]) == EXPECTED_COUNTS["dcgan"]["generator"]  # G unchanged
    gan = models.build("dcgan", minibatch_std_group=2)
    d_vars = _fill(_abstract_variables("dcgan", minibatch_std_group=2)[1], seed=3)
    x = _images(4)
    scores = gan.discriminator.apply(d_vars, x, train=False)
    # The second pair's scores depend on the pair's variety: duplicating an example changes
    # them; the first pair's scores do not move.
    varied = gan.discriminator.apply(d_vars, x.at[3].set(x[2]), train=False)
    np.testing.assert_array_equal(np.asarray(varied[:2]), np.asarray(scores[:2]))
    assert float(jnp.abs(varied[2] - scores[2])) > 0


def test_discriminator_dropout_sets_the_dcgan_discriminators_rate():
    d_vars = _fill(_abstract_variables("dcgan")[1], seed=5)
    x = _images(6)

    def dropout_outputs(gan):
        _, captured = gan.discriminator.apply(
            d_vars, x, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["intermediates"],
            capture_intermediates=lambda module, _: isinstance(module, ExampleDropout))
        return [np.asarray(v["__call__"][0]) for v in captured["intermediates"].values()]

    # Rate 0 trains without dropout: the training-mode scores are the evaluation-mode ones.
    no_dropout = models.build("dcgan", discriminator_dropout=0.0)
    np.testing.assert_array_equal(
        np.asarray(no_dropout.discriminator.apply(d_vars, x, train=True,
                                                  rngs={"dropout": jax.random.key(1)})),
        np.asarray(no_dropout.discriminator.apply(d_vars, x, train=False)))
    # Each of the two dropout layers zeroes about `rate` of its units (0.3 by default).
    for rate in (0.5, 0.3):
        gan = models.build("dcgan", **({} if rate == 0.3 else {"discriminator_dropout": rate}))
        outputs = dropout_outputs(gan)
        assert len(outputs) == 2
        for out in outputs:
            assert abs(float(np.mean(out == 0)) - rate) < 0.03, (rate, float(np.mean(out == 0)))


@pytest.mark.parametrize("value, name", [(1.0, "dcgan"), (-0.1, "dcgan"), (0.5, "kannada")])
def test_bad_discriminator_dropout_is_refused(value, name):
    with pytest.raises(ValueError, match=f"model.discriminator_dropout must be in \\[0, 1\\) and is "
                                         f"implemented for dcgan only, got {value} for '{name}': "
                                         f"set it to 0.3"):
        models.build(name, discriminator_dropout=value)


@pytest.mark.parametrize("field, value, lowest, name", [
    ("generator_depth", -1, 0, "dcgan"), ("generator_depth", 1, 0, "mlp"),
    ("minibatch_std_group", 1.5, 0, "dcgan"), ("minibatch_std_group", 4, 0, "kannada")])
def test_bad_depth_or_minibatch_group_is_refused(field, value, lowest, name):
    with pytest.raises(ValueError, match=f"model.{field} must be an integer >= {lowest} and is "
                                         f"implemented for dcgan only, got {value} for '{name}'"):
        models.build(name, **{field: value})


@pytest.mark.parametrize("network", ["generator", "discriminator"])
@pytest.mark.parametrize("name, width", [("dcgan", 0), ("dcgan", 1.5), ("mlp", 2)])
def test_bad_network_width_is_refused(network, name, width):
    with pytest.raises(ValueError, match=f"model.{network}_width must be an integer >= 1 and is "
                                         f"implemented for dcgan only, got {width} for '{name}'"):
        models.build(name, **{f"{network}_width": width})


def test_unknown_model_name_raises_naming_choices():
    with pytest.raises(ValueError) as excinfo:
        models.build("stylegan")
    message = str(excinfo.value)
    assert "stylegan" in message
    for name in ("mlp", "dcgan", "kannada"):
        assert name in message


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_forward_shapes_ranges_and_per_example_discriminator(name):
    assert models.build(name).image_shape == IMAGE_SHAPE
    out = _eval_outputs(name)
    fake, fake_logits, real_logits = out["fake"], out["fake_logits"], out["real_logits"]
    assert fake.shape == (2 * BATCH,) + IMAGE_SHAPE
    assert fake_logits.shape == (2 * BATCH,)
    assert real_logits.shape == (2 * BATCH,)
    for array in (fake, fake_logits, real_logits):
        assert bool(jnp.all(jnp.isfinite(array)))

    small, big = np.asarray(fake[:BATCH]), np.asarray(fake[BATCH:])
    assert small.min() >= -1.0 and small.max() <= 1.0
    assert small.std() > 0.0
    assert not np.allclose(small[0], small[1])  # different latents, different images
    # A huge latent drives the pre-activations far out; the image stays in [-1, 1] and
    # saturates near both ends.
    assert big.min() >= -1.0 and big.max() <= 1.0
    assert big.max() > 0.99 and big.min() < -0.99
    # The output is exactly tanh of the last layer's output.
    last = out["g_intermediates"][LAST_GENERATOR_LAYER[name]]["__call__"][0]
    np.testing.assert_allclose(fake, np.tanh(np.asarray(last, np.float64)).reshape(fake.shape),
                               rtol=1e-5, atol=1e-6)

    # In eval mode each discriminator output depends on its own example only (the WGAN-GP
    # penalty relies on this): changing example 1 leaves the others' scores unchanged.
    before, after = np.asarray(real_logits[:BATCH]), np.asarray(real_logits[BATCH:])
    np.testing.assert_allclose(np.delete(after, 1), np.delete(before, 1), rtol=1e-6, atol=1e-6)
    assert after[1] != before[1]


def test_mlp_forward_matches_numpy():
    # The papers' MLP GAN, written out: G = tanh(relu(z W1 + b1) W2 + b2) as 28x28x1,
    # D = relu(flatten(x) V1 + c1) V2 + c2 (one logit per image).
    g_vars, d_vars = _variables("mlp")
    out = _eval_outputs("mlp")
    g = {k: {n: np.asarray(a, np.float64) for n, a in v.items()} for k, v in g_vars["params"].items()}
    d = {k: {n: np.asarray(a, np.float64) for n, a in v.items()} for k, v in d_vars["params"].items()}
    assert g["Dense_0"]["kernel"].shape == (100, 128) and d["Dense_0"]["kernel"].shape == (784, 128)

    def dense(layer, x):
        return x @ layer["kernel"] + layer["bias"]

    z = np.asarray(out["z"], np.float64)
    fake = np.tanh(dense(g["Dense_1"], np.maximum(dense(g["Dense_0"], z), 0.0))).reshape((-1,) + IMAGE_SHAPE)
    np.testing.assert_allclose(out["fake"][:BATCH], fake[:BATCH], rtol=1e-4, atol=1e-5)
    # The 1e3 * z rows: float32 rounding of pre-activations ~1e3 in size.
    np.testing.assert_allclose(out["fake"][BATCH:], fake[BATCH:], atol=1e-3)
    x = np.asarray(out["x"], np.float64).reshape(len(z), -1)
    logits = dense(d["Dense_1"], np.maximum(dense(d["Dense_0"], x), 0.0))[:, 0]
    np.testing.assert_allclose(out["real_logits"], logits, rtol=1e-4, atol=1e-4)


# --- dcgan train/eval modes ----------------------------------------------------------------


def test_dcgan_batchnorm_train_mode_updates_batch_stats_with_keras_momentum():
    gan = models.build("dcgan")
    g_vars, _ = _variables("dcgan")
    z = _normal(3, (BATCH, gan.latent_dim))
    stats0 = g_vars["batch_stats"]

    train_apply = jax.jit(functools.partial(gan.generator.apply, train=True, capture_intermediates=True,
                                            mutable=["batch_stats", "intermediates"]))
    fake, updates = train_apply(g_vars, z)
    assert fake.shape == (BATCH,) + IMAGE_SHAPE
    assert set(updates) == {"batch_stats", "intermediates"}
    new = updates["batch_stats"]
    assert jax.tree.structure(new) == jax.tree.structure(stats0)
    for layer in ("BatchNorm_0", "BatchNorm_1"):
        for stat in ("mean", "var"):
            assert not np.allclose(new[layer][stat], stats0[layer][stat]), (layer, stat)

    # The first BN normalises the bias-free Dense output h = z @ W. With Keras momentum 0.99:
    # new running stat = 0.99 * old + 0.01 * batch stat (biased variance).
    h = np.asarray(z, np.float64) @ np.asarray(g_vars["params"]["Dense_0"]["kernel"], np.float64)
    old = {k: np.asarray(v, np.float64) for k, v in stats0["BatchNorm_0"].items()}
    np.testing.assert_allclose(new["BatchNorm_0"]["mean"], 0.99 * old["mean"] + 0.01 * h.mean(0),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new["BatchNorm_0"]["var"], 0.99 * old["var"] + 0.01 * h.var(0),
                               rtol=1e-4, atol=1e-6)
    # And it normalises with the batch statistics and Keras epsilon 1e-3.
    bn = {k: np.asarray(v, np.float64) for k, v in g_vars["params"]["BatchNorm_0"].items()}
    bn_out = updates["intermediates"]["BatchNorm_0"]["__call__"][0]
    expected = (h - h.mean(0)) / np.sqrt(h.var(0) + 1e-3) * bn["scale"] + bn["bias"]
    np.testing.assert_allclose(bn_out, expected, rtol=1e-3, atol=1e-4)

    # Train mode couples examples through the batch statistics; eval mode does not.
    z2 = z.at[1].multiply(3.0)
    fake2, _ = train_apply(g_vars, z2)
    assert not np.allclose(fake2[0], fake[0])


def test_dcgan_eval_mode_is_deterministic_and_stateless():
    gan = models.build("dcgan")
    g_vars, d_vars = _variables("dcgan")
    z = _normal(4, (BATCH, gan.latent_dim))

    # No `mutable` and no rngs: eval mode must neither update batch_stats nor draw dropout
    # (flax raises if a module writes an immutable collection or asks for a missing rng).
    @jax.jit
    def eval_apply(z):
        fake = gan.generator.apply(g_vars, z, train=False)
        return fake, gan.discriminator.apply(d_vars, fake, train=False)

    fake_a, logits_a = eval_apply(z)
    fake_b, logits_b = eval_apply(z)
    np.testing.assert_array_equal(fake_a, fake_b)
    np.testing.assert_array_equal(logits_a, logits_b)
    # Running averages, not batch statistics: example 0 ignores the rest of the batch.
    fake_c, logits_c = eval_apply(z.at[1:].set(0.0))
    np.testing.assert_allclose(fake_c[0], fake_a[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(logits_c[0], logits_a[0], rtol=1e-6, atol=1e-6)


@jax.jit
def _dcgan_discriminator_train(d_vars, x, key):
    """The dcgan discriminator in train mode (dropout on): one compile, called with three keys."""
    return models.build("dcgan").discriminator.apply(d_vars, x, train=True, rngs={"dropout": key})


def test_dcgan_discriminator_dropout_train_vs_eval():
    disc = models.build("dcgan").discriminator
    _, d_vars = _variables("dcgan")
    x = _images(5)

    out_a = _dcgan_discriminator_train(d_vars, x, jax.random.key(10))
    out_a_again = _dcgan_discriminator_train(d_vars, x, jax.random.key(10))
    out_b = _dcgan_discriminator_train(d_vars, x, jax.random.key(11))

    @jax.jit
    def eval_and_rate_zero(x):
        # Eval mode needs no dropout rng; rate 0 in train mode draws no masks.
        no_dropout = dcgan.Discriminator(dropout_rate=0.0)
        return (disc.apply(d_vars, x, train=False),
                no_dropout.apply(d_vars, x, train=True, rngs={"dropout": jax.random.key(12)}))

    eval_out, rate_zero_out = eval_and_rate_zero(x)
    np.testing.assert_array_equal(out_a, out_a_again)  # same key, same masks
    assert not np.allclose(out_a, out_b)  # different dropout key, different outputs
    assert not np.allclose(out_a, eval_out)
    # Eval mode is identity dropout: equal to train mode with the rate set to 0 (the only
    # train/eval difference in this discriminator is dropout).
    np.testing.assert_allclose(eval_out, rate_zero_out, rtol=1e-6, atol=1e-6)

    # Train mode really needs a dropout key (the error comes at trace time; nothing compiles).
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(lambda x: disc.apply(d_vars, x, train=True), x)


def _submodule_calls(module, variables, inputs):
    """The submodules `module.apply(variables, inputs, train=False)` calls (traced only)."""
    calls = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            calls.append(context.module)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: module.apply(v, x, train=False), variables, inputs)
    return calls[1:]  # the first call is `module` itself


def test_dcgan_shares_batch_statistics_and_dropout_keys_over_the_device_axis():
    # build(axis_name=...) must reach the layers that need it: the generator's BatchNorms
    # average their statistics over the device axis, and the discriminator's dropout is
    # ExampleDropout keyed to global example indices (flax's nn.Dropout would draw the same
    # masks on every device), so that a split batch matches one device (the ExampleDropout
    # shard_map tests below check that layer).
    gan = models.build("dcgan", axis_name="data")
    g_abstract, d_abstract = _abstract_variables("dcgan")
    z = jax.ShapeDtypeStruct((BATCH, gan.latent_dim), jnp.float32)
    x = jax.ShapeDtypeStruct((BATCH,) + IMAGE_SHAPE, jnp.float32)

    g_calls = _submodule_calls(gan.generator, g_abstract, z)
    batch_norms = [m for m in g_calls if isinstance(m, nn.BatchNorm)]
    assert [(m.axis_name, m.momentum, m.epsilon) for m in batch_norms] == [("data", 0.99, 1e-3)] * 2

    d_calls = _submodule_calls(gan.discriminator, d_abstract, x)
    assert not any(isinstance(m, (nn.Dropout, nn.BatchNorm)) for m in d_calls)
    dropouts = [m for m in d_calls if isinstance(m, ExampleDropout)]
    assert [(m.rate, m.axis_name, m.leaky_slope) for m in dropouts] == [(0.3, "data", 0.3)] * 2
    # Without an axis name (one device) nothing refers to a device axis.
    single = _submodule_calls(models.build("dcgan").discriminator, d_abstract, x)
    assert [m.axis_name for m in single if isinstance(m, ExampleDropout)] == [None, None]


# --- ExampleDropout ------------------------------------------------------------------------

DROPOUT_RATE = 0.3
DROPOUT_SHAPE = (128, 128)  # per example
DROPOUT_GLOBAL_BATCH = 8  # the shard_map tests split this batch over 2 or 4 devices


def _dropout(x, key, rate, axis_name=None):
    return ExampleDropout(rate, axis_name).apply({}, x, deterministic=False, rngs={"dropout": key})


# One compile per input shape, shared by the tests below.
_dropout_jit = jax.jit(_dropout, static_argnums=(2, 3))


def _dropout_input(batch):
    """Positive values (no zeros), so a zero in the output means dropped."""
    rows = np.random.default_rng(0).uniform(0.5, 1.5, (64,) + DROPOUT_SHAPE)
    return jnp.asarray(rows[:batch], jnp.float32)


def test_example_dropout_rate_scaling_and_per_example_masks():
    x = _dropout_input(64)
    key = jax.random.key(1)
    y = np.asarray(_dropout_jit(x, key, DROPOUT_RATE))
    dropped = y == 0.0
    assert abs(dropped.mean() - DROPOUT_RATE) < 0.02  # over ~1M values
    per_example = dropped.reshape(64, -1).mean(1)
    assert np.all(np.abs(per_example - DROPOUT_RATE) < 0.03)
    # Kept values are scaled by 1 / (1 - rate) (inverted dropout: the expectation is unchanged).
    np.testing.assert_allclose(y[~dropped], np.asarray(x)[~dropped] / (1.0 - DROPOUT_RATE), rtol=1e-6)
    assert abs(y.mean() / float(x.mean()) - 1.0) < 0.01

    # Masks depend on the example's index only: a prefix of the batch keeps its masks...
    prefix = np.asarray(_dropout_jit(x[:DROPOUT_GLOBAL_BATCH], key, DROPOUT_RATE))
    np.testing.assert_array_equal(prefix, y[:DROPOUT_GLOBAL_BATCH])
    # ...every example has its own mask, and another key gives other masks.
    assert len({m.tobytes() for m in dropped}) == 64
    other = np.asarray(_dropout_jit(x, jax.random.key(2), DROPOUT_RATE))
    assert abs(((other == 0) != dropped).mean() - 2 * DROPOUT_RATE * (1 - DROPOUT_RATE)) < 0.02


def test_example_dropout_deterministic_or_zero_rate_is_identity():
    x = _normal(0, (4, 5, 6))
    np.testing.assert_array_equal(ExampleDropout(0.3).apply({}, x, deterministic=True), x)
    np.testing.assert_array_equal(_dropout(x, jax.random.key(1), 0.0), x)


@pytest.mark.parametrize("leaky_slope", [None, 0.3])
def test_example_dropout_gradients_match_autodiff_of_the_mask(leaky_slope):
    # The backward pass reads the mask (and, with leaky_slope, LeakyReLU's branch) off the
    # output (y != 0, y > 0); first and second order gradients (the gradient penalty
    # differentiates a gradient) equal autodiff of where(keep, f(x) / keep_prob, 0) with the
    # mask as a constant, f the identity or LeakyReLU.
    x = _dropout_input(4) - 1.0  # both signs, for LeakyReLU's two branches
    key = jax.random.key(1)
    keep = np.asarray(_dropout_jit(jnp.abs(x) + 1.0, key, DROPOUT_RATE)) != 0.0
    f = (lambda v: v) if leaky_slope is None else (lambda v: nn.leaky_relu(v, leaky_slope))

    def fused(v, key, rate):
        return ExampleDropout(rate, leaky_slope=leaky_slope).apply(
            {}, v, deterministic=False, rngs={"dropout": key})

    def plain(v, _key, rate):
        return jnp.where(keep, f(v) / (1.0 - rate), 0.0)

    def critic(w, v, drop):  # a nonlinearity on each side, so second derivatives do not vanish
        return jnp.sum(jnp.sin(drop(jnp.tanh(v * w), key, DROPOUT_RATE)))

    def penalty(w, drop):
        return jnp.sum(jax.grad(critic, argnums=1)(w, x, drop) ** 2)

    w = jnp.float32(0.7)
    np.testing.assert_array_equal(np.asarray(fused(x, key, DROPOUT_RATE)),
                                  np.asarray(plain(x, key, DROPOUT_RATE)))
    for order in (jax.grad(critic, argnums=1), lambda w, v, drop: jax.grad(penalty)(w, drop)):
        np.testing.assert_allclose(np.asarray(order(w, x, fused)),
                                   np.asarray(order(w, x, plain)), rtol=1e-6)
    # A kept unit whose input is exactly 0 gets a zero gradient, as a dropped unit does.
    zeros = jnp.zeros_like(x)
    grad = np.asarray(jax.grad(lambda v: jnp.sum(fused(v, key, DROPOUT_RATE)))(zeros))
    np.testing.assert_array_equal(grad, np.zeros_like(grad))


def test_example_dropout_leaky_slope_is_leaky_relu_then_dropout_bit_for_bit():
    # The dcgan discriminator's fused LeakyReLU + dropout must train exactly as the two layers
    # did (compiled, where XLA rewrites the division by keep_prob): values and gradients.
    x = jax.random.normal(jax.random.key(0), (8, 14, 14, 32))
    cotangent = jax.random.normal(jax.random.key(1), x.shape)
    rngs = {"dropout": jax.random.key(2)}

    def fused(v):
        return ExampleDropout(0.3, leaky_slope=0.3).apply({}, v, deterministic=False, rngs=rngs)

    def separate(v):
        return ExampleDropout(0.3).apply({}, nn.leaky_relu(v, 0.3), deterministic=False, rngs=rngs)

    for fn in (lambda v: v, lambda v: jnp.vdot(v, cotangent)):
        got = jax.jit(jax.value_and_grad(lambda v: fn(fused(v)).sum()))(x)
        want = jax.jit(jax.value_and_grad(lambda v: fn(separate(v)).sum()))(x)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    # Evaluation mode is the LeakyReLU alone.
    np.testing.assert_array_equal(
        np.asarray(ExampleDropout(0.3, leaky_slope=0.3).apply({}, x, deterministic=True)),
        np.asarray(nn.leaky_relu(x, 0.3)))
    with pytest.raises(ValueError, match=r"leaky_slope must be > 0 .*, got 0.0"):
        ExampleDropout(0.3, leaky_slope=0.0).apply({}, x, deterministic=True)


@pytest.mark.parametrize("n_devices", [2, 4])
def test_example_dropout_under_shard_map_matches_single_device(n_devices):
    if jax.device_count() < n_devices:
        pytest.skip(f"needs {n_devices} devices, have {jax.device_count()}")
    mesh = Mesh(np.array(jax.devices()[:n_devices]), ("data",))
    x = _dropout_input(DROPOUT_GLOBAL_BATCH)
    key = jax.random.key(1)

    sharded = jax.jit(jax.shard_map(
        lambda x, key: _dropout(x, key, DROPOUT_RATE, axis_name="data"),
        mesh=mesh, in_specs=(P("data"), P()), out_specs=P("data")))(x, key)
    reference = np.asarray(_dropout_jit(x, key, DROPOUT_RATE))  # the whole batch on one device
    np.testing.assert_array_equal(np.asarray(sharded), reference)

    # Not vacuous: ignoring the device offset would repeat the first shard's masks.
    local = DROPOUT_GLOBAL_BATCH // n_devices
    assert not np.array_equal(reference[:local] == 0, reference[local:2 * local] == 0)


# --- jaxgan.rng ----------------------------------------------------------------------------

RNG_SHAPE = (16, 4)
RNG_DRAWS = {  # kind -> (jaxgan.rng draw for a local batch, the direct jax.random draw)
    "normal": (lambda key, n, axis=None: rng.normal(key, n, RNG_SHAPE, axis),
               lambda k: jax.random.normal(k, RNG_SHAPE)),
    "uniform": (lambda key, n, axis=None: rng.uniform(key, n, RNG_SHAPE, axis),
                lambda k: jax.random.uniform(k, RNG_SHAPE)),
    "bernoulli": (lambda key, n, axis=None: rng.bernoulli(key, n, RNG_SHAPE, 0.3, axis),
                  lambda k: jax.random.bernoulli(k, 0.3, RNG_SHAPE)),
}


_RNG_DRAWS_JIT = {kind: jax.jit(draw, static_argnums=(1, 2)) for kind, (draw, _) in RNG_DRAWS.items()}


@pytest.mark.parametrize("kind", sorted(RNG_DRAWS))
def test_rng_row_i_is_draw_from_fold_in_key_i(kind):
    draw, direct = _RNG_DRAWS_JIT[kind], jax.jit(RNG_DRAWS[kind][1])
    key = jax.random.key(123)
    out = np.asarray(draw(key, 6))
    assert out.shape == (6,) + RNG_SHAPE
    for i in range(6):
        np.testing.assert_array_equal(out[i], np.asarray(direct(jax.random.fold_in(key, i))))
    # Rows are distinct draws (not one draw broadcast), and a new key gives new draws.
    assert len({row.tobytes() for row in out}) == 6
    assert not np.array_equal(np.asarray(draw(jax.random.key(124), 6)), out)
    if kind == "uniform":
        assert out.min() >= 0.0 and out.max() < 1.0
    if kind == "normal":
        # So a prefix is stable when the batch grows (the same latents for the first rows).
        np.testing.assert_array_equal(np.asarray(draw(key, 9))[:6], out)


def test_rng_global_example_indices_without_axis():
    np.testing.assert_array_equal(rng.global_example_indices(5, None), np.arange(5))


def test_example_dropout_rate_one_drops_everything_with_a_finite_gradient():
  layer = ExampleDropout(1.0)
  x = jnp.ones((2, 5))

  def total(x):
    return layer.apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(0)}).sum()

  assert float(total(x)) == 0.0
  np.testing.assert_array_equal(jax.grad(total)(x), np.zeros((2, 5)))


@pytest.mark.parametrize('features', [1, 10])
def test_feature_dense_is_dense_of_the_flattened_maps(features):
  """FeatureDense (the dcgan discriminator's heads on its unflattened feature maps) has
  nn.Dense's parameters and initial values, and computes nn.Dense of the flattened input."""
  x = jax.random.normal(jax.random.key(0), (4, 7, 7, 64))
  flat = x.reshape((4, -1))
  dense = nn.Dense(features)
  feature_dense = layers.FeatureDense(features)
  params = dense.init(jax.random.key(1), flat)
  jax.tree.map(np.testing.assert_array_equal, feature_dense.init(jax.random.key(1), x), params)
  np.testing.assert_allclose(feature_dense.apply(params, x), dense.apply(params, flat),
                             rtol=1e-5, atol=1e-5)
