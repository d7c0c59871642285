"""A content-addressed model registry: weights as safetensors files in IPFS, versions
described by JSON manifests, the whole registry one CID.

::

    registry = ModelRegistry()
    v1 = registry.register("resnet-tiny", model, dataset_cid=ds, metrics={"acc": 0.91})
    v2 = registry.register("resnet-tiny", model2, metrics={"acc": 0.93})   # parent: v1
    registry.list("resnet-tiny")            # [ModelVersion(version="1"), ModelVersion(version="2")]
    state = registry.load("resnet-tiny", "1")                 # a state dict of tensors
    registry.load("resnet-tiny", model=model)                  # latest, loaded into the module
    registry.root                                              # the registry's CID

Three kinds of objects, all UnixFS files added to the store (so they have the CIDs
``ipfs add`` gives them, and every byte read back is verified against them):

- **weights**: the model's state dict as a ``.safetensors`` file. Never pickle:
  safetensors holds only tensors and a JSON header, so loading runs no code.
- **version manifest** (JSON): ``{"format": "torch_ipfs.model/1", "name", "version",
  "parent", "framework", "weights": <cid>, "weights_format": "safetensors",
  "tensors": {name: {"dtype", "shape"}}, "dataset_cid", "metrics", "metadata",
  "created_at"}``.
- **registry index** (JSON): ``{"format": "torch_ipfs.registry/1", "models": {name:
  [{"version", "manifest"}, ...]}, "previous": <cid of the previous index or null>}``:
  each register adds a new index (the history is a chain of CIDs).

The current index is found through a small mutable pointer, the file
``$TORCH_IPFS_HOME/registry/ROOT`` holding the index CID, replaced atomically (temp file
+ rename) under an exclusive ``flock`` so concurrent registrations do not lose each
other. Share a registry by its CID: ``ModelRegistry(root="bafy...")`` reads that index
(read-only unless ``pointer=`` is given).
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch_ipfs.cid import CID
from torch_ipfs.errors import BlockNotFoundError, IntegrityError, ManifestError
from torch_ipfs.formats.manifest import finite_json, load_json

__all__ = ["ModelRegistry", "ModelVersion"]

INDEX_FORMAT = "torch_ipfs.registry/1"
MODEL_FORMAT = "torch_ipfs.model/1"
FRAMEWORKS = ("pytorch", "numpy", "tensorflow", "jax", "other")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass(frozen=True)
class ModelVersion:
    """One registered version (its manifest's fields) and the manifest's CID."""

    name: str
    version: str
    manifest_cid: str
    weights_cid: str
    parent: str | None = None
    framework: str = "pytorch"
    dataset_cid: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], manifest_cid: str) -> ModelVersion:
        where = f"model manifest {manifest_cid}"
        if not isinstance(manifest, Mapping) or manifest.get("format") != MODEL_FORMAT:
            raise ManifestError(f"{where}: not a {MODEL_FORMAT} manifest")
        if manifest.get("weights_format") != "safetensors":
            raise ManifestError(
                f"{where}: weights_format {manifest.get('weights_format')!r} is not safetensors"
            )
        try:
            return cls(
                name=str(manifest["name"]),
                version=str(manifest["version"]),
                manifest_cid=manifest_cid,
                weights_cid=str(CID.decode(manifest["weights"])),
                parent=manifest.get("parent"),
                framework=str(manifest.get("framework", "pytorch")),
                dataset_cid=manifest.get("dataset_cid"),
                metrics=dict(manifest.get("metrics") or {}),
                metadata=dict(manifest.get("metadata") or {}),
                tensors=dict(manifest.get("tensors") or {}),
                created_at=float(manifest.get("created_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{where}: {type(e).__name__}: {e}") from None


class ModelRegistry:
    """Versioned model weights by CID.

    Args:
        client: the :class:`~torch_ipfs.client.Client` to store into and read from
            (default: the process's default client).
        root: open the registry index with this CID instead of the pointer's.
        pointer: the pointer file (default ``$TORCH_IPFS_HOME/registry/ROOT``; with
            ``root`` given, no pointer is written unless this is set).
    """

    def __init__(self, client: Any = None, *, root: str | CID | None = None,
                 pointer: str | os.PathLike[str] | None = None) -> None:  # fmt: skip
        if client is None:
            from torch_ipfs.client import default_client

            client = default_client()
        self.client = client
        self._fixed_root = str(CID.decode(root)) if root is not None else None
        if pointer is not None:
            self.pointer: Path | None = Path(pointer)
        elif root is None:
            self.pointer = Path(client.store.root) / "registry" / "ROOT"
        else:
            self.pointer = None

    # -- the index ---------------------------------------------------------------------------

    @property
    def root(self) -> str | None:
        """The CID of the current registry index (``None`` while empty)."""
        if self.pointer is not None and self.pointer.exists():
            text = self.pointer.read_text(encoding="ascii").strip()
            return str(CID.decode(text)) if text else None
        return self._fixed_root

    def _index(self, root: str | None) -> dict[str, Any]:
        if root is None:
            return {"format": INDEX_FORMAT, "models": {}, "previous": None}
        index = self._read_json(root, "registry index")
        if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
            raise ManifestError(f"registry index {root}: not a {INDEX_FORMAT} document")
        if not isinstance(index.get("models"), dict):
            raise ManifestError(f"registry index {root}: 'models' must be an object")
        return index

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.pointer is None:
            raise PermissionError(
                f"registry {self._fixed_root} was opened read-only by CID; pass pointer= to update it"
            )
        self.pointer.parent.mkdir(parents=True, exist_ok=True)
        with open(self.pointer.with_name(self.pointer.name + ".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _set_root(self, cid: str) -> None:
        assert self.pointer is not None
        tmp = self.pointer.with_name(f"{self.pointer.name}.{os.getpid()}.part")
        tmp.write_text(cid + "\n", encoding="ascii")
        os.replace(tmp, self.pointer)
        self._fixed_root = cid

    # -- registering ---------------------------------------------------------------------------

    def register(
        self,
        name: str,
        model: Any,
        *,
        version: str | None = None,
        parent: str | None = "latest",
        framework: str | None = None,
        dataset_cid: str | CID | None = None,
        metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Store ``model``'s weights and register them as ``name``/``version``.

        ``model``: a ``torch.nn.Module`` (its ``state_dict()``), a dict of torch tensors,
        or a dict of NumPy arrays. ``version`` defaults to one more than the number of
        versions (``"1"``, ``"2"``, ...); ``parent`` defaults to the latest version
        (``None`` for none). Returns the new :class:`ModelVersion`; :attr:`root` changes.
        """
        if not name or "/" in name or name != name.strip():
            raise ValueError(f"invalid model name {name!r}")
        tensors, detected = _tensors_of(model)
        framework = framework or detected
        if framework not in FRAMEWORKS:
            raise ValueError(f"framework must be one of {', '.join(FRAMEWORKS)}; got {framework!r}")
        weights = _save_safetensors(tensors, detected)
        weights_cid = str(self.client.add(weights))
        with self._locked():
            previous = self.root  # read once under the lock: it cannot change until we write
            index = self._index(previous)
            versions = index["models"].setdefault(name, [])
            if version is None:
                version = str(len(versions) + 1)
            version = str(version)
            if not _VERSION.match(version):
                raise ValueError(f"invalid version {version!r} (letters, digits, . _ + -)")
            if any(v["version"] == version for v in versions):
                raise ValueError(f"model {name!r} already has a version {version!r}")
            if parent == "latest":
                parent = versions[-1]["version"] if versions else None
            elif parent is not None and not any(v["version"] == parent for v in versions):
                raise ValueError(f"parent version {parent!r} of {name!r} is not registered")
            manifest = {
                "format": MODEL_FORMAT,
                "name": name,
                "version": version,
                "parent": parent,
                "framework": framework,
                "weights": weights_cid,
                "weights_format": "safetensors",
                "weights_size": len(weights),
                "tensors": {k: {"dtype": _dtype_name(t), "shape": list(t.shape)} for k, t in tensors.items()},
                "dataset_cid": str(dataset_cid) if dataset_cid is not None else None,
                "metrics": dict(metrics or {}),
                "metadata": dict(metadata or {}),
                "created_at": time.time(),
            }
            manifest_cid = self._add_json(manifest)
            versions.append({"version": version, "manifest": manifest_cid})
            index["previous"] = previous
            self._set_root(self._add_json(index))
        return ModelVersion.from_manifest(manifest, manifest_cid)

    # -- ipfs_kit's calls ------------------------------------------------------------------

    def store_model(
        self,
        model: Any,
        model_type: str | None = None,
        framework: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        version: str | None = None,
    ) -> str:
        """ipfs_kit's ``store_model(model=..., model_type=..., framework=..., metadata=...)``:
        register the weights (as :meth:`register`, under ``name`` or else ``model_type``)
        and return the version manifest's CID, the handle :meth:`load_model` takes.
        ``metadata["dataset_cid"]`` becomes the version's dataset; NaN values are stored
        as ``null`` (JSON has no NaN)."""
        meta = finite_json(dict(metadata or {}))
        if model_type is not None:
            meta.setdefault("model_type", model_type)
        dataset = meta.get("dataset_cid")
        entry = self.register(
            name or model_type or "model",
            model,
            version=version,
            framework=framework,
            dataset_cid=str(dataset) if dataset is not None else None,
            metadata=meta,
        )
        return entry.manifest_cid

    def load_model(
        self, model_cid: str | CID, *, model: Any = None, strict: bool = True
    ) -> tuple[Any, dict[str, Any]]:
        """ipfs_kit's ``model, metadata = load_model(cid)`` for a CID from :meth:`store_model`.

        ``model`` is the weights (a dict of tensors), or with ``model=`` a module they are
        loaded into: the architecture is code, and code is never read from the network
        (no pickle). ``metadata`` is what was stored, plus ``name``, ``version``,
        ``framework``, ``dataset_cid``, ``weights_cid`` and ``created_at``.
        """
        cid = str(CID.decode(str(model_cid)))
        entry = self._version(cid)
        loaded = self._load_weights(entry, model, strict)
        meta = dict(entry.metadata)
        meta.update(
            name=entry.name, version=entry.version, framework=entry.framework,
            dataset_cid=entry.dataset_cid, weights_cid=entry.weights_cid, created_at=entry.created_at,
        )  # fmt: skip
        return loaded, meta

    def _add_json(self, value: Any) -> str:
        data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return str(self.client.add(data))

    def _read_json(self, cid: str, what: str) -> Any:
        return load_json(_verified(lambda: self.client.cat(cid)), f"{what} {cid}")

    # -- reading -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Registered model names."""
        return sorted(self._index(self.root)["models"])

    def list(self, name: str | None = None) -> list[ModelVersion]:
        """Versions of ``name`` in registration order (of every model, when ``None``)."""
        models = self._index(self.root)["models"]
        if name is not None and name not in models:
            return []
        names = [name] if name is not None else sorted(models)
        return [self._version(v["manifest"]) for n in names for v in models[n]]

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """One version (the latest when ``version`` is ``None``); ``KeyError`` if absent."""
        versions = self._index(self.root)["models"].get(name)
        if not versions:
            raise KeyError(f"no model named {name!r} in registry {self.root}")
        if version is None:
            return self._version(versions[-1]["manifest"])
        for v in versions:
            if v["version"] == str(version):
                return self._version(v["manifest"])
        known = ", ".join(v["version"] for v in versions)
        raise KeyError(f"model {name!r} has no version {version!r} (versions: {known})")

    def _version(self, manifest_cid: str) -> ModelVersion:
        return ModelVersion.from_manifest(self._read_json(manifest_cid, "model manifest"), manifest_cid)

    def load(self, name: str, version: str | None = None, *, model: Any = None, strict: bool = True) -> Any:
        """The weights of ``name``/``version`` (latest by default), every block verified.

        Returns a dict of tensors (NumPy arrays for ``framework="numpy"``), or, with
        ``model=`` a ``torch.nn.Module``, loads them into it and returns the module.
        A block that does not hash to its CID raises :class:`IntegrityError`.
        """
        return self._load_weights(self.get(name, version), model, strict)

    def _load_weights(self, entry: ModelVersion, model: Any, strict: bool) -> Any:
        data = _verified(lambda: self.client.cat(entry.weights_cid))
        tensors: dict[str, Any]
        if entry.framework == "numpy":
            from safetensors.numpy import load as load_numpy

            tensors = load_numpy(data)
        else:
            from safetensors.torch import load as load_torch

            tensors = load_torch(data)
        if model is None:
            return tensors
        model.load_state_dict(tensors, strict=strict)
        return model

    def history(self) -> builtins.list[str]:
        """Index CIDs from the current one back to the first (each register adds one)."""
        chain, cid = [], self.root
        while cid is not None:
            chain.append(cid)
            cid = self._index(cid).get("previous")
        return chain

    def __repr__(self) -> str:
        return f"ModelRegistry(root={self.root!r})"


def _verified(read: Any) -> bytes:
    """Run a read; a block that failed verification surfaces as :class:`IntegrityError`
    (a source chain reports it as the cause of "not found in any source")."""
    try:
        return read()
    except BlockNotFoundError as e:
        if isinstance(e.__cause__, IntegrityError):
            raise e.__cause__ from e
        raise


def _tensors_of(model: Any) -> tuple[dict[str, Any], str]:
    if hasattr(model, "state_dict") and callable(model.state_dict):
        state = model.state_dict()
    elif isinstance(model, Mapping):
        state = dict(model)
    else:
        raise TypeError(f"register a torch.nn.Module or a dict of tensors/arrays, not {type(model).__name__}")
    if not state:
        raise ValueError("no tensors to register")
    kinds = {type(v).__module__.split(".")[0] for v in state.values()}
    if kinds == {"torch"}:
        # safetensors refuses shared or non-contiguous storage: store plain copies
        return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, "pytorch"
    if kinds == {"numpy"}:
        import numpy as np

        return {k: np.ascontiguousarray(v) for k, v in state.items()}, "numpy"
    raise TypeError(f"weights must be all torch tensors or all NumPy arrays (found {sorted(kinds)})")


def _save_safetensors(tensors: dict[str, Any], kind: str) -> bytes:
    if kind == "numpy":
        from safetensors.numpy import save as save_numpy

        return save_numpy(tensors)
    from safetensors.torch import save as save_torch

    return save_torch(tensors)


def _dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")
