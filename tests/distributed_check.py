"""Run under `accelerate launch --multi_gpu --num_processes 2` with ACCELERATE_USE_CPU=1 (gloo).

Trains the tiny tokenizer a few steps with the library's own pieces and records, on every step,
whether all ranks hold identical parameters and codebook, which examples each rank saw, and the
OT loss; rank 0 writes them as JSON to the path given as the only argument."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402

from infra.config import load_config  # noqa: E402
from infra.data import load_images, to_unit_range  # noqa: E402
from infra.training import batches_from, build_accelerator, per_process_batch_size  # noqa: E402
from tokenizer.config import TokenizerTrainConfig  # noqa: E402
from tokenizer.model import VQWAE  # noqa: E402
from tokenizer.objective import total_loss  # noqa: E402


def fingerprint(module) -> torch.Tensor:
    return torch.stack([parameter.detach().double().sum() for parameter in module.parameters()])


def main(out: str) -> None:
    config = load_config(TokenizerTrainConfig, "configs/tokenizer/tiny.yaml", ["batch_size=8"])
    accelerator = build_accelerator(config)
    set_seed(config.seed)
    splits = load_images(config.data, 1)
    splits["train"] = splits["train"].add_column("index", list(range(len(splits["train"])))).with_format("torch")
    loader = torch.utils.data.DataLoader(
        splits["train"], batch_size=per_process_batch_size(accelerator, config), shuffle=True
    )
    model = VQWAE(config.model)
    initial = fingerprint(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    records = {"initial_identical": bool((accelerator.gather(initial[None]) == initial).all())}
    steps = []
    for step, batch in enumerate(batches_from(accelerator, loader, 0)):
        output = model(to_unit_range(batch["pixel_values"]))
        loss = total_loss(output, config.loss)
        accelerator.backward(loss.total)
        optimizer.step()
        optimizer.zero_grad()
        unwrapped = accelerator.unwrap_model(model)
        params = accelerator.gather(fingerprint(unwrapped)[None])
        codebook = accelerator.gather(unwrapped.quantizer.codebook.detach()[None])
        indices = accelerator.gather(batch["index"][None])
        steps.append({
            "params_identical": bool((params == params[0]).all()),
            "codebook_identical": bool((codebook == codebook[0]).all()),
            "rank_indices": indices.tolist(),
            "transport": output.quantizer.transport_loss.item(),
        })  # fmt: skip
        if step == 3:
            break
    records["steps"] = steps
    if accelerator.is_main_process:
        Path(out).write_text(json.dumps(records))
    # Both ranks leave together and tear gloo down before exit: a rank exiting with the process
    # group alive could abort in gloo's threads ("terminate called without an active exception").
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main(sys.argv[1])
