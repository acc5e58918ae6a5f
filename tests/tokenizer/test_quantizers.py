"""Quantizers and the VQWAE model against independent computations."""

import math

import ot
import pytest
import torch

from infra.metrics.reconstruction import code_perplexity
from tokenizer import VQWAE, VQWAEConfig
from tokenizer.quantizers import VectorQuantizer, WassersteinQuantizer, squared_distances
from tokenizer.transport import entropic_sinkhorn, sinkhorn_transport
from tokenizer.transport_config import TransportConfig

TINY = dict(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32)


def wasserstein(grid_size=2, scope="global", solver="exact", codebook_init="randn", **transport):
    """A small quantizer with learnable pi; Sinkhorn solves the balanced problem to near-exactness
    (200 iterations, 80 dual steps over every code) unless `transport` says otherwise."""
    settings = dict(solver=solver, scope=scope, learn_code_weights=True, code_relaxation=0.0, iterations=200,
                    dual_steps=80, dual_candidates=0)  # fmt: skip
    return WassersteinQuantizer(
        codebook_size=16, embedding_dim=4, codebook_init=codebook_init, init_noise=0.1, grid_size=grid_size,
        transport=TransportConfig(**{**settings, **transport}),
    )  # fmt: skip


def test_nearest_code_is_brute_force_argmin():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(codebook_size=64, embedding_dim=8, codebook_init="randn", init_noise=0.1)
    latents = torch.randn(5, 8, 3, 4)
    output = quantizer(latents)
    for b in range(5):
        for i in range(3):
            for j in range(4):
                distances = [(latents[b, :, i, j] - code).pow(2).sum().item() for code in quantizer.codebook]
                assert output.codes[b, i, j].item() == min(range(64), key=distances.__getitem__)
    torch.testing.assert_close(output.quantized, quantizer.codebook[output.codes].permute(0, 3, 1, 2))


def test_vq_losses_are_the_closed_form():
    quantizer = VectorQuantizer(codebook_size=16, embedding_dim=4, codebook_init="randn", init_noise=0.1)
    latents = torch.randn(2, 4, 3, 3)
    output = quantizer(latents)
    expected = (quantizer.codebook[output.codes].permute(0, 3, 1, 2) - latents).pow(2).mean()
    torch.testing.assert_close(output.commitment_loss, expected)
    torch.testing.assert_close(output.codebook_loss, expected)
    assert output.perplexity.item() == pytest.approx(code_perplexity(output.codes, 16).item())


@pytest.mark.parametrize("quantizer", ["vq", "wasserstein"])
def test_straight_through_gradient_reaches_encoder(quantizer):
    model = VQWAE(VQWAEConfig(**TINY, quantizer=quantizer, image_size=16))
    output = model(torch.rand(4, 1, 16, 16))
    output.reconstruction_loss.backward()  # reconstruction only: the path through the quantizer
    first_conv = model.encoder.layers[0].weight.grad
    assert first_conv is not None and first_conv.abs().sum() > 0


@pytest.mark.parametrize("grid_size", [8, 16])
def test_per_position_ot_is_sum_of_emd2_per_position(grid_size):
    torch.manual_seed(grid_size)
    quantizer = wasserstein(grid_size=grid_size, scope="position")
    quantizer.code_logits.data.normal_()
    latents = torch.randn(6, 4, grid_size, grid_size)
    output = quantizer(latents)
    weights = torch.softmax(quantizer.code_logits.detach().double(), -1)
    expected = 0.0
    for position in range(grid_size * grid_size):
        at_position = latents.flatten(2)[:, :, position].double()  # (B, D)
        cost = torch.cdist(quantizer.codebook.detach().double(), at_position).pow(2)
        expected += ot.emd2(weights[position], torch.full((6,), 1 / 6, dtype=torch.float64), cost).item()
    assert quantizer.code_logits.shape == (grid_size * grid_size, 16)
    assert output.transport_loss.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("solver", ["exact", "sinkhorn"])
