#!/usr/bin/env bash
# Trains the shipped demonstration model, hspnet-lite-glas, from scratch on the GlaS training
# images and installs it under models/cards/; then scores it on the held-out test sets.
#
# HSP-Net with a ResNet-18 encoder and halved DS-Block widths (15.1 M parameters, 30 MB as
# fp16). Classes: background (glass, from the tissue mask), other tissue, gland in benign
# tissue ("normal"), gland in malignant tissue ("tumour"). GlaS is x20 (0.62 um/px); images are
# resampled to the card's 1.0 um/px. AdamW rather than the paper's SGD because there is no
# pretrained encoder to protect; CE + 0.5 Dice because glands are a minority of pixels.
#
# Usage: examples/train_glas_demo.sh [GLAS_DIR] [RUN_DIR]   (run from the repository root)
# Same machine type and thread count give the same weights; other CPUs or a GPU give a model
# of the same quality, not the same bits.
set -euo pipefail
GLAS=${1:-../shared/data/glas}
RUN=${2:-runs/hspnet-lite-glas}

wsiseg train hspnet_r18 "$GLAS/train" --out "$RUN" --name hspnet-lite-glas \
    --classes examples/glas_classes.json --attributes "$GLAS/grades.csv" --image-mpp 0.62 \
    --split-by patient_id --val-fraction 0.15 \
    --arg 'ds_widths=[16,32,64,128]' --arg hhsp_width=128 --arg head_width=128 \
    --optimizer adamw --lr 1e-3 --encoder-lr-scale 1 --weight-decay 1e-4 --warmup-epochs 2 \
    --loss-option dice_weight=0.5 \
    --epochs 45 --batch-size 8 --crops-per-image 4 --threads 2 --seed 0

python - "$RUN/best.pt" <<'PY'
import sys
from wsiseg.training import export_model

export_model(sys.argv[1], "models/cards", "hspnet-lite-glas", description=(
    "Demonstration model, research use only: HSP-Net (ResNet-18 encoder, DS-Block widths "
    "halved) trained from scratch on the 85 GlaS training images (colon H&E), at 1.0 um/px. "
    "Classes: background, other tissue, gland in benign tissue (normal), gland in malignant "
    "tissue (tumour). Not a cervical (CIN) model and not for diagnosis."))
PY

for split in testA testB; do
    wsiseg evaluate --model hspnet-lite-glas --data "$GLAS/$split" --image-mpp 0.62 \
        --classes examples/glas_classes.json --attributes "$GLAS/grades.csv" \
        --group gland=2,3 --json "$RUN/scores-$split.json"
done
