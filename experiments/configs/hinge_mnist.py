"""Hinge loss (Lim & Ye 2017, as in SN-GAN and BigGAN) with the DCGAN networks on MNIST, a
spectrally normalised discriminator and the generator's EMA; Adam(2e-4, b1=0.5, b2=0.999)."""
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.loss.name = 'hinge'
  config.model.spectral_norm = True
  config.ema.decay = 0.999
  for opt in (config.optimizer.generator, config.optimizer.discriminator):
    opt.lr, opt.b1, opt.b2 = 2e-4, 0.5, 0.999
  return config
