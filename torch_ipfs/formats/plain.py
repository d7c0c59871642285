"""Plain files: each file is one sample (``RemoteFileType.PLAIN`` / ``PLAIN_STREAM``).

The field is named by the file's extension (or, without one, by its magic number), so a
``.png`` decodes as an image and a ``.json`` as JSON. ``PLAIN`` reads the file with one
ranged read; ``PLAIN_STREAM`` streams it block by block (same bytes; for large files
read sequentially).
"""

from __future__ import annotations

from collections.abc import Iterator

from torch_ipfs.cid import IPFSPath
from torch_ipfs.formats.base import (
    ClientHandle,
    Layout,
    RawSample,
    SampleSchema,
    bounded_chunks,
    check_sample_size,
    extension_of,
    sniff_extension,
)

__all__ = ["PlainLayout"]


class PlainLayout(Layout):
    """One sample per file; each file is a shard of one sample."""

    name = "plain"

    def __init__(
        self, client: ClientHandle, where: str, files: list[tuple[str, IPFSPath]], *, streaming: bool
    ):
        super().__init__(client, where)
        self.files = files
        self.streaming = streaming
        self.schema = SampleSchema(structure="single", with_key=False)

    def shard_sizes(self) -> list[int]:
        return [1] * len(self.files)

    def iter_span(self, shard: int, start: int, stop: int) -> Iterator[RawSample]:
        if start >= stop:
            return
        name, ref = self.files[shard]
        f = self.file(ref)
        what = f"{self.where}: {name or ref}"
        if self.streaming:
            data = b"".join(bounded_chunks(f.iter_chunks(), f.size, what))
        else:
            check_sample_size(f.size, what)
            data = f.read_range(0, f.size)
        yield RawSample(name or str(ref.cid), {extension_of(name) or sniff_extension(data): data})
