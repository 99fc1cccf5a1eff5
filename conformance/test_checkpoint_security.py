"""Hostile and broken checkpoint files: each gives its clipcore error, nothing runs, nothing blows up."""

from __future__ import annotations

import copyreg
import io
import json
import os
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import given
from hypothesis import strategies as st

from clipcore.checkpoint import detect_format, open_checkpoint, read_state_dict
from clipcore.errors import CheckpointError, UnsafeCheckpointError
from conformance import hostile
from conformance.hostile import FakeStorage, FakeTensor

CONTAINERS = ("torch-zip", "torchscript", "torch-legacy")


def _embed(container: str, data_pkl: bytes, path: Path) -> Path:
    """Put a pickle where each format keeps its object pickle."""
    if container == "torch-legacy":
        return hostile.legacy_file(path, data_pkl)
    return hostile.torch_zip(path, data_pkl, script=container == "torchscript")


def _read_all(path: Path) -> dict[str, torch.Tensor]:
    with open_checkpoint(path) as checkpoint:
        return {key: checkpoint.get(key) for key in checkpoint}


# --- nothing from the file is executed ------------------------------------------------------------------


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("payload", list(hostile.payloads(Path("m"))))
def test_code_execution_is_refused_before_anything_runs(tmp_path, container, payload):
    marker = tmp_path / "marker"
    global_name, data = hostile.payloads(marker)[payload]
    pickle.loads(data)  # the payload is live: a plain unpickler runs it
    assert marker.exists()
    marker.unlink()

    path = _embed(container, data, tmp_path / "evil.pt")
    assert detect_format(path) == container
    with pytest.raises(UnsafeCheckpointError) as error:
        open_checkpoint(path)
    assert global_name in str(error.value) and str(path) in str(error.value)
    assert error.value.fix
    assert not marker.exists()


@pytest.mark.parametrize("position", ["system info", "storage keys"])
def test_legacy_files_are_checked_in_every_pickle(tmp_path, position):
    marker = tmp_path / "marker"
    _, payload = hostile.payloads(marker)["os.system"]
    good = hostile.tensor_pickle({"w": FakeTensor(FakeStorage("0"))}, legacy=True)
    path = hostile.legacy_file(tmp_path / "evil.pt", good)
    replaced = {  # the pickle to swap for the payload, as legacy_file wrote it
        "system info": pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                     "type_sizes": {"short": 2, "int": 4, "long": 8}}, protocol=2),
        "storage keys": pickle.dumps(["0"], protocol=2),
    }[position]
    assert replaced in path.read_bytes()
    path.write_bytes(path.read_bytes().replace(replaced, payload, 1))
    with pytest.raises(UnsafeCheckpointError, match=r"posix\.system"):
        open_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("global_name", list(hostile.harmless_globals()))
def test_harmless_looking_globals_are_refused_too(tmp_path, container, global_name):
    data = hostile.harmless_globals()[global_name]
    with pytest.raises(UnsafeCheckpointError, match=global_name.replace(".", r"\.")):
        open_checkpoint(_embed(container, data, tmp_path / "f.pt"))


def test_a_pickled_whole_module_from_torch_save_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeCheckpointError, match=r"torch\.nn\.modules\.linear\.Linear") as error:
        open_checkpoint(path)
    assert "state_dict" in error.value.fix


def test_torchscript_classes_are_only_stand_ins_inside_torchscript_archives(tmp_path):
    data = b"\x80\x02c__torch__.m\nM\nq\x00)\x81q\x01}q\x02X\x01\x00\x00\x00aK\x01sb."  # M.__new__(M); BUILD
    with pytest.raises(UnsafeCheckpointError, match=r"__torch__\.m\.M"):
        open_checkpoint(hostile.torch_zip(tmp_path / "zip.pt", data))
    with pytest.raises(CheckpointError, match="no tensors"):  # in an archive: an inert object without tensors
        open_checkpoint(hostile.torch_zip(tmp_path / "script.pt", data, script=True))


