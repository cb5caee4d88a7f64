#!/usr/bin/env python3
"""Trains the peer-comparison LeNet-5-BN (or MLP 784-300-100-10) of issue 16 in PyTorch and
exports it to ONNX.

The architecture of secateur's `lenet5-bn` (conv 1->32 5x5, BN, ReLU, max-pool; conv 32->64
5x5, BN, ReLU, max-pool; fc 1024->256, ReLU; fc 256->10), trained on the full Fashion-MNIST
(the Debian package dataset-fashion-mnist) for 4 epochs with Adam lr 1e-3, batch 128, inputs
normalised with Fashion-MNIST's mean 0.286 and std 0.353 (what secateur applies to this data
set by default), then exported with torch.onnx.export (opset 17, dynamic batch).

    /path/to/torch-venv/bin/python scripts/train_lenet_pytorch.py OUT.onnx [--seed 0]
        [--arch mlp] [--peer-sparsity 0.9]

`--arch mlp` trains the MLP 784-300-100-10 (ReLU) instead. `--peer-sparsity S` also runs
PyTorch's own flow on the trained model as the peer: global L1 unstructured pruning of every
Linear/Conv weight (torch.nn.utils.prune.global_unstructured) to sparsity S, one epoch of
fine-tuning with the masks kept (Adam lr 1e-3, batch 128), and prints its test accuracy.

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


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def train_epoch(model, opt, xtr, ytr):
    model.train()
    perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr), 128):
        b = perm[i : i + 128]
        opt.zero_grad()
        nn.functional.cross_entropy(model(xtr[b]), ytr[b]).backward()
        opt.step()


def accuracy(model, xte, yte):
    model.eval()
    with torch.no_grad():
        return (model(xte).argmax(1) == yte).float().mean().item()


def peer(model, sparsity, xtr, ytr, xte, yte):
    """PyTorch's global L1 pruning plus one epoch of masked fine-tuning, on a copy."""
    import copy
    import torch.nn.utils.prune as prune

    m = copy.deepcopy(model)
    params = [(mod, "weight") for mod in m.modules() if isinstance(mod, (nn.Linear, nn.Conv2d))]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    print(f"peer: global L1 {sparsity}: no fine-tune {accuracy(m, xte, yte):.4f}", flush=True)
    train_epoch(m, torch.optim.Adam(m.parameters(), lr=1e-3), xtr, ytr)
    print(f"peer: global L1 {sparsity} + 1 epoch: {accuracy(m, xte, yte):.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--arch", choices=["lenet5-bn", "mlp"], default="lenet5-bn")
    ap.add_argument("--peer-sparsity", type=float, action="append", default=[])
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    model = Mlp() if a.arch == "mlp" else LeNet5BN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(a.epochs):
        train_epoch(model, opt, xtr, ytr)
        print(f"epoch {epoch + 1}: test accuracy {accuracy(model, xte, yte):.4f}", flush=True)
    torch.onnx.export(
        model, torch.zeros(1, 1, 28, 28), a.out, opset_version=17, dynamo=False,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
    )
    print(f"wrote {a.out}")
    for sparsity in a.peer_sparsity:
        peer(model, sparsity, xtr, ytr, xte, yte)


if __name__ == "__main__":
    main()