def test_global_ot_is_emd2_over_all_latents_times_positions(solver):
    torch.manual_seed(1)
    quantizer = wasserstein(grid_size=4, scope="global", solver=solver)
    latents = torch.randn(3, 4, 4, 4)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, 4).double()
    cost = torch.cdist(quantizer.codebook.detach().double(), flat).pow(2)
    if solver == "sinkhorn":  # warm-started as in training, from a converged entropic potential
        start = entropic_sinkhorn(cost.float()[None], quantizer.code_weights().detach(), 0.1, 5000, tolerance=1e-6)
        quantizer.code_potential.copy_(start.code_potential)
    output = quantizer(latents)
    expected = ot.emd2(
        torch.full((16,), 1 / 16, dtype=torch.float64), torch.full((48,), 1 / 48, dtype=torch.float64), cost
    )
    # Local and global scopes weigh the same: the global cost counts once per grid position.
    assert output.transport_loss.item() == pytest.approx(16 * expected.item(), rel=1e-4)


@pytest.mark.parametrize("scope,relaxation", [("global", 0.0), ("position", 0.0), ("global", 2.0)])
def test_assignment_loss_has_the_dense_plans_value_and_gradients(scope, relaxation):
    """The quantizer differentiates the assignment plan through its (latent, cell) pairs only; the
    dense route (<plan, C> with the plan as d/dC, back through the distances) must agree, with
    the balanced solver and the semi-relaxed one (code_relaxation)."""
    torch.manual_seed(3)
    quantizer = wasserstein(grid_size=2, scope=scope, solver="sinkhorn", code_relaxation=relaxation, encoder_target="cell")
    quantizer.code_logits.data.normal_()
    latents = torch.randn(5, 4, 2, 2, requires_grad=True)
    start = quantizer.code_potential.clone()
    loss = quantizer(latents).transport_loss
    loss.backward()
    grads = [latents.grad.clone(), quantizer.codebook.grad.clone(), quantizer.code_logits.grad.clone()]

    for tensor in (latents, quantizer.codebook, quantizer.code_logits):
        tensor.grad = None
    grid = latents.permute(0, 2, 3, 1).reshape(5, 4, 4)  # (B, positions, D)
    # The same distances the quantizer solves on (cells can flip on rounding-level ties).
    distances = squared_distances(grid, quantizer.codebook)  # (B, positions, K)
    cost = distances.permute(1, 2, 0) if scope == "position" else distances.reshape(-1, 16).t()[None]
    dense = sinkhorn_transport(cost, quantizer.code_weights(), quantizer.transport_config, code_potential=start)
    expected = 4 * dense.cost.mean()
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, [latents.grad, quantizer.codebook.grad, quantizer.code_logits.grad]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("solver", ["exact", "sinkhorn"])
def test_transport_loss_trains_codebook_and_weights(solver):
    quantizer = wasserstein(solver=solver)
    output = quantizer(torch.randn(4, 4, 2, 2))
    (output.transport_loss + output.weights_kl).backward()
    assert quantizer.codebook.grad.abs().sum() > 0
    assert quantizer.code_logits.grad.abs().sum() > 0


def test_weights_kl_is_kl_to_uniform_over_codebook_size():
    quantizer = wasserstein()
    quantizer.code_logits.data.normal_()
    weights = torch.softmax(quantizer.code_logits.detach(), -1)
    # KL(pi || uniform over K=16) / K, written out (torch's kl_div(reduction="mean") computes the
    # same today but is deprecated and will change to batchmean).
    expected = (weights * (weights.log() - math.log(1 / 16))).sum() / 16
    assert quantizer(torch.randn(2, 4, 2, 2)).weights_kl.item() == pytest.approx(expected.item(), rel=1e-5)


def test_per_position_scope_refuses_a_different_grid():
    quantizer = wasserstein(grid_size=8, scope="position")
    with pytest.raises(ValueError, match="8x8 grid but the latents are 4x4"):
        quantizer(torch.randn(2, 4, 4, 4))


@pytest.mark.parametrize("quantizer", ["vq", "wasserstein"])
def test_distances_and_ot_in_fp32_under_bf16_autocast(quantizer):
    torch.manual_seed(0)
    model = VQWAE(VQWAEConfig(**TINY, quantizer=quantizer, image_size=16))
    images = torch.rand(4, 1, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(images)
        latents = model.encoder(images)
    assert latents.dtype == torch.bfloat16  # autocast is really on
    flat = latents.float().permute(0, 2, 3, 1).reshape(-1, 8)
    expected = torch.cdist(flat, model.quantizer.codebook.float()).argmin(-1)
    assert torch.equal(output.codes.flatten(), expected)
    terms = [output.quantizer.transport_loss, output.quantizer.commitment_loss]
    assert all(term.dtype == torch.float32 for term in terms if term is not None)


def test_encoder_initialisation_puts_codes_among_latents():
    torch.manual_seed(0)
    quantizer = wasserstein(codebook_init="encoder")
    latents = 5.0 + torch.randn(8, 4, 2, 2)  # far from randn codes
    quantizer.train()
    quantizer(latents)
    assert bool(quantizer.initialized)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, 4)
    nearest = torch.cdist(quantizer.codebook.detach(), flat).min(-1).values
    rms = flat.pow(2).mean().sqrt()
    assert nearest.max() < 0.1 * rms * 4  # noise of 0.1 x RMS per dimension, 4 dimensions
    before = quantizer.codebook.detach().clone()
    quantizer(latents + 100)
    assert torch.equal(before, quantizer.codebook.detach())  # only once


