"""Stage two: the transformers prior, its vocabulary, code cache, sampling and training."""

import copy
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

from prior import train as prior_train
from prior.codes import load_or_encode
from prior.model import CodeVocabulary, PriorModelConfig, build_prior, check_matches_tokenizer, vocabulary_of
from prior.sampling import labels_per_class, sample_codes, sampling_config
from tests.helpers import read_metrics, reset_accelerate
from tokenizer import VQWAE, VQWAEConfig
from tokenizer.transport_config import TransportConfig

TINY_TOKENIZER = dict(hidden_channels=16, num_res_blocks=1, embedding_dim=8, codebook_size=32, image_size=16)
TINY_PRIOR = PriorModelConfig(num_layers=1, num_heads=2, hidden_size=32, dropout=0.0)


def sample(prior, n, class_labels=None, generator=None, batch_size=64, **settings):
    """sample_codes with its settings given as keywords (sampling_config's names)."""
    return sample_codes(prior, n, class_labels, sampling_config(**settings), generator, batch_size)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tokenizer")
    VQWAE(VQWAEConfig(**TINY_TOKENIZER)).save_pretrained(folder)
    return folder


def tiny_prior(num_classes=0, architecture="gpt2", codebook_size=32):
    torch.manual_seed(0)
    config = PriorModelConfig(num_layers=1, num_heads=2, hidden_size=32, dropout=0.0, architecture=architecture)
    return build_prior(config, CodeVocabulary(codebook_size, 4, 4, num_classes), "tokenizer-id").eval()


def test_vocabulary_layout():
    vocabulary = CodeVocabulary(512, 8, 8, num_classes=10)
    assert vocabulary.begin_token == 512 and vocabulary.class_token(0) == 513
    assert vocabulary.null_class_token == 523 and vocabulary.size == 524 and vocabulary.sequence_length == 64
    assert CodeVocabulary(512, 8, 8).size == 513


def test_prior_must_match_the_tokenizer(tokenizer_dir):
    tokenizer = VQWAE.from_pretrained(tokenizer_dir)
    check_matches_tokenizer(tiny_prior(), tokenizer)  # 32 codes on a 4x4 grid: matches
    with pytest.raises(ValueError, match="vocabulary has 64 codes but the tokenizer's codebook has 32"):
        check_matches_tokenizer(tiny_prior(codebook_size=64), tokenizer)
    with pytest.raises(ValueError, match="trained on the codes of tokenizer"):
        check_matches_tokenizer(tiny_prior(), tokenizer, tokenizer_id="another-tokenizer")
    other_grid = build_prior(PriorModelConfig(num_layers=1, num_heads=2, hidden_size=32),
                             CodeVocabulary(32, 8, 8), "tokenizer-id")  # fmt: skip
    with pytest.raises(ValueError, match="generates 8x8 code grids but the tokenizer makes 4x4"):
        check_matches_tokenizer(other_grid, tokenizer)
    anonymous = tiny_prior()
    anonymous.config.vqwae["tokenizer_id"] = ""
    with pytest.raises(ValueError, match="records no tokenizer identity"):
        check_matches_tokenizer(anonymous, tokenizer, tokenizer_id="any")


