"""The vector-quantize-pytorch baselines (vq_ema, fsq) on our backbone: they train, encode/decode
agrees with the forward pass, and they round-trip save/load."""

import math

import pytest
import torch

from tokenizer import VQWAE, VQWAEConfig
from tokenizer.objective import LossConfig, total_loss

TINY = dict(hidden_channels=16, num_res_blocks=1, embedding_dim=8, image_size=16)
BASELINES = {
    "vq_ema": dict(quantizer="vq_ema", codebook_size=32),
    "vq_ema_low_dim": dict(quantizer="vq_ema", codebook_size=32, vq_ema=dict(code_dim=4)),
    "vq_ema_cosine": dict(quantizer="vq_ema", codebook_size=32, vq_ema=dict(cosine_similarity=True)),
    "fsq": dict(quantizer="fsq", codebook_size=125, fsq=dict(levels=[5, 5, 5])),
}


def digits(n=32):
    from infra.data import DataConfig, load_images, to_unit_range

    split = load_images(DataConfig(image_size=16), 1)["train"]
    return to_unit_range(split[:n]["pixel_values"])


@pytest.fixture(scope="module")
def images():
    return digits()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_trains_and_round_trips(name, images, tmp_path):
    torch.manual_seed(0)
    model = VQWAE(VQWAEConfig(**TINY, **BASELINES[name]))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        output = model(images)
        loss = total_loss(output, LossConfig())
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        losses.append(loss.terms["reconstruction"].item())
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5, losses
    assert output.codes.shape == (32, 4, 4) and output.codes.dtype == torch.long
    assert 0 <= output.codes.min() and output.codes.max() < model.config.codebook_size

    # encode -> decode is the forward pass of eval mode, and encode does not move the codebook.
    model.eval()
    state = {key: value.clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        forward = model(images)
        codes = model.encode(images)
        decoded = model.decode(codes)
    model.train()
    with torch.no_grad():
        model.encode(images)  # in train mode too: no EMA update, no dead-code expiry
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=f"encode changed {key}")
    torch.testing.assert_close(codes, forward.codes)
    torch.testing.assert_close(decoded, forward.reconstruction)

    model.save_pretrained(tmp_path)
    loaded = VQWAE.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(images), codes)
        torch.testing.assert_close(loaded.decode(codes), decoded)


def test_vq_ema_codes_are_nearest_codewords(images):
    """Our wrapper's embed(encode(z)) is the library codebook's nearest codeword (brute force)."""
    torch.manual_seed(0)
    model = VQWAE(VQWAEConfig(**TINY, **BASELINES["vq_ema"]))
    model(images)  # k-means initialisation on the first batch
    latents = model.encoder(images)
    codes = model.quantizer.encode(latents)
    codebook = model.quantizer.vq.codebook
    flat = latents.permute(0, 2, 3, 1).reshape(-1, 8)
    brute = torch.stack([((codebook - z) ** 2).sum(-1).argmin() for z in flat])
    assert torch.equal(codes.flatten(), brute)
    torch.testing.assert_close(model.quantizer.embed(codes).permute(0, 2, 3, 1).reshape(-1, 8), codebook[brute])


def test_fsq_codebook_is_the_level_grid():
    model = VQWAE(VQWAEConfig(**TINY, **BASELINES["fsq"]))
    every_code = torch.arange(125).view(5, 5, 5)
    assert model.quantizer.codebook_size == math.prod([5, 5, 5])
    assert torch.equal(
        model.quantizer.fsq.codes_to_indices(model.quantizer.fsq.implicit_codebook).long(), torch.arange(125)
    )
    assert model.decode(every_code[:1]).shape == (1, 1, 20, 20)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(quantizer="fsq", codebook_size=512, fsq=dict(levels=[8, 8])), "set codebook_size=64"),
        (dict(quantizer="fsq", codebook_size=8, fsq=dict(levels=[2, 2, 2])), "model.fsq.levels must be a list of levels >= 3"),
        (dict(quantizer="vq_ema", vq_ema=dict(decay=1.0)), r"model.vq_ema.decay must lie in \(0, 1\)"),
        (dict(quantizer="vqema"), "choose one of"),
    ],
)
def test_bad_baseline_settings_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        VQWAEConfig(**overrides)