def test_extension_registry_codes_are_refused(tmp_path):
    marker = tmp_path / "marker"
    command = f"touch {marker}".encode()
    # {"w": <extension 0x7e>(command)}: EXT1 0x7e, the command, TUPLE1, REDUCE, SETITEM
    data = (b"\x80\x02}q\x00X\x01\x00\x00\x00w\x82\x7e" + b"X" + struct.pack("<I", len(command)) + command
            + b"\x85Rs.")
    copyreg.add_extension("posix", "system", 0x7E)
    try:
        pickle.loads(data)  # live: in this process code 0x7e is posix.system
        assert marker.exists()
        marker.unlink()
        with pytest.raises(UnsafeCheckpointError, match="extension code 126"):
            open_checkpoint(hostile.torch_zip(tmp_path / "f.pt", data))
    finally:
        copyreg.remove_extension("posix", "system", 0x7E)
    assert not marker.exists()


def test_stand_ins_take_no_pickled_state(tmp_path):
    # A BUILD on a rebuilt tensor: torch's real Tensor.__setstate__ would call set_() with this state.
    data = hostile.tensor_pickle({"w": FakeTensor(FakeStorage("0"), state=(0, 1, 2, 3))})
    assert "BUILD" in [opcode.name for opcode, _, _ in pickletools.genops(data)]
    with pytest.raises(CheckpointError, match="cannot take pickled state"):
        open_checkpoint(hostile.torch_zip(tmp_path / "f.pt", data))


# --- pickles that try to exhaust memory or time -----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x02]r\xff\xff\xff\x7f.",  # LONG_BINPUT at memo index 2**31 - 1
        b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"abc.",  # BINBYTES8 claiming a terabyte
        b"\x80\x04\x95" + struct.pack("<Q", 1 << 40) + b"}.",  # a terabyte FRAME
        b"\x80\x02X" + struct.pack("<I", 0xFFFFFFF0) + b"abc.",  # BINUNICODE past the end
        b"\x80\x02" + b"(" * 100_000 + b"t" * 100_000 + b".",  # very deep nesting
    ],
    ids=["memo-index", "binbytes8", "frame", "binunicode", "deep"],
)
@pytest.mark.parametrize("container", CONTAINERS)
def test_pickle_bombs_are_refused_without_allocating(tmp_path, data, container):
    with pytest.raises(CheckpointError):
        open_checkpoint(_embed(container, data, tmp_path / "bomb.pt"))


def _script_pickle(cyclic: bool) -> bytes:
    """A module object that is its own child, or a 40-level chain where each level uses the next twice."""
    cls = b"\x80\x02c__torch__.m\nM\nq\x00"  # the class, memo 0
    if cyclic:  # obj = M(); BUILD obj with {"child": obj}
        return cls + b")\x81q\x01}q\x02X\x05\x00\x00\x00childh\x01sb."
    body = cls + b"0" + b"h\x00)\x81q\x020"  # leaf = M() in memo 2
    level = b"h\x00)\x81" + b"}(X\x01\x00\x00\x00ah\x02X\x01\x00\x00\x00bh\x02u" + b"b" + b"q\x020"
    return body + level * 40 + b"h\x02."  # each level: M() BUILT with {"a": previous, "b": previous}


@pytest.mark.parametrize("cyclic", [True, False], ids=["cycle", "exponential"])
def test_module_trees_with_cycles_or_exponential_sharing_stop_early(tmp_path, cyclic):
    with pytest.raises(CheckpointError, match=r"deep|attributes"):
        open_checkpoint(hostile.torch_zip(tmp_path / "tree.pt", _script_pickle(cyclic), script=True))


def test_a_wrapper_that_contains_itself_stops(tmp_path):
    looped = {"w": FakeTensor(FakeStorage("0"))}
    looped["state_dict"] = looped  # pickled with a memo reference back to itself
    with pytest.raises(CheckpointError, match="levels deep"):
        open_checkpoint(hostile.torch_zip(tmp_path / "f.pt", hostile.tensor_pickle(looped)))


