#!/usr/bin/env bash
# The main job on the default models: embed a folder of real photos and a file of captions,
# fuse them, and show caption-to-caption similarities from all-MiniLM-L6-v2.
set -euo pipefail
cd "$(dirname "$0")/.."
VLM=.build/release/vlm
OUT=demo-out
mkdir -p "$OUT"
bash scripts/fetch_demo_photos.sh "$OUT/photos"

weights=$(ls models/resnet50/model.safetensors models/resnet50/*.pth models/resnet50/*.pt 2>/dev/null | head -1 || true)
if [ -n "$weights" ]; then
  IMAGE_MODEL=models/resnet50; TAG=""
  echo "== ResNet-50 weights: $weights"
else
  IMAGE_MODEL=synthetic:resnet50; TAG=".SYNTHETIC"
  echo "== No real ResNet-50 weights in models/resnet50/ (see models/README.md; vlm models fetch resnet50)."
  echo "   Using SEEDED SYNTHETIC weights: the image features below are meaningless, and the files say so ($TAG)."
fi

echo "== embed-image: $OUT/photos -> $OUT/images$TAG.npy (+ .ids.txt)"
$VLM embed-image "$OUT/photos" --model "$IMAGE_MODEL" -o "$OUT/images$TAG.npy" --batch-size 4

echo "== embed-text (all-MiniLM-L6-v2, real weights): demo/captions.txt -> $OUT/captions.npy"
$VLM embed-text --file demo/captions.txt -o "$OUT/captions.npy"

echo "== fuse: photo + caption pairs -> $OUT/fused$TAG.npy"
paste <(printf '%s\n' "$OUT"/photos/astronaut.png "$OUT"/photos/coffee.png "$OUT"/photos/chelsea.png "$OUT"/photos/rocket.jpg "$OUT"/photos/camera.png "$OUT"/photos/hubble_deep_field.jpg) \
      <(head -6 demo/captions.txt) > "$OUT/pairs.tsv"
$VLM fuse --pairs "$OUT/pairs.tsv" --image-model "$IMAGE_MODEL" --normalize-parts -o "$OUT/fused$TAG.npy" --quiet
echo "   $(wc -l < "$OUT/pairs.tsv") pairs, each 2048 (image) + 384 (text) values"

echo "== caption-to-caption cosine similarity (all-MiniLM-L6-v2)"
$VLM similarity "$OUT/captions.npy" --labels demo/captions.txt --width 40

if [ -z "$TAG" ]; then
  echo "== classify (top 3)"
  $VLM classify "$OUT/photos" --model "$IMAGE_MODEL" --top 3
fi
echo "== outputs in $OUT/: $(cd "$OUT" && ls -m *.npy *.txt 2>/dev/null)"
