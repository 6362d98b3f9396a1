"""Default training config: the papers' DCGAN on MNIST. Variants import and adjust it.

Every field can be overridden on the command line: --config.batch_size=128, --config.model.name=mlp.
"""
import os

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = 'dcgan'  # mlp | dcgan | kannada | progressive
  config.model.spectral_norm = False  # spectral normalisation of D's layers (dcgan)
  # G's normalisation (dcgan): batch | instance | conditional_batch (class-conditional BN)
  config.model.generator_norm = 'batch'
  # progressive: the 28x28 layers fade in from generator step grow_step over fade_steps steps.
  config.model.grow_step = 0
  config.model.fade_steps = 0
  # > 0: class-conditional (label embedding joined to the latent; jaxgan.models.conditional)
  config.model.num_classes = 0
  # discriminator: projection | auxiliary (AC-GAN) | projection_auxiliary (both heads)
  config.model.conditioning = 'projection'
  config.model.label_embed_dim = 50
  # dcgan: G's hidden channels are 64 and 32 times generator_width, D's 32 and 64 times
  # discriminator_width.
  config.model.generator_width = 1
  config.model.discriminator_width = 1
  # dcgan: > 0 adds that many 3x3 conv blocks at 14x14 and a 28x28 feature stage to G.
  config.model.generator_depth = 0
  # dcgan: > 0 gives D the minibatch standard deviation of groups of this many examples.
  config.model.minibatch_std_group = 0
  # dcgan: the dropout rate after each of D's convolutions (the papers' Keras DCGAN: 0.3).
  config.model.discriminator_dropout = 0.3

  config.loss = ml_collections.ConfigDict()
  config.loss.name = 'bce'  # bce (non-saturating) | wgan (weight clipping) | wgan_gp | hinge | lsgan
  config.loss.label_smoothing = 0.0  # one-sided: real target 1 - label_smoothing (bce only)
  config.loss.gp_weight = 10.0  # gradient-penalty lambda (wgan_gp only)
  config.loss.weight_clip = 0.01  # critic parameters clipped to [-c, c] (wgan only)
  config.loss.r1_gamma = 0.0  # > 0: R1 penalty gamma/2 E||grad D(real)||^2 (any loss)
  config.loss.n_critic = 1  # discriminator updates per generator update
  # > 0: weight of the balanced consistency penalty (bCR): D's outputs for real and fake images
  # against its outputs for their random translations, of up to consistency_translation of the
  # image size (0.125: 4 pixels each way on 28x28, DiffAugment's and the bCR paper's shift; read
  # only when consistency > 0)
  config.loss.consistency = 0.0
  config.loss.consistency_translation = 0.125
  config.loss.class_weight = 1.0  # auxiliary classifier's cross-entropy weight (AC-GAN heads)
  config.loss.class_loss_on_fakes = True  # D's class loss also on fakes (AC-GAN) or real only
  # > 0: weight of MSGAN's mode-seeking term in G's loss (latents must change the image)
  config.loss.mode_seeking = 0.0

  config.data = ml_collections.ConfigDict()
  config.data.name = 'mnist'  # mnist | kannada_mnist | emnist_digits | svhn
  config.data.split = 'train'
  # Folder holding <dataset>/<official files: IDX .gz, SVHN's .mat>; empty: tfds downloads them.
  config.data.manual_dir = os.environ.get('JAXGAN_MANUAL_DIR', '')
  config.data.data_dir = ''  # tfds's prepared copies; empty: tfds's default (TFDS_DATA_DIR)
  config.data.num_train_examples = 0  # > 0: train on a fixed class-balanced subset of this size
  # > 0: D's real digits drawn with replacement, each with weight min(rarity ** power, cap)
  # within its class (jaxgan/rarity.py): more rare writing styles for G to learn; 0: uniform.
  config.data.rarity_power = 0.0
  config.data.rarity_cap = 2.5
  # > 0: weighted draws in the first rarity_epochs epochs only, uniform after (fcd recovers);
  # 0: every epoch.
  config.data.rarity_epochs = 0

  config.batch_size = 64  # global, over all devices; 937 updates per MNIST epoch
  config.num_epochs = 10
  config.num_steps = 0  # > 0 overrides num_epochs

  # Keras Adam defaults with the papers' learning rate.
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adam'  # adam | rmsprop (decay = b2, eps), for both networks
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

  # Exponential moving average of G's parameters, sampled and evaluated instead of the trained
  # ones when on: decay per generator step, 0 = off.
  config.ema = ml_collections.ConfigDict()
  config.ema.decay = 0.0
  # DiffAugment on every image D sees, real and fake: '' (off) or e.g. 'translation,cutout'.
  config.augment = ml_collections.ConfigDict()
  config.augment.policy = ''

  config.parallel = 'mesh'  # mesh (jit + shard_map over all devices) | pmap
  # Speed (results equal up to float rounding): steps per jit call (lax.scan; saves host round
  # trips on accelerators; slower on XLA:CPU), network compute dtype (float32 | bfloat16, for
  # accelerators; params stay float32), reuse the state's buffers for the new state.
  config.steps_per_call = 1
  # CPU only: jax devices per process (set before jax starts, by experiments.train); -1 = jax's
  # default (1 device using every core), 0 = one per core, N = N. Several CPU devices make the
  # step data-parallel (1.6x faster on 2 cores); runs default to one device so that the program
  # does not depend on the machine's core count (the floats follow XLA:CPU's thread count, the
  # usable cores unless PJRT_NPROC sets it: README, Determinism and tests).
  config.cpu_devices = -1
  config.compute_dtype = 'float32'
  config.donate = True
  # Batches a background thread prepares ahead; 0 = none, each batch gathered as the step is
  # dispatched and copied to the devices by the step's jit; -1 = 0 on CPU, 2 on accelerators.
  config.prefetch = -1
  config.log_every = 100  # steps between metrics.jsonl lines and log lines
  # > 0: every eval_every steps (and at the end) score eval_num_samples digits with the
  # evaluation suite, append the figures to metrics.jsonl and keep the lowest-fcd state in
  # RUN/best/ (described by RUN/best.json). ~6 s per 5,000 digits on a 2-core CPU.
  config.eval_every = 0
  config.eval_num_samples = 5000
  # Conditional models: the classes of those digits, as experiments.evaluate's
  # --class_proportions: 'balanced', 'train' (the train split's class frequencies, which the
  # real reference fcd compares with follows) or one weight per class ('2,1,1,...').
  config.eval_class_proportions = 'balanced'
  config.checkpoint_every = 1000  # steps; a checkpoint is also written with each epoch grid
  config.keep_checkpoints = 3
  config.sample_grid_rows = 8  # sample grids are rows x rows digits from one fixed latent batch
  config.sample_grid_scale = 3  # each pixel drawn as scale x scale
  # The scale the run's latents are drawn at when it is sampled or scored (experiments.sample,
  # sample_strings, evaluate, sweep, serve, and evaluations during training) unless their
  # --latent_scale says otherwise; see jaxgan.generate.latents.
  config.sample_latent_scale = 1.0
  # A sample grid (and a checkpoint) at every epoch end, or at every k-th one when the run has
  # more epochs than this (small data: k = ceil(epochs / max_epoch_grids)).
  config.max_epoch_grids = 100
  return config
