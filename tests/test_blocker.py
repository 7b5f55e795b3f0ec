"""The layerwise blocker: grouping, exact round trips, layout persistence, fingerprints."""

import json

import pytest
import torch

import denoised_weights as dnw
from denoised_weights.plugins.testing import randomized_state


def bound(name="e2gan", preset="tiny", block_size=None, **opts):
    arch = dnw.create_architecture(name, preset, **opts)
    kw = {"block_size": block_size} if block_size else {}
    return arch, dnw.bind_blocker(arch, dnw.create_blocker("layerwise", preset, **kw))


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
@pytest.mark.parametrize("stats", ["group", "tensor"])
def test_round_trip_is_bit_exact_on_every_preset(preset, stats):
    arch = dnw.create_architecture("e2gan", preset)
    blocker = dnw.bind_blocker(arch, dnw.create_blocker("layerwise", stats=stats))
    states = [randomized_state(arch, seed=s, scale=10.0 ** -(s + 1)) for s in range(2)]
    # include exact zeros (peft's B init) and extreme magnitudes
    states[0][next(iter(states[0]))].zero_()
    blocker.fit(states)
    for state in states:
        back = blocker.from_blocks(blocker.to_blocks(state))
        assert all(torch.equal(back[k], state[k]) for k in state)


def test_blocks_are_normalised_by_fitted_statistics():
    arch, blocker = bound()
    states = [randomized_state(arch, seed=s, scale=0.003) for s in range(4)]
    blocker.fit(states)
    blocks = torch.stack([blocker.to_blocks(s) for s in states])
    used = blocks.reshape(4, -1)[:, : blocker.total]
    assert 0.5 < used.std().item() < 2.0  # the raw values have std 0.003


def test_one_group_per_layer_in_network_order():
    arch, blocker = bound()
    names = [g["name"] for g in blocker.groups]
    assert names == arch.lora_spec().target_modules
    first = blocker.groups[0]
    assert [t["key"] for t in first["tensors"]] == [
        "stem.conv.lora_A.weight",
        "stem.conv.lora_B.weight",
    ]


def test_trained_norms_join_their_layer_group():
    _, blocker = bound(train_norms=True)
    stem = blocker.groups[0]
    assert [t["key"] for t in stem["tensors"]] == [
        "stem.conv.lora_A.weight",
        "stem.conv.lora_B.weight",
        "stem.norm.weight",
        "stem.norm.bias",
        "stem.norm.running_mean",  # peft's saved copy of a batch norm carries its statistics
        "stem.norm.running_var",
        "stem.norm.num_batches_tracked",
    ]


def test_block_count_and_padding():
    arch, blocker = bound(block_size=100)
    total = sum(v.numel() for v in dnw.lora_state(dnw.build_lora_model(arch)).values())
    assert blocker.total == total and blocker.n_blocks == -(-total // 100)
    blocks = blocker.to_blocks(randomized_state(arch))
    assert torch.all(blocks.reshape(-1)[total:] == 0)


def test_layout_json_round_trip():
    arch, blocker = bound()
    blocker.fit([randomized_state(arch, seed=s) for s in range(2)])
    layout = json.loads(json.dumps(blocker.layout()))
    again = dnw.LayerwiseBlocker.from_layout(layout)
    state = randomized_state(arch, seed=7)
    assert torch.equal(again.to_blocks(state), blocker.to_blocks(state))
    assert again.structure() == blocker.structure()


def test_block_index_covers_every_value_once():
    _, blocker = bound(block_size=50)
    covered = sum(p["to"] - p["from"] for b in blocker.block_index() for p in b["parts"])
    assert covered == blocker.total


def test_fingerprint_tracks_preset_rank_and_layout():
    fps = set()
    for preset, rank, size in [
        ("tiny", None, None),
        ("tiny", 3, None),
        ("tiny", None, 32),
        ("small", None, None),
    ]:
        opts = {"rank": rank} if rank else {}
        arch, blocker = bound(preset=preset, block_size=size, **opts)
        fps.add(dnw.lora_fingerprint(arch, blocker))
    assert len(fps) == 4


def test_errors():
    arch, blocker = bound()
    with pytest.raises(dnw.DnwError, match="block size must be a positive integer"):
        dnw.create_blocker("layerwise", block_size=0)
    with pytest.raises(dnw.DnwError, match="expected blocks of shape"):
        blocker.from_blocks(torch.zeros(3, 3))
    state = randomized_state(arch)
    state.pop(next(iter(state)))
    with pytest.raises(dnw.DnwError, match="lacks"):
        blocker.to_blocks(state)
    with pytest.raises(dnw.DnwError, match="no layout yet"):
        dnw.create_blocker("layerwise").to_blocks({})
