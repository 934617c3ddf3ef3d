"""The issue-12 study cut into parts that each finish in one 3-hour working session on 2 CPU cores.

A part is some arms and seeds of one study (:class:`.ablation.Selection`). Every part of the main
study (``cifar10-study``: the 4.2× airnet student, seven arms × seeds 0-2, the four core arms × seeds
3-4) runs in the same study
configuration, so the parts' summaries meet in one table under ``docs/results/cifar10-study``;
the compression sweep's parts are one small study per student (baseline and KD + IG). Run a part
with ``python -m kdviz ablate --part NAME``; ``--plan`` prints this table. A part interrupted
resumes when started again (same machine); a part done elsewhere is read from its committed summary.

Expected minutes come from measured seconds per 50,000-image epoch (:data:`EPOCH_SECONDS`,
``benchmarks/bench_study_plan.py``), times the study's 14 epochs, plus each run's evaluation and
each session's set-up (data, teacher reference, and for IG arms the teacher's IG cache of all
50,000 training images). The cache is made once per machine: every later study there, the sweep's
included, shares the finished one (:func:`.ablation.study_ig_cache`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..training import AT_ARMS, CORE_ARMS, DistillConfig
from .ablation import Selection, StudyConfig
from .presets import STUDY_TRAIN, study

MAIN_STUDY = "cifar10-study"
#: the sweep's students, by compression (the 4× point is the main study's)
SWEEP_STUDENTS = {
    "2x": "airnet_student_2x",
    "8x": "airnet_student_8x",
    "16x": "airnet_student_16x",
    "32x": "airnet_student_32x",
    "64x": "airnet_student_64x",
}
SWEEP_ARMS = ["baseline", "kd+ig"]
#: Sweep points that train in float32 instead of the study's bfloat16. The 8× point had no run when
#: two sessions in a row drew CPUs without native bfloat16 (where autocast is emulated, ~10× slower):
#: rather than wait on the draw, both its arms train in float32, which runs at full speed on every
#: CPU. Both arms share it, so its baseline-to-KD + IG comparison is like for like; across points it
#: is a stated difference, and bfloat16 measured as accurate as float32 on this recipe (README,
#: "what each technique buys": 79.35 % against 79.58 %).
SWEEP_PRECISION = {"8x": "float32"}

#: Seconds per 50,000-image training epoch (bfloat16, 2 cores of the Xeon of issue 11, quiet):
#: "plain" runs no teacher (baseline, ig), "teacher" runs it (its attention too, as a study with AT
#: arms does), "cached" reads another arm's teacher outputs. The 4× figures were measured by part
#: seed0 itself on 2026-12-02 (its quiet epochs: 22 s for the baseline, 73 s for KD); the other
#: students keep the teacher's share (about 51 s) and scale the student's own step by their size.
#: "cached" is an estimate (the plain step and the attention hooks) until an AT arm has run.
EPOCH_SECONDS: dict[str, dict[str, float]] = {
    "airnet_student_4x": {"plain": 22.0, "teacher": 73.0, "cached": 24.0},
    "airnet_student_2x": {"plain": 34.0, "teacher": 85.0, "cached": 36.0},
    "airnet_student_8x": {"plain": 16.5, "teacher": 67.5, "cached": 18.5},
    "airnet_student_16x": {"plain": 12.0, "teacher": 63.0, "cached": 14.0},
    "airnet_student_32x": {"plain": 9.0, "teacher": 60.0, "cached": 11.0},
    "airnet_student_64x": {"plain": 8.0, "teacher": 59.0, "cached": 10.0},
}
#: The same in float32, for the parts that train in it: first estimated on a 2-core AMD EPYC with
#: AVX2 only (2026-12-05) from the student's training step at batch 1024 (444 img/s) and the
#: teacher's forward pass (331 img/s), each timed alone.
EPOCH_SECONDS_FLOAT32: dict[str, dict[str, float]] = {
    "airnet_student_8x": {"plain": 113.0, "teacher": 264.0, "cached": 120.0},
}
EVAL_MINUTES = 1.0  # a run's final test accuracy on 10,000 images, probe IG maps, per-epoch checks
SETUP_MINUTES = 3.0  # loading CIFAR-10 (decoded cache), teacher predictions and latency
#: the teacher's IG maps of 50,000 images at 16 steps, once per machine: 25 img/s (33 min) on
#: 2026-12-02, 14-16 img/s (about 55 min) on 2026-12-03, both 2-core Xeons with the study at nice 10
IG_CACHE_MINUTES = 55.0


@dataclass
class Part:
    """Some runs of one study, sized for one session."""

    name: str
    study: str  # the study's folder and summary name
    student: str
    arms: list[str]
    seeds: list[int]
    note: str = ""
    arms_of_study: list[str] = field(default_factory=list)  # the study's arms (all parts share them)
    precision: str = "bfloat16"  # the study's training precision (every part of a study shares it)

    def config(self) -> StudyConfig:
        config = study(
            self.student, arms=self.arms_of_study or None, seeds=5 if self.study == MAIN_STUDY else 1
        )
        if config.train.get("precision") == self.precision:
            return config
        return replace(config, train={**config.train, "precision": self.precision})

    def selection(self) -> Selection:
        return Selection(arms=list(self.arms), seeds=list(self.seeds))

    def expected_minutes(self, cached_teacher: bool = True) -> float:
        """Set-up, IG cache when an arm needs it, and each run's epochs and evaluation.

        ``cached_teacher``: a teacher-using arm whose view another arm of this part computed first
        reads the teacher cache instead of running the teacher.
        """
        times = (EPOCH_SECONDS if self.precision == "bfloat16" else EPOCH_SECONDS_FLOAT32)[self.student]
        epochs = int(STUDY_TRAIN["epochs"])
        minutes = SETUP_MINUTES
        if any(DistillConfig(arm=a).uses_ig for a in self.arms):
            minutes += IG_CACHE_MINUTES
        for seed in self.seeds:
            seen: set[bool] = set()
            for arm in self.arms:
                cfg = DistillConfig(arm=arm)
                if not cfg.uses_teacher:
                    kind = "plain"
                elif cached_teacher and cfg.uses_ig in seen:
                    kind = "cached"
                else:
                    kind = "teacher"
                    seen.add(cfg.uses_ig)
                minutes += epochs * times[kind] / 60 + EVAL_MINUTES
            del seed
        return minutes


def plan() -> list[Part]:
    """Every part of the study and the sweep, in the order they are meant to run.

    Seeds 0-2 run all seven arms in one part each, so the attention arms read the teacher outputs the
    KD arms of their seed computed (one teacher pass per view); seeds 3-4 run the four core arms.
    """
    every = list(CORE_ARMS) + list(AT_ARMS)
    parts = [
        Part(f"seed{s}", MAIN_STUDY, "airnet_student_4x", every, [s], "all seven arms, one seed", every)
        for s in range(3)
    ]
    parts += [
        Part(
            f"core-seed{s}",
            MAIN_STUDY,
            "airnet_student_4x",
            list(CORE_ARMS),
            [s],
            "the paper's four arms, one seed",
            every,
        )
        for s in (3, 4)
    ]
    parts += [
        Part(
            f"sweep-{ratio}",
            f"sweep-{ratio}",
            student,
            list(SWEEP_ARMS),
            [0],
            f"compression sweep: the {ratio} student, baseline and KD + IG",
            list(SWEEP_ARMS),
            SWEEP_PRECISION.get(ratio, "bfloat16"),
        )
        for ratio, student in SWEEP_STUDENTS.items()
    ]
    return parts


def planned_runs(study_name: str) -> set[tuple[str, int]]:
    """The (arm, seed) pairs the plan's parts run in ``study_name`` (empty for a study of no plan).

    A study's configuration may allow more (the main study's seeds 3-4 of the attention arms): a
    summary is complete when the planned runs are done.
    """
    return {(a, s) for p in plan() if p.study == study_name for a in p.arms for s in p.seeds}


def part(name: str) -> Part:
    found = {p.name: p for p in plan()}
    if name not in found:
        raise ValueError(f"unknown part {name!r}; the plan has {', '.join(found)}")
    return found[name]


def plan_table() -> str:
    """The plan as Markdown: what each part runs and its expected minutes on 2 quiet cores."""
    lines = [
        "| part | study | student | arms | seeds | precision | expected minutes | what |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in plan():
        lines.append(
            f"| `{p.name}` | {p.study} | {p.student} | {', '.join(p.arms)} | "
            f"{', '.join(map(str, p.seeds))} | {p.precision} | {p.expected_minutes():.0f} | {p.note} |"
        )
    lines += [
        "",
        f"A part with IG arms counts {IG_CACHE_MINUTES:.0f} minutes for the teacher's IG cache; where "
        "another study on this machine finished it, the part shares it and takes that much less. "
        "A bfloat16 part trains in bfloat16 autocast, as the whole main study does: it needs a CPU with "
        "native bfloat16 (AVX-512 BF16 or AMX) and is refused at once on one without. A float32 part "
        "runs on any CPU (its minutes were measured on a 2-core AVX2 EPYC).",
    ]
    return "\n".join(lines)
