#!/usr/bin/env bash
# Real sample photos for the demo: scikit-image's bundled images (astronaut, coffee, chelsea,
# rocket, camera, ...), taken straight out of its PyPI wheel — no venv, no hub.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-demo-out/photos}
[ -n "$(ls "$DEST" 2>/dev/null)" ] && exit 0
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$TMP" "scikit-image==0.26.0"
mkdir -p "$DEST"
"$PY" - "$TMP" "$DEST" <<'PYEOF'
import glob, os, sys, zipfile
whl = glob.glob(sys.argv[1] + "/scikit_image-*.whl")[0]
keep = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png", "hubble_deep_field.jpg", "motorcycle_left.png", "coins.png"]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if name.startswith("skimage/data/") and base in keep:
            with open(os.path.join(sys.argv[2], base), "wb") as f:
                f.write(z.read(name))
print("photos:", sorted(os.listdir(sys.argv[2])))
PYEOF
