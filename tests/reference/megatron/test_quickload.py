"""The quick rank-file reader calls nothing from the file and changes nothing outside what it
builds: whatever it does not handle is refused (``QuickLoadRefused``), and torch's
``weights_only`` reader then loads or refuses the file."""

from __future__ import annotations

import argparse
import io
import pickle
import zipfile
from collections import OrderedDict

import pytest
import torch

from vla_reference import MalformedFileError, ReleaseError, UnsafeCheckpointError
from vla_reference.megatron import Opaque, QuickLoadRefused, load_pt_mapped, quick_load
from vla_reference.megatron._quickload import Namespace
from vla_reference.megatron._safeload import _stands_in


def model_dicts(obj):
    return [obj["model"]] if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else []


def read(path):
    return quick_load(path, model_dicts, stands_in=_stands_in, opaque=Opaque)


def archive(path, pkl: bytes, records: dict[str, bytes] | None = None, *, byteorder: bytes = b"little"):
    """A torch.save-like archive holding ``pkl`` as its pickle."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", byteorder)
        z.writestr("archive/version", b"3\n")
        for key, data in (records or {}).items():
            z.writestr(f"archive/data/{key}", data)
    return path


def saved(path, obj):
    torch.save(obj, path)
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def test_it_reads_what_torch_save_wrote(tmp_path):
    w = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    obj = {
        "model": OrderedDict(w=w, t=w.t(), n=None, x=io.BytesIO(b"te")),
        "optimizer": {"state": {0: {"exp_avg": torch.ones(5)}}},
        "args": argparse.Namespace(hidden_size=4, params_dtype=torch.bfloat16),
        "iteration": 7,
    }
    got, stand_ins = read(archive_from(tmp_path / "f.pt", obj))
    assert stand_ins == []
    assert torch.equal(got["model"]["w"], w) and torch.equal(got["model"]["t"], w.t())
    assert got["model"]["t"].stride() == (1, 4) and got["model"]["n"] is None
    assert got["model"]["x"].getvalue() == b"te"
    unread = got["optimizer"]["state"][0]["exp_avg"]  # not selected: described, never mapped
    assert not isinstance(unread, torch.Tensor) and unread.dtype == torch.float32
    assert isinstance(got["args"], argparse.Namespace)
    assert vars(got["args"]) == {"hidden_size": 4, "params_dtype": torch.bfloat16}
    assert got["iteration"] == 7


def archive_from(path, obj):
    torch.save(obj, path)
    return path


def global_op(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def test_a_global_outside_the_allow_list_is_refused_before_anything_runs(tmp_path, capsys):
    pkl = b"\x80\x02" + global_op("builtins", "print") + b"X\x03\x00\x00\x00ran\x85R."
    path = archive(tmp_path / "f.pt", pkl)
    with pytest.raises(QuickLoadRefused, match="global builtins.print"):
        read(path)
    with pytest.raises(UnsafeCheckpointError, match="would call builtins.print"):
        load_pt_mapped(path, model_dicts)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "module, name", [("argparse", "Namespace"), ("torch._utils", "_rebuild_tensor_v2"), ("torch", "FloatStorage")]
)
def test_the_pickle_cannot_set_attributes_on_what_it_is_handed(tmp_path, module, name):
    """BUILD with slot state on a handed-out class or constructor would ``setattr`` on it."""
    pkl = b"\x80\x02" + global_op(module, name) + b"N}X\x04\x00\x00\x00evilK\x01s\x86b."
    with pytest.raises(QuickLoadRefused, match="sets evil"):
        read(archive(tmp_path / "f.pt", pkl))
    assert not hasattr(Namespace, "evil") and not hasattr(argparse.Namespace, "evil")


def test_a_persistent_id_that_is_not_a_storage_is_refused(tmp_path):
    pkl = b"\x80\x02X\x04\x00\x00\x00evilQ."  # BINPERSID with a string
    with pytest.raises(QuickLoadRefused, match="persistent id 'evil'"):
        read(archive(tmp_path / "f.pt", pkl))


def test_a_tensor_beyond_its_storage_is_named(tmp_path):
    """torch's mmap load would read past the record here; the quick reader names it."""
    records = saved(tmp_path / "ok.pt", {"model": {"w": torch.ones(4)}})
    pkl = records["ok/data.pkl"].replace(b"K\x04\x85", b"K\x09\x85")  # size (4,) -> (9,)
    path = archive(tmp_path / "f.pt", pkl, {"0": records["ok/data/0"]})
    with pytest.raises(
        MalformedFileError, match=r"size \(9,\).* runs past its storage of 4 elements \[.*f.pt:archive/data/0\]"
    ):
        load_pt_mapped(path, model_dicts)


