"""A web demo of a pipeline (Gradio): generate digits class by class, and tokenize an image.

    pip install -e .[demo]
    python -m pipelines.demo [--pipeline outputs/quickstart/prior/pipeline] [--host 127.0.0.1 --port 7860]

Without --pipeline it opens on the shipped MNIST pipeline (models/vqwae-mnist).

Generate: class (or unconditional), guidance scale, temperature, top-k, seed, count -> an image
grid and the code map of the first sample; the same seed gives the same images. Tokenize: an
uploaded image or a test digit -> original, reconstruction, code map, PSNR and a histogram of
the codes used. Bad input is a message in the page. The app binds to 127.0.0.1 unless told
otherwise and needs no network: no analytics, no share link, system fonts only.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError
from torchvision.utils import make_grid

from infra.config import CommandLine, check_arguments, run_cli
from infra.data import DataConfig, channels_of, load_images
from infra.metrics.reconstruction import code_histogram, psnr

from .pipeline_vqwae import VQWAEPipeline
from .ship import SHIPPED

UNCONDITIONAL = "unconditional"
# What one request may ask for: the page's own limits, enforced on the server too (an API client
# can send anything), so a request's time and memory stay bounded.
MAX_IMAGES = 64  # the "images" slider's maximum
MAX_UPLOAD_MB = 10  # an upload's file size (also Gradio's max_file_size)
MAX_UPLOAD_PIXELS = 4096 * 4096  # an upload's width x height, checked before it is decoded
MAX_QUEUE = 64  # requests waiting; they run one at a time, in order of arrival; more are refused


def code_map(codes: torch.Tensor, codebook_size: int, cell: int = 24) -> Image.Image:
    """A (h, w) code grid as a picture: each cell's grey level is its code, with the number printed."""
    height, width = codes.shape
    levels = (codes.float() / max(codebook_size - 1, 1) * 200 + 40).to(torch.uint8).numpy()
    image = Image.fromarray(np.kron(levels, np.ones((cell, cell), np.uint8))).convert("RGB")
    draw = ImageDraw.Draw(image)
    for row in range(height):
        for column in range(width):
            draw.text((column * cell + 2, row * cell + 6), str(int(codes[row, column])), fill=(255, 255, 0))
    return image


def histogram(counts: torch.Tensor, height: int = 120) -> Image.Image:
    """Bars of code counts (K,) from `code_histogram` (one column per code, 2 pixels wide)."""
    bars = (counts / counts.max().clamp_min(1) * (height - 1)).round().long()
    canvas = np.full((height, 2 * len(counts)), 255, np.uint8)
    for code, bar in enumerate(bars.tolist()):
        if bar:
            canvas[height - bar :, 2 * code : 2 * code + 2] = 30
    return Image.fromarray(canvas)


