"""Shared paths for the Python tests (run by `make test` with the test venv, after the Swift
tests): the vlm binary built by SwiftPM, and the committed small models and images."""
import os
import tempfile
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
# Ray's worker processes inherit the environment: they find the package the same way.
os.environ["PYTHONPATH"] = os.pathsep.join([os.path.join(ROOT, "python"), os.path.join(ROOT, "python", "tests")]
                                           + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
VLM = os.environ.get("VLM_BINARY") or os.path.join(ROOT, ".build", "release", "vlm")
os.environ["VLM_BINARY"] = VLM
# vlm's digest cache (the SHA-256 of model files) in a folder of the tests' own, never ~/.cache.
_CACHE = tempfile.TemporaryDirectory(prefix="vlm-test-cache-")
os.environ["VLM_CACHE_DIR"] = _CACHE.name
BERT = os.path.join(ROOT, "Tests", "Fixtures", "bert", "tiny")
RESNET = os.path.join(ROOT, "Tests", "Fixtures", "resnet", "bottleneck_f32")
IMAGES = os.path.join(ROOT, "Tests", "Fixtures", "generated", "images")


@pytest.fixture
def photos(tmp_path):
    """12 good images and 3 broken files, as (good paths, {broken path: kind})."""
    import shutil
    good = []
    names = ["astronaut.jpg", "coffee.jpg", "chelsea.png", "rocket.jpg", "palette.png", "cmyk.jpg"]
    for k in range(12):
        p = tmp_path / f"{k:02d}-{names[k % 6]}"
        shutil.copy(os.path.join(IMAGES, names[k % 6]), p)
        good.append(str(p))
    broken = {}
    (tmp_path / "empty.jpg").write_bytes(b"")
    broken[str(tmp_path / "empty.jpg")] = "empty"
    (tmp_path / "text.png").write_bytes(b"not an image")
    broken[str(tmp_path / "text.png")] = "not_an_image"
    jpeg = open(os.path.join(IMAGES, "rocket.jpg"), "rb").read()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    broken[str(tmp_path / "cut.jpg")] = "corrupt"
    return good, broken