# --- zip containers --------------------------------------------------------------------------------------


def _one_tensor_pickle(**view) -> bytes:
    return hostile.tensor_pickle({"w": FakeTensor(FakeStorage("0", numel=view.pop("numel", 4)), **view)})


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"archive/../../evil": b"x"}, "path traversal"),
        ({"/etc/evil": b"x"}, "path traversal"),
        ({"archive/data/..": b"x"}, "path traversal"),
        ({"archive\\..\\evil": b"x"}, "path traversal"),
        ({"other/data/1": b"x"}, "outside the archive"),
    ],
)
def test_zip_member_names_that_escape_the_archive(tmp_path, members, message):
    path = hostile.torch_zip(tmp_path / "f.pt", _one_tensor_pickle(), extra=members)
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(path)


def test_duplicate_members_are_refused(tmp_path):
    path = tmp_path / "dup.pt"
    hostile.torch_zip(path, _one_tensor_pickle())
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "a") as archive:
        archive.writestr(zipfile.ZipInfo("archive/data/0"), bytes(16))
    with pytest.raises(CheckpointError, match="several members"):
        open_checkpoint(path)


@pytest.mark.parametrize(
    ("view", "message"),
    [
        ({"numel": 5}, "declares 20 bytes"),  # storage of 5 floats in a 16-byte record
        ({"offset": 1}, "runs past|holds 16 bytes"),  # offset + extent past the storage
        ({"size": (2, 3), "stride": (2, 1)}, "holds 16 bytes"),  # strided extent past the storage
        ({"size": (2,), "stride": (1 << 62,)}, "not a non-negative integer|holds"),
        ({"size": (-1,), "stride": (1,)}, "not a non-negative integer"),
        ({"size": (2, 2), "stride": (1,)}, "different lengths"),
    ],
)
def test_views_outside_their_storage(tmp_path, view, message):
    path = hostile.torch_zip(tmp_path / "f.pt", _one_tensor_pickle(**view))
    with pytest.raises(CheckpointError, match=message):
        open_checkpoint(path)


def test_unknown_storage_key(tmp_path):
    data = hostile.tensor_pickle({"w": FakeTensor(FakeStorage("missing"))})
    with pytest.raises(CheckpointError, match="no record archive/data/missing"):
        open_checkpoint(hostile.torch_zip(tmp_path / "f.pt", data))


def test_storage_key_cannot_reach_other_records(tmp_path):
    data = hostile.tensor_pickle({"w": FakeTensor(FakeStorage("../data.pkl"))})
    with pytest.raises(CheckpointError, match="no record"):
        open_checkpoint(hostile.torch_zip(tmp_path / "f.pt", data))


def test_compressed_records_are_refused(tmp_path):
    members = {"archive/data.pkl": _one_tensor_pickle(), "archive/data/0": bytes(16)}
    path = hostile.write_zip(tmp_path / "f.pt", members, compress=("archive/data/0",))
    with pytest.raises(CheckpointError, match="compressed"):
        _read_all(path)


def test_damaged_data_pkl_fails_its_checksum(tmp_path):
    path = hostile.torch_zip(tmp_path / "f.pt", _one_tensor_pickle())
    raw = bytearray(path.read_bytes())
    at = raw.find(b"FloatStorage")
    raw[at] ^= 0x20  # floatStorage: would be an unknown global, but the CRC catches it first
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="CRC"):
        open_checkpoint(path)


@pytest.mark.parametrize("size_field", ["compressed", "uncompressed"])
def test_zip_directory_declaring_huge_sizes(tmp_path, size_field):
    path = hostile.torch_zip(tmp_path / "f.pt", _one_tensor_pickle())
    raw = bytearray(path.read_bytes())
    for entry in hostile.central_entries(bytes(raw)):
        at = entry + (20 if size_field == "compressed" else 24)
        raw[at : at + 4] = struct.pack("<I", 0xFFFFFFF0)
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        open_checkpoint(path)


