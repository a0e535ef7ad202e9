#!/usr/bin/env bash
# Rebuild the bundled synthetic demo model and the replication table (docs/replication.md).
# Usage: bash models/make_demo.sh WORKDIR MODELDIR RESULTS_JSON
# The defaults are the shipped demo's recipe: about two hours on a 2-core CPU with nothing else running. Every number it
# prints is SYNTHETIC. Both models are framed in millimetres around the region a learned localiser finds
# (kneeage.localise): the knee model sees INPUT px at SPACING mm, the hand model HAND_INPUT px at HAND_SPACING.
# The knee model equalises its window (INTENSITY=equalise: invariant to gamma and LUTs); KNEE_SIZES (e.g. 256,384,512)
# renders the knee training films at those sizes in turn (the hands stay at SIZE), so the model sees every pixel size.
# Environment overrides: N_HANDS N_TRAIN N_TEST SIZE KNEE_SIZES ARCH INPUT SPACING INTENSITY HAND_INPUT HAND_SPACING HAND_AUGMENT BS LR LOC_EPOCHS HAND_LOC_EPOCHS LOC_FILMS
# HAND_FOLDS HAND_EPOCHS KNEE_FOLDS KNEE_EPOCHS VAR_FOLDS VAR_EPOCHS WORKERS; MAIN=0 skips the main
# model (variants only); VARIANTS=0 skips the variants.
set -euo pipefail
WORK=${1:-runs/demo}; MODEL=${2:-models/demo}; RESULTS=${3:-$WORK/results.json}
W=${WORKERS:-$(nproc)}; SIZE=${SIZE:-256}; ARCH=${ARCH:-kneeage_resnet_slim}; HAND_AUGMENT=${HAND_AUGMENT:-light}; INPUT=${INPUT:-128}; SPACING=${SPACING:-1.0}; BS=${BS:-32}; LR=${LR:-2e-3}
KNEE_SIZES=${KNEE_SIZES:-}; INTENSITY=${INTENSITY:-equalise}
HAND_INPUT=${HAND_INPUT:-160}; HAND_SPACING=${HAND_SPACING:-1.25}; LOC_EPOCHS=${LOC_EPOCHS:-6}; HAND_LOC_EPOCHS=${HAND_LOC_EPOCHS:-10}; LOC_FILMS=${LOC_FILMS:-1200}
N_HANDS=${N_HANDS:-2000}; N_TRAIN=${N_TRAIN:-2400}; N_TEST=${N_TEST:-400}
HAND_FOLDS=${HAND_FOLDS:-2}; HAND_EPOCHS=${HAND_EPOCHS:-14}; KNEE_FOLDS=${KNEE_FOLDS:-5}; KNEE_EPOCHS=${KNEE_EPOCHS:-12}
VAR_FOLDS=${VAR_FOLDS:-2}; VAR_EPOCHS=${VAR_EPOCHS:-12}; MAIN=${MAIN:-1}; VARIANTS=${VARIANTS:-1}
K=python3
START=$(date +%s); el() { echo $(( $(date +%s) - START )); }
mkdir -p "$WORK"
echo "[$(el)s] rendering cohorts (a cohort already written is kept: every step below resumes)"
synth() { [ -f "$WORK/$1/manifest.csv" ] || $K -m kneeage synth --n "$2" --seed "$3" --out "$WORK/$1" --size $SIZE --hands --format png --workers "$W" "${@:4}" >/dev/null; }
synth hands "$N_HANDS" 101
# The knee cohorts render while the hand model trains (on a GPU machine the CPU cores are free then).
( synth train "$N_TRAIN" 1 --knee-sizes "${KNEE_SIZES:-$SIZE}" && synth test "$N_TEST" 2 ) & RENDER=$!
# fit OUT EPOCHS ARGS...: train unless OUT is complete; never stop early in the first half (a model from
# scratch can sit on a plateau for many epochs before it takes off).
fit() {
  local out=$1 epochs=$2; shift 2
  if [ -f "$out/model_card.json" ]; then echo "$out: already trained"; return; fi
  $K -m kneeage train --out "$out" --epochs "$epochs" --min-epochs $((epochs / 2)) --batch-size "$BS" --lr "$LR" --arch "$ARCH" --synthetic-demo "$@"
}
loc() { [ -f "$1/localiser.json" ] || $K -m kneeage localiser --manifest "$2/manifest.csv" --truth "$2/truth.csv" --out "$1" \
  --image-column "$3" --epochs "$4" --max-films "$LOC_FILMS" >/dev/null; }
