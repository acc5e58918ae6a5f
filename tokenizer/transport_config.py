"""How VQ-WAE's OT term is posed and solved: `TransportConfig` (`model.transport.*`), the one
place those settings live from YAML to the solvers (tokenizer/transport.py), and the recipe's rule
for the code marginal's hold at a codebook size."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from infra.config import check_choice, check_positive


@dataclass
class TransportConfig:
    """How VQ-WAE's OT term is posed and solved (`model.transport.*`). The defaults are the recipe
    measured in docs/design.md ("The recipe, and why each choice"): one global problem a step against uniform code weights,
    semi-relaxed (the code marginal held to pi by code_relaxation x the nearest-code cost x KL;
    code_relaxation = max(1, K / 1024) unless set),
    10 warm-started Sinkhorn iterations at epsilon = 0.1 x the mean nearest-code cost, then 20
    subgradient steps on the unregularised dual that choose each latent's Laguerre cell among its
    8 nearest codes; the encoder is pulled to the code that decodes it."""

    solver: str = "sinkhorn"  # sinkhorn | exact (POT's emd2 per problem, CPU: the reference code's)
    scope: str = "global"  # global: one problem over the batch | position: one per grid position (paper)
    learn_code_weights: bool = False  # the paper's uniform pi; true = the reference code's learnable pi
    epsilon: float = 0.1  # entropic regularisation, x each problem's mean nearest-code cost
    iterations: int = 10  # Sinkhorn iterations a step, warm-started from the last step: a fixed budget
    # > 0: semi-relaxed OT, the code marginal held to pi by this x cost scale x KL; 0 = balanced
    # (exact marginals; long runs of it collapsed, docs/history.md). None: the recipe's rule for the
    # codebook's size, `recipe_relaxation` (1 up to 1,024 codes, 16 at 16,384)
    code_relaxation: float | None = None
    dual_steps: int = 20  # subgradient steps on the dual without entropy after Sinkhorn (0 = none)
    dual_candidates: int = 8  # the dual steps choose each latent's cell among this many codes (0 = all)
    # What the OT term pulls each latent towards: `nearest`, the code that decodes it, or `cell`,
    # its OT cell's code (the paper's gradient); the codebook is trained by OT either way.
    encoder_target: str = "nearest"
    # What the OT term's (latents x codes) fp32 matrices may hold at once, in MB (two copies: the
    # costs and one work matrix): a problem past it is solved in chunks of latents
    # (tokenizer/transport_chunked.py), the same result in O(chunk x K).
    memory_budget_mb: float = 2048.0
    # torch.compile the solver alone (tokenizer/transport_compiled.py); slower on the 2-core CPU
    compile_solver: bool = False

    def __post_init__(self):
        check_choice("model.transport.solver", self.solver, ("sinkhorn", "exact"))
        check_choice("model.transport.scope", self.scope, ("global", "position"))
        check_choice("model.transport.encoder_target", self.encoder_target, ("nearest", "cell"))
        check_positive("model.transport.epsilon", self.epsilon)
        check_positive("model.transport.iterations", self.iterations)
        if self.code_relaxation is not None:
            check_positive("model.transport.code_relaxation", self.code_relaxation, allow_zero=True)
        check_positive("model.transport.dual_steps", self.dual_steps, allow_zero=True)
        check_positive("model.transport.dual_candidates", self.dual_candidates, allow_zero=True)
        check_positive("model.transport.memory_budget_mb", self.memory_budget_mb)

    def for_codebook(self, num_codes: int) -> TransportConfig:
        """This config with code_relaxation set: the recipe's rule for `num_codes` codes where it
        was left unset (None), else itself."""
        if self.code_relaxation is not None:
            return self
        return dataclasses.replace(self, code_relaxation=recipe_relaxation(num_codes))


def recipe_relaxation(num_codes: int) -> float:
    """The recipe's code_relaxation for a codebook of `num_codes`: max(1, K / 1024). tau, the KL
    hold of the code marginal, is this x the mean nearest-code cost, which shrinks as codes grow
    denser, while a code left behind in training sits a fixed distance from the data (about 12
    such costs at K = 16,384, `benchmarks/unused_codes.py`): with tau at 1 cost the semi-relaxed
    optimum leaves it empty for good. Measured on validation: 1 at K = 512 (16 costs 0.5 dB there),
    4 at K = 4,096 (all but one code in use against 94.5%), 16 at K = 16,384 (95% against 60%),
    PSNR held; BENCHMARKS.md, "Scale: large codebooks and grids"."""
    return max(1.0, num_codes / 1024)