def test_zip_directory_pointing_at_the_wrong_header(tmp_path):
    path = hostile.torch_zip(tmp_path / "f.pt", _one_tensor_pickle())
    raw = bytearray(path.read_bytes())
    entry = hostile.central_entries(bytes(raw))[-1]  # the last member's local header offset += 1
    (offset,) = struct.unpack_from("<I", raw, entry + 42)
    struct.pack_into("<I", raw, entry + 42, offset + 1)
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"no member header|runs into"):
        open_checkpoint(path)


def test_byteorder_record_must_be_little_or_big(tmp_path):
    path = hostile.torch_zip(tmp_path / "f.pt", _one_tensor_pickle(), extra={"archive/byteorder": b"middle"})
    with pytest.raises(CheckpointError, match="byteorder"):
        open_checkpoint(path)


def test_old_torchscript_format_and_foreign_zips_are_named(tmp_path):
    old = hostile.write_zip(tmp_path / "old.pt", {"m/model.json": b"{}", "m/tensors/0": b""})
    with pytest.raises(CheckpointError, match=r"model.json"):
        open_checkpoint(old)
    npz = tmp_path / "weights.npz"
    import numpy as np

    np.savez(npz, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as error:
        detect_format(npz)
    assert "safetensors" in error.value.fix


# --- legacy files ----------------------------------------------------------------------------------------


def test_legacy_storage_table_must_match_the_pickle(tmp_path):
    data = hostile.tensor_pickle({"w": FakeTensor(FakeStorage("0"))}, legacy=True)
    with pytest.raises(CheckpointError, match=r"used without being stored|stored without use"):
        open_checkpoint(hostile.legacy_file(tmp_path / "a.pt", data, storages={"1": bytes(16)}))
    with pytest.raises(CheckpointError, match="past the end"):  # element count says 4, file has 12 bytes
        path = hostile.legacy_file(tmp_path / "b.pt", data, storages={"0": bytes(16)})
        path.write_bytes(path.read_bytes()[:-4])
        open_checkpoint(path)


def test_big_endian_files_are_byte_swapped(tmp_path):
    values = torch.arange(4, dtype=torch.float32) + 0.5
    data = hostile.tensor_pickle({"w": FakeTensor(FakeStorage("0"))}, legacy=True)
    path = hostile.legacy_file(tmp_path / "be.pt", data, {"0": values.numpy().astype(">f4").tobytes()},
                               little_endian=False)
    assert torch.equal(read_state_dict(path)["w"], values)
    zipped = hostile.torch_zip(tmp_path / "be.zip", _one_tensor_pickle(),
                               storages={"0": values.numpy().astype(">f4").tobytes()},
                               extra={"archive/byteorder": b"big"})
    assert torch.equal(read_state_dict(zipped)["w"], values)


# --- safetensors headers -----------------------------------------------------------------------------------


def _safetensors(path: Path, header: object, data: bytes = b"", length: int | None = None) -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


GOOD = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        (b"{not json", bytes(8), "not valid JSON"),
        (b"[1, 2]", b"", "no checkpoint format"),  # a safetensors header starts with {
        (b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "w": {}}', bytes(8), "twice"),
        (b"{" + b'"a":' * 1 + b"[" * 200_000 + b"]" * 200_000 + b"}", b"", "not valid JSON|not {dtype"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, bytes(8), "cover|span"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(4), "cover"),
        ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), "needs 12 bytes"),
        ({"w": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), "dtype 'F33'"),
        ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), "shape"),
        ({"w": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, bytes(8), "shape"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8), "data_offsets"),
        ({"w": {"dtype": "F32", "shape": [2]}}, bytes(8), "not \\{dtype"),
        ({**GOOD, "v": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), "overlaps"),
        ({**GOOD, "v": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}, bytes(16), "gap"),
        ({**GOOD, "__metadata__": {"a": 1}}, bytes(8), "__metadata__"),
    ],
)
def test_malformed_safetensors_headers(tmp_path, header, data, message):
    with pytest.raises(CheckpointError, match=message):
        _read_all(_safetensors(tmp_path / "f.safetensors", header, data))


