"""pipelines/ship.py on a tiny pipeline: float16 storage sampling what the rounded weights sample,
results from records in the card, a second ship bit-identical, the size limit, the Hub push."""

import copy
import json

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open

from pipelines import VQWAEPipeline
from pipelines.pipeline_vqwae import FolderTooLargeError
from pipelines.ship import folder_megabytes, headline, main, ship
from tests.readme_fixtures import tiny_pipeline

TOKENIZER_RECORD = {"date": "2026-12-03", "what": "the tokenizer on the test split",
                    "command": "python -m tokenizer.evaluation --tokenizer T --split test --out R.json",
                    "psnr": 35.4446, "ssim": 0.9936, "perplexity": 456.0, "codes_used": 512, "num_images": 10000,
                    "split": "test", "mse": 0.0003,
                    "rfid": {"fid": 3.5, "n": 1000, "reference": "mnist:test", "reference_n": 1000, "extractor": "x"}}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ship") / "pipeline"
    tiny_pipeline(folder)
    return folder


def stored_dtypes(folder):
    with safe_open(str(folder / "prior" / "model.safetensors"), "pt") as weights:
        return {weights.get_tensor(name).dtype for name in weights.keys()}


def test_the_shipped_prior_is_float16_on_disk_and_samples_what_the_rounded_weights_sample(trained, tmp_path):
    out = ship(trained, tmp_path / "shipped")
    assert stored_dtypes(out) == {torch.float16} and stored_dtypes(trained) == {torch.float32}
    shipped = VQWAEPipeline.from_pretrained(out)
    assert shipped.prior.dtype == torch.float32  # computes in float32 whatever the storage
    # Independently: the trained prior with every weight rounded to float16 and back.
    rounded = VQWAEPipeline.from_pretrained(trained)
    reference = copy.deepcopy(rounded.prior)
    with torch.no_grad():
        for parameter in rounded.prior.parameters():
            parameter.copy_(parameter.half().float())
    for name, parameter in shipped.prior.named_parameters():
        torch.testing.assert_close(parameter, dict(rounded.prior.named_parameters())[name], rtol=0, atol=0)
    assert any((a != b).any() for a, b in zip(reference.parameters(), rounded.prior.parameters()))  # rounding happened
    labels = torch.arange(10)
    codes = shipped(n=10, class_labels=labels, generator=torch.Generator().manual_seed(3), progress=False).codes
    again = rounded(n=10, class_labels=labels, generator=torch.Generator().manual_seed(3), progress=False).codes
    assert torch.equal(codes, again)


def test_results_come_from_the_records_with_their_commands_and_a_second_ship_keeps_the_weights(trained, tmp_path):
    record = tmp_path / "tokenizer-test.json"
    record.write_text(json.dumps(TOKENIZER_RECORD))
    made_by = ["accelerate launch tokenizer/train.py --config configs/tokenizer/mnist.yaml max_steps=15625",
               "accelerate launch prior/train.py --config configs/prior/mnist.yaml tokenizer=T"]
    out = ship(trained, tmp_path / "shipped", records=[record], made_by=made_by)
    config = json.loads((out / "pipeline_config.json").read_text())
    [result] = config["results"]
    assert result["values"] == {**{key: TOKENIZER_RECORD[key] for key in
                                   ("split", "num_images", "psnr", "ssim", "perplexity", "codes_used")},
                                "rfid": 3.5, "rfid_images": 1000}  # fmt: skip
    assert result["command"] == TOKENIZER_RECORD["command"] and config["made_by"] == made_by
    card = ModelCard.load(out / "README.md").text
    assert "psnr 35.44" in card and TOKENIZER_RECORD["command"] in card and made_by[0] in card
    # The tokenizer's own card: its record and its training command, not the prior's.
    tokenizer_card = ModelCard.load(out / "tokenizer" / "README.md")
    assert TOKENIZER_RECORD["command"] in tokenizer_card.text and made_by[0] in tokenizer_card.text
    assert made_by[1] not in tokenizer_card.text
    [result] = tokenizer_card.data.eval_results[:1]
    assert (result.dataset_split, result.metric_type, result.metric_value) == ("test", "psnr", 35.4446)
    weights = (out / "prior" / "model.safetensors").read_bytes()
    ship(out, out)  # the shipped folder shipped again, in place: its results and commands stay
    assert (out / "prior" / "model.safetensors").read_bytes() == weights
    assert json.loads((out / "pipeline_config.json").read_text()) == config
    # The pipeline writes its tokenizer's card itself: a shipped folder loaded and saved keeps it.
    again = VQWAEPipeline.from_pretrained(out).save_pretrained(tmp_path / "saved-again")
    assert (again / "tokenizer" / "README.md").read_text() == (out / "tokenizer" / "README.md").read_text()