def test_a_record_of_another_size_than_its_storage_is_named(tmp_path):
    """torch.load(mmap=True) returns the bytes after a short record as data; this must not."""
    records = saved(tmp_path / "ok.pt", {"model": {"w": torch.ones(4)}})
    path = archive(tmp_path / "f.pt", records["ok/data.pkl"], {"0": records["ok/data/0"][:8]})
    with pytest.raises(MalformedFileError, match=r"archive/data/0 holds 8 bytes, the pickle needs 16 \[.*f.pt:w\]"):
        load_pt_mapped(path, model_dicts)


def test_a_missing_record_is_named(tmp_path):
    records = saved(tmp_path / "ok.pt", {"model": {"w": torch.ones(4)}})
    path = archive(tmp_path / "f.pt", records["ok/data.pkl"], {"1": records["ok/data/0"]})
    with pytest.raises(MalformedFileError, match=r"record archive/data/0 is missing \[.*f.pt:w\]"):
        load_pt_mapped(path, model_dicts)


def test_a_local_header_naming_another_record_is_named(tmp_path):
    records = saved(tmp_path / "ok.pt", {"model": {"w": torch.ones(4)}})
    path = archive(tmp_path / "f.pt", records["ok/data.pkl"], {"0": records["ok/data/0"]})
    data = bytearray(path.read_bytes())
    at = data.index(b"archive/data/0")  # the first occurrence is the local header's
    data[at : at + len(b"archive/data/0")] = b"archive/data/9"
    path.write_bytes(bytes(data))
    with pytest.raises(MalformedFileError, match="local header of archive/data/0 names another record"):
        load_pt_mapped(path, model_dicts)


def test_big_endian_data_goes_to_torch(tmp_path):
    records = saved(tmp_path / "ok.pt", {"model": {"w": torch.ones(4)}})
    path = archive(tmp_path / "f.pt", records["ok/data.pkl"], {"0": records["ok/data/0"]}, byteorder=b"big")
    with pytest.raises(QuickLoadRefused, match="little-endian"):
        read(path)


def test_a_truncated_file_is_refused_and_named_by_torchs_reader(tmp_path):
    path = archive_from(tmp_path / "f.pt", {"model": {"w": torch.ones(1000)}})
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(QuickLoadRefused):
        read(path)
    with pytest.raises(MalformedFileError, match="f.pt"):
        load_pt_mapped(path, model_dicts)


def test_megatron_classes_become_stand_ins(tmp_path):
    pkl = b"\x80\x02}X\x04\x00\x00\x00kind" + global_op("megatron.core.enums", "ModelType") + b"K\x01\x85Rs."
    got, stand_ins = read(archive(tmp_path / "f.pt", pkl))
    assert stand_ins == ["megatron.core.enums.ModelType"]
    assert isinstance(got["kind"], Opaque) and got["kind"].args == (1,)


def test_codecs_encode_is_only_protocol_2s_bytes(tmp_path):
    """Protocol 2 pickles bytes as _codecs.encode(text, "latin1"); no other codec is run."""
    pkl = b"\x80\x02" + global_op("_codecs", "encode") + b"X\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R."
    with pytest.raises(QuickLoadRefused, match="_codecs.encode with 'zlib'"):
        read(archive(tmp_path / "f.pt", pkl))


def test_tensors_of_the_newer_dtypes_and_parameters_with_attributes(tmp_path):
    """float8 and uint16 are saved with _rebuild_tensor_v3 on an untyped storage; a Parameter
    carrying attributes (as Megatron sets them) with _rebuild_parameter_with_state."""
    p = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))
    p.tensor_model_parallel, p.partition_dim = True, 0
    f8 = torch.linspace(-2, 2, 8).to(torch.float8_e4m3fn)
    u16 = torch.arange(5, dtype=torch.int32).to(torch.uint16)
    got, _ = read(archive_from(tmp_path / "f.pt", {"model": {"p": p, "f8": f8, "u16": u16[1:]}}))
    assert got["model"]["p"].dtype == torch.float32 and torch.equal(got["model"]["p"], p.detach())
    assert got["model"]["f8"].dtype == torch.float8_e4m3fn
    assert torch.equal(got["model"]["f8"].view(torch.uint8), f8.view(torch.uint8))
    assert got["model"]["u16"].dtype == torch.uint16 and got["model"]["u16"].tolist() == [1, 2, 3, 4]