@pytest.mark.parametrize("length", [1 << 32, 5 * 10**9, 101_000_000])
def test_absurd_safetensors_header_length_fails_before_allocating(tmp_path, length):
    path = _safetensors(tmp_path / "f.safetensors", b"{}", length=length)
    if length == 101_000_000:  # a file big enough to hold it (sparse): the 100 MB limit still applies
        with open(path, "r+b") as handle:
            handle.truncate(length + 100)
    with pytest.raises(CheckpointError, match="header claims"):
        open_checkpoint(path)


# --- wrong or missing files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"hello world, not a model", "no checkpoint format"),
        (b"\x1f\x8b\x08\x00" + bytes(40), "gzip"),
        (b"\x80\x02}q\x00.", "no checkpoint format"),  # a pickle, but not torch's
        (bytes(300) + b"ustar" + bytes(300), "tar"),
        (b"PK\x05\x06" + bytes(18), "empty zip"),
    ],
)
def test_wrong_magic(tmp_path, content, message):
    path = tmp_path / "f.pt"
    path.write_bytes(content)
    for call in (detect_format, open_checkpoint):
        with pytest.raises(CheckpointError, match=message) as error:
            call(path)
        assert str(path) in str(error.value) and error.value.fix


def test_missing_paths_folders_and_non_paths(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read"):
        open_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="folder without a weights file"):
        open_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not a path"):
        open_checkpoint(42)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../x.safetensors"}}))
    with pytest.raises(CheckpointError, match="not a plain file name"):
        open_checkpoint(tmp_path)


# --- truncation and bit flips, each format ------------------------------------------------------------------


