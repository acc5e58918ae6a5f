"""Training-step time: VQ-WAE (Sinkhorn, our default), VQ-WAE (exact OT) and the VQ-VAE baseline,
same backbone and batch (32 MNIST images), measured side by side in interleaved rounds.

    python -m benchmarks.train_step [--rounds 30] [--iterations 10 30] [--tokenizer outputs/tokenizer-mnist/final]
        [--compiled-solver] [--skip-exact] [--out FILE]

--iterations adds rows for the default (global) Sinkhorn with other per-step iteration counts.
--tokenizer starts every model from a trained tokenizer's weights (codebook and code potential
included): the steady state of training, where warm-started Sinkhorn no longer stops early.
Without it the models start fresh, where the solver often meets its tolerance within 10-20
iterations.
"""

from __future__ import annotations

import torch
from transformers import get_scheduler

from benchmarks.common import device_name, mnist_batch, time_side_by_side
from infra.config import CommandLine, provenance
from infra.files import write_record
from infra.step_graph import GraphedStep, adam_settings, match_optimizer
from infra.training import RunConfig
from tokenizer import VQWAE, VQWAEConfig
from tokenizer.model import load_tokenizer
from tokenizer.objective import LossConfig, total_loss


def make_step(
    config: VQWAEConfig,
    images: torch.Tensor,
    device: str,
    trained: dict | None = None,
    weights: LossConfig | None = None,
    learning_rate: float = 2e-3,
    compile: bool = False,
    autocast: torch.dtype | None = None,
    cuda_graph: bool = False,
    replay: bool = True,
    warmup_steps: int = RunConfig.warmup_steps,
    max_grad_norm: float = RunConfig.max_grad_norm,
):
    """One training step of `config` (forward, loss, backward, Adam) on `images`, as a closure
    `step(batch=None) -> loss` (a device tensor: with a graph, overwritten by the next call);
    `trained` (a state dict) starts it from a trained tokenizer's weights. compile: torch.compile
    the model's forward (the first call compiles); autocast: e.g. torch.bfloat16 for the backbone
    (the quantizer and OT stay fp32 inside); cuda_graph: the step as tokenizer/train.py runs it
    with cuda_graph=true (static buffers, capturable fused Adam; recorded after
    `WARMUP_STEPS` calls on a CUDA device), or with replay=False the same step run eagerly.
    As in tokenizer/train.py: gradients clipped at `max_grad_norm` and the learning rate warmed up
    linearly over `warmup_steps` (without them the recipe's 2e-3 diverges within a few steps, and
    a step check would compare NaN or chaotic losses)."""
    torch.manual_seed(0)
    model = VQWAE(config)
    if trained is not None:
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in trained.items() if k in own and own[k].shape == v.shape}, strict=False)
    model = model.to(device).train()
    if compile:
        model.compile()
    capturable = cuda_graph and torch.device(device).type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), **adam_settings(learning_rate, capturable, torch.device(device)))
    scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup_steps)
    match_optimizer(optimizer, scheduler, capturable)  # the optimizer and schedule as tokenizer/train.py sets them
    weights = weights or LossConfig()
    device_type = torch.device(device).type

    def update(batch: torch.Tensor, _step=None) -> torch.Tensor:
        with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=autocast is not None):
            output = model(batch)
        loss = total_loss(output, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        return loss.total.detach()

    graphed = GraphedStep(update, graph=replay) if cuda_graph else None

    def step(batch: torch.Tensor | None = None) -> torch.Tensor:
        batch = images if batch is None else batch
        loss = graphed(batch, 0) if graphed is not None else update(batch)
        scheduler.step()  # outside the step, as in the training loop (a graph reads the lr tensor)
        return loss

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = CommandLine(__doc__)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--iterations", type=int, nargs="*", default=[], help="extra Sinkhorn iteration counts")
    parser.add_argument("--tokenizer", help="start every model from this trained tokenizer (folder or Hub id)")
    parser.add_argument("--compiled-solver", action="store_true", help="add the recipe with model.transport.compile_solver")
    parser.add_argument("--skip-exact", action="store_true", help="leave out the rows of POT's exact solver")
    parser.add_argument("--out", help="also write the timings as a JSON record here")
    args = parser.parse_args(argv)
    trained = load_tokenizer(args.tokenizer).state_dict() if args.tokenizer else None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    images = mnist_batch(32).to(device)
    candidates = {
        "VQ-VAE baseline": VQWAEConfig(quantizer="vq"),
        "VQ-WAE, the recipe (Sinkhorn, global)": VQWAEConfig(),
        **{
            f"VQ-WAE, the recipe, {count} Sinkhorn iterations": VQWAEConfig(transport=dict(iterations=count))
            for count in args.iterations
        },
        **({"VQ-WAE, the recipe, compiled solver": VQWAEConfig(transport=dict(compile_solver=True))}
           if args.compiled_solver else {}),  # fmt: skip
        "VQ-WAE, the recipe per position": VQWAEConfig(transport=dict(scope="position")),
        **({} if args.skip_exact else {
            "VQ-WAE, exact (global)": VQWAEConfig(transport=dict(solver="exact")),
            "VQ-WAE, exact, per position": VQWAEConfig(transport=dict(solver="exact", scope="position")),
        }),
    }  # fmt: skip
    steps = {name: make_step(config, images, device, trained) for name, config in candidates.items()}
    timings = time_side_by_side(steps, rounds=args.rounds, device=device)
    base = timings["VQ-VAE baseline"]
    start = f"from {args.tokenizer}" if args.tokenizer else "from scratch"
    print(f"device: {device_name()}; batch 32 x 1 x 32 x 32, K = 512; models start {start}\n")
    print("| model | step ms | ratio to VQ-VAE |")
    print("|---|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {1e3 * seconds:.1f} | {seconds / base:.2f}x |")
    record = {**provenance("benchmarks.train_step", argv), "device": device_name(), "rounds": args.rounds, "start": start,
              "step_ms": {name: 1e3 * seconds for name, seconds in timings.items()},
              "ratio_to_vq_vae": {name: seconds / base for name, seconds in timings.items()}}  # fmt: skip
    if args.out:
        write_record(args.out, record)
    return record


if __name__ == "__main__":
    main()
