"""Round trips are bit-exact: merge(reshard(hf, layout)) == hf, reshard(merge(ckpt)) == ckpt."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vla_reference import HFSource, merge, reshard

from builders import assert_same, gpt2, hf_tensors, llama, moe, rank_models, write_model


@st.composite
def configs(draw):
    family = draw(st.sampled_from(["llama", "gpt2", "moe", "mixtral"]))
    tp = draw(st.sampled_from([1, 2, 4]))
    pp = draw(st.sampled_from([1, 2, 4]))
    vocab = draw(st.integers(50, 130))  # usually not a multiple of 128*TP: padding rows appear
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16]))
    if family == "gpt2":
        arch = gpt2(tied=draw(st.booleans()))
        ep = 1
    else:
        groups = draw(st.sampled_from([1, 2, 4]))  # groups < TP included
        kw = dict(num_query_groups=groups, tied=draw(st.booleans()), qk_layernorm=draw(st.booleans()))
        if family == "llama":
            # QKV bias alone (Qwen2) only without qk_layernorm (Qwen3 has no biases)
            qkv_bias = not kw["qk_layernorm"] and draw(st.booleans())
            arch = llama(swiglu=True, add_qkv_bias=qkv_bias, **kw)
            ep = 1
        else:
            # a gated shared expert (Qwen2-MoE) only where no qk_layernorm asks for Qwen3-MoE
            if family == "moe" and not kw["qk_layernorm"] and draw(st.booleans()):
                kw.update(moe_shared_expert_intermediate_size=24, moe_shared_expert_gate=True)
            arch = moe(every=2 if family == "moe" else 1, **kw)
            ep = draw(st.sampled_from([1, 2]))
    arch = dataclasses.replace(arch, vocab_size=vocab, padded_vocab_size=vocab)
    return arch, tp, pp, ep, dtype, draw(st.integers(0, 2**16))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_merge_of_reshard_is_identity(cfg):
    arch, tp, pp, ep, dtype, seed = cfg
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_model(arch, d / "hf", seed=seed, dtype=dtype)
        reshard(d / "hf", d / "mg", tp=tp, pp=pp, ep=ep, fsync=False)
        merge(d / "mg", d / "back", fsync=False)
        assert_same(hf_tensors(d / "hf"), hf_tensors(d / "back"))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_reshard_of_merge_is_identity(cfg):
    arch, tp, pp, ep, dtype, seed = cfg
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_model(arch, d / "hf", seed=seed, dtype=dtype)
        reshard(d / "hf", d / "ckpt", tp=tp, pp=pp, ep=ep, fsync=False)
        merge(d / "ckpt", d / "merged", fsync=False)
        reshard(d / "merged", d / "again", tp=tp, pp=pp, ep=ep, fsync=False)
        a, b = rank_models(d / "ckpt"), rank_models(d / "again")
        assert a.keys() == b.keys()
        for rank in a:
            assert_same(a[rank], b[rank])


def test_padding_rows_follow_the_target_tp(tmp_path):
    arch = dataclasses.replace(llama(), vocab_size=100, padded_vocab_size=100)
    write_model(arch, tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "mg", tp=2, pp=1, fsync=False)
    models = rank_models(tmp_path / "mg")
    emb = torch.cat([models[f"mp_rank_0{r}"]["embedding.word_embeddings.weight"] for r in range(2)])
    assert emb.shape[0] == 256  # ceil(100 / (128*2)) * 256
    assert torch.count_nonzero(emb[100:]) == 0  # documented: padding rows are zeros


def test_unknown_vocab_keeps_padded_rows(tmp_path, caplog):
    arch = dataclasses.replace(llama(), vocab_size=100, padded_vocab_size=100)
    write_model(arch, tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "mg", tp=2, pp=1, fsync=False)
    for f in (tmp_path / "mg").rglob("model_optim_rng.pt"):  # forget the true vocabulary size
        state = torch.load(f, weights_only=True)  # not mmap: the file is rewritten below
        state["args"].pop("vocab_size")
        torch.save(state, f)
    (tmp_path / "mg/release/arguments.json").unlink()
    merge(tmp_path / "mg", tmp_path / "padded", fsync=False)
    assert "keeping 256 padded rows" in caplog.text
    assert HFSource(tmp_path / "padded").hf_tensor("model.embed_tokens.weight").shape[0] == 256
    merge(tmp_path / "mg", tmp_path / "stripped", vocab_size=100, fsync=False)
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "stripped"))


def test_merge_is_byte_deterministic(tmp_path):
    write_model(moe(), tmp_path / "hf")
    reshard(tmp_path / "hf", tmp_path / "mg", tp=2, pp=2, ep=2, fsync=False)
    merge(tmp_path / "mg", tmp_path / "a", fsync=False)
    merge(tmp_path / "mg", tmp_path / "b", fsync=False)
    for f in sorted((tmp_path / "a").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name


def test_sharded_output_above_max_shard_size(tmp_path):
    hf = write_model(llama(), tmp_path / "hf")
    total = sum(t.numel() * t.element_size() for t in hf.values())
    reshard(tmp_path / "hf", tmp_path / "mg", tp=2, pp=2, fsync=False)
    merge(tmp_path / "mg", tmp_path / "sharded", max_shard_size=total // 3, fsync=False)
    files = sorted(p.name for p in (tmp_path / "sharded").glob("*.safetensors"))
    assert len(files) >= 3 and (tmp_path / "sharded/model.safetensors.index.json").is_file()
    assert_same(hf_tensors(tmp_path / "hf"), hf_tensors(tmp_path / "sharded"))


def test_dtype_is_kept(tmp_path):
    write_model(llama(), tmp_path / "hf", dtype=torch.bfloat16)
    reshard(tmp_path / "hf", tmp_path / "mg", tp=2, pp=2, fsync=False)
    for model in rank_models(tmp_path / "mg").values():
        assert {t.dtype for t in model.values() if t is not None} == {torch.bfloat16}
    merge(tmp_path / "mg", tmp_path / "back", fsync=False)
    assert {t.dtype for t in hf_tensors(tmp_path / "back").values()} == {torch.bfloat16}


def test_rank_files_are_what_torch_save_writes(tmp_path):
    """Streamed rank files hold exactly the records torch.save writes for the same state, CRCs included.

    Only ``.data/serialization_id`` (an id torch derives while writing) differs.
    """
    import zipfile

    write_model(moe(), tmp_path / "hf", dtype=torch.bfloat16)
    reshard(tmp_path / "hf", tmp_path / "mg", tp=2, pp=2, ep=2, fsync=False)
    for f in sorted((tmp_path / "mg").rglob("model_optim_rng.pt")):
        assert zipfile.ZipFile(f).testzip() is None, f
        again = tmp_path / "again" / f.parent.name / f.name
        again.parent.mkdir(parents=True)
        torch.save(torch.load(f, weights_only=True), again)
        ours, theirs = zipfile.ZipFile(f), zipfile.ZipFile(again)
        names = [i.filename for i in ours.infolist()]
        assert names == [i.filename for i in theirs.infolist()]
        for name in names:
            if not name.endswith(".data/serialization_id"):
                assert ours.getinfo(name).CRC == theirs.getinfo(name).CRC, name
                assert ours.read(name) == theirs.read(name), name
