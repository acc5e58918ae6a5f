"""Model cards: built with huggingface_hub's ModelCard API, and read back with their metadata."""

from huggingface_hub import ModelCard

from infra.cards import hub_dataset, pipeline_card, tokenizer_card

CONFIG = {"max_steps": 1500, "data": {"source": "mnist"}, "model": {"codebook_size": 512}}
METRICS = {"mse": 0.0008, "psnr": 30.89, "ssim": 0.974, "perplexity": 498.0, "codes_used": 512}


def test_tokenizer_card_parses_back_with_its_metadata(tmp_path):
    tokenizer_card(CONFIG, METRICS).save(tmp_path / "README.md")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "vqwae" and card.data.license == "apache-2.0"
    assert card.data.datasets == ["ylecun/mnist"] and "image-tokenizer" in card.data.tags
    results = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert results == {"psnr": 30.89, "ssim": 0.974, "perplexity": 498.0}
    assert {result.dataset_split for result in card.data.eval_results} == {"validation"}
    assert "model-index" in card.content and "codebook_size: 512" in card.text


def test_local_data_gets_no_dataset_link_and_pipeline_card(tmp_path):
    assert hub_dataset("/data/my-images") is None and hub_dataset("./images") is None
    assert hub_dataset("uoft-cs/cifar10") == "uoft-cs/cifar10"
    local = tokenizer_card({**CONFIG, "data": {"source": "/data/my-images"}}, METRICS)
    assert local.data.datasets is None and not local.data.eval_results
    extra = {"class_conditional": True, "num_classes": 10, "validation_bits_per_code": 4.21, "data_source": "mnist"}
    pipeline_card(extra).save(tmp_path / "README.md")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.pipeline_tag == "unconditional-image-generation" and "class-conditional" in card.data.tags
    assert [(r.metric_type, r.metric_value) for r in card.data.eval_results] == [("validation_bits_per_code", 4.21)]
    assert "class_labels=3" in card.text