echo "[$(el)s] localisers (phantom truth knows where the knee and the hand are)"
loc "$WORK/localiser_hand" "$WORK/hands" hand_image "$HAND_LOC_EPOCHS"
echo "[$(el)s] hand model (hand films of a separate cohort, labels = reference reads)"
fit "$WORK/hand_model" "$HAND_EPOCHS" --manifest "$WORK/hands/manifest.csv" --image-column hand_image --body-part hand \
  --folds "$HAND_FOLDS" --input-size "$HAND_INPUT" --spacing "$HAND_SPACING" --localiser "$WORK/localiser_hand" \
  --augment "$HAND_AUGMENT" --patience 10 --name "synthetic hand model"
wait $RENDER
echo "[$(el)s] knee cohorts rendered"
loc "$WORK/localiser_knee" "$WORK/train" image "$LOC_EPOCHS"
echo "[$(el)s] pseudo-labels from the paired hand films"
$K -m kneeage pseudolabel --manifest "$WORK/train/manifest.csv" --hand-model "$WORK/hand_model"
$K -m kneeage pseudolabel --manifest "$WORK/test/manifest.csv" --hand-model "$WORK/hand_model"
ev() { $K -m kneeage evaluate --model "$1" --manifest "$WORK/test/manifest.csv" --truth "$WORK/test/truth.csv" \
  --cases "$WORK/cases_$(basename "$1").csv" --record "$N_TEST fresh synthetic subjects (kneeage.phantom, seed 2)"; }
KNEE=(--input-size "$INPUT" --spacing "$SPACING" --intensity "$INTENSITY" --localiser "$WORK/localiser_knee")
if [ "$MAIN" = 1 ]; then
echo "[$(el)s] knee demo model: image+sex, hand-initialised, pseudo-labels, $KNEE_FOLDS folds"
fit "$MODEL" "$KNEE_EPOCHS" --manifest "$WORK/train/manifest.csv" --label pseudo_bone_age_months --init-from "$WORK/hand_model" \
  --folds "$KNEE_FOLDS" "${KNEE[@]}" --patience 10 --name "kneeage synthetic demo ($ARCH, $INPUT px at $SPACING mm)" \
  --training-data "$N_TRAIN synthetic knee AP phantoms (kneeage.phantom, seed 1, ${KNEE_SIZES:-$SIZE} px), ages 0-18 y, labelled by a hand model ($HAND_FOLDS folds, $HAND_INPUT px at $HAND_SPACING mm) trained on $N_HANDS synthetic hand films (seed 101)"
echo "{\"main\": $(ev "$MODEL")" > "$RESULTS.tmp"
else
echo "{\"main\": null" > "$RESULTS.tmp"
fi
echo "[$(el)s] variants ($VAR_FOLDS folds, $VAR_EPOCHS epochs each)"
variant() { # name, extra train args
  local name=$1; shift
  if [ "$VARIANTS" = 0 ]; then return; fi
  if [ "$(el)" -gt "${VARIANT_DEADLINE:-100000}" ]; then echo "skip $name (time)"; return; fi
  fit "$WORK/v_$name" "$VAR_EPOCHS" --manifest "$WORK/train/manifest.csv" --folds "$VAR_FOLDS" "${KNEE[@]}" \
    --patience 8 "$@" >/dev/null
  echo ", \"$name\": $(ev "$WORK/v_$name")" >> "$RESULTS.tmp"
  echo "[$(el)s] variant $name done"
}
variant sex_hand_init --label pseudo_bone_age_months --init-from "$WORK/hand_model"
variant sex_scratch --label pseudo_bone_age_months
variant image_only --label pseudo_bone_age_months --init-from "$WORK/hand_model" --no-sex
variant sex_chron --label pseudo_bone_age_months --init-from "$WORK/hand_model" --chron-age
variant reference_labels --label reference_bone_age_months --init-from "$WORK/hand_model"
echo ", \"hand_model_oof_mae\": $($K -c "import json;print(json.load(open('$WORK/hand_model/model_card.json'))['results']['oof_mae'])"), \"seconds\": $(el)}" >> "$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
echo "[$(el)s] done: $RESULTS"
