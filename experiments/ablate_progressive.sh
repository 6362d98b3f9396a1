#!/usr/bin/env bash
# Ablation of the progressive_mnist recipe: the full recipe and the recipe minus each part, all at
# the same number of images seen (2340 steps x 256 = 599,040), each scored by fcd on 5000 samples.
#   experiments/ablate_progressive.sh RUNS_DIR [extra --config.FIELD=VALUE ...]
# e.g. a short version: experiments/ablate_progressive.sh /work/runs/ablation --config.num_steps=468
# (then also pass --config.model.grow_step and --config.model.fade_steps to match). Extra flags
# apply to every variant: shorten no_large_batch's 4x steps by hand to keep images seen equal. Runs that exist are resumed (or skipped when
# finished). Prints each variant's training wall time; fcd goes to RUN/eval.json.
set -euo pipefail
runs=${1:?usage: $0 RUNS_DIR [--config.FIELD=VALUE ...]}
shift
config=experiments/configs/progressive_mnist.py
declare -A variants=(
  [full]=''
  [no_growing]='--config.model.grow_step=0 --config.model.fade_steps=0'
  [no_instance_norm]='--config.model.generator_norm=batch'
  [no_spectral_norm]='--config.model.spectral_norm=False'
  [no_schedule]='--config.schedule.name=constant'
  [no_label_smoothing]='--config.loss.label_smoothing=0.0'
  # batch 64: 4x the steps (and the grow/fade/warmup steps), the unscaled learning rate 1e-4.
  [no_large_batch]='--config.batch_size=64 --config.num_steps=9360 --config.model.grow_step=4680
    --config.model.fade_steps=2000 --config.schedule.warmup_steps=400
    --config.optimizer.generator.lr=1e-4 --config.optimizer.discriminator.lr=1e-4'
)
for name in full no_growing no_instance_norm no_spectral_norm no_schedule no_label_smoothing \
    no_large_batch; do
  # shellcheck disable=SC2086  # the variant's flags are meant to split
  start=$SECONDS
  python -m experiments.train --config="$config" --workdir="$runs/$name" ${variants[$name]} "$@"
  echo "$name: trained in $((SECONDS - start)) s"
  python -m experiments.evaluate --workdir="$runs/$name" --num_samples=5000 --metrics=fcd
done
