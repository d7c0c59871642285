"""The main job, offline on the embedded store: export a real dataset to IPFS shards,
then train a small CNN on it through ``DataLoader(IPFSDataset(...))``.

1. scikit-learn's bundled 8x8 handwritten digits (1,797 images, shipped inside the
   package: no download) become lossless PNG + ``.cls`` tar shards in the embedded store;
   the root CID is printed (the same on every run and every machine).
2. A small CNN trains from ``ipfs://<root>`` with 2 DataLoader workers, shuffling and a
   seeded train/validation split; every sample read is verified block by block.
3. It prints samples/s and the validation accuracy, and exits non-zero below 0.95.

Run: ``tox -e demo`` (or ``python examples/demo.py`` with torch_ipfs installed).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, random_split

from torch_ipfs.datasets import IPFSDataset
from torch_ipfs.exporter import export

MIN_ACCURACY = 0.95


class SklearnDigits(Dataset):
    """scikit-learn's 8x8 digits as torchvision-style ``(PIL image, int)`` pairs."""

    classes = [str(d) for d in range(10)]

    def __init__(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixel values are 0..16; scale to 8-bit grey exactly (integer math, no float drift).
        self.images = (digits.images.astype(np.uint16) * 255 // 16).astype(np.uint8)
        self.targets = [int(t) for t in digits.target]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index], mode="L"), self.targets[index]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL grey image -> 1x8x8 float tensor in [0, 1] (a module-level function: workers pickle it)."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def evaluate(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += int((model(images).argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # tiny model: threads cost more than they give on 2 cores

    # 1. Export: deterministic shards -> the same root CID on every run.
    t0 = time.perf_counter()
    cid = export(
        SklearnDigits(),
        samples_per_shard=400,
        name="sklearn-digits",
        description="scikit-learn load_digits(), 8x8 grey PNG, labels 0-9",
        progress=False,
    )
    print(f"root CID: {cid}")
    print(f"exported 1797 samples in {time.perf_counter() - t0:.2f}s (ipfs://{cid})")

    # 2. Read back through the embedded store, verified, with workers and shuffling.
    dataset = IPFSDataset(f"ipfs://{cid}", transform=to_tensor)
    split = torch.Generator().manual_seed(args.seed)
    train_set, val_set = random_split(dataset, [0.8, 0.2], generator=split)
    train_loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        generator=torch.Generator().manual_seed(args.seed),
    )
    val_loader = DataLoader(val_set, batch_size=256, num_workers=args.workers)

    model = SmallCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    seen = 0
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        total_loss = 0.0
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(labels)
            seen += len(labels)
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {total_loss / len(train_set):.4f}")
    elapsed = time.perf_counter() - t0

    accuracy = evaluate(model, val_loader)
    print(f"trained on {len(train_set)} samples x {args.epochs} epochs: {seen / elapsed:.0f} samples/s")
    print(f"validation accuracy: {accuracy:.4f} ({len(val_set)} held-out samples)")
    if accuracy < MIN_ACCURACY:
        print(f"FAILED: accuracy below {MIN_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
