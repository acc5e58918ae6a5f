"""Stage one: train the VQ-WAE tokenizer.

    accelerate launch tokenizer/train.py --config configs/tokenizer/mnist.yaml [key=value ...]

Same command on one CPU, one GPU or N GPUs (batch_size is the global batch). Checkpoints go to
<output_dir>/checkpoints (resume=latest), the trained tokenizer to <output_dir>/final.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run by path (accelerate launch tokenizer/train.py): make the repo importable
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torchvision.utils import save_image
from tqdm.auto import tqdm
from transformers import get_scheduler

from tokenizer.checkpointing import check_same_run, push_folder, read_state, resolve_resume, save_checkpoint, save_final
from tokenizer.config import load_config, to_dict
from tokenizer.data import load_images, to_unit_range
from tokenizer.evaluate import evaluate_reconstruction
from tokenizer.model import VQWAE
from tokenizer.objective import total_loss
from tokenizer.train_config import TokenizerTrainConfig


def parse_args(argv=None) -> TokenizerTrainConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file in configs/tokenizer/")
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, dotted for nesting (model.codebook_size=256)"
    )
    args = parser.parse_args(argv)
    try:
        return load_config(TokenizerTrainConfig, args.config, args.overrides)
    except ValueError as error:
        parser.error(str(error))


def model_card(config: TokenizerTrainConfig, metrics: dict) -> str:
    return (
        "---\nlibrary_name: vqwae\ntags: [vq-wae, image-tokenizer, optimal-transport]\n---\n\n"
        f"# VQ-WAE tokenizer ({config.data.source})\n\n"
        "Vector Quantized Wasserstein Auto-Encoder (Vuong et al., ICML 2023) trained with "
        "[vqwae](https://github.com/vqwae/vqwae).\n\n```python\nfrom tokenizer import VQWAE\n"
        "tokenizer = VQWAE.from_pretrained(PATH_OR_REPO)\ncodes = tokenizer.encode(images)  # images in [0, 1]\n```\n\n"
        f"## Validation metrics (step {config.max_steps})\n\n```json\n{json.dumps(metrics, indent=2)}\n```\n\n"
        f"## Training config\n\n```yaml\n{yaml.safe_dump(to_dict(config), sort_keys=False)}```\n"
    )


def main(argv=None) -> dict:
    config = parse_args(argv)
    output_dir = Path(config.output_dir)

    # 1. Accelerator: devices, mixed precision, accumulation, logging, seeded data order.
    log_with = config.log_with
    if log_with == "auto":
        log_with = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=None if log_with == "none" else log_with,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    per_step = accelerator.num_processes * config.gradient_accumulation_steps
    if config.batch_size % per_step:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by processes x accumulation = {per_step}")
    set_seed(config.seed)  # same seed on every rank: identical initial weights

    # 2. Data: train / validation splits as uint8 tensors (cached by datasets).
    with accelerator.main_process_first():
        splits = load_images(config.data, config.model.in_channels, seed=config.seed)
    train_loader = torch.utils.data.DataLoader(
        splits["train"],
        batch_size=config.batch_size // per_step,
        shuffle=True,
        drop_last=True,
        num_workers=config.data.num_workers,
    )
    if len(train_loader) == 0:
        raise ValueError(
            f"the training split has {len(splits['train'])} images, fewer than one batch; lower batch_size"
        )
    validation_loader = torch.utils.data.DataLoader(splits["validation"], batch_size=256)

    # 3. Model, optimizer, schedule.
    model = VQWAE(config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule_name = "constant_with_warmup" if config.lr_scheduler == "constant" else "cosine"
    scheduler = get_scheduler(schedule_name, optimizer, config.warmup_steps, config.max_steps)
    model, optimizer, train_loader, validation_loader = accelerator.prepare(
        model, optimizer, train_loader, validation_loader
    )
    accelerator.register_for_checkpointing(scheduler)  # stepped once per optimizer step, by us

    # 4. Resume: weights, optimizer, scheduler, RNG and the position in the data.
    step, batches_seen = 0, 0
    checkpoint = resolve_resume(config.resume, output_dir, accelerator.print)
    if checkpoint is not None:
        check_same_run(checkpoint, to_dict(config))
        accelerator.load_state(str(checkpoint))
        state = read_state(checkpoint)
        step, batches_seen = state["step"], state["batches_seen"]
        accelerator.print(f"resumed from {checkpoint} at step {step}")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers("tokenizer", config={k: v for k, v in to_dict(config).items() if not isinstance(v, dict)})

    def validate() -> dict:
        metrics = asdict(
            evaluate_reconstruction(model, validation_loader, accelerator, config.validation_batches or None)
        )
        if accelerator.is_main_process:  # originals (top rows) vs reconstructions (bottom rows)
            unwrapped = accelerator.unwrap_model(model)
            with torch.no_grad():
                images = to_unit_range(splits["validation"][:32]["pixel_values"]).to(accelerator.device)
                reconstruction = unwrapped.decode(unwrapped.encode(images)).clamp(0, 1)
            (output_dir / "samples").mkdir(exist_ok=True)
            save_image(
                torch.cat([images, reconstruction]), output_dir / "samples" / f"reconstruction_{step:08d}.png", nrow=8
            )
            with open(output_dir / "metrics.jsonl", "a") as file:
                file.write(json.dumps({"step": step, **{f"validation/{k}": v for k, v in metrics.items()}}) + "\n")
        accelerator.log({f"validation/{key}": value for key, value in metrics.items()}, step=step)
        return metrics

    # 5. Training loop, step-based.
    model.train()
    progress = tqdm(total=config.max_steps, initial=step, desc="tokenizer", disable=not accelerator.is_main_process)
    while step < config.max_steps:
        epoch, offset = divmod(batches_seen, len(train_loader))
        train_loader.set_epoch(epoch)  # the seeded shuffle of this epoch
        epoch_loader = accelerator.skip_first_batches(train_loader, offset) if offset else train_loader
        for batch in epoch_loader:
            images = to_unit_range(batch["pixel_values"])
            with accelerator.accumulate(model):
                # 5a. Forward: reconstruction + quantizer terms (OT solved in fp32 on the global batch).
                output = model(images)
                loss = total_loss(output, config.loss)
                # 5b. A non-finite loss stops the run (or skips the step) before anything is stepped.
                finite = (
                    accelerator.reduce(torch.isfinite(loss.total).float().reshape(1), "sum").item()
                    == accelerator.num_processes
                )
                if not finite:
                    bad = [name for name, value in loss.terms.items() if not torch.isfinite(value)] or [
                        "(on another process)"
                    ]
                    message = f"non-finite loss at step {step + 1} in term(s) {bad}"
                    if config.nonfinite_loss == "stop":
                        raise FloatingPointError(
                            f"{message}; lower learning_rate, or set nonfinite_loss=skip. "
                            f"Checkpoints in {output_dir / 'checkpoints'} are intact"
                        )
                    accelerator.print(f"{message}: skipping the step")
                    optimizer.zero_grad(set_to_none=True)
                    continue
                # 5c. Backward and update.
                accelerator.backward(loss.total)
                if config.max_grad_norm and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            batches_seen += 1
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            step += 1
            progress.update(1)

            # 5d. Log, validate, checkpoint.
            if step % config.log_every == 0 or step == 1:
                # Means over processes, so the numbers describe the global batch.
                names = [f"train/{name}" for name in loss.terms] + ["train/loss", "train/perplexity", "train/codes_used"]
                values = [*loss.terms.values(), loss.total, output.perplexity, output.quantizer.codes_used]
                values = accelerator.reduce(torch.stack([value.detach().float() for value in values]), "mean")
                logs = dict(zip(names, values.tolist()))
                logs["lr"] = scheduler.get_last_lr()[0]
                accelerator.log(logs, step=step)
                progress.set_postfix(loss=f"{logs['train/loss']:.4f}", ppl=f"{logs['train/perplexity']:.0f}")
                if accelerator.is_main_process:
                    with open(output_dir / "metrics.jsonl", "a") as file:
                        file.write(json.dumps({"step": step, **logs}) + "\n")
            if step % config.validate_every == 0 and step < config.max_steps:
                validate()
            if step % config.checkpoint_every == 0 or step == config.max_steps:
                save_checkpoint(
                    accelerator,
                    output_dir,
                    step,
                    {"batches_seen": batches_seen},
                    to_dict(config),
                    config.checkpoints_to_keep,
                )
            if step >= config.max_steps:
                break
    progress.close()

    # 6. Final validation, save_pretrained with a model card, optional push to the Hub.
    metrics = validate()
    if accelerator.is_main_process:
        final = save_final(accelerator.unwrap_model(model), output_dir / "final", model_card(config, metrics))
        accelerator.print(
            f"tokenizer saved to {final}: validation PSNR {metrics['psnr']:.2f} dB, "
            f"perplexity {metrics['perplexity']:.1f}, codes used {metrics['codes_used']}"
        )
        if config.push_to_hub:
            accelerator.print(f"pushed to {push_folder(final, config.hub_repo_id)}")
    accelerator.end_training()
    return metrics


if __name__ == "__main__":
    main()
