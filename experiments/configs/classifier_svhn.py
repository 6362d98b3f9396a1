"""The SVHN evaluation classifier (jaxgan/evaluation/weights/svhn.msgpack), on SVHN's digits in
the MNIST format jaxgan loads them in (grey, 28x28; README, Data).

python -m experiments.train_classifier --config=experiments/configs/classifier_svhn.py

jaxgan ships no SVHN classifier (the machines it was developed on had no copy of SVHN), so each
user trains this one once before scoring SVHN runs. classifier_mnist.py's recipe for about the
same number of steps: 7 epochs of SVHN's 73,257 training digits against MNIST's 8 of 60,000.
"""
from experiments.configs import classifier_mnist


def get_config():
  config = classifier_mnist.get_config()
  config.dataset = 'svhn'
  config.num_epochs = 7
  return config