def test_model_shapes_roundtrip_and_hub_save_load(tmp_path):
    config = VQWAEConfig(**TINY, image_size=16)
    model = VQWAE(config).eval()
    images = torch.rand(3, 1, 16, 16)
    codes = model.encode(images)
    assert codes.shape == (3, 4, 4) and codes.dtype == torch.long
    assert model.decode(codes).shape == (3, 1, 16, 16)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    loaded = VQWAE.from_pretrained(tmp_path)
    assert loaded.config == config
    assert torch.equal(loaded.encode(images), codes)


@pytest.mark.parametrize("downsample,grid", [(4, 8), (8, 4)])
def test_downsampling(downsample, grid):
    model = VQWAE(VQWAEConfig(**TINY, downsample=downsample, image_size=32))
    assert model.encode(torch.rand(2, 1, 32, 32)).shape == (2, grid, grid)


def test_residual_blocks_have_their_own_weights():
    model = VQWAE(VQWAEConfig(hidden_channels=16, num_res_blocks=2, embedding_dim=8, codebook_size=8))
    blocks = [layer for layer in model.encoder.layers if layer.__class__.__name__ == "ResidualBlock"]
    assert len(blocks) == 2 and blocks[0].block[1].weight is not blocks[1].block[1].weight


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            dict(quantizer="sq"),
            r"model.quantizer='sq' is not allowed; choose one of \['wasserstein', 'vq', 'vq_ema', 'fsq'\]",
        ),
        (dict(transport=dict(scope="local")), r"model.transport.scope='local' is not allowed; choose one of"),
        (dict(transport=dict(solver="emd")), r"model.transport.solver='emd' is not allowed; choose one of"),
        (dict(transport=dict(sinkhorn_iterations=5)), r"unknown config key\(s\) \['model.transport.sinkhorn_iterations'\]"),
        (dict(image_size=30), "use image_size=32"),
        (dict(codebook_size=1), "codebook_size must be >= 2"),
    ],
)
def test_config_errors_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VQWAEConfig(**kwargs)


def test_bad_images_get_clear_errors():
    model = VQWAE(VQWAEConfig(**TINY, image_size=16))
    with pytest.raises(ValueError, match="expected images"):
        model.encode(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="divisible by 4"):
        model.encode(torch.rand(2, 1, 18, 18))


