"""The training solver at the codebook sizes people use (K in the thousands): finite, bounded."""

import pytest
import torch

from infra.config import parse_config
from tokenizer.config import TokenizerTrainConfig
from tokenizer.quantizers import WassersteinQuantizer
from tokenizer.transport import sinkhorn_transport
from tokenizer.transport_chunked import CostRows, chunk_rows, chunked_sinkhorn_transport, fits_budget
from tokenizer.transport_config import TransportConfig


def collapsed_problem(num_codes: int, num_latents: int, dim: int = 8, crowd: float = 0.5, seed: int = 0):
    """A first step at large K: the codebook drawn from the latents, but `crowd` of the latents
    bunched at one code (as an untrained encoder's outputs are), cost (1, K, N), uniform weights."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(num_latents, dim, generator=generator)
    bunched = int(crowd * num_latents)
    latents[:bunched] = 0.01 * torch.randn(bunched, dim, generator=generator)
    codes = torch.cat([latents[:1], torch.randn(num_codes - 1, dim, generator=generator)])
    cost = torch.cdist(codes, latents).pow(2)[None]
    return cost, torch.full((1, num_codes), 1.0 / num_codes)


def test_warm_started_steps_stay_finite_when_one_code_holds_many_latents():
    """K = 8,192 with half the latents at one code: the dual step (0.01 x K x scale) used to lift
    one potential to ~3e16 x scale, and the next step's Sinkhorn took log(0): a non-finite OT
    term at step 2 (the 32x32-grid, K = 16,384 run). Five warm-started steps stay finite, the
    potential within its bound g >= tau log pi, and no step moves a code's potential by more
    than the scale x the number of dual steps."""
    cost, weights = collapsed_problem(8192, 1024)
    config = TransportConfig()
    potential = None
    for _ in range(5):
        start = torch.zeros(1, 8192) if potential is None else potential
        result = sinkhorn_transport(cost, weights, config, code_potential=potential, dense_plan=False)
        potential = result.code_potential
        tau = result.code_relaxation[:, None]
        scale = cost.amin(1).mean()
        assert torch.isfinite(result.cost).all() and torch.isfinite(potential).all()
        assert (potential >= tau * weights.log() - 1e-6 * scale).all()
        assert (potential - start).abs().max() <= scale * (config.dual_steps + 1) + 1e-6
    assert result.cells.unique().numel() > 1024 // 4  # the bunched latents were spread over codes


def as_rows(latents: torch.Tensor, codebook: torch.Tensor) -> CostRows:
    """Costs computed a chunk at a time from latents (P, N, D) and a codebook (K, D), never whole."""
    return CostRows(lambda a, b: torch.cdist(latents[:, a:b], codebook[None]).pow(2), latents.shape[0],
                    latents.shape[1], codebook.shape[0])  # fmt: skip


@pytest.mark.parametrize(
    "changes",
    [{}, {"code_relaxation": 0.0}, {"dual_candidates": 0}, {"dual_steps": 0}, {"code_relaxation": 16.0}],
    ids=["recipe", "balanced", "all-codes", "no-dual-steps", "relaxation-16"],
)
def test_chunked_solve_equals_the_one_shot_solve(changes):
    """Chunks of 7 latents (an uneven split of 300) against the dense solver on the same built
    matrix, warm-started twice: same potential to float tolerance, same cells, same cost; the
    budget's chunk size is the one the solver uses."""
    generator = torch.Generator().manual_seed(1)
    latents, codebook = torch.randn(2, 300, 6, generator=generator), torch.randn(40, 6, generator=generator)
    cost = torch.cdist(codebook[None], latents).pow(2)  # (2, 40, 300)
    weights = torch.softmax(0.2 * torch.randn(2, 40, generator=generator), -1)
    budget = 7 * 2 * 2 * 40 * 4 / 2**20  # two working copies of 7 latents x 40 codes, 2 problems
    config = TransportConfig(**changes, memory_budget_mb=budget)
    assert chunk_rows(2, 40, budget) == 7 and not fits_budget(2, 300, 40, budget)
    dense_potential = chunked_potential = None
    for _ in range(2):
        dense = sinkhorn_transport(cost, weights, config, code_potential=dense_potential, dense_plan=False)
        chunked = chunked_sinkhorn_transport(as_rows(latents, codebook), weights, config, chunked_potential)
        torch.testing.assert_close(chunked.code_potential, dense.code_potential, rtol=1e-5, atol=1e-5)
        assert torch.equal(chunked.cells, dense.cells)
        torch.testing.assert_close(chunked.cost, dense.cost)
        torch.testing.assert_close(chunked.marginal_error, dense.marginal_error)
        dense_potential, chunked_potential = dense.code_potential, chunked.code_potential


def test_a_built_matrix_read_in_chunks_is_the_same_problem():
    cost, weights = collapsed_problem(512, 333)
    config = TransportConfig(memory_budget_mb=2 * 50 * 512 * 4 / 2**20)
    dense = sinkhorn_transport(cost, weights, config, dense_plan=False)
    chunked = chunked_sinkhorn_transport(CostRows.of_matrix(cost), weights, config)
    torch.testing.assert_close(chunked.code_potential, dense.code_potential, rtol=1e-5, atol=1e-5)
    assert torch.equal(chunked.cells, dense.cells)


