"""benchmarks/generation_fid.py on a tiny pipeline: every FID in its table equals compute_fid on the
same samples (drawn again from the pipeline with the same seed), smaller counts take whole classes,
the floor equals reconstruction_fid, a rerun reuses what was saved, and bad input is refused."""


import pytest
import torch

from benchmarks import generation_fid
from infra.data import DataConfig, load_images
from infra.metrics.fid_score import as_uint8_rgb, compute_fid
from pipelines import VQWAEPipeline
from tests.helpers import assert_figure
from tests.readme_fixtures import tiny_pipeline
from tokenizer.evaluation import reconstruction_fid


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe") / "pipeline"
    tiny_pipeline(folder)
    return folder


def test_subset_takes_the_first_of_every_class():
    assert generation_fid.subset(4, 10, 0).tolist() == [0, 1, 2, 3]
    assert generation_fid.subset(4, 10, 2).tolist() == [0, 1, 5, 6]  # two class blocks of 5
    with pytest.raises(ValueError, match="not a multiple of num_classes=2"):
        generation_fid.subset(3, 10, 2)


def test_table_matches_compute_fid_and_resumes(pipeline_dir, tmp_path):
    args = ["--pipeline", str(pipeline_dir), "--out", str(tmp_path), "--n", "20", "--counts", "10",
            "--guidance-scales", "2", "--floor", "--batch-size", "8"]  # fmt: skip
    report = generation_fid.main(args)
    assert report["counts"] == [10, 20] and report["reference_n"] == 20
    assert set(report["settings"]) == {"unconditional", "class-conditional g=2"}

    pipe = VQWAEPipeline.from_pretrained(pipeline_dir)
    generator = torch.Generator().manual_seed(0)
    unconditional = pipe(n=20, generator=generator, output_type="pt", progress=False).images
    expected = compute_fid(unconditional, "mnist:test", reference_n=20).fid
    assert report["settings"]["unconditional"]["fid"]["20"] == pytest.approx(expected, rel=1e-5)
    assert report["settings"]["unconditional"]["fid"]["10"] == pytest.approx(
        compute_fid(unconditional[:10], "mnist:test", reference_n=20).fid, rel=1e-5
    )
    generator = torch.Generator().manual_seed(0)
    conditional = pipe(n=20, class_labels="each", guidance_scale=2, generator=generator, output_type="pt").images
    first_of_each = conditional[0::2]  # one of each of the 10 classes (blocks of 2)
    assert report["settings"]["class-conditional g=2"]["fid"]["10"] == pytest.approx(
        compute_fid(first_of_each, "mnist:test", reference_n=20).fid, rel=1e-5
    )
    saved = torch.load(tmp_path / "samples-class-conditional-g2.pt")
    assert torch.equal(saved, as_uint8_rgb(conditional)[:, :1])
    # The grids: a row per class of its first samples (2 here), and the unconditional samples 10 a row.
    from PIL import Image

    assert Image.open(tmp_path / "grid-class-conditional-g2.png").size == (2 * 18 + 2, 10 * 18 + 2)
    assert Image.open(tmp_path / "grid-unconditional.png").size == (10 * 18 + 2, 2 * 18 + 2)
    assert_figure(tmp_path / "figures" / "gfid-vs-samples.png")  # drawn from this report

    test_images = load_images(DataConfig(image_size=16), 1)["test"].select(range(20))
    floor = reconstruction_fid(pipe.tokenizer.eval(), test_images, reference="mnist:test")
    assert report["floor"]["fid"] == pytest.approx(floor.fid, rel=1e-5) and report["floor"]["n"] == 20
    table = (tmp_path / "results.md").read_text()
    assert "| class-conditional g=2 | 2 |" in table and "FID @ 10 | FID @ 20" in table and "Tokenizer floor" in table

    # A rerun reads the saved samples and features back: same numbers and the first run's minutes
    # (not the time it took to load them), files untouched; without the old record, no minutes.
    stamps = {path: path.stat().st_mtime_ns for path in tmp_path.glob("*.pt")}
    again = generation_fid.main(args)
    assert again["settings"] == report["settings"]
    assert {path: path.stat().st_mtime_ns for path in tmp_path.glob("*.pt")} == stamps
    (tmp_path / "results.json").unlink()
    unrecorded = generation_fid.main(args)["settings"]["class-conditional g=2"]
    assert unrecorded["fid"] == report["settings"]["class-conditional g=2"]["fid"]
    assert unrecorded["sampling_minutes"] is None and unrecorded["inception_minutes"] is None
    assert "| class-conditional g=2 | 2 |" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--guidance-scales", "-1"], "--guidance-scales must be >= 0"),
        (["--n", "1"], "must be >= 2"),
        (["--no-unconditional", "--guidance-scales"], "nothing to score"),
    ],
)
def test_bad_arguments_are_clear(pipeline_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        generation_fid.main(["--pipeline", str(pipeline_dir), "--out", str(tmp_path), "--n", "10", *extra])
    assert message in capsys.readouterr().err


def test_sampling_is_plain_unless_asked_and_recorded(pipeline_dir, tmp_path):
    """A pipeline whose sweep chose truncated sampling (temperature 0.5, top-k 5, unconditional
    through the classes) is still scored on plain samples by default (temperature 1, no top-k,
    the null class: comparable across pipelines); --sampling pipeline takes its defaults; the
    report records which, and an OUT drawn one way is not resumed the other."""
    import json
    import shutil

    folder = tmp_path / "swept"
    shutil.copytree(pipeline_dir, folder)
    config = json.loads((folder / "pipeline_config.json").read_text())
    config["sampling"] = dict(temperature=0.5, top_k=5, unconditional="classes", unconditional_guidance_scale=2.0)
    (folder / "pipeline_config.json").write_text(json.dumps(config))
    pipe = VQWAEPipeline.from_pretrained(folder)

    def draw(**sampling):
        images = pipe(n=10, generator=torch.Generator().manual_seed(0), output_type="pt", progress=False, **sampling)
        return as_uint8_rgb(images.images)[:, :1]

    common = ["--pipeline", str(folder), "--n", "10", "--counts", "10", "--guidance-scales", "--batch-size", "8"]
    plain = generation_fid.main([*common, "--out", str(tmp_path / "plain")])
    assert plain["sampling"] == dict(mode="plain", temperature=1.0, top_k=0, unconditional="null_class")
    saved = torch.load(tmp_path / "plain" / "samples-unconditional.pt")
    assert torch.equal(saved, draw(temperature=1.0, top_k=0, unconditional="null_class"))
    assert not torch.equal(saved, draw())

    chosen = generation_fid.main([*common, "--out", str(tmp_path / "chosen"), "--sampling", "pipeline"])
    assert chosen["sampling"] == dict(mode="pipeline", **config["sampling"])
    assert torch.equal(torch.load(tmp_path / "chosen" / "samples-unconditional.pt"), draw())

    with pytest.raises(SystemExit):
        generation_fid.main([*common, "--out", str(tmp_path / "plain"), "--sampling", "pipeline"])
