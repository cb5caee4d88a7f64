#!/usr/bin/env python3
"""Trains the peer-comparison LeNet-5-BN of issue 16 in PyTorch and exports it to ONNX.

The architecture of secateur's `lenet5-bn` (conv 1->32 5x5, BN, ReLU, max-pool; conv 32->64
5x5, BN, ReLU, max-pool; fc 1024->256, ReLU; fc 256->10), trained on the full Fashion-MNIST
(the Debian package dataset-fashion-mnist) for 4 epochs with Adam lr 1e-3, batch 128, inputs
normalised with Fashion-MNIST's mean 0.286 and std 0.353 (what secateur applies to this data
set by default), then exported with torch.onnx.export (opset 17, dynamic batch).

    /path/to/torch-venv/bin/python scripts/train_lenet_pytorch.py OUT.onnx [--seed 0]

Needs torch and numpy; not used by the test suite.
"""
import argparse
import gzip
import struct

import numpy as np
import torch
import torch.nn as nn

DATA = "/usr/share/datasets/fashion-mnist"


def idx(name):
    with gzip.open(f"{DATA}/{name}", "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(split):
    x = idx(f"{split}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = idx(f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    x = (x - 0.286) / 0.353
    return torch.from_numpy(x[:, None]), torch.from_numpy(y)


class LeNet5BN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 5), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(1024, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(self.features(x), 1))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    model = LeNet5BN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 128):
            b = perm[i : i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xtr[b]), ytr[b]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(f"epoch {epoch + 1}: test accuracy {acc:.4f}", flush=True)
    torch.onnx.export(
        model, torch.zeros(1, 1, 28, 28), a.out, opset_version=17, dynamo=False,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