def test_an_archive_holding_a_record_twice_goes_to_torch(tmp_path):
    """Two readers could each take another copy of the record; the quick one takes neither."""
    records = saved(tmp_path / "ok.pt", {"model": {"w": torch.ones(4)}})
    path = archive(tmp_path / "f.pt", records["ok/data.pkl"], {"0": records["ok/data/0"]})
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as z:
        z.writestr("archive/data/0", b"\0" * 16)
    with pytest.raises(QuickLoadRefused, match="two records of the same name"):
        read(path)


def test_a_compressed_pickle_goes_to_torch(tmp_path):
    records = saved(tmp_path / "ok.pt", {"model": {"w": torch.ones(4)}})
    path = tmp_path / "f.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", records["ok/data.pkl"], compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("archive/data/0", records["ok/data/0"])
    with pytest.raises(QuickLoadRefused, match="stored <archive>/data.pkl"):
        read(path)


def test_a_missing_or_unreadable_file_is_named(tmp_path):
    with pytest.raises(QuickLoadRefused):
        read(tmp_path / "absent.pt")
    with pytest.raises(MalformedFileError, match="absent.pt"):
        load_pt_mapped(tmp_path / "absent.pt", model_dicts)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(MalformedFileError, match="empty.pt"):
        load_pt_mapped(tmp_path / "empty.pt", model_dicts)


class _Tensor:
    """Pickles as torch.save pickles a tensor, with a BUILD after it when ``state`` is given."""

    def __init__(self, key: str, numel: int, size: tuple, state=None):
        self.key, self.numel, self.size, self.state = key, numel, size, state

    def __reduce__(self):
        args = (_StorageId(self.key, self.numel), 0, self.size, (1,), False, OrderedDict())
        return (torch._utils._rebuild_tensor_v2, args) + ((self.state,) if self.state is not None else ())


class _StorageId:
    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class _Pickler(pickle.Pickler):
    storage_type, location = torch.FloatStorage, "cpu"

    def persistent_id(self, obj):
        if isinstance(obj, _StorageId):
            return ("storage", self.storage_type, obj.key, self.location, obj.numel)
        return None


def test_a_build_that_changes_a_tensor_after_it_was_checked_is_refused(tmp_path):
    """BUILD on a rebuilt tensor calls Tensor.__setstate__, which can set_ it to another
    geometry; the mapped view must not follow it past its record."""
    other = _Tensor("1", 16, (16,))
    w = _Tensor("0", 4, (4,), state=(other, 0, (16,), (1,)))
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump({"model": {"w": w}})
    path = archive(tmp_path / "f.pt", buf.getvalue(), {"0": b"\0" * 16, "1": b"\0" * 64})
    # the C unpickler refuses a non-dict state on an object without __setstate__
    with pytest.raises(QuickLoadRefused, match="state is not a dictionary"):
        read(path)
    try:
        got = load_pt_mapped(path, model_dicts).obj["model"]["w"]  # torch's reader decides
    except ReleaseError:
        return
    assert got.numel() * got.element_size() <= 64


def test_gpu_tensors_saved_by_older_torch(tmp_path):
    """Older torch versions named a GPU tensor's storage torch.cuda.FloatStorage, at "cuda:0"."""

    class Old(_Pickler):
        storage_type, location = torch.cuda.FloatStorage, "cuda:0"

    buf = io.BytesIO()
    Old(buf, protocol=2).dump({"model": {"w": _Tensor("0", 4, (4,))}})
    data = torch.arange(4, dtype=torch.float32)
    path = archive(tmp_path / "f.pt", buf.getvalue(), {"0": data.numpy().tobytes()})
    got, _ = read(path)
    assert got["model"]["w"].device.type == "cpu" and torch.equal(got["model"]["w"], data)