@pytest.mark.parametrize("scope", ["global", "position"])
def test_a_quantizer_past_its_budget_trains_as_one_within_it(scope):
    """The same VQ-WAE quantizer with a budget of 10 latents x K (so its lookup and OT term work in
    chunks of 10, the distances never built) against the default budget: the same codes, OT term,
    gradients for the latents and codebook, and warm start, over two steps."""
    quantizers = []
    for budget in (TransportConfig().memory_budget_mb, 2 * 10 * 32 * 4 / 2**20):
        torch.manual_seed(0)
        transport = TransportConfig(scope=scope, memory_budget_mb=budget)
        quantizers.append(WassersteinQuantizer(32, 8, "randn", 0.1, grid_size=4, transport=transport))
    assert quantizers[1].lookup_rows == 10
    latents = torch.randn(4, 8, 4, 4, generator=torch.Generator().manual_seed(2))
    assert quantizers[1].lookup(latents)[1] is None and quantizers[0].lookup(latents)[1] is not None
    for _ in range(2):
        outputs, gradients = [], []
        for quantizer in quantizers:
            z = latents.clone().requires_grad_(True)
            output = quantizer(z)
            output.transport_loss.backward()
            outputs.append(output)
            gradients.append((z.grad, quantizer.codebook.grad.clone()))
            quantizer.codebook.grad = None
        assert torch.equal(outputs[0].codes, outputs[1].codes)
        assert outputs[1].transport_problem.cost_matrix is None
        torch.testing.assert_close(outputs[1].transport_loss, outputs[0].transport_loss)
        for chunked, whole in zip(gradients[1], gradients[0]):
            torch.testing.assert_close(chunked, whole)
        torch.testing.assert_close(quantizers[1].code_potential, quantizers[0].code_potential, rtol=1e-5, atol=1e-6)
        latents = latents + 0.1 * torch.randn_like(latents)


@pytest.mark.parametrize("setting", ["model.transport.solver=exact", "ot_check_every=10"])
def test_what_needs_the_whole_matrix_is_refused_past_the_budget(setting, capsys):
    """A 32x32 grid of 32 images at K = 16,384 (2 GB a matrix) with POT's exact solver or the exact
    check: one line at configuration time naming the sizes, the budget and the two ways out."""
    overrides = ["data.image_size=128", "model.codebook_size=16384", setting]
    with pytest.raises(SystemExit):
        parse_config(TokenizerTrainConfig, ["--config", "configs/tokenizer/mnist.yaml", *overrides])
    message = capsys.readouterr().err
    assert "32768 latents x 16384 codes pass model.transport.memory_budget_mb=2048" in message
    assert message.count("\n") == 1 and "raise the budget" in message
    parse_config(TokenizerTrainConfig, ["--config", "configs/tokenizer/mnist.yaml", *overrides[1:]])  # 8x8: fits


def test_the_relaxation_follows_the_codebook_size_unless_set(tmp_path):
    """model.transport.code_relaxation left unset is the recipe's rule, max(1, K / 1024): 1 at the
    recipe's 512 codes (its measured choice), 16 at 16,384 (measured on validation); a set value
    wins; a saved tokenizer keeps the rule and loads to the same relaxation."""
    from tokenizer import VQWAE, VQWAEConfig
    from tokenizer.transport_config import recipe_relaxation

    assert [recipe_relaxation(k) for k in (256, 512, 1024, 4096, 16384)] == [1.0, 1.0, 1.0, 4.0, 16.0]
    assert TransportConfig().code_relaxation is None
    assert TransportConfig().for_codebook(16384).code_relaxation == 16.0
    assert TransportConfig(code_relaxation=2.0).for_codebook(16384).code_relaxation == 2.0
    assert TransportConfig(code_relaxation=0.0).for_codebook(16384).code_relaxation == 0.0  # balanced stays balanced
    tiny = dict(hidden_channels=8, num_res_blocks=1, embedding_dim=4)
    for size, expected in ((512, 1.0), (16384, 16.0)):
        model = VQWAE(VQWAEConfig(codebook_size=size, **tiny))
        assert model.quantizer.transport_config.code_relaxation == expected
        model.save_pretrained(tmp_path / str(size))
        assert VQWAE.from_pretrained(tmp_path / str(size)).quantizer.transport_config.code_relaxation == expected
    assert parse_config(TokenizerTrainConfig, ["model.codebook_size=4096"]).model.transport.code_relaxation is None
    # The solver resolves the rule itself: unset at K = 2,048 solves as code_relaxation=2.
    torch.manual_seed(0)
    cost = torch.rand(1, 2048, 300)
    weights = torch.full((1, 2048), 1 / 2048)
    unset = sinkhorn_transport(cost, weights, TransportConfig(), dense_plan=False)
    two = sinkhorn_transport(cost, weights, TransportConfig(code_relaxation=2.0), dense_plan=False)
    one = sinkhorn_transport(cost, weights, TransportConfig(code_relaxation=1.0), dense_plan=False)
    assert torch.equal(unset.code_potential, two.code_potential) and torch.equal(unset.cells, two.cells)
    assert not torch.equal(unset.code_potential, one.code_potential)
