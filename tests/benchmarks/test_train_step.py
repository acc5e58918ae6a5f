"""The step every benchmark times or checks is the training script's own: `make_step` and
`tokenizer/train.py` share one update (tokenizer.update), so from one seed on the same batches
they give the same losses."""

from __future__ import annotations

import pytest
import torch

from infra.config import load_config
from tests.helpers import ROOT, read_metrics
from tokenizer import update as update_module
from tokenizer.config import TokenizerTrainConfig


@pytest.mark.parametrize("quantizer", ["wasserstein", "vq"])
def test_the_benchmark_step_is_the_training_step(train, tmp_path, monkeypatch, quantizer):
    from benchmarks.train_step import make_step

    batches, start = [], {}
    recorded = update_module.TokenizerUpdate.__call__

    def recording(self, images, step):  # the batches the script trains on, in its order
        if not batches:  # its weights and random state before the first update (the codebook draw)
            start.update(weights={k: v.clone() for k, v in self.model.state_dict().items()}, rng=torch.get_rng_state())
        batches.append(images.clone())
        return recorded(self, images, step)

    overrides = [f"model.quantizer={quantizer}", "max_steps=6", "lr_scheduler=constant", "warmup_steps=3",
                 "learning_rate=0.01", "max_grad_norm=0.02"]  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(update_module.TokenizerUpdate, "__call__", recording)
        train(f"output_dir={tmp_path}", *overrides)
    script = [row["train/loss"] for row in read_metrics(tmp_path) if "train/loss" in row]
    assert len(script) == len(batches) == 6

    config = load_config(TokenizerTrainConfig, ROOT / "configs/tokenizer/tiny.yaml", overrides)
    step = make_step(config.model, batches[0], "cpu", start["weights"], weights=config.loss,
                     learning_rate=config.learning_rate, warmup_steps=config.warmup_steps,
                     max_grad_norm=config.max_grad_norm)  # fmt: skip
    torch.set_rng_state(start["rng"])
    benchmark = [step(batch).item() for batch in batches]
    assert benchmark == pytest.approx(script, rel=0, abs=1e-6)  # the same kernels in the same order: equal
    assert len(set(script)) == 6  # the losses move: an update that did nothing would not pass