def grid_image(images: torch.Tensor) -> Image.Image:
    """(n, C, H, W) in [0, 1] -> one PIL grid, about square."""
    columns = max(1, math.ceil(math.sqrt(len(images))))
    grid = make_grid(images, nrow=columns, padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array[..., 0] if images.shape[1] == 1 else array)
    scale = max(1, 320 // max(image.size))  # small digits shown large, pixels kept sharp
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


class Demo:
    """The demo's logic, free of Gradio (tested directly): every method returns outputs plus a
    status message, and bad input becomes the message."""

    def __init__(self, pipe: VQWAEPipeline):
        self.pipe = pipe
        config = pipe.tokenizer.config
        self.channels, self.size, self.codebook_size = config.in_channels, config.image_size, config.codebook_size
        self._test_split = None  # the MNIST test split, loaded on the first test-digit request

    @property
    def class_choices(self) -> list[str]:
        return [UNCONDITIONAL] + [str(label) for label in range(self.pipe.num_classes)]

    def generate(self, label: str, guidance: float, temperature: float, top_k: int, seed: int, count: int):
        try:
            if label != UNCONDITIONAL and not self.pipe.num_classes:
                raise ValueError(f"this prior is unconditional: choose '{UNCONDITIONAL}', not class {label}")
            if label not in self.class_choices:
                raise ValueError(f"class must be one of {self.class_choices}, got {label!r}")
            if label == UNCONDITIONAL and guidance != 1.0:
                raise ValueError("guidance needs a class: pick a class, or set the guidance scale to 1")
            count, seed = whole_number("images", count, 1, MAX_IMAGES), whole_number("seed", seed, 0, 2**63 - 1)
            top_k = whole_number("top-k", top_k, 0, self.codebook_size)
            output = self.pipe(
                n=count, class_labels=None if label == UNCONDITIONAL else int(label),
                guidance_scale=float(guidance), temperature=float(temperature), top_k=top_k,
                generator=torch.Generator().manual_seed(seed), output_type="pt", progress=False,
            )  # fmt: skip
        except ValueError as error:
            return None, None, f"**Error:** {error}"
        except Exception as error:  # the page shows a message, never a traceback
            return None, None, f"**Error:** unexpected {type(error).__name__}: {error}"
        message = f"{count} sample(s), class {label}, guidance {guidance}, seed {seed}"
        return grid_image(output.images), code_map(output.codes[0], self.codebook_size), message

    def prepare(self, image: Image.Image) -> tuple[torch.Tensor, list[str]]:
        """A PIL image -> (1, C, S, S) in [0, 1] for the tokenizer, with notes on what changed."""
        notes = []
        if self.channels == 1 and channels_of(image) != 1:
            image, notes = image.convert("L"), [f"converted the {image.mode} image to grey"]
        image = image.convert("L" if self.channels == 1 else "RGB")
        if image.size != (self.size, self.size):
            notes.append(f"resized {image.size[0]}x{image.size[1]} to {self.size}x{self.size}")
            image = image.resize((self.size, self.size), Image.BICUBIC)
        array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = (
            torch.from_numpy(array)[None, None]
            if self.channels == 1
            else torch.from_numpy(array).permute(2, 0, 1)[None]
        )
        return tensor, notes

    def tokenize(self, path: str | None, test_index: float | None):
        try:
            if path:
                megabytes = os.path.getsize(path) / 2**20
                if megabytes > MAX_UPLOAD_MB:
                    raise ValueError(f"{os.path.basename(path)} is {megabytes:.1f} MB; upload at most {MAX_UPLOAD_MB} MB")
                try:
                    with Image.open(path) as opened:
                        if opened.width * opened.height > MAX_UPLOAD_PIXELS:
                            raise ValueError(
                                f"{os.path.basename(path)} is {opened.width}x{opened.height} pixels; upload at most "
                                f"{MAX_UPLOAD_PIXELS:,} pixels (the tokenizer sees {self.size}x{self.size})"
                            )
                        opened.load()
                        image = opened.copy()
                except (UnidentifiedImageError, OSError) as error:
                    raise ValueError(f"{os.path.basename(path)} is not an image this demo can read ({error})") from None
            elif test_index is not None:
                image = self.test_digit(whole_number("test digit index", test_index, 0, 2**31))
            else:
                raise ValueError("upload an image or pick a test digit")
            images, notes = self.prepare(image)
            with torch.no_grad():
                codes = self.pipe.tokenizer.encode(images.to(self.pipe.device))
                reconstruction = self.pipe.tokenizer.decode(codes).clamp(0, 1).cpu()
        except ValueError as error:
            return None, None, None, None, f"**Error:** {error}"
        except Exception as error:  # the page shows a message, never a traceback
            return None, None, None, None, f"**Error:** unexpected {type(error).__name__}: {error}"
        score = psnr(reconstruction, images).item()
        counts = code_histogram(codes.cpu(), self.codebook_size)
        message = "; ".join([f"PSNR {score:.2f} dB, {int((counts > 0).sum())} distinct codes", *notes])
        return (grid_image(images), grid_image(reconstruction), code_map(codes[0].cpu(), self.codebook_size),
                histogram(counts), message)  # fmt: skip

    def test_digit(self, index: int) -> Image.Image:
        if self._test_split is None:
            # At the tokenizer's size, resized as in training (MNIST: bilinear 28 -> 32).
            self._test_split = load_images(DataConfig(image_size=self.size), 1)["test"]
        split = self._test_split
        if not 0 <= index < len(split):
            raise ValueError(f"test digit index must lie in [0, {len(split)}), got {index}")
        return Image.fromarray(split[index]["pixel_values"][0].numpy().astype(np.uint8))


def whole_number(name: str, value, low: int, high: int) -> int:
    """A request's count, seed or index as an int in [low, high]; anything else is a ValueError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or not number.is_integer() or not low <= number <= high:
        raise ValueError(f"{name} must be a whole number in [{low}, {high}], got {value!r}")
    return int(number)


def build_app(pipe: VQWAEPipeline):
    """The Gradio Blocks app of `pipe`."""
    import gradio as gr

    demo = Demo(pipe)
    with gr.Blocks(title="VQ-WAE demo", analytics_enabled=False) as app:
        gr.Markdown("# VQ-WAE: generate and tokenize")
        with gr.Tab("Generate"):
            with gr.Row():
                label = gr.Dropdown(demo.class_choices, value=demo.class_choices[-1], label="class")
                chosen = pipe.sampling_defaults  # the settings chosen on validation when the prior was trained
                guidance = gr.Slider(0, 5, value=chosen.get("guidance_scale", 2.0 if pipe.num_classes else 1.0),
                                     step=0.5, label="guidance scale")  # fmt: skip
                temperature = gr.Slider(0.1, 2.0, value=chosen.get("temperature", 1.0), step=0.1, label="temperature")
                top_k = gr.Number(value=chosen.get("top_k") or 0, precision=0, label="top-k (0: all codes)")
                seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
                count = gr.Slider(1, 64, value=16, step=1, label="images")
            generate = gr.Button("Generate", variant="primary", elem_id="generate")
            status = gr.Markdown(elem_id="generate-status")
            with gr.Row():
                samples = gr.Image(label="samples", type="pil", elem_id="samples", format="png", height=360)
                codes = gr.Image(label="codes of the first sample", type="pil", format="png", height=360)
            generate.click(demo.generate, [label, guidance, temperature, top_k, seed, count], [samples, codes, status])
        with gr.Tab("Tokenize"):
            with gr.Row():
                upload = gr.File(label="an image file", type="filepath", elem_id="upload")
                index = gr.Number(value=0, precision=0, label="or a test digit (index)")
            tokenize = gr.Button("Tokenize", elem_id="tokenize")
            message = gr.Markdown(elem_id="tokenize-status")
            with gr.Row():
                original = gr.Image(label="original", type="pil", format="png")
                rebuilt = gr.Image(label="reconstruction", type="pil", format="png")
                code_grid = gr.Image(label="code map", type="pil", format="png")
                used = gr.Image(label="codes used (histogram)", type="pil", format="png")
            outputs = [original, rebuilt, code_grid, used, message]
            tokenize.click(demo.tokenize, [upload, index], outputs)
            upload.upload(demo.tokenize, [upload, index], outputs)
    # One request at a time, in order of arrival; at most MAX_QUEUE waiting (more are told so).
    return app.queue(default_concurrency_limit=1, max_size=MAX_QUEUE)


def offline_theme():
    """Gradio's default theme on system fonts: no web-font download, the page needs no network."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def main(argv: list[str] | None = None) -> None:
    parser = CommandLine(__doc__)
    parser.add_argument("--pipeline", default=str(SHIPPED),
                        help="pipeline folder or Hub repo id (default: the shipped MNIST pipeline, models/vqwae-mnist)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 serves other machines too")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    check_arguments(args, at_least={"port": 1}, at_most={"port": 65535})
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SystemExit("the demo needs Gradio: pip install -e .[demo]") from None
    pipe = VQWAEPipeline.from_pretrained(args.pipeline).to("cuda" if torch.cuda.is_available() else "cpu")
    build_app(pipe).launch(
        server_name=args.host, server_port=args.port, share=False, show_error=False, theme=offline_theme(),
        max_file_size=f"{MAX_UPLOAD_MB}mb",
    )


if __name__ == "__main__":
    run_cli(main)
