"""The "practical approach" recipe on MNIST: progressive growing from 14x14 to 28x28 halfway
through training with a smooth fade-in (Karras et al. 2018), instance normalisation in the
generator, spectral normalisation in the discriminator, a learning-rate schedule (warmup, then
cosine decay), a large batch (256) and one-sided label smoothing (0.1).

10 epochs of 234 steps; the 28x28 layers fade in over the 500 steps after step 1170.
"""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'progressive'
  config.model.generator_norm = 'instance'
  config.model.spectral_norm = True
  config.batch_size = 256
  config.num_steps = 2340  # 10 epochs of 60,000 / 256
  config.model.grow_step = config.num_steps // 2
  config.model.fade_steps = 500
  config.loss.label_smoothing = 0.1
  for opt in (config.optimizer.generator, config.optimizer.discriminator):
    opt.lr, opt.b1, opt.b2 = 4e-4, 0.5, 0.999  # the linear scaling of 1e-4 at batch 64
  config.schedule.name = 'cosine'
  config.schedule.warmup_steps = 100
  config.schedule.end_factor = 0.1
  return config
