"""What every command shares: one-line errors, output, progress bars, reading weights and options."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any


class CLIError(Exception):
    """A mistake in the command line or its inputs: printed as one line."""


def emit(obj: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, default=str))
    else:
        for key, value in obj.items():
            print(f"{key:>18}: {value}")


def tqdm_progress(desc: str):
    from tqdm import tqdm

    bar: dict = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=desc, unit="img", leave=False, file=sys.stderr)
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:
            bar["bar"].close()

    return progress


def add_image_size(parser: argparse.ArgumentParser, what: str = "the data set") -> None:
    """``--image-size``: the size every command that loads data reads its images at."""
    parser.add_argument(
        "--image-size",
        type=int,
        metavar="PX",
        help=f"read {what} at PX×PX pixels (e.g. 32, 64, 96, 128, 224; default: 32, or the size a "
        "SOURCE@PX names); images are resized, CIFAR-10 upscaled",
    )


def data_source(source: str, image_size: int | None) -> str:
    """``source`` at ``--image-size`` as the one string that rebuilds it (``SOURCE@PX``)."""
    from ..data import DataError, check_image_size, split_size, with_size

    named = split_size(source)[1]
    if image_size is not None:
        try:
            check_image_size(image_size)
        except DataError as exc:
            raise CLIError(f"--image-size: {exc}") from None
        if named is not None and named != image_size:
            raise CLIError(f"--data {source} names {named} px but --image-size says {image_size}")
    return with_size(source, image_size)


def load_data(source: str, download: bool = False, image_size: int | None = None):
    from ..data import load_dataset

    source = data_source(source, image_size)
    return load_dataset(source, download=download, progress=tqdm_progress(f"decoding {source}"))


def check_sizes(card, data, what: str = "the model") -> None:
    """A kdviz checkpoint is used only with data of its size: a mismatch is one clear line."""
    from ..data import size_mismatch

    if card.source_file is not None:  # a file from elsewhere took the data's size on loading
        return
    problem = size_mismatch(card.image_size, data.image_size)
    if problem:
        raise CLIError(f"{what}: {problem}; pass --image-size {card.image_size}")


def resolve_weights(spec: str) -> Path:
    """A path, or the name of a run in the workspace, or of a model in ``assets/``."""
    from ..training.workspace import NAME_RE, Workspace, asset_models

    path = Path(spec).expanduser()
    if path.exists():
        return path
    if NAME_RE.match(spec):
        ws = Workspace()
        if ws.exists(spec):
            return ws.path(spec)
        for asset in asset_models():
            if asset.name == spec:
                return asset.path
    raise CLIError(f"no such file, run or asset: {spec}")


def floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise CLIError(f"{what} must be three numbers, e.g. 0.485,0.456,0.406") from None
    if len(values) != 3:
        raise CLIError(f"{what} must be three numbers (one per colour channel), got {len(values)}")
    return values


def stop_on_sigint(kept: str = "finished work is kept (run the same command to resume)") -> dict:
    """First Ctrl-C asks the work to stop after the current step (saying what is ``kept``); a second
    one kills."""
    stop = {"asked": False}

    def on_sigint(signum, frame):
        stop["asked"] = True
        print(f"\nstopping after this step; {kept}", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    signal.signal(signal.SIGINT, on_sigint)
    return stop


class StepBar:
    """The bar of one epoch's training steps with the running loss, as ``train`` and the distilling
    commands show it: opened at the epoch's first step, closed at its end."""

    def __init__(self, disable: bool) -> None:
        self.disable = disable
        self.bar: Any = None

    def step(self, event: Any, desc: str) -> None:
        """One step of ``event``'s epoch (a ``TrainEvent`` of kind "step"); ``desc`` names the bar."""
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=event.steps, desc=desc, leave=False, file=sys.stderr, disable=self.disable)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{event.loss:.3f}")

    def close(self) -> bool:
        """Close the epoch's bar; False when no step had opened one."""
        if self.bar is None:
            return False
        self.bar.close()
        self.bar = None
        return True


def json_arg(text: str | None, what: str) -> dict | None:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{what} is not JSON ({exc}); example: '{{\"width_mult\": 0.5}}'") from None


