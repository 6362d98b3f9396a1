"""Class-conditional DCGAN on Kannada-MNIST: the recipe cgan_mnist.py had before its spectral
norm, hinge loss and class head (projection discriminator, class-conditional BN in G, Adam
2e-4/b1 0.5, mode seeking 0.2; none of it tuned on Kannada), without its EMA generator.

EMA (decay 0.999) was a mixed result here, unlike on MNIST (10,000 samples, 15 epochs, one seed
each, with EMA / without): label_accuracy 0.978 / 0.974, augmentation_gain on the test split
+19.6 / +18.1 points at K = 100 and +13.8 / +12.3 at K = 1,000, but fcd 19.0 / 15.3, cas_cnn
0.938 / 0.942 and the gain on Dig-MNIST +19.6 / +21.0 and +9.7 / +11.2. So were mode seeking 0.1
(fcd 10.3, label_accuracy 0.974, cas_cnn 0.929) and spectral norm with the hinge loss (fcd 11.6,
label_accuracy 0.981, cas_cnn 0.937), 2026-12-01.
"""
from experiments.configs import cgan_mnist


def get_config():
  config = cgan_mnist.get_config()
  config.data.name = 'kannada_mnist'
  config.model.conditioning = 'projection'
  config.model.spectral_norm = False
  config.loss.name = 'bce'
  config.loss.class_loss_on_fakes = True
  config.ema.decay = 0.0
  return config