def test_the_gpt2_prior_computes_gpt2s_own_gelu():
    # The fused tanh GELU is a speed choice only: the same weights under GPT-2's gelu_new give the
    # same logits (an erf GELU, "gelu", differs by 6.5e-5 here and fails).
    prior = tiny_prior(num_classes=10)
    assert prior.config.activation_function == "gelu_pytorch_tanh"
    reference_config = copy.deepcopy(prior.config)
    reference_config.activation_function = "gelu_new"
    reference = type(prior)(reference_config).eval()
    reference.load_state_dict(prior.state_dict())
    with torch.no_grad():  # scaled-up weights put the GELU inputs where the two would differ
        for name, weight in prior.named_parameters():
            if name.endswith("c_fc.weight"):
                weight.mul_(20.0)
                reference.get_parameter(name).copy_(weight)
        ids = torch.randint(0, 32, (4, 17), generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(prior(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_greedy_generation_same_with_and_without_kv_cache(architecture):
    prior = tiny_prior(architecture=architecture)
    cached = sample(prior, 3, do_sample=False, use_cache=True)
    uncached = sample(prior, 3, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    # Independent check: greedy decoding by hand, one full forward per token.
    ids = torch.full((3, 1), 32)
    for _ in range(16):
        logits = prior(input_ids=ids).logits[:, -1, :32]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
    assert torch.equal(cached.flatten(1), ids[:, 1:])


def test_samples_are_codes_and_seeded():
    prior = tiny_prior(num_classes=10)
    with torch.no_grad():  # make the special tokens the likeliest: they must still never appear
        prior.lm_head.weight[32:] += 5.0
    first = sample(prior, 6, generator=torch.Generator().manual_seed(1), top_k=20, top_p=0.9, temperature=1.5)
    again = sample(prior, 6, generator=torch.Generator().manual_seed(1), top_k=20, top_p=0.9, temperature=1.5)
    other = sample(prior, 6, generator=torch.Generator().manual_seed(2), top_k=20, top_p=0.9, temperature=1.5)
    assert first.shape == (6, 4, 4) and first.min() >= 0 and first.max() < 32
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_sampling_gives_transformers_nothing_to_flag(monkeypatch):
    """generate validates its config and logs flags that greedy decoding would ignore ("generation
    flags are not valid") once per process; made strict here, any such flag fails, with sampling
    defaults saved in the prior's generation_config as a trained pipeline saves them."""
    from transformers import GenerationConfig

    validate = GenerationConfig.validate
    monkeypatch.setattr(GenerationConfig, "validate", lambda self, strict=False, **kwargs: validate(self, True, **kwargs))
    prior = tiny_prior(num_classes=10)
    prior.generation_config.update(do_sample=True, temperature=0.8, top_k=16, top_p=0.9)
    for settings in ({}, dict(temperature=0.7, top_k=8, top_p=0.95, guidance_scale=1.5)):
        codes = sample(prior, 2, class_labels=[1, 2], generator=torch.Generator().manual_seed(0), **settings)
        assert codes.shape == (2, 4, 4)


def test_class_labels_change_samples_and_guidance_runs():
    prior = tiny_prior(num_classes=10)
    with torch.no_grad():
        prior.transformer.wte.weight[33:43] *= 20  # make class tokens matter in the untrained model
    zeros = sample(prior, 4, class_labels=0, do_sample=False)
    sevens = sample(prior, 4, class_labels=7, do_sample=False)
    assert not torch.equal(zeros, sevens)
    guided = sample(prior, 4, class_labels=[0, 1, 2, 3], guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert guided.shape == (4, 4, 4) and guided.max() < 32
    with pytest.raises(ValueError, match="class_labels must be"):
        sample(prior, 4, class_labels=[0, 11, 2, 3])
    with pytest.raises(ValueError, match="prior is unconditional"):
        sample(tiny_prior(), 2, class_labels=1)


@pytest.mark.parametrize("scale", [1.0, 3.0, 0.5])
def test_guidance_is_the_formula_on_the_first_token(scale):
    """Classifier-free guidance, checked against its formula computed here from the prior's own
    logits: the greedy first code is argmax over codes of lu + s (lc - lu), l the log-softmax after
    the class token (lc) and after the null class (lu). Scale 3 changes the first codes of scale 1
    (a dropped unconditional branch or a flipped sign would not give the formula)."""
    prior = tiny_prior(num_classes=10)
    with torch.no_grad():
        prior.transformer.wte.weight[33:43] *= 20  # make class tokens matter in the untrained model
    labels = torch.arange(10)
    vocabulary = vocabulary_of(prior)
    with torch.no_grad():
        conditional = prior(input_ids=vocabulary.prefix_tokens(labels)[:, None]).logits[:, -1].log_softmax(-1)
        null = vocabulary.prefix_tokens(None, 10)[:, None]
        unconditional = prior(input_ids=null).logits[:, -1].log_softmax(-1)
    guided = unconditional + scale * (conditional - unconditional)
    expected = guided[:, : vocabulary.codebook_size].argmax(-1)
    first = sample(prior, 10, class_labels=labels, guidance_scale=scale, do_sample=False)[:, 0, 0]
    assert torch.equal(first, expected)
    plain = conditional[:, : vocabulary.codebook_size].argmax(-1)
    if scale == 3.0:
        assert not torch.equal(first, plain)  # guidance changes what the class alone would give


def test_training_prefixes_are_the_sampling_prefixes_and_dropout_hits_its_rate():
    """prior/train.py's sequences: class tokens (the ones sampling prompts with), the null class
    for a label_dropout share of them while training (binomial bounds), none at evaluation; an
    unconditional prior starts every sequence with begin-of-image."""
    from prior.config import PriorTrainConfig
    from prior.sampling import _prefixes
    from prior.train import sequences

    prior = tiny_prior(num_classes=10)
    vocabulary = vocabulary_of(prior)
    labels = torch.arange(20_000) % 10
    codes = torch.randint(0, 32, (20_000, 16))
    config = PriorTrainConfig(tokenizer="t", class_conditional=True, label_dropout=0.3)
    evaluation = sequences(codes, labels, vocabulary, config, train=False)
    torch.testing.assert_close(evaluation[:, 1:], codes)
    prompts, negative = _prefixes(prior, 20_000, labels)
    assert torch.equal(evaluation[:, 0], prompts[:, 0]) and (negative == vocabulary.null_class_token).all()
    assert torch.equal(evaluation[:10, 0], torch.tensor([vocabulary.class_token(label) for label in range(10)]))
    torch.manual_seed(0)
    training = sequences(codes, labels, vocabulary, config, train=True)
    dropped = training[:, 0] == vocabulary.null_class_token
    sigma = (0.3 * 0.7 / 20_000) ** 0.5
    assert abs(dropped.float().mean().item() - 0.3) < 4 * sigma  # 4 standard deviations of the binomial
    assert torch.equal(training[~dropped, 0], evaluation[~dropped, 0])
    none = sequences(codes, labels, vocabulary, PriorTrainConfig(tokenizer="t", class_conditional=True,
                                                                 label_dropout=0.0), train=True)  # fmt: skip
    assert torch.equal(none, evaluation)
    unconditional = vocabulary_of(tiny_prior())
    plain = sequences(codes, labels, unconditional, PriorTrainConfig(tokenizer="t"), train=True)
    assert (plain[:, 0] == unconditional.begin_token).all()
    assert (_prefixes(tiny_prior(), 3, None)[0] == unconditional.begin_token).all()


def test_code_cache_is_reused_and_refused_for_another_tokenizer(tmp_path):
    from infra.data import DataConfig, load_images

    split = load_images(DataConfig(image_size=16), 1)["validation"].select(range(40))
    torch.manual_seed(0)
    first = VQWAE(VQWAEConfig(**TINY_TOKENIZER))
    encoded = load_or_encode(tmp_path, "validation", first, split, batch_size=16)
    assert encoded["codes"].shape == (40, 16)
    direct = first.encode(split[:40]["pixel_values"].float() / 255).flatten(1)
    assert torch.equal(encoded["codes"], direct)
    again = load_or_encode(tmp_path, "validation", first, split)
    assert torch.equal(again["codes"], encoded["codes"])
    torch.manual_seed(1)
    second = VQWAE(VQWAEConfig(**TINY_TOKENIZER))
    assert second.identity() != first.identity()
    with pytest.raises(ValueError, match="made by another tokenizer"):
        load_or_encode(tmp_path, "validation", second, split)


def test_identity_is_what_determines_the_codes():
    """The identity hashes the architecture and the weights (computed here independently), not how
    the tokenizer was trained: a different OT setting or codebook initialisation keeps it, a
    different weight or architecture changes it."""
    import hashlib
    import json
    from dataclasses import replace

    torch.manual_seed(0)
    tokenizer = VQWAE(VQWAEConfig(**TINY_TOKENIZER))
    architecture = {key: value for key, value in asdict(tokenizer.config).items()
                    if key not in ("transport", "codebook_init", "init_noise")}  # fmt: skip
    architecture["vq_ema"] = {"code_dim": 0, "cosine_similarity": False}
    digest = hashlib.sha256(json.dumps(architecture, sort_keys=True).encode())
    for name, tensor in sorted(tokenizer.state_dict().items()):
        if name != "quantizer.code_potential":
            digest.update(name.encode())
            digest.update(tensor.numpy().tobytes())
    assert tokenizer.identity() == digest.hexdigest()

    def variant(**changes):
        other = VQWAE(replace(tokenizer.config, **changes))
        other.load_state_dict(tokenizer.state_dict())
        return other.identity()

    assert variant(transport=TransportConfig(dual_steps=5, code_relaxation=0.0), codebook_init="randn") == (
        tokenizer.identity()
    )
    tokenizer.quantizer.code_potential.add_(1.0)  # a training state, not a weight that encodes
    assert tokenizer.identity() == digest.hexdigest()
    assert variant(image_size=32) != digest.hexdigest()
    tokenizer.quantizer.codebook.data[0, 0] += 1e-3
    assert tokenizer.identity() != digest.hexdigest()


@pytest.fixture
def train_prior(repo_root, monkeypatch, tokenizer_dir):
    monkeypatch.chdir(repo_root)

    def run(*overrides):
        reset_accelerate()
        return prior_train.main(["--config", "configs/prior/tiny.yaml", f"tokenizer={tokenizer_dir}", *overrides])

    yield run
    reset_accelerate()


def test_tiny_prior_trains_resumes_and_writes_a_pipeline(train_prior, tmp_path):
    train_prior(f"output_dir={tmp_path / 'a'}", "max_steps=40", "checkpoint_every=20", "validate_every=20")
    bits = [row["train/bits_per_code"] for row in read_metrics(tmp_path / "a") if "train/bits_per_code" in row]
    assert sum(bits[-5:]) / 5 < 0.8 * sum(bits[:5]) / 5
    folder = tmp_path / "a" / "pipeline"
    assert (folder / "tokenizer" / "model.safetensors").is_file() and (folder / "prior" / "model.safetensors").is_file()
    assert (folder / "pipeline_config.json").is_file()
    assert (tmp_path / "a" / "samples" / "samples_00000020.png").is_file()
    # Resume: 3 steps, stop, 3 more == 6 straight (constant schedule, so stopping early changes nothing).
    train_prior(f"output_dir={tmp_path / 'b'}", "max_steps=6", "lr_scheduler=constant")
    train_prior(f"output_dir={tmp_path / 'c'}", "max_steps=3", "lr_scheduler=constant")
    train_prior(f"output_dir={tmp_path / 'c'}", "max_steps=6", "lr_scheduler=constant", "resume=latest")
    straight, resumed = (
        load_file(tmp_path / "b" / "final" / "model.safetensors"),
        load_file(tmp_path / "c" / "final" / "model.safetensors"),
    )
    for name in straight:
        torch.testing.assert_close(straight[name], resumed[name], atol=1e-6, rtol=1e-5, msg=name)


def test_class_conditional_prior_trains(train_prior, tmp_path):
    metrics = train_prior(f"output_dir={tmp_path}", "max_steps=3", "class_conditional=true", "model.architecture=llama")
    assert metrics["bits_per_code"] > 0


def test_prior_config_needs_a_tokenizer():
    from prior.config import PriorTrainConfig

    with pytest.raises(ValueError, match="set tokenizer=PATH_OR_HUB_ID"):
        PriorTrainConfig()


def test_chunked_sampling_equals_one_shot():
    """Sample i depends on the seed and i only: any batch size gives the same codes (guided too)."""
    prior = tiny_prior(num_classes=10)
    options = dict(class_labels=[3, 1, 4, 1, 5, 9, 2], guidance_scale=2.0, temperature=0.8, top_k=10)
    one_shot = sample(prior, 7, generator=torch.Generator().manual_seed(5), batch_size=7, **options)
    chunked = sample(prior, 7, generator=torch.Generator().manual_seed(5), batch_size=3, **options)
    assert torch.equal(one_shot, chunked)
    unconditional = tiny_prior()
    first = sample(unconditional, 5, generator=torch.Generator().manual_seed(0), batch_size=5)
    assert torch.equal(first, sample(unconditional, 5, generator=torch.Generator().manual_seed(0), batch_size=2))


def test_sampled_codes_follow_the_prior_distribution():
    """The first code of 3000 samples against softmax(logits / temperature) of the prior itself
    (codes only): total variation within sampling noise (about 0.04 expected here)."""
    prior = tiny_prior()
    with torch.no_grad():
        prior.lm_head.weight.mul_(8.0)  # a peaked, non-uniform first-code distribution
        logits = prior(input_ids=torch.full((1, 1), 32)).logits[0, -1, :32]
    expected = torch.softmax(logits / 0.7, -1)
    codes = sample(prior, 3000, temperature=0.7, generator=torch.Generator().manual_seed(0), batch_size=1000)
    observed = torch.bincount(codes[:, 0, 0], minlength=32).float() / 3000
    assert expected.max() > 0.1  # the check has something to find
    assert 0.5 * (observed - expected).abs().sum() < 0.07


def test_each_class_sampling_counts_and_bad_values():
    prior = tiny_prior(num_classes=10)
    codes = sample(prior, 30, class_labels="each", generator=torch.Generator().manual_seed(0), batch_size=8)
    labelled = sample(prior, 30, class_labels=labels_per_class(10, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(codes, labelled)
    assert torch.bincount(labels_per_class(10, 3)).tolist() == [3] * 10
    with pytest.raises(ValueError, match="multiple of num_classes=10"):
        sample(prior, 25, class_labels="each")
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        sample(prior, 2, class_labels=1, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample(prior, 2, temperature=0.0)
    with pytest.raises(ValueError, match="top_p must lie in"):
        sample(prior, 2, top_p=1.5)
    with pytest.raises(ValueError, match=r"class_labels must be one label or 2 labels in \[0, 10\)"):
        sample(prior, 2, class_labels=10)
    with pytest.raises(ValueError, match="guidance_scale != 1 needs class_labels"):
        sample(tiny_prior(), 2, guidance_scale=2.0)


def test_when_a_prior_validates_leaves_its_weights_alone(train_prior, tmp_path):
    """Dropout and label dropout draw from the global random stream; validating must not draw from it
    (a DataLoader without a generator of its own does, each time it is iterated)."""
    common = ["max_steps=4", "class_conditional=true", "label_dropout=0.5", "model.dropout=0.2", "checkpoint_every=100"]
    train_prior(f"output_dir={tmp_path / 'often'}", *common, "validate_every=1")
    train_prior(f"output_dir={tmp_path / 'at-end'}", *common, "validate_every=100")
    often, at_end = (load_file(tmp_path / name / "final" / "model.safetensors") for name in ("often", "at-end"))
    assert often.keys() == at_end.keys()
    for name in often:
        assert torch.equal(often[name], at_end[name]), name
