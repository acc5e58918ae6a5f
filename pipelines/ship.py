"""The shipped pipeline: a trained pipeline folder made into the one committed under models/.

    python -m pipelines.ship --pipeline outputs/prior/pipeline --out models/vqwae-mnist \
        [--record benchmarks/results/RECORD.json ...] [--made-by "COMMAND" ...]
    python -m pipelines.ship --push models/vqwae-mnist --repo-id USER/vqwae-mnist

The first writes the pipeline folder with the prior's weights stored in float16 (from_pretrained
computes in float32: float16 -> float32 is exact, so the folder samples what its records
measured), and puts each record's headline numbers, with the command that measured them, into
pipeline_config.json's `results` and the model cards; `--made-by` names the training commands.
Shipping the shipped folder again (--pipeline = --out) rewrites only the results and commands
given (others stay): the weights come back bit for bit. A folder over --max-mb (20 MB, what a git repository should carry) is
refused before anything is written. The second checks the folder loads (files intact, the prior's tokenizer), then uploads
it as it is to the Hub repo (a token from `hf auth login` or HF_TOKEN).
"""

from __future__ import annotations

from pathlib import Path

import torch

from infra.checkpointing import push_folder
from infra.config import CommandLine, run_cli
from infra.files import folder_megabytes, read_json

from .pipeline_vqwae import FolderTooLargeError, VQWAEPipeline

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "vqwae-mnist"
MAX_MB = 20.0


def headline(record: dict) -> dict:
    """The numbers a model card shows from a results record, by the command that wrote it:
    tokenizer.evaluation (reconstruction on a split), pipelines.evaluation (the digit classifier's
    verdict on samples) or benchmarks.generation_fid (gFID at its largest count)."""
    command = record.get("command", "")
    if "tokenizer.evaluation" in command:
        keys = ("split", "num_images", "psnr", "ssim", "perplexity", "codes_used", "lpips")
        values = {key: record[key] for key in keys if record.get(key) is not None}
        if "rfid" in record:
            values |= {"rfid": record["rfid"]["fid"], "rfid_images": record["rfid"]["n"]}
        return values
    if "pipelines.evaluation" in command:
        values = {"classifier_test_accuracy": record["classifier_test_accuracy"]}
        if "class_conditional" in record:
            judged = record["class_conditional"]
            values |= {"class_conditional_samples": judged["samples"], "class_accuracy": judged["accuracy"],
                       "worst_class": judged["worst_class"]}  # fmt: skip
        if "unconditional" in record:
            values |= {"unconditional_samples": record["unconditional"]["samples"],
                       "recognisable": record["unconditional"]["recognisable"]}  # fmt: skip
        return values
    if "benchmarks.generation_fid" in command:
        values = {"n": record["n"], "reference": record["reference"], "sampling": record["sampling"]["mode"]}
        for name, setting in record["settings"].items():
            values[f"gfid {name}"] = setting["fid"][str(record["n"])]
        return values
    raise ValueError(f"a results record written by {command.split(' --')[0] or 'an unknown command'!r}: the card shows "
                     "records of tokenizer.evaluation, pipelines.evaluation and benchmarks.generation_fid")  # fmt: skip


def ship(pipeline: str | Path, out: str | Path, records: list[str | Path] = (), made_by: list[str] = (),
         max_mb: float = MAX_MB) -> Path:  # fmt: skip
    """Write the shipped folder `out` from the pipeline folder `pipeline` (see the module doc)."""
    pipe = VQWAEPipeline.from_pretrained(pipeline)
    results = []
    for path in records:
        record = read_json(Path(path), "give a results record written by one of the commands the card shows")
        results.append({"what": record.get("what", Path(path).stem), "date": record.get("date"),
                        "values": headline(record), "command": record.get("command"), "record": Path(path).name})  # fmt: skip
    if records:  # else the folder's own results and commands stay
        pipe.config["results"] = results
    if made_by:
        pipe.config["made_by"] = list(made_by)
    try:
        pipe.save_pretrained(out, prior_dtype=torch.float16, max_mb=max_mb)
    except FolderTooLargeError as error:
        raise FolderTooLargeError(f"the shipped folder would hold {error.megabytes:.1f} MB, over the {max_mb:g} MB a "
                                  f"shipped folder may hold; {out} is left as it was. Ship a smaller prior or raise "
                                  "--max-mb", error.megabytes) from None  # fmt: skip
    print(f"shipped {out}: {folder_megabytes(out):.1f} MB; load it with VQWAEPipeline.from_pretrained({str(out)!r})")
    return Path(out)


def push(folder: str | Path, repo_id: str) -> str:
    """Check `folder` loads as a pipeline, then upload it unchanged as the Hub repo `repo_id`."""
    VQWAEPipeline.from_pretrained(folder)
    url = push_folder(folder, repo_id, commit_message=f"Upload {Path(folder).name} from vqwae")
    print(f"pushed {folder} to {url}")
    return url


def main(argv: list[str] | None = None) -> Path | str:
    parser = CommandLine(__doc__)
    parser.add_argument("--pipeline", help="the trained pipeline folder (prior/train.py's <output_dir>/pipeline)")
    parser.add_argument("--out", default=str(SHIPPED))
    parser.add_argument("--record", action="append", default=[], help="a results record to show in the card")
    parser.add_argument("--made-by", action="append", default=[], help="a command that trained a stage")
    parser.add_argument("--max-mb", type=float, default=MAX_MB)
    parser.add_argument("--push", metavar="FOLDER", help="upload this shipped folder to the Hub (with --repo-id)")
    parser.add_argument("--repo-id", help="USER/NAME on the Hub, for --push")
    args = parser.parse_args(argv)
    if args.push:
        if not args.repo_id:
            parser.error("--push needs --repo-id USER/NAME")
        return push(args.push, args.repo_id)
    if not args.pipeline:
        parser.error("give --pipeline PIPELINE_FOLDER to ship, or --push FOLDER --repo-id USER/NAME")
    return ship(args.pipeline, args.out, args.record, args.made_by, args.max_mb)


if __name__ == "__main__":
    run_cli(main)

