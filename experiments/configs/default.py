"""Default training config: the papers' DCGAN on MNIST. Variants import and adjust it.

Every field can be overridden on the command line: --config.batch_size=128, --config.model.name=mlp.
"""
import os

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = 'dcgan'  # mlp | dcgan | kannada
  # > 0: class-conditional (label embedding joined to the latent; jaxgan.models.conditional)
  config.model.num_classes = 0
  config.model.conditioning = 'projection'  # projection | auxiliary (AC-GAN) discriminator
  config.model.label_embed_dim = 50

  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'bce'  # bce (non-saturating) | wgan_gp
  config.loss.label_smoothing = 0.0  # one-sided: real target 1 - label_smoothing (bce only)
  config.loss.gp_weight = 10.0  # gradient-penalty lambda (wgan_gp only)
  config.loss.n_critic = 1  # discriminator updates per generator update
  config.loss.class_weight = 1.0  # auxiliary classifier's cross-entropy weight (AC-GAN only)

  config.data = ml_collections.ConfigDict()
  config.data.name = 'mnist'  # mnist | kannada_mnist
  config.data.split = 'train'
  # Folder holding <dataset>/<original IDX .gz files>; empty: let tfds download them.
  config.data.manual_dir = os.environ.get('JAXGAN_MANUAL_DIR', '')
  config.data.data_dir = ''  # tfds's prepared copies; empty: tfds's default (TFDS_DATA_DIR)
  config.data.num_train_examples = 0  # > 0: train on a fixed class-balanced subset of this size

  config.batch_size = 64  # global, over all devices; 937 updates per MNIST epoch
  config.num_epochs = 10
  config.num_steps = 0  # > 0 overrides num_epochs

  # Keras Adam defaults with the papers' learning rate.
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.generator = ml_collections.ConfigDict(
      dict(lr=1e-4, b1=0.9, b2=0.999, eps=1e-7))
  config.optimizer.discriminator = ml_collections.ConfigDict(
      dict(lr=1e-4, b1=0.9, b2=0.999, eps=1e-7))
  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = 'constant'  # constant | warmup | cosine | exponential
  config.schedule.warmup_steps = 0
  config.schedule.end_factor = 0.0  # cosine: final lr = lr * end_factor
  # exponential: after warmup, lr * decay_rate ** ((step - warmup_steps) / decay_steps)
  config.schedule.decay_steps = 1000
  config.schedule.decay_rate = 0.5

  config.parallel = 'mesh'  # mesh (jit + shard_map over all devices) | pmap
  # Speed (results equal up to float rounding): steps per jit call (lax.scan; saves host round
  # trips on accelerators; slower on XLA:CPU), network compute dtype (float32 | bfloat16, for
  # accelerators; params stay float32), reuse the state's buffers for the new state.
  config.steps_per_call = 1
  # CPU only: jax devices per process (set before jax starts, by experiments.train): 0 = one per
  # core, the data-parallel step being faster on XLA:CPU than intra-op threads; -1 = jax's 1.
  config.cpu_devices = 0
  config.compute_dtype = 'float32'
  config.donate = True
  config.log_every = 100  # steps between metrics.jsonl lines and log lines
  config.checkpoint_every = 1000  # steps; a checkpoint is also written at every epoch end
  config.keep_checkpoints = 3
  config.sample_grid_rows = 8  # sample grids are rows x rows digits from one fixed latent batch
  config.sample_grid_scale = 3  # each pixel drawn as scale x scale
  return config
