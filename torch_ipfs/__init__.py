"""torch_ipfs: PyTorch datasets over IPFS."""

__version__ = "0.1.0"
