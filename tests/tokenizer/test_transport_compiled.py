"""The compiled solver (`model.transport.compile_solver`) against the eager one, and its fallback."""

import torch
from torch._inductor.utils import run_and_get_code

import tokenizer.transport_compiled as compiled_module
from tokenizer.transport import batched_product, sinkhorn_transport
from tokenizer.transport_compiled import compiled_sinkhorn_transport
from tokenizer.transport_config import TransportConfig


def problem(num_codes=64, num_latents=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randn(num_codes, 8, generator=generator)
    latents = codes[torch.randint(0, num_codes, (num_latents,), generator=generator)]
    latents = latents + 0.3 * torch.randn(num_latents, 8, generator=generator)
    return torch.cdist(codes[None], latents[None]).pow(2), torch.full((1, num_codes), 1.0 / num_codes)


def test_the_compiled_solver_equals_the_eager_one_over_warm_started_steps():
    """Three warm-started solves of the recipe's setting, compiled and eager from the same start:
    potentials within 1e-5 (relative to the scale), the same cells, costs and marginal errors."""
    cost, weights = problem()
    config = TransportConfig(compile_solver=True)
    potential = torch.zeros(1, 64)
    for step in range(3):
        compiled = compiled_sinkhorn_transport(cost + 0.01 * step, weights, config, potential)
        eager = sinkhorn_transport(cost + 0.01 * step, weights, config, code_potential=potential, dense_plan=False)
        scale = cost.amin(1).mean()
        assert (compiled.code_potential - eager.code_potential).abs().max() <= 1e-5 * max(1.0, float(scale))
        assert torch.equal(compiled.cells, eager.cells)
        torch.testing.assert_close(compiled.cost, eager.cost, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compiled.marginal_error, eager.marginal_error, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(compiled.code_relaxation, eager.code_relaxation)
        potential = eager.code_potential


def test_a_failed_compilation_is_one_line_and_the_eager_solve(monkeypatch, capsys):
    """A compiler that fails (here: torch.compile's function raises, as a missing C++ compiler
    does at the first call) gives one line on stderr and the eager result, then stays eager."""

    def broken(function, **_):
        def call(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

        return call

    monkeypatch.setattr(compiled_module.torch, "compile", broken)
    monkeypatch.setattr(compiled_module, "_COMPILED", {})
    monkeypatch.setattr(compiled_module, "_EAGER_FROM_NOW_ON", set())
    cost, weights = problem(seed=1)
    config = TransportConfig(compile_solver=True, iterations=7)
    for _ in range(2):
        result = compiled_sinkhorn_transport(cost, weights, config, torch.zeros(1, 64))
        eager = sinkhorn_transport(cost, weights, config, code_potential=torch.zeros(1, 64), dense_plan=False)
        assert torch.equal(result.cells, eager.cells) and torch.equal(result.code_potential, eager.code_potential)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "model.transport.compile_solver: compilation failed (InvalidCxxCompiler: No working C++ compiler found); "
        "solving eagerly"
    ]


def test_batched_products_are_bmm_and_the_compiled_solver_keeps_them_blas_calls():
    """One problem's matrix-vector products run as torch.mm: the same bits as torch.bmm (and a
    batch of problems is bmm itself). Compiled, they stay extern BLAS calls: inductor lowers a
    matrix-vector bmm on CPU to a generated reduction, which made the compiled solve 3x the eager one."""
    generator = torch.Generator().manual_seed(2)
    plan, scaling = torch.rand(1, 2048, 512, generator=generator), torch.rand(1, 512, 1, generator=generator)
    assert torch.equal(batched_product(plan, scaling), torch.bmm(plan, scaling))
    assert torch.equal(batched_product(scaling.transpose(1, 2), plan.transpose(1, 2)), torch.bmm(scaling.transpose(1, 2), plan.transpose(1, 2)))
    assert torch.equal(batched_product(plan.expand(3, -1, -1), scaling.expand(3, -1, -1)), torch.bmm(plan.expand(3, -1, -1), scaling.expand(3, -1, -1)))
    cost, weights = problem(seed=3)
    config = TransportConfig(compile_solver=True, iterations=4, dual_steps=2)
    compiled = torch.compile(lambda *tensors: compiled_module._solve(*tensors, config=config), dynamic=False)
    _, code = run_and_get_code(compiled, cost, weights, torch.zeros(1, 64))
    assert sum(source.count("extern_kernels.mm(") for source in code) == 2 * 4 - 1  # the first code sums (scaling by ones) fold into a sum
