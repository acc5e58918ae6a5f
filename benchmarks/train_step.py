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
from accelerate import Accelerator

from benchmarks.common import device_name, mnist_batch, time_side_by_side
from infra.config import CommandLine, provenance
from infra.data import DataConfig
from infra.files import write_record
from infra.step_graph import match_optimizer
from infra.training import RunConfig
from tokenizer import VQWAE, VQWAEConfig
from tokenizer.config import TokenizerTrainConfig
from tokenizer.model import load_tokenizer
from tokenizer.objective import LossConfig
from tokenizer.update import TokenizerUpdate, build_optimization


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
    """The training update of tokenizer/train.py (`tokenizer.update.TokenizerUpdate`: forward, loss,
    non-finite guard, backward, clipping, Adam) for `config` on `images` in [0, 1], as a closure
    `step(batch=None) -> loss` (a device tensor: with a graph, overwritten by the next call), the
    schedule stepped after each call as the training loop does. The run's settings are the
    recipe's with a constant learning rate after `warmup_steps` (a step benchmark has no end to
    decay to). `trained` (a state dict) starts it from a trained tokenizer's weights. compile:
    torch.compile the model's forward (the first call compiles); autocast: e.g. torch.bfloat16
    for the backbone (the quantizer and OT stay fp32 inside); cuda_graph: the step as
    tokenizer/train.py runs it with cuda_graph=true (static buffers, capturable fused Adam;
    recorded after `WARMUP_STEPS` calls on a CUDA device), or with replay=False the same step run
    eagerly."""
    torch.manual_seed(0)
    model = VQWAE(config)
    if trained is not None:
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in trained.items() if k in own and own[k].shape == v.shape}, strict=False)
    model = model.to(device).train()
    if compile:
        model.compile()
    run = TokenizerTrainConfig(
        model=config, data=DataConfig(image_size=config.image_size), loss=weights or LossConfig(),
        learning_rate=learning_rate, lr_scheduler="constant", warmup_steps=warmup_steps, max_grad_norm=max_grad_norm,
        cuda_graph=cuda_graph,
    )  # fmt: skip
    capturable = cuda_graph and torch.device(device).type == "cuda"
    optimization = build_optimization(model, run, capturable, torch.device(device))
    match_optimizer(optimization.optimizer, optimization.scheduler, capturable)  # as tokenizer/train.py, after resume
    update = TokenizerUpdate(model, optimization.optimizer, Accelerator(cpu=device == "cpu"), run, replay, autocast)

    def step(batch: torch.Tensor | None = None) -> torch.Tensor:
        result = update(images if batch is None else batch, 0)
        optimization.scheduler.step()  # outside the update, as in the training loop (a graph reads the lr tensor)
        return result.loss.total.detach()

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
