#!/usr/bin/env bash
# The demo model's build on a lent GPU machine (the workplace's `device` tool: one GPU, 16 cores, no network).
#
#   bash models/device_demo.sh            # there; what it leaves in $OUT comes back
#
# Runs models/make_demo.sh at the GPU recipe below under a deadline, then copies to $OUT what exists: the
# log, the knee model (finished, or its completed folds with train_state.json), and a bundle of the hand
# model with the pseudo-labelled manifests. A run cut off at the deadline is finished on any machine with
# the same make_demo.sh command and settings: cohorts render again identically (one random stream per
# subject), and every step resumes from what is there.
# Packages the machine lacks travel as wheels in .whl (ignored by git), fetched here beforehand with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydicom==3.0.2 pylibjpeg==2.1.0 pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle pandas==3.1.1 pillow==13.0.0
# (its own torch, timm, scipy and scikit-learn serve). Localisers placed in runs/gpu beforehand are used as
# they are (make_demo.sh skips a trained one); the knee localiser trains here on the GPU (LOC_FILMS, LOC_EPOCHS).
set -uo pipefail
OUT=${OUT:-out}; WORK=${WORK:-runs/gpu}; DEADLINE=${DEADLINE:-540}
mkdir -p "$OUT" "$WORK"
if ! python3 -c "import pydicom" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# The GPU recipe (make_demo.sh's defaults are the 2-core CPU's): larger cohorts rendered at 384 px (knees at 256,
# 384 and 512 in turn), finer
# inputs, more epochs, bigger batches. Each can be overridden from the environment.
export SIZE=${SIZE:-384} KNEE_SIZES=${KNEE_SIZES:-256,384,512} N_HANDS=${N_HANDS:-3000} N_TRAIN=${N_TRAIN:-7200} N_TEST=${N_TEST:-400}
export INPUT=${INPUT:-192} SPACING=${SPACING:-0.67} HAND_INPUT=${HAND_INPUT:-224} HAND_SPACING=${HAND_SPACING:-0.9}
export LOC_EPOCHS=${LOC_EPOCHS:-30} LOC_FILMS=${LOC_FILMS:-4000} HAND_EPOCHS=${HAND_EPOCHS:-30} KNEE_EPOCHS=${KNEE_EPOCHS:-36} BS=${BS:-64} LR=${LR:-2e-3} VARIANTS=${VARIANTS:-0}
{ nvidia-smi -L; nproc; python3 -c "import torch, pandas, numpy, timm, sklearn, pydicom, PIL
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pandas', pandas.__version__, 'numpy', numpy.__version__,
      'timm', timm.__version__, 'sklearn', sklearn.__version__, 'pydicom', pydicom.__version__, 'pillow', PIL.__version__)"; } 2>&1 | tee "$OUT/log.txt"
env | grep -E '^(SIZE|N_|INPUT|SPACING|INTENSITY|HAND_|KNEE_|LOC_|BS|LR|VARIANTS)=' | sort | tr '\n' ' ' | tee -a "$OUT/log.txt"; echo | tee -a "$OUT/log.txt"
START=$(date +%s)
setsid bash models/make_demo.sh "$WORK" "$WORK/model" "$WORK/results.json" >>"$OUT/log.txt" 2>&1 &
PID=$!
while kill -0 $PID 2>/dev/null; do
  if [ $(( $(date +%s) - START )) -ge "$DEADLINE" ]; then
    echo "[deadline ${DEADLINE}s] stopping the build; what is done comes back" | tee -a "$OUT/log.txt"
    kill -- -$PID 2>/dev/null; sleep 3; break
  fi
  sleep 2
done
wait $PID 2>/dev/null; echo "make_demo.sh exit status $? after $(( $(date +%s) - START ))s" | tee -a "$OUT/log.txt"
[ -d "$WORK/model" ] && tar -C "$WORK" --exclude=.resume -czf "$OUT/model.tgz" model
files=()
for f in hand_model localiser_hand localiser_knee results.json cases_model.csv {hands,train,test}/manifest.csv {hands,train,test}/truth.csv; do
  [ -e "$WORK/$f" ] && files+=("$f")
done
[ ${#files[@]} -gt 0 ] && tar -C "$WORK" -czf "$OUT/work.tgz" "${files[@]}"
ls -la "$OUT"
tail -5 "$OUT/log.txt"