@pytest.mark.parametrize("scope", ["global", "position"])
def test_transport_problem_is_the_latents_against_the_codebook(scope):
    """The problem a step exposes for the exact check is ||z_n - c_k||^2 of its own latents."""
    torch.manual_seed(0)
    quantizer = wasserstein(scope=scope, solver="sinkhorn")
    latents = torch.randn(3, 4, 2, 2)
    problem = quantizer(latents).transport_problem
    grid = latents.permute(0, 2, 3, 1).reshape(3, 4, 4)  # (B, h*w, D)
    if scope == "global":
        expected = torch.cdist(quantizer.codebook, grid.reshape(-1, 4)).pow(2)[None]  # (1, K, B*h*w)
    else:
        expected = torch.cdist(quantizer.codebook[None], grid.transpose(0, 1)).pow(2)  # (h*w, K, B)
    torch.testing.assert_close(problem.cost_matrix, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(problem.code_weights, quantizer.code_weights().detach())


def test_nearest_encoder_target_keeps_the_ot_value_and_codebook_gradient():
    """transport.encoder_target=nearest: the same OT value and codebook gradient as the paper's `cell`
    target; the latents' gradient is that of ||z - c_nearest||^2 (brute-force nearest code)."""
    torch.manual_seed(1)
    state, latents, grads = wasserstein().state_dict(), torch.randn(6, 4, 2, 2), {}
    for target in ("cell", "nearest"):
        quantizer = wasserstein(solver="sinkhorn", encoder_target=target)
        quantizer.load_state_dict(state)
        z = latents.clone().requires_grad_(True)
        loss = quantizer.transport(z, squared_distances(z.permute(0, 2, 3, 1).reshape(-1, 4), quantizer.codebook))[0]
        loss.backward()
        grads[target] = (loss.item(), quantizer.codebook.grad.clone(), z.grad.clone())
    assert grads["cell"][0] == pytest.approx(grads["nearest"][0])
    torch.testing.assert_close(grads["cell"][1], grads["nearest"][1])
    flat = latents.permute(0, 2, 3, 1).reshape(-1, 4)
    codebook = state["codebook"]
    nearest = codebook[torch.stack([((codebook - z) ** 2).sum(-1).argmin() for z in flat])]
    expected = 4 * 2 * (flat - nearest) / flat.shape[0]  # num_positions x d/dz mean ||z - c||^2
    torch.testing.assert_close(grads["nearest"][2].permute(0, 2, 3, 1).reshape(-1, 4), expected)
    # The nearest codes `lookup` already found give the same gradient as recomputing them.
    for scope in ("global", "position"):
        quantizer = wasserstein(scope=scope, solver="sinkhorn", encoder_target="nearest")
        quantizer.codebook.data.copy_(state["codebook"])
        computed = []
        for given in (False, True):
            quantizer.code_potential.zero_()
            z = latents.clone().requires_grad_(True)
            flat, distances, codes = quantizer.lookup(z)
            quantizer.transport(z, distances, codes if given else None)[0].backward()
            computed.append(z.grad)
        torch.testing.assert_close(computed[0], computed[1])


def test_code_relaxation_reaches_the_solver_from_the_config():
    """model.transport.code_relaxation: the carried potential after a training forward is the one a
    direct semi-relaxed solve of the same problem gives (uncentred: its level is part of it)."""
    torch.manual_seed(0)
    model = VQWAE(VQWAEConfig(**TINY, transport=dict(code_relaxation=2.0, iterations=30)))
    model.train()
    images = torch.rand(4, 1, 32, 32)
    model(images)  # initialises the codebook and the potential
    start = model.quantizer.code_potential.clone()
    latents = model.encoder(images)
    model.quantizer(latents)
    grid = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    cost = squared_distances(grid, model.quantizer.codebook).t()[None]
    config = model.quantizer.transport_config
    expected = sinkhorn_transport(cost, model.quantizer.code_weights(), config, code_potential=start, dense_plan=False)
    assert config.code_relaxation == 2.0 and config.iterations == 30 and config.dual_steps == 20  # the rest: recipe
    torch.testing.assert_close(model.quantizer.code_potential, expected.code_potential)
    assert expected.code_potential.mean().abs() > 1e-6  # not re-centred
    with pytest.raises(ValueError, match="model.transport.code_relaxation must be >= 0"):
        VQWAEConfig(transport=dict(code_relaxation=-1.0))


def test_the_codebook_gradient_is_the_same_bits_every_time_on_two_threads():
    """The OT term's codebook gradient, recomputed on the same inputs with 2 threads, is bitwise
    the same each time (a training run with a seed is repeatable), and it is the closed form: each
    code gets 2 x num_positions x sum over its cell of (c_k - z_n) / N. Indexing's backward summed a
    code's rows in whatever order the threads met them (191 of 200 repeats differed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        quantizer = WassersteinQuantizer(codebook_size=512, embedding_dim=64, codebook_init="randn", init_noise=0.1,
                                         grid_size=8, transport=TransportConfig())  # fmt: skip
        latents = torch.randn(32, 64, 8, 8)
        flat, distances, codes = quantizer.lookup(latents)
        gradients = []
        for _ in range(20):
            quantizer.code_potential.zero_()
            quantizer.codebook.grad = None
            loss, problem = quantizer.transport(latents, distances, codes)
            loss.backward()
            gradients.append(quantizer.codebook.grad.clone())
        assert all(torch.equal(gradient, gradients[0]) for gradient in gradients[1:])
        cells = problem.result.cells.reshape(-1)
        expected = torch.zeros(512, 64, dtype=torch.float64)
        expected.index_add_(0, cells, (quantizer.codebook.detach()[cells] - flat.detach()).double())
        torch.testing.assert_close(gradients[0].double(), 2 * 64 * expected / len(cells), rtol=1e-5, atol=1e-8)
    finally:
        torch.set_num_threads(threads)
