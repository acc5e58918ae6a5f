"""benchmarks/unused_codes.py against a brute-force count: which codes the latents use (the
tokenizer's own encode), and the squared distance from each code to its nearest latent."""

import torch

from benchmarks import unused_codes
from infra.data import DataConfig, load_images, to_unit_range
from tokenizer import VQWAE, VQWAEConfig


def test_used_codes_and_distances_match_a_brute_force_count(tmp_path):
    torch.manual_seed(0)
    model = VQWAE(VQWAEConfig(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32)).eval()
    model.quantizer.codebook.data[0] = 50.0  # a code far from every latent: unused, and far
    model.save_pretrained(tmp_path)
    result = unused_codes.unused_codes(str(tmp_path), "validation", 6, batch_size=4)
    images = to_unit_range(load_images(DataConfig(), 1)["validation"][:6]["pixel_values"])
    with torch.no_grad():
        used = torch.unique(model.encode(images))
        latents = model.encoder(images).permute(0, 2, 3, 1).reshape(-1, 8)
    codebook = model.quantizer.codebook.detach()
    by_hand = ((codebook[:, None, :] - latents[None]) ** 2).sum(-1).min(dim=1).values  # (K,)
    mask = torch.zeros(32, dtype=torch.bool)
    mask[used] = True
    assert (result["images"], result["latents"], result["codebook_size"]) == (6, 6 * 64, 32)
    assert result["used"]["codes"] == len(used) and result["unused"]["codes"] == 32 - len(used) and not mask[0]
    assert abs(result["unused"]["cost_to_nearest_latent"]["q90"] - by_hand[~mask].quantile(0.9).item()) < 1e-3 * by_hand.max()
    assert abs(result["used"]["cost_to_nearest_latent"]["median"] - by_hand[mask].median().item()) < 1e-5
    nearest_cost = ((latents[:, None, :] - codebook[None]) ** 2).sum(-1).min(dim=1).values
    assert abs(result["scale"] - nearest_cost.mean().item()) < 1e-6 * max(1.0, nearest_cost.mean().item())
    assert result["tau"] == model.quantizer.transport_config.code_relaxation * result["scale"] == result["scale"]  # K = 32: 1
    assert 0 <= result["unused_target_share"] < 1
