"""Every file the project reads back, damaged: saved models and pipeline folders are one line
naming the file (through the real CLIs: exit 2, no traceback); caches that can be rebuilt (code
caches, FID reference statistics) are rebuilt with a warning and give what an intact cache gives."""

import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from infra.files import DamagedFileError, check_safetensors, read_json
from infra.metrics import fid_score
from pipelines import VQWAEPipeline
from tests.readme_fixtures import tiny_pipeline

FIX = "make it again"


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


DAMAGE = {
    "truncated": truncate,
    "empty": lambda path: path.write_bytes(b""),
    "text": lambda path: path.write_text("<html>404 Not Found</html>"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_weights_file_is_named(damage, tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.randn(64, 64)}, str(path))
    check_safetensors(path, FIX)  # intact: passes
    DAMAGE[damage](path)
    with pytest.raises(DamagedFileError, match=rf"^{path} is damaged: .*; make it again$"):
        check_safetensors(path, FIX)


@pytest.mark.parametrize(
    "content, problem",
    [("", "empty"), ('{"a": 1', "not valid JSON"), ("[1, 2]", "it holds a JSON list, not an object"), (b"\xff\xfe", "not valid")],
)
def test_a_damaged_json_file_is_named(content, problem, tmp_path):
    path = tmp_path / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DamagedFileError, match=rf"^{path} is damaged: {problem}"):
        read_json(path, FIX)
    with pytest.raises(DamagedFileError, match=rf"^{tmp_path / 'other.json'} is missing; make it again"):
        read_json(tmp_path / "other.json", FIX)


@pytest.fixture
def pipeline_dir(tmp_path):
    folder = tmp_path / "pipeline"
    tiny_pipeline(folder)
    return folder


PIPELINE_FILES = ["tokenizer/model.safetensors", "prior/model.safetensors", "tokenizer/config.json",
                  "prior/config.json", "pipeline_config.json"]  # fmt: skip


@pytest.mark.parametrize("name", PIPELINE_FILES)
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_pipeline_file_is_one_line_naming_it(name, damage, pipeline_dir, tmp_path, capsys):
    """python -m pipelines.sample on a pipeline with one damaged file: exit 2, one line naming the
    file and the fix, no traceback, no grid written."""
    from infra.config import run_cli
    from pipelines import sample

    DAMAGE[damage](pipeline_dir / name)
    out = tmp_path / "grid.png"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: sample.main(["--pipeline", str(pipeline_dir), "--n", "4", "--out", str(out)]))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {pipeline_dir / name} is damaged: "), lines
    assert "export the pipeline again" in lines[0] and not out.exists()


def test_a_damaged_tokenizer_folder_is_named_by_the_evaluate_cli(pipeline_dir, capsys):
    from infra.config import run_cli
    from tokenizer import evaluation

    truncate(pipeline_dir / "tokenizer" / "model.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: evaluation.main(["--tokenizer", str(pipeline_dir / "tokenizer")]))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{pipeline_dir / 'tokenizer' / 'model.safetensors'} is damaged" in lines[0]
    assert "tokenizer/train.py writes <output_dir>/final" in lines[0]


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_code_cache_is_encoded_again(damage, pipeline_dir, tmp_path):
    from prior.codes import load_or_encode

    tokenizer = VQWAEPipeline.from_pretrained(pipeline_dir).tokenizer
    split = [{"pixel_values": torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8), "label": i % 10} for i in range(6)]
    first = load_or_encode(tmp_path / "codes", "train", tokenizer, split, batch_size=4)
    cache = tmp_path / "codes" / "train.safetensors"
    DAMAGE[damage](cache)
    with pytest.warns(UserWarning, match=rf"code cache {cache} is damaged .*rebuilding it"):
        again = load_or_encode(tmp_path / "codes", "train", tokenizer, split, batch_size=4)
    torch.testing.assert_close(again, first)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt intact: read without a warning
        torch.testing.assert_close(load_or_encode(tmp_path / "codes", "train", tokenizer, split), first)


def test_a_code_cache_of_another_split_is_refused_not_rebuilt(pipeline_dir, tmp_path):
    from prior.codes import load_or_encode

    tokenizer = VQWAEPipeline.from_pretrained(pipeline_dir).tokenizer
    split = [{"pixel_values": torch.zeros(1, 16, 16, dtype=torch.uint8), "label": 0} for _ in range(2)]
    load_or_encode(tmp_path / "codes", "train", tokenizer, split)
    (tmp_path / "codes" / "train.safetensors").rename(tmp_path / "codes" / "validation.safetensors")
    with pytest.raises(ValueError, match=r"code cache .*validation.safetensors was made by .*split 'train'"):
        load_or_encode(tmp_path / "codes", "validation", tokenizer, split)


class MeanPixels(torch.nn.Module):
    """A stand-in feature extractor (4 features: channel means and a bias) for the cache test."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        means = images.float().mean(dim=(2, 3))
        return (torch.cat([means, means[:, :1] ** 2 / 255 + self.bias], dim=1),)


@pytest.mark.parametrize("damage", [*DAMAGE, "wrong arrays"])
def test_a_damaged_fid_statistics_cache_is_recomputed(damage, tmp_path, monkeypatch):
    monkeypatch.setenv("VQWAE_CACHE", str(tmp_path))
    images = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8)
    monkeypatch.setattr(fid_score, "reference_images", lambda *args: images)
    arguments = ("mnist:test", 8, 1, None, MeanPixels(), tmp_path / "weights.pth")
    first, count = fid_score.reference_statistics(*arguments)
    (cache,) = (tmp_path / "fid-stats").iterdir()
    if damage == "wrong arrays":
        np.savez(cache, mu=np.zeros(3), sigma=np.zeros((2, 2)))
    else:
        DAMAGE[damage](cache)
    with pytest.warns(UserWarning, match=rf"FID statistics cache {cache} is damaged .*rebuilding it"):
        again, _ = fid_score.reference_statistics(*arguments)
    np.testing.assert_allclose(again["mu"], first["mu"])
    np.testing.assert_allclose(again["sigma"], first["sigma"])
    assert count == 12 and first["mu"].shape == (4,)
    with np.load(cache) as stored:  # rewritten intact
        np.testing.assert_allclose(stored["sigma"], first["sigma"])



def test_a_metrics_line_left_half_written_by_a_kill_loses_no_later_record(train, tmp_path):
    """A kill mid-write leaves metrics.jsonl without its last newline; the resumed run's first
    record still gets a line of its own, and readers skip the half line with a warning."""
    from infra.metrics_file import read_metrics

    train(f"output_dir={tmp_path}", "max_steps=3", "lr_scheduler=constant")
    with open(tmp_path / "metrics.jsonl", "a") as file:
        file.write('{"step": 4, "train/lo')  # the kill
    train(f"output_dir={tmp_path}", "max_steps=6", "resume=latest", "lr_scheduler=constant")
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    damaged = [number for number, line in enumerate(lines, start=1) if line.startswith('{"step": 4, "train/lo')]
    assert len(damaged) == 1 and lines[damaged[0] - 1] == '{"step": 4, "train/lo'
    with pytest.warns(UserWarning, match=rf"metrics.jsonl: skipped damaged line\(s\) \[{damaged[0]}\]"):
        records = read_metrics(tmp_path)
    assert [row["step"] for row in records if "train/loss" in row] == [1, 2, 3, 4, 5, 6]
