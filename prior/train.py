"""Stage two: train a GPT-style prior over a tokenizer's code sequences.

    accelerate launch prior/train.py --config configs/prior/mnist.yaml tokenizer=PATH_OR_HUB_ID

Writes the prior to <output_dir>/final and a complete pipeline folder (tokenizer + prior) to
<output_dir>/pipeline, which `VQWAEPipeline.from_pretrained` loads.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torchvision.utils import save_image
from transformers import get_scheduler

from infra.checkpointing import RESUME_TO_SAVE, resume_training, save_final
from infra.config import parse_config, run_cli, to_dict
from infra.data import load_images, to_unit_range
from infra.metrics.digit_classifier import load_classifier
from infra.metrics_file import log_metrics
from infra.run_folder import claim_run_folder
from infra.training import (
    NonFiniteGuard,
    Optimization,
    TrainingLoop,
    backward_and_step,
    build_accelerator,
    compile_model,
    evaluation_loader,
    finish_run,
    training_loader,
)
from pipelines.pipeline_vqwae import VQWAEPipeline
from prior.codes import load_or_encode
from prior.config import PriorTrainConfig
from prior.model import CodeVocabulary, build_prior
from prior.sampling import sample_codes, sampling_config
from prior.sampling_choice import choice_table, choose_sampling
from tokenizer.model import load_tokenizer


def sequences(codes: torch.Tensor, labels: torch.Tensor, vocabulary: CodeVocabulary, config: PriorTrainConfig,
              train: bool) -> torch.Tensor:  # fmt: skip
    """[prefix] + codes (B, 1 + h*w): begin-of-image, or the class token (null class with
    probability label_dropout while training, so classifier-free guidance works)."""
    prefix = vocabulary.prefix_tokens(labels)
    if vocabulary.num_classes and train and config.label_dropout:
        dropped = torch.rand(labels.shape, device=labels.device) < config.label_dropout
        prefix = torch.where(dropped, torch.full_like(prefix, vocabulary.null_class_token), prefix)
    return torch.cat([prefix[:, None], codes], dim=1)


def causal_lm_loss(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over the code tokens; the prefix is never a target."""
    labels = input_ids.clone()
    labels[:, 0] = -100
    return model(input_ids=input_ids, labels=labels).loss


