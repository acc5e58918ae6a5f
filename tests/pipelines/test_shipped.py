"""The pipeline shipped in the repository (models/vqwae-mnist): it loads with nothing trained, its
class-conditional samples are read as the asked digit by a digit classifier trained here, its
tokenizer reconstructs test digits at the PSNR its card states, its card's numbers are its
records', and it fits the size a repository should carry."""

import json

import pytest
import torch

from infra.data import DataConfig, load_images, to_unit_range
from infra.metrics.digit_classifier import judge
from infra.metrics.reconstruction import psnr
from pipelines import VQWAEPipeline
from pipelines.ship import MAX_MB, SHIPPED, folder_megabytes, headline
from tests.helpers import ROOT
from tokenizer import VQWAE

RESULTS = ROOT / "benchmarks" / "results"


@pytest.fixture(scope="module")
def pipe():
    return VQWAEPipeline.from_pretrained(SHIPPED)


def test_it_is_in_the_repository_and_small(pipe):
    assert SHIPPED == ROOT / "models" / "vqwae-mnist"
    assert folder_megabytes(SHIPPED) <= MAX_MB
    assert pipe.prior.dtype == torch.float32 and pipe.num_classes == 10 and pipe.codebook_size == 512


def test_the_prior_loads_in_the_dtype_asked(pipe):
    """float16 gives the stored weights as they are, float32 (the default) the same values, and a dtype
    the prior cannot compute in is one clear line."""
    from safetensors.torch import load_file

    stored = load_file(SHIPPED / "prior" / "model.safetensors")
    half = VQWAEPipeline.from_pretrained(SHIPPED, prior_dtype=torch.float16).prior
    weights, full = dict(half.named_parameters()), dict(pipe.prior.named_parameters())
    assert half.dtype == torch.float16 and set(stored) <= set(weights)
    for name, value in stored.items():
        assert value.dtype == torch.float16 and torch.equal(weights[name], value) and torch.equal(full[name], value.float())
    with pytest.raises(ValueError, match=r"prior_dtype=torch.int8: use torch.float32 \(the default\)"):
        VQWAEPipeline.from_pretrained(SHIPPED, prior_dtype=torch.int8)


def test_sixteen_digits_in_one_call(pipe):
    images = pipe(n=16, generator=torch.Generator().manual_seed(0), progress=False).images
    assert len(images) == 16 and all(image.size == (32, 32) and image.mode == "L" for image in images)


def test_a_digit_classifier_reads_its_class_conditional_samples_as_the_asked_digit(pipe, small_digit_classifier):
    """Five samples of every digit at the pipeline's defaults; the classifier (trained here on
    6,000 training images, about 95% right on real digits) must read at least 80% of them, and 2
    of 5 in every class, as asked (the full classifier reads 95.0% of 1,000: its BENCHMARKS.md section; a pipeline
    that ignores the label would score about 10%)."""
    _, classifier, info = small_digit_classifier
    labels = torch.arange(10).repeat_interleave(5)
    images = pipe(n=50, class_labels=labels, generator=torch.Generator().manual_seed(0), output_type="pt",
                  progress=False).images  # fmt: skip
    verdict = judge(classifier, images).accuracy(labels)
    assert info.test_accuracy > 0.9
    assert verdict["accuracy"] >= 0.8 and verdict["worst_class"] >= 0.4, verdict


def test_its_tokenizer_loads_alone_and_reconstructs_test_digits_as_its_card_says():
    tokenizer = VQWAE.from_pretrained(SHIPPED / "tokenizer")
    images = to_unit_range(load_images(DataConfig(), 1)["test"][:512]["pixel_values"])
    with torch.no_grad():
        reconstruction = tokenizer.decode(tokenizer.encode(images)).clamp(0, 1)
    measured = psnr(reconstruction, images).mean().item()
    stated = next(result["values"]["psnr"] for result in card_results() if "psnr" in result["values"])
    assert abs(measured - stated) < 0.5, (measured, stated)  # the first 512 images against all 10,000


def card_results():
    return json.loads((SHIPPED / "pipeline_config.json").read_text())["results"]


def test_the_cards_numbers_are_its_records():
    results = card_results()
    assert {result["record"] for result in results} >= {"shipped-mnist-tokenizer-test.json", "shipped-mnist-samples.json"}
    card = (SHIPPED / "README.md").read_text()
    for result in results:
        record = json.loads((RESULTS / result["record"]).read_text())
        assert result["values"] == headline(record) and result["command"] == record["command"], result["record"]
        assert record["command"] in card