def list_arg(text: str | None, cast=str) -> list | None:
    if text is None:
        return None
    try:
        return [cast(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise CLIError(f"cannot read the list {text!r}") from None


DISTILL_FIELDS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "seed",
    "crop_padding",
    "train_limit",
    "eval_limit",
    "temperature",
    "alpha",
    "overlay_p",
    "overlay_lambda",
    "overlay_mode",
    "subset",
    "subset_seed",
    "ig_steps",
    "at_beta",
    "at_block",
)


def add_recipe_settings(s: argparse.ArgumentParser) -> None:
    """The named recipe and what the fast one adds (precision, techniques switched off)."""
    s.add_argument(
        "--recipe",
        choices=["default", "fast", "finetune"],
        default="default",
        help="default: SGD + cosine (the paper's kind); fast: airbench-style, minutes on a CPU; "
        "finetune: a pretrained backbone (--pretrained) at a tenth of the new head's rate",
    )
    s.add_argument(
        "--pretrained",
        nargs="?",
        const="download",
        metavar="PATH",
        help="start from pretrained weights: alone, the library's own download (torchvision weights, "
        "timm through the Hugging Face hub); with PATH, a local safetensors or state-dict file. "
        "The classifier head is made anew for the data set's classes",
    )
    s.add_argument(
        "--precision",
        choices=["float32", "bfloat16"],
        help="float32 (default) or bfloat16 autocast, on CPUs with native bfloat16 instructions",
    )
    s.add_argument(
        "--off",
        help="fast recipe: techniques to switch off, comma-separated "
        "(whiten, lookahead, label_smoothing, alternate_flip, translate, bias_lr, triangle)",
    )


def recipe_config(cfg, args: argparse.Namespace):
    """``cfg`` with the command line's precision and switched-off techniques applied."""
    from ..training.workflows import FAST_TECHNIQUES

    if args.off:
        if args.recipe != "fast":
            raise CLIError("--off switches off techniques of the fast recipe: add --recipe fast")
        for name in list_arg(args.off) or []:
            if name not in FAST_TECHNIQUES:
                raise CLIError(
                    f"unknown technique {name!r}; the fast recipe has {', '.join(FAST_TECHNIQUES)}"
                )
            for key, value in FAST_TECHNIQUES[name].items():
                setattr(cfg, key, value)
    if args.recipe == "finetune" and not args.pretrained:
        raise CLIError(
            "--recipe finetune starts from pretrained weights: add --pretrained (the library's "
            "download) or --pretrained PATH (a local weights file)"
        )
    if args.pretrained and args.pretrained != "download" and not Path(args.pretrained).expanduser().is_file():
        raise CLIError(f"--pretrained: no such file: {args.pretrained}")
    if args.precision:
        from ..core.machine import PrecisionError, check_precision

        try:
            check_precision(args.precision)
        except PrecisionError as exc:
            raise CLIError(str(exc)) from None
        cfg.precision = args.precision
    return cfg


def add_schedule_settings(s: argparse.ArgumentParser) -> None:
    """The optimiser and schedule options that `train` and the distilling commands share."""
    from ..training.loop import OPTIMIZERS

    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--optimizer", choices=OPTIMIZERS, help="muon: Muon for the filters, SGD for the rest")
    s.add_argument("--lr", type=float)
    s.add_argument("--weight-decay", type=float)
    s.add_argument("--warmup-epochs", type=float)
    s.add_argument("--seed", type=int)
    s.add_argument("--crop-padding", type=int, help="random-crop padding in pixels (0: no crop)")
    s.add_argument("--train-limit", type=int, help="train on a fixed random subset of N training images")
    s.add_argument(
        "--eval-limit", type=int, help="evaluate each epoch on N test images spread evenly over the split"
    )


def add_distill_settings(s: argparse.ArgumentParser) -> None:
    add_schedule_settings(s)
    s.add_argument("--temperature", "-T", type=float, help="KD temperature T")
    s.add_argument("--alpha", type=float, help="weight of the KD term against the cross-entropy")
    s.add_argument("--overlay-p", "-p", type=float, help="probability of the IG overlay per image")
    s.add_argument(
        "--overlay-lambda", "--lam", type=float, help="overlay strength λ (0.5: the paper's half-and-half)"
    )
    s.add_argument(
        "--overlay-mode", choices=["blend", "emphasis"], help="blend (the paper's) or multiplicative emphasis"
    )
    s.add_argument(
        "--subset", type=int, help="a fixed random subset of N training images (the IG cache covers them)"
    )
    s.add_argument("--subset-seed", type=int)
    s.add_argument("--ig-steps", type=int, help="IG steps of a teacher IG cache made on the way")
    s.add_argument(
        "--at-beta",
        type=float,
        help="weight β of the attention-transfer term (AT arms; 0.8: the extended paper's)",
    )
    s.add_argument("--at-block", type=int, help="block whose attention is matched (-1: the middle one)")
