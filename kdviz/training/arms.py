"""The paper's ablation arms and the configuration of a distilled student.

A distilled student's configuration is a training configuration plus what distillation adds; all
of it lands in the card's ``train_config``, so a student's card says how it was made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .ig_overlay import OverlayConfig
from .loop import TrainConfig

#: The ablation's arms: what each adds to the student trained alone. The first four are the paper's;
#: the attention-transfer arms are the extended paper's (arXiv 2506.14440).
ARMS: dict[str, str] = {
    "baseline": "student alone (cross-entropy on the labels)",
    "kd": "+ knowledge distillation (the teacher's softened outputs)",
    "ig": "+ IG overlays (the teacher's maps laid onto training images)",
    "kd+ig": "+ both (the paper's method)",
    "at": "+ attention transfer (the teacher's spatial attention at a middle block)",
    "kd+at": "+ knowledge distillation and attention transfer",
    "kd+ig+at": "+ knowledge distillation, IG overlays and attention transfer",
}
#: The paper's four arms (what a study runs unless told otherwise).
CORE_ARMS: tuple[str, ...] = ("baseline", "kd", "ig", "kd+ig")
#: The extended paper's attention-transfer arms.
AT_ARMS: tuple[str, ...] = ("at", "kd+at", "kd+ig+at")


def arm_ingredients(arm: str) -> frozenset[str]:
    """The ingredients of an arm: a subset of {"kd", "ig", "at"} (empty for the baseline)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose one of {', '.join(ARMS)}")
    return frozenset() if arm == "baseline" else frozenset(arm.split("+"))


def arm_parts(arm: str) -> tuple[bool, bool]:
    """(uses KD, uses IG overlays) for an arm name (attention transfer: :func:`arm_ingredients`)."""
    parts = arm_ingredients(arm)
    return "kd" in parts, "ig" in parts


@dataclass
class DistillConfig(TrainConfig):
    """A training configuration plus what distillation adds; all of it lands in the card's
    ``train_config``, so a student's card says how it was made."""

    arm: str = "kd+ig"
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the KD term against the cross-entropy
    overlay_p: float = 0.1
    overlay_lambda: float = 0.5
    overlay_mode: str = "blend"
    subset: int | None = None  # train on a fixed random subset of N images; the IG cache covers exactly them
    subset_seed: int = 0
    holdout: int = 0  # training images held out to validate on (a search never looks at the test split)
    ig_steps: int = 32  # for an IG cache made on the way
    teacher: str = ""  # where the teacher came from
    ig_cache: str = ""  # the IG cache the overlays read
    world_size: int = 1
    at_beta: float = 0.8  # weight of the attention-transfer term (the extended paper's β)
    at_block: int = -1  # which block's attention is matched: its index, -1 for the middle one

    def __post_init__(self) -> None:
        arm_parts(self.arm)
        if self.at_beta < 0:
            raise ValueError(f"at_beta must not be negative, got {self.at_beta}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        self.overlay()  # checks p, λ and the mode

    def overlay(self) -> OverlayConfig:
        return OverlayConfig(p=self.overlay_p, lam=self.overlay_lambda, mode=self.overlay_mode)

    @property
    def uses_kd(self) -> bool:
        return arm_parts(self.arm)[0]

    @property
    def uses_ig(self) -> bool:
        return arm_parts(self.arm)[1]

    @property
    def uses_at(self) -> bool:
        return "at" in arm_ingredients(self.arm)

    @property
    def uses_teacher(self) -> bool:
        """Whether a training step asks the teacher anything (its logits or its attention)."""
        return self.uses_kd or self.uses_at


def config_summary(cfg: DistillConfig) -> dict:
    """The distillation-specific part of a configuration (what a table of arms shows)."""
    base = {f for f in asdict(TrainConfig())}
    return {k: v for k, v in asdict(cfg).items() if k not in base}
