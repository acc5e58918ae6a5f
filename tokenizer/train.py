"""Stage one: train the VQ-WAE tokenizer.

    accelerate launch tokenizer/train.py --config configs/tokenizer/mnist.yaml [key=value ...]

Same command on one CPU, one GPU or N GPUs (batch_size is the global batch). Checkpoints go to
<output_dir>/checkpoints (resume=latest), the trained tokenizer to <output_dir>/final.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torchvision.utils import save_image

from infra.cards import tokenizer_card
from infra.checkpointing import resume_training, save_final
from infra.config import parse_config, run_cli, to_dict
from infra.data import load_images, to_unit_range
from infra.metrics_file import log_metrics
from infra.run_folder import claim_run_folder
from infra.step_graph import graph_applies, match_optimizer
from infra.training import (
    TrainingLoop,
    build_accelerator,
    compile_model,
    evaluation_loader,
    finish_run,
    training_loader,
)
from tokenizer.config import TokenizerTrainConfig
from tokenizer.evaluation import evaluate_reconstruction
from tokenizer.model import VQWAE
from tokenizer.transport_check import check_against_exact
from tokenizer.update import TokenizerUpdate, build_optimization


def main(argv=None) -> dict:
    config = parse_config(TokenizerTrainConfig, argv, __doc__)
    # The relaxation's rule resolved for this codebook (max(1, K / 1024) when unset), so the saved
    # config, checkpoints and resumed runs hold the number, as runs from before the rule do.
    config.model.transport = config.model.transport.for_codebook(config.model.codebook_size)
    output_dir = Path(config.output_dir)

    # 1. Accelerator: devices, mixed precision, accumulation, logging, seeded data order. The output
    #    folder is this run's alone (locked; an earlier run there is continued or moved aside).
    accelerator = build_accelerator(config)
    claim = claim_run_folder(output_dir, config.resume, config.start_over, accelerator)
    set_seed(config.seed)  # the same seed on every rank: identical initial weights

    # 2. Data: train / validation splits of uint8 images (cached by datasets).
    with accelerator.main_process_first():
        splits = load_images(config.data, config.model.in_channels, seed=config.seed)
    train_loader = training_loader(splits["train"], accelerator, config, num_workers=config.data.num_workers)
    validation_loader = evaluation_loader(splits["validation"])

    # 3. Model, optimizer, schedule. A graphed step (cuda_graph: true) keeps Adam's lr and step
    #    counts on the device, where every replay reads them.
    graph = graph_applies(config.cuda_graph, accelerator)
    model = VQWAE(config.model)
    optimization = build_optimization(model, config, capturable=graph, device=accelerator.device)
    optimizer, scheduler = optimization.optimizer, optimization.scheduler
    model = compile_model(model, config)  # compile: true
    model, optimizer, train_loader, validation_loader = accelerator.prepare(
        model, optimizer, train_loader, validation_loader
    )
    accelerator.register_for_checkpointing(scheduler)  # stepped by us, once per optimizer step

    # 4. Resume: weights, optimizer, scheduler, RNG and the position in the data.
    position = resume_training(accelerator, config.resume, output_dir, to_dict(config))
    match_optimizer(optimizer, scheduler, capturable=graph)  # whichever mode the checkpoint was saved in
    accelerator.init_trackers("tokenizer", config={k: v for k, v in to_dict(config).items() if not isinstance(v, dict)})

    def validate(step: int) -> dict:
        limit = config.validation_batches or None
        metrics = evaluate_reconstruction(model, validation_loader, accelerator, limit).scalars()
        if accelerator.is_main_process:  # originals (top rows) vs reconstructions (bottom rows)
            unwrapped = accelerator.unwrap_model(model)
            with torch.no_grad():
                images = to_unit_range(splits["validation"][:32]["pixel_values"]).to(accelerator.device)
                reconstruction = unwrapped.decode(unwrapped.encode(images)).clamp(0, 1)
            (output_dir / "samples").mkdir(parents=True, exist_ok=True)
            path = output_dir / "samples" / f"reconstruction_{step:08d}.png"
            save_image(torch.cat([images, reconstruction]), path, nrow=8)
        log_metrics(accelerator, config, step, {f"validation/{key}": value for key, value in metrics.items()})
        return metrics

    # 5. Training loop, step-based (infra.training.TrainingLoop: the data position, the schedule,
    #    checkpoints, the time limit and SIGTERM / SIGINT). The update (tokenizer/update.py):
    #    forward, loss, non-finite guard, backward, clipping, Adam; with cuda_graph, recorded once
    #    warm and replayed. No host sync on a plain step: the guard, logging and checks read device
    #    values only on the steps that log, validate or checkpoint.
    update = TokenizerUpdate(model, optimizer, accelerator, config, graph)
    loop = TrainingLoop(accelerator, config, train_loader, position, scheduler, update.guard, to_dict(config), "tokenizer")
    model.train()
    for batch in loop:
        with accelerator.accumulate(model):
            result = update(to_unit_range(batch["pixel_values"]), loop.step + 1)
        output, loss = result.output, result.loss
        if not loop.optimizer_stepped(loss is not None):
            continue
        # 5a. Log, check and validate (the guard has verified that no step so far was non-finite).
        step = loop.step
        if step % config.log_every == 0 or step == 1:
            values = {f"train/{name}": value for name, value in loss.terms.items()}
            values.update({"train/loss": loss.total, "train/perplexity": output.perplexity,
                           "train/codes_used": output.quantizer.codes_used, "lr": scheduler.get_last_lr()[0]})  # fmt: skip
            logs = log_metrics(accelerator, config, step, values)
            loop.progress.set_postfix(loss=f"{logs['train/loss']:.4f}", ppl=f"{logs['train/perplexity']:.0f}")
        if config.ot_check_every and step % config.ot_check_every == 0:
            # The training solver against POT's exact solution of this step's problem.
            problem = output.quantizer.transport_problem
            check = check_against_exact(problem.cost_matrix, problem.code_weights, problem.result)
            log_metrics(accelerator, config, step, {f"ot_check/{key}": value for key, value in asdict(check).items()})
        if step % config.validate_every == 0 and step < config.max_steps:
            validate(step)
    if loop.stopped_at_time_limit:
        return loop.stop_at_time_limit()

    # 6. Final validation, save_pretrained with a model card, optional push to the Hub.
    metrics = validate(loop.step)
    final = None
    if accelerator.is_main_process:
        final = save_final(
            accelerator.unwrap_model(model), output_dir / "final", tokenizer_card(to_dict(config), metrics).content
        )
        accelerator.print(
            f"tokenizer saved to {final}: validation PSNR {metrics['psnr']:.2f} dB, "
            f"perplexity {metrics['perplexity']:.1f}, codes used {metrics['codes_used']}"
        )
    finish_run(accelerator, config, claim, final)
    return metrics


if __name__ == "__main__":
    run_cli(main)
