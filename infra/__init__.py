"""The infrastructure every stage uses: config dataclasses from YAML with overrides (`config`), the
run loop's shared pieces on Accelerate (`training`), checkpoints and Hub uploads (`checkpointing`),
image data through `datasets` (`data`), FID with torch-fidelity (`fid_score`) and Hub model cards
(`cards`). It knows nothing of tokenizers, priors or pipelines: they import it, never the reverse."""
