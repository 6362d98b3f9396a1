"""Evaluation of generated digits: our own classifier per dataset and metrics against real data.

  classifier  the evaluation CNN (128-d embedding + logits), `embed_and_predict`, the training
              code behind experiments.train_classifier, and the small classifiers of cas and
              augmentation_gain
  weights     the shipped weights (flax msgpack) and their SHA-256-checked manifests
  metrics     `METRICS`, the registry of metric functions, and the numerics behind them
  suite       real data, the real reference, the results table, `make_periodic_evaluator`
"""
