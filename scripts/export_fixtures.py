#!/usr/bin/env python3
"""Exports the reference fixtures the Swift tests compare against, from PyTorch / torchvision.

  small  tiny ResNets built from torchvision's own ResNet class (few blocks, narrow stages,
         odd input sizes), randomised BatchNorm statistics and affine parameters; committed
         under Tests/Fixtures/resnet/ (a few hundred KB).
  full   torchvision's resnet50 at full size with seeded random weights and randomised
         BatchNorm; written to Tests/Fixtures/generated/resnet50/ (git-ignored, ~100 MB),
         made by `make fixtures` before the tests run.
  deep   the other depths and widths torchvision names — resnet101, resnet152,
         wide_resnet50_2 — from torchvision's own constructors at full size, seeded, with a
         small odd-sized input (2×3×67×81) so the forward pass stays cheap; written to
         Tests/Fixtures/generated/<name>/ (git-ignored, ~670 MB in all). wide_resnet101_2 is
         the same code at both (500 MB more, left out for make test's time).

Each model folder holds model.safetensors (the state dict, num_batches_tracked included),
input.npy (N,3,H,W float32), pooled.npy (the global-average-pool output, N×C) and
logits.npy (fc output). Run: .venv/bin/python scripts/export_fixtures.py small|full|deep
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file
from torchvision.models import resnet50, resnet101, resnet152, wide_resnet50_2
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class NarrowResNet(ResNet):
    """torchvision's ResNet with every stage's planes divided by `div` (the stem stays 64)."""

    def __init__(self, block, layers, div, num_classes):
        self._div = div
        super().__init__(block, layers, num_classes=num_classes)
        self.fc = torch.nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        return super()._make_layer(block, planes // self._div, blocks, stride, dilate)


def randomise_batchnorm(model, gen):
    """Running statistics and affine parameters that make folding BatchNorm matter."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) * 1.0 + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.2)
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))


def randomise_fc(model, gen):
    with torch.no_grad():
        model.fc.weight.copy_(torch.randn(model.fc.weight.shape, generator=gen) * 0.05)
        model.fc.bias.copy_(torch.randn(model.fc.bias.shape, generator=gen) * 0.1)


def reference(model, x):
    """(pooled, logits) from torchvision's own forward; pooled is captured at avgpool."""
    captured = {}
    hook = model.avgpool.register_forward_hook(lambda m, i, o: captured.setdefault("pooled", torch.flatten(o, 1)))
    with torch.no_grad():
        logits = model(x)
    hook.remove()
    return captured["pooled"].numpy(), logits.numpy()


def export(model, x, folder, dtype=torch.float32):
    """Writes the state dict in `dtype` and the references computed from exactly those values."""
    os.makedirs(folder, exist_ok=True)
    model.eval()
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().clone().contiguous()
        if v.is_floating_point():
            v = v.to(dtype)
        state[k] = v
    # The reference sees the stored (possibly rounded) weights, computed in float32.
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()})
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    pooled, logits = reference(model, x)
    np.save(os.path.join(folder, "input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(folder, "pooled.npy"), pooled.astype(np.float32))
    np.save(os.path.join(folder, "logits.npy"), logits.astype(np.float32))
    info = {"dtype": str(dtype).replace("torch.", ""), "input": list(x.shape), "pooled": list(pooled.shape),
            "logits": list(logits.shape), "torch": torch.__version__}
    with open(os.path.join(folder, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"wrote {folder}: {info}")


def small():
    out = os.path.join(ROOT, "Tests", "Fixtures", "resnet")
    gen = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)
    # Bottleneck, float32 weights, an odd-sized input so padding edges matter.
    m = NarrowResNet(Bottleneck, [1, 2, 1, 1], div=8, num_classes=10)
    randomise_batchnorm(m, gen)
    randomise_fc(m, gen)
    export(m, torch.randn(3, 3, 61, 47, generator=gen), os.path.join(out, "bottleneck_f32"))
    # BasicBlock, float16 weights.
    m = NarrowResNet(BasicBlock, [2, 1, 1, 1], div=8, num_classes=7)
    randomise_batchnorm(m, gen)
    randomise_fc(m, gen)
    export(m, torch.randn(2, 3, 40, 52, generator=gen), os.path.join(out, "basic_f16"), torch.float16)
    # BasicBlock, bfloat16 weights.
    m = NarrowResNet(BasicBlock, [1, 1, 1, 1], div=16, num_classes=5)
    randomise_batchnorm(m, gen)
    randomise_fc(m, gen)
    export(m, torch.randn(2, 3, 33, 33, generator=gen), os.path.join(out, "basic_bf16"), torch.bfloat16)


def full():
    out = os.path.join(ROOT, "Tests", "Fixtures", "generated", "resnet50")
    torch.manual_seed(50)
    gen = torch.Generator().manual_seed(50)
    m = resnet50()
    randomise_batchnorm(m, gen)
    export(m, torch.randn(2, 3, 224, 224, generator=gen), out)


def deep():
    for k, (name, make) in enumerate([("resnet101", resnet101), ("resnet152", resnet152), ("wide_resnet50_2", wide_resnet50_2)]):
        torch.manual_seed(101 + k)
        gen = torch.Generator().manual_seed(101 + k)
        m = make()
        randomise_batchnorm(m, gen)
        randomise_fc(m, gen)
        export(m, torch.randn(2, 3, 67, 81, generator=gen), os.path.join(ROOT, "Tests", "Fixtures", "generated", name))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["small", "full", "deep"])
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    {"small": small, "full": full, "deep": deep}[args.what]()
    sys.exit(0)