def build_optimization(model: torch.nn.Module, config: PriorTrainConfig) -> Optimization:
    """AdamW at config.learning_rate with config.weight_decay, and the configured schedule."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    return Optimization(optimizer, get_scheduler(config.scheduler_name, optimizer, config.warmup_steps, config.max_steps))


def choose_sampling_defaults(config: PriorTrainConfig, prior, tokenizer, validation, say) -> list[dict]:
    """Set the prior's generation config (saved as generation_config.json: the defaults of
    `pipe(...)`) to the sampling settings a sweep on validation images chose; returns every setting
    tried with its scores ([] where no sweep applies)."""
    if not config.sampling_sweep:
        return []
    if config.data.source != "mnist" or (tokenizer.config.in_channels, tokenizer.config.image_size) != (1, 32):
        say("sampling sweep skipped: its judge is an MNIST digit classifier (data.source=mnist, 1 x 32 x 32); "
            "the pipeline samples with temperature 1, no top-k and no guidance unless told")  # fmt: skip
        return []
    classifier, info = load_classifier()
    reference = to_unit_range(validation[: max(1000, config.sampling_sweep)]["pixel_values"])
    choice = choose_sampling(prior, tokenizer, reference, classifier, n=config.sampling_sweep, seed=config.seed)
    say(f"sampling sweep on the validation split (digit classifier, test accuracy {info.test_accuracy:.2%}):\n"
        f"{choice_table(choice)}")  # fmt: skip
    prior.generation_config = sampling_config(prior.generation_config, do_sample=True, **choice.settings)
    return choice.rows


def main(argv=None) -> dict:
    config = parse_config(PriorTrainConfig, argv, __doc__)
    output_dir = Path(config.output_dir)

    # 1. Accelerator and seed. The output folder is this run's alone (locked; an earlier run there
    #    is continued or moved aside).
    accelerator = build_accelerator(config)
    claim = claim_run_folder(output_dir, config.resume, config.start_over, accelerator)
    set_seed(config.seed)

    # 2. Tokenizer (frozen) and the data set as cached code sequences.
    tokenizer = load_tokenizer(config.tokenizer).to(accelerator.device).eval()
    tokenizer_id = tokenizer.identity()
    data_config = dataclasses.replace(config.data, image_size=tokenizer.config.image_size)
    with accelerator.main_process_first():
        splits = load_images(data_config, tokenizer.config.in_channels, seed=config.seed)
    codes = {
        name: load_or_encode(output_dir / "codes", name, tokenizer, splits[name], config.encode_batch_size, accelerator)
        for name in ("train", "validation")
    }
    if config.class_conditional and int(codes["train"]["labels"].max()) >= config.num_classes:
        raise ValueError(f"labels go up to {int(codes['train']['labels'].max())} but num_classes={config.num_classes}")
    grid = tokenizer.config.grid_size
    vocabulary = CodeVocabulary(
        tokenizer.config.codebook_size, grid, grid, config.num_classes if config.class_conditional else 0
    )
    train_loader = training_loader(
        torch.utils.data.TensorDataset(codes["train"]["codes"], codes["train"]["labels"]), accelerator, config
    )
    validation_loader = evaluation_loader(
        torch.utils.data.TensorDataset(codes["validation"]["codes"], codes["validation"]["labels"])
    )

    # 3. Prior (a transformers causal LM), optimizer, schedule.
    model = build_prior(config.model, vocabulary, tokenizer_id)
    optimization = build_optimization(model, config)
    optimizer, scheduler = optimization.optimizer, optimization.scheduler
    model = compile_model(model, config)  # compile: true
    model, optimizer, train_loader, validation_loader = accelerator.prepare(
        model, optimizer, train_loader, validation_loader
    )
    accelerator.register_for_checkpointing(scheduler)

    # 4. Resume.
    position = resume_training(
        accelerator, config.resume, output_dir, {**to_dict(config), "tokenizer_id": tokenizer_id}
    )
    accelerator.init_trackers("prior", config={k: v for k, v in to_dict(config).items() if not isinstance(v, dict)})

    def validate(step: int) -> dict:
        model.eval()
        total = torch.zeros(2, device=accelerator.device)  # summed loss x tokens, tokens
        with torch.no_grad():
            for index, (batch_codes, batch_labels) in enumerate(validation_loader):
                if config.validation_batches and index >= config.validation_batches:
                    break
                loss = causal_lm_loss(model, sequences(batch_codes, batch_labels, vocabulary, config, train=False))
                total += torch.stack(
                    [loss * batch_codes.numel(), torch.tensor(float(batch_codes.numel()), device=loss.device)]
                )
        total = accelerator.reduce(total, "sum")
        bits = (total[0] / total[1]).item() / math.log(2)
        if accelerator.is_main_process:  # decoded samples (labels 0..9 when conditional)
            labels = torch.arange(config.num_samples) % vocabulary.num_classes if vocabulary.num_classes else None
            generator = torch.Generator().manual_seed(config.seed)
            sampled = sample_codes(accelerator.unwrap_model(model), config.num_samples, labels, generator=generator)
            with torch.no_grad():
                images = tokenizer.decode(sampled.to(accelerator.device)).clamp(0, 1)
            (output_dir / "samples").mkdir(parents=True, exist_ok=True)
            save_image(
                images, output_dir / "samples" / f"samples_{step:08d}.png", nrow=int(math.sqrt(config.num_samples)) or 1
            )
        model.train()
        log_metrics(accelerator, config, step, {"validation/bits_per_code": bits})
        return {"bits_per_code": bits}

    # 5. Training loop (infra.training.TrainingLoop: the data position, the schedule, checkpoints,
    #    the time limit and SIGTERM / SIGINT; the loss guard syncs only on log/validate/checkpoint steps).
    guard = NonFiniteGuard(accelerator, config)
    saved_config = {**to_dict(config), "tokenizer_id": tokenizer_id}
    loop = TrainingLoop(accelerator, config, train_loader, position, scheduler, guard, saved_config, "prior")
    model.train()
    for batch_codes, batch_labels in loop:
        with accelerator.accumulate(model):
            # 5a. Next-token prediction over [prefix] + codes.
            loss = causal_lm_loss(model, sequences(batch_codes, batch_labels, vocabulary, config, train=True))
            ran = guard.step_ok({"cross_entropy": loss}, loss, loop.step + 1)
            # 5b. Backward and update, unless nonfinite_loss=skip skips the step.
            if ran:
                backward_and_step(accelerator, model, optimizer, loss, config)
            else:
                optimizer.zero_grad(set_to_none=True)
        if not loop.optimizer_stepped(ran):
            continue
        # 5c. Log and validate (the guard has verified that no step so far was non-finite).
        if loop.step % config.log_every == 0 or loop.step == 1:
            values = {"train/bits_per_code": loss / math.log(2), "lr": scheduler.get_last_lr()[0]}
            logs = log_metrics(accelerator, config, loop.step, values)
            loop.progress.set_postfix(bits=f"{logs['train/bits_per_code']:.3f}")
        if loop.step % config.validate_every == 0 and loop.step < config.max_steps:
            validate(loop.step)
    if loop.stopped_at_time_limit:
        return loop.stop_at_time_limit()

    # 6. Final validation; the sampling settings a validation sweep chooses become the prior's
    #    generation config; save the prior and the pipeline folder (tokenizer + prior).
    metrics = validate(loop.step)
    folder = None
    if accelerator.is_main_process:
        prior = accelerator.unwrap_model(model).eval()
        sweep = choose_sampling_defaults(config, prior, tokenizer, splits["validation"], accelerator.print)
        save_final(prior, output_dir / "final", safe_serialization=True)
        extra = {"class_conditional": config.class_conditional, "num_classes": vocabulary.num_classes,
                 "validation_bits_per_code": metrics["bits_per_code"], "data_source": config.data.source,
                 **({"sampling_sweep": sweep} if sweep else {})}  # fmt: skip
        folder = VQWAEPipeline(tokenizer, prior, extra).save_pretrained(output_dir / "pipeline", RESUME_TO_SAVE)
        accelerator.print(f"prior: validation {metrics['bits_per_code']:.3f} bits per code; pipeline saved to {folder}")
    finish_run(accelerator, config, claim, folder)
    return metrics


if __name__ == "__main__":
    run_cli(main)
