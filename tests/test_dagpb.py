"""dag-pb / UnixFS codec: exact bytes for known blocks, strict decoding."""

import pytest

from torch_ipfs.cid import CID, DAG_PB
from torch_ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData, decode_node, encode_node
from torch_ipfs.errors import UnixFSFormatError


def v0(block: bytes) -> str:
    return str(CID.compute(block, DAG_PB, version=0))


def test_empty_file_block_is_kubos():
    block = encode_node(PBNode([], UnixFSData(DataType.File, filesize=0).encode()))
    assert block.hex() == "0a0408021800"
    assert v0(block) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


def test_empty_directory_block_is_kubos():
    block = encode_node(PBNode([], UnixFSData(DataType.Directory).encode()))
    assert block.hex() == "0a020801"
    assert v0(block) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"


def test_hello_world_leaf_is_kubos():
    data = b"hello world"
    block = encode_node(PBNode([], UnixFSData(DataType.File, data=data, filesize=len(data)).encode()))
    assert v0(block) == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"


def test_empty_link_name_is_encoded_present():
    child = CID.decode("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
    with_name = encode_node(PBNode([PBLink(child, "", 6)], None))
    without = encode_node(PBNode([PBLink(child, None, 6)], None))
    assert b"\x12\x00" in with_name and b"\x12\x00" not in without
    assert decode_node(with_name).links[0].name == ""
    assert decode_node(without).links[0].name is None


def test_round_trip_of_an_inner_node():
    child = CID.decode("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
    fs = UnixFSData(DataType.File, filesize=8, blocksizes=[4, 4])
    node = PBNode([PBLink(child, "", 10), PBLink(child, "", 10)], fs.encode())
    back = decode_node(encode_node(node))
    assert back.links == node.links
    assert UnixFSData.decode(back.data) == fs
    # blocksizes are unpacked: one key (0x20) per entry
    assert fs.encode() == bytes([0x08, 0x02, 0x18, 0x08, 0x20, 0x04, 0x20, 0x04])


@pytest.mark.parametrize(
    "block,message",
    [
        (bytes([0x0A, 0x02, 0x08, 0x02, 0x12, 0x00]), "Links after Data"),
        (bytes([0x0A, 0x01, 0x08, 0x0A, 0x01, 0x08]), "Data repeated"),
        (bytes([0x18, 0x01]), "unknown dag-pb PBNode field 3"),
        (bytes([0x0A, 0x05, 0x08]), "past the end"),
        (bytes([0x12, 0x02, 0x12, 0x00]), "without Hash"),
    ],
)
def test_strict_node_decoding(block, message):
    with pytest.raises(UnixFSFormatError, match=message):
        decode_node(block)


@pytest.mark.parametrize(
    "data,message",
    [
        (bytes([0x08, 0x02, 0x08, 0x02]), "repeated"),
        (bytes([0x08, 0x09]), "unknown UnixFS type 9"),
        (bytes([0x08, 0x02, 0x48, 0x01]), "unknown UnixFS field 9"),
        (bytes([0x08, 0x02, 0x22, 0x01, 0x04]), "packed blocksizes"),
        (bytes([0x18, 0x00]), "no Type"),
    ],
)
def test_strict_unixfs_decoding(data, message):
    with pytest.raises(UnixFSFormatError, match=message):
        UnixFSData.decode(data)


def test_mtime_round_trip():
    fs = UnixFSData(DataType.File, filesize=0, mode=0o644, mtime=(1_700_000_000, 5))
    assert UnixFSData.decode(fs.encode()) == fs