def _small_files(folder: Path) -> dict[str, tuple[bytes, dict[str, torch.Tensor]]]:
    """One small valid file of each format and the tensors it holds."""
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7, "b": torch.tensor([3, -1]),
               "c": torch.ones(3, dtype=torch.float16)}
    folder.mkdir(exist_ok=True)
    torch.save(tensors, folder / "zip.pt")
    torch.save(tensors, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    safetensors.torch.save_file(tensors, folder / "st.safetensors")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Parameter(tensors["a"].clone())
            self.register_buffer("b", tensors["b"].clone())

        def forward(self, x):
            return x @ self.a

    traced = torch.jit.trace(Tiny(), torch.ones(1, 2), check_trace=False)
    torch.jit.save(traced, folder / "script.pt")
    script = {"a": tensors["a"], "b": tensors["b"]}
    return {
        "torch-zip": ((folder / "zip.pt").read_bytes(), tensors),
        "torch-legacy": ((folder / "legacy.pt").read_bytes(), tensors),
        "safetensors": ((folder / "st.safetensors").read_bytes(), tensors),
        "torchscript": ((folder / "script.pt").read_bytes(), script),
    }


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    return _small_files(tmp_path_factory.mktemp("small"))


def _outcome(path: Path):
    """The tensors a file holds, or the CheckpointError it raises. Any other exception fails the test."""
    try:
        return _read_all(path)
    except CheckpointError as error:
        return error


def _same(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> bool:
    return got.keys() == expected.keys() and all(
        got[k].dtype == expected[k].dtype and torch.equal(got[k], expected[k]) for k in expected)


@pytest.mark.parametrize("fmt", ["torch-zip", "torch-legacy", "safetensors", "torchscript"])
def test_every_truncation_is_an_error(tmp_path, small_files, fmt):
    data, expected = small_files[fmt]
    path = _write(tmp_path / "file", data)
    assert _same(_read_all(path), expected)
    for cut in range(len(data) - 1, -1, -1):  # shortened in place, one byte at a time
        os.truncate(path, cut)
        result = _outcome(path)
        assert isinstance(result, CheckpointError), f"{fmt} cut at {cut} of {len(data)} bytes loaded"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _regions(fmt: str, raw: bytes) -> dict[str, list[range]]:
    """Byte ranges of a valid file by role: the object pickle, and (zips) records clipcore never reads."""
    if fmt == "safetensors":
        (length,) = struct.unpack_from("<Q", raw)
        return {"pickle": [], "unread": [], "data": [range(8 + length, len(raw))]}
    if fmt == "torch-legacy":
        return {"pickle": [], "unread": [], "data": []}
    regions: dict[str, list[range]] = {"pickle": [], "unread": [], "data": []}
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        for info in archive.infolist():
            name_length, extra_length = struct.unpack_from("<HH", raw, info.header_offset + 26)
            start = info.header_offset + 30 + name_length + extra_length
            span = range(start, start + info.compress_size)
            relative = info.filename.split("/", 1)[1]
            role = "pickle" if relative == "data.pkl" else "data" if relative.startswith("data/") else "unread"
            regions[role if relative != "byteorder" else "pickle"].append(span)
    return regions


@given(data=st.data())
@pytest.mark.parametrize("fmt", ["torch-zip", "torch-legacy", "safetensors", "torchscript"])
def test_damaged_files_load_consistently_or_raise_checkpoint_error(tmp_path_factory, small_files, fmt, data):
    raw, expected = small_files[fmt]
    regions = _regions(fmt, raw)
    targets = data.draw(st.sampled_from(["anywhere", *[role for role in regions if regions[role]]]))
    pool = list(range(len(raw))) if targets == "anywhere" else [i for r in regions[targets] for i in r]
    edits = data.draw(st.lists(st.tuples(st.sampled_from(pool), st.integers(1, 255)), min_size=1, max_size=3,
                               unique_by=lambda edit: edit[0]))
    damaged = bytearray(raw)
    for at, flip in edits:
        damaged[at] ^= flip
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(raw) - 1)))
    if cut is not None:
        damaged = damaged[:cut]
    path = _write(tmp_path_factory.mktemp("flip") / "f", bytes(damaged))
    result = _outcome(path)  # never another exception type
    if cut is not None or targets == "pickle":
        # a shortened file, or a damaged pickle (the zip's CRC-32 covers data.pkl), is always detected
        assert isinstance(result, CheckpointError)
        return
    if targets == "unread":  # bytes clipcore never reads (TorchScript code, constants, ...): no effect at all
        assert _same(result, expected)
        return
    if targets == "data":  # tensor bytes: the same tensors by name, shape and dtype, whatever their values
        assert not isinstance(result, CheckpointError)
        assert {k: (v.shape, v.dtype) for k, v in result.items()} == {
            k: (v.shape, v.dtype) for k, v in expected.items()}
        return
    if not isinstance(result, CheckpointError):  # anywhere: if it parses, it describes itself truthfully
        with open_checkpoint(path) as checkpoint:
            assert {k: tuple(v.shape) for k, v in result.items()} == checkpoint.shapes()
            assert {k: v.dtype for k, v in result.items()} == checkpoint.dtypes()


def test_a_file_changed_after_opening_is_an_error_on_read(tmp_path, small_files):
    path = _write(tmp_path / "f.pt", small_files["torch-zip"][0])
    with open_checkpoint(path) as checkpoint:
        checkpoint.get("c", torch.float32)  # a converted read maps the file
        os.truncate(path, 200)
        with pytest.raises(CheckpointError, match="cut short"):
            checkpoint.get("a")  # read with a file read
        with pytest.raises(CheckpointError, match="shrank"):
            checkpoint.get("a", torch.float16)  # converted from the map: an error, not a SIGBUS past the end
    with pytest.raises(CheckpointError, match="closed"):
        checkpoint.get("a")
