"""Reading the next layer in a background thread (LayerReader prefetch, forced on CPU here) changes
no number, reads the layers in order with at most two in host memory, and reports read errors
in the calling thread with the text the sequential path gives."""

from __future__ import annotations

import shutil
import threading

import pytest
import torch

import families
import quantized_checkpoints as qz
from file_trees import drop_tensor
from superexperts.models.checkpoints.reader import Checkpoint
from superexperts.runs.errors import UserError
from superexperts.scale import stream_profile
from superexperts.scale.layerwise import LayerReader
from superexperts.scale.scoring import stream_perplexity

IDS = families.random_ids(samples=4, seq_len=16)
STREAM = families.random_ids(samples=1, seq_len=96, seed=5)[0]


@pytest.fixture
def readers(monkeypatch):
    """Every LayerReader made during the test, and the threads Checkpoint.read ran in."""
    made, threads = [], []
    init, read = LayerReader.__init__, Checkpoint.read

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    def recording_read(self, keys, **kwargs):
        threads.append(threading.current_thread().name)
        return read(self, keys, **kwargs)

    monkeypatch.setattr(LayerReader, "__init__", recording_init)
    monkeypatch.setattr(Checkpoint, "read", recording_read)
    return made, threads


def _table(prof) -> torch.Tensor:
    return torch.tensor(prof.expert_stats.select_dtypes("number").to_numpy(dtype="float64"))


def _same_profiles(folder, readers, **kwargs) -> None:
    made, threads = readers
    sequential = stream_profile(folder, IDS, batch_size=2, prefetch=False, **kwargs)
    assert [r.prefetch for r in made] == [False] and set(threads) == {threading.current_thread().name}
    prefetched = stream_profile(folder, IDS, batch_size=2, prefetch=True, **kwargs)
    reader, layers = made[1], sequential.meta["num_layers"]
    assert reader.prefetch and reader.reads == list(range(layers))  # in order, each once
    assert reader.peak_held == 2 and reader.held == 0  # next layer read while this one ran; all released
    assert any(t.startswith("se-layer-reader") for t in threads)  # it really read in the thread
    a, b = _table(sequential), _table(prefetched)
    assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())  # bit for bit
    assert sequential.expert_stats.equals(prefetched.expert_stats)
    assert sequential.layer_stats.equals(prefetched.layer_stats)


def test_bf16_profile_with_prefetch_equals_sequential(checkpoints, readers):
    _, folder = checkpoints("olmoe", "sharded")
    _same_profiles(folder, readers, dtype=torch.bfloat16)


def test_fp8_profile_with_prefetch_equals_sequential(tmp_path, readers):
    folder = qz.write_fp8(qz.deepseek_partial_model(), tmp_path / "ckpt")
    _same_profiles(folder, readers)


def test_perplexity_with_prefetch_equals_sequential(checkpoints):
    _, folder = checkpoints("qwen3_moe", "hub")
    kwargs = {"experts": [(1, 3)], "seq_len": 24, "batch_size": 2}
    assert stream_perplexity(folder, STREAM, prefetch=True, **kwargs) == stream_perplexity(folder, STREAM, **kwargs)


def test_default_prefetches_on_accelerators_only(checkpoints):
    _, folder = checkpoints("qwen3_moe", "hub")
    ckpt = Checkpoint(folder, {}, [])
    with LayerReader(ckpt, [], device=torch.device("cpu")) as cpu, \
         LayerReader(ckpt, [], device=torch.device("meta")) as other:  # fmt: skip
        assert not cpu.prefetch and other.prefetch and not other.pin  # pinned host memory is for CUDA only




def _message(folder, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        stream_profile(folder, IDS, batch_size=2, **kwargs)
    return str(info.value)


def test_missing_layer_weights_same_error(checkpoints, tmp_path):
    _, source = checkpoints("olmoe", "sharded")
    folder = shutil.copytree(source, tmp_path / "ckpt")
    drop_tensor(folder, "model.layers.1.self_attn.q_proj.weight")
    sequential = _message(folder, prefetch=False)
    assert "has no weights for layer 1" in sequential
    assert _message(folder, prefetch=True) == sequential


def test_error_in_the_reader_thread_is_raised_in_the_caller(checkpoints, tmp_path, readers):
    """A shard that became unreadable after the headers were read: with prefetch the reader thread
    fails and the caller gets that UserError from `take`, with the text the inline read raises."""
    _, source = checkpoints("olmoe", "sharded")
    messages = []
    for prefetch in (False, True):
        folder = shutil.copytree(source, tmp_path / f"ckpt-{prefetch}")
        ckpt = Checkpoint.open(folder, _skeleton(folder), layers_prefix="model.layers")
        ckpt.tensors[ckpt.layer_keys[1][0]].file.write_bytes(b"not a safetensors file")
        with LayerReader(ckpt, [1], device=torch.device("cpu"), prefetch=prefetch) as reader:
            with pytest.raises(UserError, match="cannot read") as info:
                list(reader.take(1))
            assert reader.held == 0
        messages.append(str(info.value).replace(f"ckpt-{prefetch}", "ckpt"))
    assert messages[0] == messages[1]
    assert readers[1] == ["MainThread", "se-layer-reader_0"]


def _skeleton(folder):
    from superexperts.models.checkpoints.skeleton import build_skeleton

    return build_skeleton(folder, None)[0]
