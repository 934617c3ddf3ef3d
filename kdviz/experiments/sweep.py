"""The compression sweep: accuracy against cost across the airnet student family (2× … 64×).

Each student's accuracy comes from its study's committed summary (``sweep-<ratio>``, and the main
study for the 4× student: :mod:`.plan`), per arm (baseline and KD + IG) as mean and sd over the
seeds done; its cost is measured here: parameters, MACs, and median latency at batch 1 and 64 in
eager PyTorch and in ONNX Runtime (:mod:`kdviz.bench`), all models timed in turns.
:func:`write_sweep` stores the rows with the machine in ``<results>/sweep/sweep.json`` (and CSV);
:func:`figure` draws accuracy against latency and against compression, both arms, each arm's Pareto
front marked (no point is both faster, or smaller, and more accurate).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import atomic, machine
from ..models import create_model, model_stats
from .ablation import StudyError
from .plan import MAIN_STUDY, SWEEP_ARMS, SWEEP_STUDENTS
from .stats import describe
from .summary import load_summary, results_root

if TYPE_CHECKING:
    import plotly.graph_objects as go

SWEEP = "sweep.json"
TEACHER_ARCH = "airnet_cifar"
#: every student of the sweep, by its name's ratio (the 4× one is the main study's)
STUDENTS = {"4x": "airnet_student_4x", **SWEEP_STUDENTS}
LATENCY_KEYS = ("eager b1 ms", "eager b64 ms", "onnx b1 ms", "onnx b64 ms")


def measure_costs(
    archs: Sequence[str], *, seconds: float = 2.0, threads: int | None = None
) -> dict[str, dict]:
    """Parameters, MACs and median latency (batch 1 and 64, eager and ONNX Runtime) of each arch.

    The models are timed in turns (:func:`kdviz.bench.latency.sample_interleaved`): a shared machine's
    load drifts by tens of per cent within a minute, and measured one after another the teacher and a
    student would meet different loads, so their speed-up would swing with it. ``seconds`` is each
    model's share of the budget of one runtime and batch."""
    from ..bench import export, latency

    models = {a: create_model(a, num_classes=10).eval() for a in archs}
    rows: dict[str, dict] = {}
    sessions = {}
    for arch, model in models.items():
        stats = model_stats(model, 32)
        rows[arch] = {"arch": arch, "params": stats.params, "macs": stats.macs}
        # no spin-waiting: several sessions take turns on the same cores (see export.session)
        sessions[arch] = export.session(export.to_onnx(model), threads=threads, spin=False)
        export.check_equal(model, sessions[arch])
    budget = seconds * len(archs)
    for batch in (1, 64):
        eager = latency.eager_in_turns(models, batch=batch, threads=threads, max_seconds=budget)
        onnx = latency.onnxruntime_in_turns(sessions, batch=batch, threads=threads, max_seconds=budget)
        for arch in archs:
            rows[arch][f"eager b{batch} ms"] = eager[arch].median_ms
            rows[arch][f"onnx b{batch} ms"] = onnx[arch].median_ms
    return rows


def accuracy_of(arch: str, ratio: str, root: Path) -> dict[str, dict]:
    """Per arm of the sweep: accuracy mean, sd, seeds and training precision, read from the
    student's committed summary."""
    name = MAIN_STUDY if ratio == "4x" else f"sweep-{ratio}"
    out: dict[str, dict] = {}
    try:
        view = load_summary(root / name)
    except StudyError:
        return out
    if view.config.student != arch:
        return out
    precision = str(view.config.train.get("precision", "float32"))  # not every point trains alike
    for arm in SWEEP_ARMS:
        acc = [r.metrics["test_accuracy"] for r in view.runs if r.arm == arm and r.metrics]
        s = describe(acc)
        out[arm] = {
            "accuracy": s.mean,
            "accuracy std": s.sd,
            "seeds": len(acc),
            "study": name,
            "precision": precision,
        }
    return out


def sweep_rows(
    root: str | Path | None = None,
    *,
    measure: Callable[[Sequence[str]], dict[str, dict]] = measure_costs,
    students: dict[str, str] | None = None,
) -> list[dict]:
    """One row per student and arm (plus the teacher), cost measured now (all models in one
    ``measure`` call, so they can be timed in turns), accuracy from the summaries."""
    root = Path(root) if root is not None else results_root()
    students = students or STUDENTS
    costs = measure([TEACHER_ARCH, *students.values()])
    teacher = costs[TEACHER_ARCH]
    teacher_acc = _teacher_accuracy(root)
    rows = [{"student": "teacher", "arm": "teacher", "compression ×": 1.0, **teacher, **teacher_acc}]
    for ratio, arch in students.items():
        cost = costs[arch]
        compression = teacher["params"] / max(1, cost["params"])
        speed = {f"speed-up {k[:-3]} ×": teacher[k] / cost[k] for k in LATENCY_KEYS if cost.get(k)}
        accuracy = accuracy_of(arch, ratio, root)
        for arm in SWEEP_ARMS:
            acc = accuracy.get(arm, {"accuracy": float("nan"), "accuracy std": float("nan"), "seeds": 0})
            rows.append({"student": ratio, "arm": arm, "compression ×": compression, **cost, **speed, **acc})
    return rows


COST_KEYS = ("arch", "params", "macs", *LATENCY_KEYS)


def stored_costs(sweep: dict) -> Callable[[Sequence[str]], dict[str, dict]]:
    """A ``measure`` for :func:`sweep_rows` that returns the costs an earlier sweep timed: a part that
    lands while the machine is busy (another part training) updates the accuracies without
    re-timing on loaded cores. A model the stored sweep has no costs for is an error, not a guess."""
    stored = {r["arch"]: {k: r[k] for k in COST_KEYS if k in r} for r in sweep["rows"] if r.get("arch")}

    def measure(archs: Sequence[str]) -> dict[str, dict]:
        missing = [a for a in archs if a not in stored]
        if missing:
            raise KeyError(
                f"the stored sweep has no costs for {', '.join(missing)}: time them (no --keep-costs)"
            )
        return {a: dict(stored[a]) for a in archs}

    return measure


