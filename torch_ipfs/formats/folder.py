"""The folder layout: a directory whose ``metadata.txt`` lists the sample files.

``metadata.txt`` is UTF-8, one sample per line: a path relative to the folder
(``/``-separated), optionally followed by a TAB and a label. Blank lines and lines
starting with ``#`` are ignored. Either every line has a label or none has:

- integer labels are the targets as written;
- other labels are class names: ``classes`` is their sorted set and the target is the
  index in it (torchvision's ``ImageFolder`` rule).

With labels a sample is ``(file, target)``; without, just the file. The file is decoded
by its extension (``cat.png`` -> an image). Paths that leave the folder (``../x``,
``/etc/x``) are refused with :class:`ManifestError`.

A folder given as ``IPFSObject(url, RemoteFileType.FOLDER)`` without ``metadata.txt``
has every file under it as a sample, in sorted path order.
"""

from __future__ import annotations

from typing import Any

from torch_ipfs.cid import CID, IPFSPath
from torch_ipfs.errors import ManifestError
from torch_ipfs.formats.base import (
    ClientHandle,
    ListLayout,
    RawSample,
    SampleSchema,
    check_member_name,
    child,
    extension_of,
    sniff_extension,
)

__all__ = ["FolderLayout", "parse_metadata"]

METADATA = "metadata.txt"


def parse_metadata(text: str, where: str) -> tuple[list[str], list[Any] | None]:
    """``(paths, labels or None)`` from the text of a ``metadata.txt``."""
    paths: list[str] = []
    labels: list[str] = []
    with_label: bool | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        path, tab, label = line.partition("\t")
        if with_label is None:
            with_label = bool(tab)
        elif with_label != bool(tab):
            raise ManifestError(f"{where}: line {number}: either every line has a TAB and a label, or none")
        paths.append(check_member_name(path.strip(), f"{where}: line {number}"))
        labels.append(label.strip())
    if not paths:
        raise ManifestError(f"{where}: lists no files")
    return paths, labels if with_label else None


class FolderLayout(ListLayout):
    """Files of a directory as samples (see the module docstring)."""

    name = "folder"

    def __init__(self, client: ClientHandle, where: str, root: IPFSPath, paths: list[str],
                 targets: list[int] | None, classes: list[str] | None,
                 cids: list[CID] | None = None):  # fmt: skip
        super().__init__(client, where)
        self.root = root
        self.paths = paths
        #: each path's CID when the folder walk found them (else paths are resolved on read)
        self.cids = cids
        self.targets = targets
        structure = "tuple" if targets is not None else "single"
        self.schema = SampleSchema(structure=structure, classes=classes, with_key=False)

    @classmethod
    def open(cls, client: ClientHandle, root: IPFSPath, where: str, entries: dict[str, Any]) -> FolderLayout:
        if METADATA in entries:
            try:
                text = client.get().cat(child(root, entries[METADATA].cid)).decode("utf-8")
            except UnicodeDecodeError as e:
                raise ManifestError(f"{where}/{METADATA}: not UTF-8 ({e})") from None
            paths, labels = parse_metadata(text, f"{where}/{METADATA}")
        else:
            files, labels = _walk_files(client, root, ""), None
            if not files:
                raise ManifestError(f"{where}: the folder has no files")
            targets, classes = _targets(labels)
            return cls(client, where, root, [p for p, _ in files], targets, classes, [c for _, c in files])
        targets, classes = _targets(labels)
        return cls(client, where, root, paths, targets, classes)

    def count(self) -> int:
        return len(self.paths)

    def read_item(self, i: int) -> RawSample:
        path = self.paths[i]
        if self.cids is not None:
            ref = child(self.root, self.cids[i])
        else:  # a metadata.txt path: resolved through the folder
            ref = IPFSPath(self.root.cid, path, self.root.gateway)
        data = self.cat(ref)
        fields: dict[str, Any] = {extension_of(path) or sniff_extension(data): data}
        if self.targets is not None:
            fields["cls"] = self.targets[i]
        return RawSample(path, fields)


def _targets(labels: list[str] | None) -> tuple[list[int] | None, list[str] | None]:
    if labels is None:
        return None, None
    try:
        return [int(label) for label in labels], None
    except ValueError:
        classes = sorted(set(labels))
        index = {c: i for i, c in enumerate(classes)}
        return [index[label] for label in labels], classes


def _walk_files(client: ClientHandle, root: IPFSPath, prefix: str) -> list[tuple[str, CID]]:
    """``(path, CID)`` of every file under ``root``, sorted by path."""
    out: list[tuple[str, CID]] = []
    for entry in client.get().ls(root):
        path = f"{prefix}{entry.name}"
        check_member_name(path, str(root))
        if entry.type == "dir":
            out += _walk_files(client, child(root, entry.cid), path + "/")
        elif entry.type == "file":
            out.append((path, entry.cid))
    return sorted(out, key=lambda item: item[0])