def test_headline_reads_the_three_record_kinds_and_refuses_others():
    verdict = {"command": "python -m pipelines.evaluation --pipeline P --out R", "classifier_test_accuracy": 0.99,
               "class_conditional": {"samples": 500, "accuracy": 0.97, "worst_class": 0.92, "per_class": [0.97] * 10},
               "unconditional": {"samples": 500, "recognisable": 0.95}}  # fmt: skip
    assert headline(verdict) == {"classifier_test_accuracy": 0.99, "class_conditional_samples": 500,
                                 "class_accuracy": 0.97, "worst_class": 0.92, "unconditional_samples": 500,
                                 "recognisable": 0.95}  # fmt: skip
    gfid = {"command": "python -m benchmarks.generation_fid --pipeline P --n 2000", "n": 2000,
            "reference": "mnist:test", "sampling": {"mode": "plain"},
            "settings": {"unconditional": {"fid": {"1000": 30.0, "2000": 20.5}},
                         "class-conditional g=1": {"fid": {"1000": 15.0, "2000": 9.25}}}}  # fmt: skip
    assert headline(gfid) == {"n": 2000, "reference": "mnist:test", "sampling": "plain",
                              "gfid unconditional": 20.5, "gfid class-conditional g=1": 9.25}  # fmt: skip
    with pytest.raises(ValueError, match="python -m benchmarks.ot_scale.*the card shows records of"):
        headline({"command": "python -m benchmarks.ot_scale --out X"})


def test_a_folder_over_the_size_limit_is_refused_and_not_written(trained, tmp_path):
    size = folder_megabytes(trained)
    with pytest.raises(FolderTooLargeError, match=r"over the 0.01 MB a shipped folder may hold.*--max-mb"):
        ship(trained, tmp_path / "big", max_mb=0.01)
    assert size > 0.01 and not (tmp_path / "big").exists()
    # An earlier folder stays as it was, and no half-written temporary is left beside it.
    kept = ship(trained, tmp_path / "kept")
    before = {file: file.read_bytes() for file in kept.rglob("*") if file.is_file()}
    # The limit is in the MB the folder's size is stated in (10^6 bytes), to the byte.
    ship(trained, kept, max_mb=folder_megabytes(kept) + 1e-6)
    with pytest.raises(FolderTooLargeError):
        ship(trained, kept, max_mb=folder_megabytes(kept) - 1e-6)
    assert {file: file.read_bytes() for file in kept.rglob("*") if file.is_file()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept"]


def test_push_uploads_the_shipped_folder_unchanged(trained, tmp_path, fake_hub):
    out = ship(trained, tmp_path / "shipped")
    main(["--push", str(out), "--repo-id", "me/vqwae-mnist"])
    uploaded = fake_hub.folder / "me/vqwae-mnist"
    for path in out.rglob("*"):
        if path.is_file():
            assert (uploaded / path.relative_to(out)).read_bytes() == path.read_bytes(), path
    with pytest.raises(SystemExit):
        main(["--push", str(out)])  # no --repo-id: an argparse error