def _teacher_accuracy(root: Path) -> dict:
    try:
        acc = load_summary(root / MAIN_STUDY).state.get("teacher", {}).get("test_accuracy")
    except StudyError:
        acc = None
    return {"accuracy": float("nan") if acc is None else acc, "accuracy std": float("nan"), "seeds": 0}


def write_sweep(rows: list[dict], out: str | Path | None = None, *, timed_on: dict | None = None) -> Path:
    """``sweep.json`` (rows and machine) and ``sweep.csv`` in ``out`` (default ``<results>/sweep``).

    ``timed_on``: the machine that timed the costs when they were not timed now (``--keep-costs``)."""
    out = Path(out) if out is not None else results_root() / "sweep"
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(
        out / SWEEP,
        {
            "kind": "kdviz-sweep",
            "rows": rows,
            "machine": timed_on if timed_on is not None else machine.describe(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(out / "sweep.csv", buf.getvalue())
    return out / SWEEP


def load_sweep(path: str | Path | None = None) -> dict | None:
    """The stored sweep (None when there is none or it cannot be read)."""
    path = Path(path) if path is not None else results_root() / "sweep" / SWEEP
    if path.is_dir():
        path = path / SWEEP
    try:
        sweep = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return sweep if sweep.get("kind") == "kdviz-sweep" else None


def not_run(sweep: dict) -> list[str]:
    """The sweep's points with no accuracy yet (``"8x baseline"``…): the figure leaves them out, so
    the page says which they are rather than let a gap pass for a result."""
    rows = sweep["rows"]
    return [f"{r['student']} {r['arm']}" for r in rows if r["arm"] != "teacher" and not r.get("seeds")]


def trained_in(sweep: dict) -> dict[str, list[str]]:
    """The students with a finished run, by the precision their study trained in (``{"bfloat16":
    ["2x", "4x"], "float32": ["8x"]}``): the page says so when the points did not all train alike."""
    out: dict[str, list[str]] = {}
    for r in sweep["rows"]:
        if r["arm"] != "teacher" and r.get("seeds") and r.get("precision"):
            names = out.setdefault(str(r["precision"]), [])
            if r["student"] not in names:
                names.append(r["student"])
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which points (cost, accuracy) no other point beats: at most the cost and at least the accuracy,
    better in one. NaN points are never on the front."""
    on = []
    for i, (c, a) in enumerate(points):
        if c != c or a != a:
            on.append(False)
            continue
        beaten = any(
            (c2 <= c and a2 >= a) and (c2 < c or a2 > a)
            for j, (c2, a2) in enumerate(points)
            if j != i and c2 == c2 and a2 == a2
        )
        on.append(not beaten)
    return on


ARM_COLOURS = {"baseline": "#7f7f7f", "kd+ig": "#d62728", "teacher": "#000000"}


def figure(sweep: dict, latency: str = "eager b1 ms") -> go.Figure:
    """Accuracy against ``latency`` (log) and against compression (log), both arms; each arm's Pareto
    front as a line through its points that nothing beats, the others hollow."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = sweep["rows"]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(f"accuracy against latency ({latency[:-3]})", "accuracy against compression"),
    )
    for arm in (*SWEEP_ARMS, "teacher"):
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        for col, (key, higher_is_cost) in enumerate(((latency, True), ("compression ×", False)), 1):
            # compression is a saving: a point beats another with more compression and more accuracy
            pts = [(r[key] if higher_is_cost else -r[key], 100 * r["accuracy"]) for r in mine]
            front = pareto_front(pts)
            fig.add_trace(
                go.Scatter(
                    x=[r[key] for r in mine],
                    y=[100 * r["accuracy"] for r in mine],
                    mode="markers+text",
                    text=[r["student"] for r in mine],
                    textposition="top center",
                    marker=dict(
                        color=ARM_COLOURS.get(arm),
                        size=10,
                        symbol=["circle" if f else "circle-open" for f in front],
                    ),
                    error_y=dict(
                        type="data",
                        array=[
                            100 * r["accuracy std"] if r["accuracy std"] == r["accuracy std"] else 0
                            for r in mine
                        ],
                    ),
                    name=arm,
                    legendgroup=arm,
                    showlegend=col == 1,
                    customdata=[[r["params"], r["seeds"]] for r in mine],
                    hovertemplate=f"{arm} %{{text}}<br>{key}: %{{x:.3g}}<br>accuracy %{{y:.2f}} %"
                    "<br>%{customdata[0]:,} parameters, %{customdata[1]} seeds<extra></extra>",
                ),
                row=1,
                col=col,
            )
            line = sorted((r[key], 100 * r["accuracy"]) for r, f in zip(mine, front, strict=True) if f)
            if len(line) > 1:
                fig.add_trace(
                    go.Scatter(
                        x=[p[0] for p in line],
                        y=[p[1] for p in line],
                        mode="lines",
                        line=dict(color=ARM_COLOURS.get(arm), dash="dot"),
                        name=f"{arm} Pareto front",
                        legendgroup=arm,
                        showlegend=col == 1,
                        hoverinfo="skip",
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(type="log", title_text=f"{latency[:-3]} latency, ms", row=1, col=1)
    fig.update_xaxes(type="log", title_text="compression × (teacher parameters / student's)", row=1, col=2)
    fig.update_yaxes(title_text="test accuracy %")
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.2))
    return fig
