"""Issue 12's machinery: attention transfer, arms paired by seed, the teacher cache shared across arms,
the study's statistics against scipy, parts and committed summaries, the plan, and the sweep."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

from kdviz.attribution.igcache import MAPS, IGMapStore
from kdviz.bench import latency
from kdviz.core.machine import cpu_name
from kdviz.data import load_dataset
from kdviz.experiments import ablation, stats
from kdviz.experiments import plan as planning
from kdviz.experiments.ablation import Selection, StudyError, csv_table, load_study, run_study, summarise
from kdviz.experiments.summary import list_summaries, load_summary, weights_of, write_summary
from kdviz.experiments.sweep import (
    LATENCY_KEYS,
    figure,
    load_sweep,
    measure_costs,
    pareto_front,
    sweep_rows,
    write_sweep,
)
from kdviz.models import create_model
from kdviz.models.checkpoints import LoadedModel, ModelCard, load_model
from kdviz.training import (
    ARMS,
    AT_ARMS,
    CORE_ARMS,
    DistillConfig,
    DistillRequest,
    TeacherCache,
    TeacherCacheError,
    at_loss,
    attention_map,
    block_at,
    distill_objective,
    ensure_ig_cache,
    epoch_generator,
    subset_dataset,
    teacher_outputs,
)
from kdviz.training import distillation as distillation_module

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "assets" / "digits_teacher"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------- attention transfer


def test_attention_maps_and_the_loss_by_hand():
    feats = torch.zeros(1, 2, 2, 2)
    feats[0, 0, 0, 0], feats[0, 1, 0, 0], feats[0, 1, 1, 1] = 3.0, -1.0, 2.0
    assert torch.allclose(attention_map(feats), torch.tensor([[[5.0, 0.0], [0.0, 2.0]]]))  # mean of a²
    one, other = torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)
    one[0, 0, 0], other[0, 0, 1] = 1.0, 1.0
    # orthogonal unit maps lie √2 apart: (β/2)·√2
    assert at_loss(one, other, beta=0.8).item() == pytest.approx(0.4 * math.sqrt(2))
    # the same map at another scale is the same attention: zero
    assert at_loss(3.0 * one + 0.0, one, beta=0.8).item() == pytest.approx(0.0, abs=1e-7)
    # a student map of another size is resized to the teacher's first
    big = torch.ones(2, 4, 4)
    assert at_loss(big, torch.ones(2, 2, 2), beta=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert at_loss(big, torch.rand(2, 2, 2) + one.repeat(2, 1, 1) * 5, beta=1.0).item() > 0


def test_the_attention_loss_moves_only_the_student():
    student = torch.randn(2, 3, 4, 4, requires_grad=True)
    teacher = torch.randn(2, 5, 4, 4, requires_grad=True)
    at_loss(attention_map(student), attention_map(teacher), beta=0.8).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_blocks_are_found_in_every_family():
    air = create_model("airnet_student_64x")
    assert block_at(air) is air.layers[1]  # the middle of three groups
    assert block_at(air, 0) is air.layers[0]
    res = create_model("resnet20")
    assert block_at(res) is res.layer2
    mnv2 = create_model("mnv2_student_4x", width_mult=0.5)
    assert block_at(mnv2) is mnv2.features[len(mnv2.features) // 2]
    with pytest.raises(ValueError, match="cannot tap"):
        block_at(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="does not exist"):
        block_at(air, 7)


def _airnet_teacher() -> LoadedModel:
    torch.manual_seed(0)
    model = create_model("airnet_student_16x").eval()
    return LoadedModel(model, ModelCard(arch="airnet_student_16x", mean=[0.5] * 3, std=[0.25] * 3), Path("t"))


def test_an_attention_arm_trains_the_student_only():
    teacher = _airnet_teacher()
    student = create_model("airnet_student_64x").train()
    outputs = teacher_outputs(teacher, [0.5] * 3, [0.25] * 3, attention_block=-1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    logits, att = outputs(x)
    assert logits.dtype == torch.float32 and att is not None and att.shape == (4, 7, 7)
    for arm in ("at", "kd+at"):
        student.zero_grad()
        objective = distill_objective(DistillConfig(arm=arm), None, teacher_outputs=lambda x, idx: outputs(x))
        loss, _ = objective(student, x, y, torch.arange(4))
        loss.backward()
        assert all(p.grad is None for p in teacher.model.parameters())
        assert student.layers[0][0].weight.grad.abs().sum() > 0
    # β = 0 leaves exactly the arm without attention transfer
    plain = distill_objective(DistillConfig(arm="kd"), None, teacher_outputs=lambda x, idx: outputs(x))
    zero = distill_objective(
        DistillConfig(arm="kd+at", at_beta=0.0), None, teacher_outputs=lambda x, idx: outputs(x)
    )
    student.eval()
    assert zero(student, x, y, None)[0].item() == pytest.approx(
        plain(student, x, y, None)[0].item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="attention maps"):
        distill_objective(DistillConfig(arm="at"), None)


# ---------------------------------------------------------------------------------- pairing


@pytest.fixture(scope="module")
def digits64(tmp_path_factory):
    data = subset_dataset(load_dataset("digits"), 64, 0)
    teacher = load_model(TEACHER, data=data)
    store = ensure_ig_cache(teacher, data, tmp_path_factory.mktemp("ig"), steps=2)
    return data, teacher, store


def test_arms_of_one_seed_start_alike_and_see_the_same_batches(digits64, monkeypatch, tmp_path):
    """Same initial weights, same order, crops and flips; the IG arms' images differ only where overlaid."""
    data, teacher, store = digits64
    seen: dict[str, dict] = {}

    def spy_train(model, data_, cfg, *, batches, **kw):
        gen = epoch_generator(cfg.seed, 1)
        seen[cfg.arm] = {
            "weights": {k: v.clone() for k, v in model.state_dict().items()},
            "batches": [(x.clone(), y.clone(), idx.clone()) for x, y, idx in batches(1, gen)],
        }

    monkeypatch.setattr(distillation_module, "train", spy_train)
    for arm in ("baseline", "kd", "ig", "kd+ig+at", "at"):
        cfg = DistillConfig(
            arm=arm, seed=3, epochs=1, batch_size=16, overlay_p=0.5, crop_padding=2, hflip=True
        )
        request = DistillRequest(
            name=arm, arch="mnv2_student_4x_fast", arch_kwargs={"width_mult": 0.5}, config=cfg
        )
        distillation_module.distill_run(request, teacher, data, tmp_path / arm.replace("+", "-"), store=store)
    base = seen["baseline"]
    for arm, got in seen.items():
        assert all(torch.equal(got["weights"][k], v) for k, v in base["weights"].items()), arm
        assert len(got["batches"]) == len(base["batches"]) == 4
        overlaid = 0
        for (x, y, idx), (bx, by, bidx) in zip(got["batches"], base["batches"], strict=True):
            assert torch.equal(idx, bidx) and torch.equal(y, by), arm
            same = (x == bx).flatten(1).all(1)
            overlaid += int((~same).sum())
            assert bool(same.any()), arm  # the images not overlaid are the baseline's, crops and flips too
        if arm in ("baseline", "kd", "at"):
            assert overlaid == 0, arm
        else:
            assert 0 < overlaid < 64, arm
    ig_a, ig_b = seen["ig"]["batches"], seen["kd+ig+at"]["batches"]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(ig_a, ig_b, strict=True))  # overlays drawn alike too


def test_the_teacher_cache_is_computed_once_and_checked(tmp_path):
    calls = []

    def compute(x):
        calls.append(len(x))
        return x.flatten(1)[:, :3] * 2, x.mean(1)

    images = torch.randn(8, 1, 2, 2)

    def source(epoch, gen):
        for start in (0, 4):
            idx = torch.arange(start, start + 4)
            yield images[idx], torch.zeros(4), idx

    first = TeacherCache(tmp_path / "v", {"seed": 0}, 8, compute)
    got = [first.outputs(x, idx) for x, _, idx in first.batches(source)(1, None)]
    assert calls == [4, 4] and (tmp_path / "v" / "epoch-001.safetensors").is_file()
    second = TeacherCache(tmp_path / "v", {"seed": 0}, 8, compute)
    again = [second.outputs(x, idx) for x, _, idx in second.batches(source)(1, None)]
    assert calls == [4, 4] and second.read_batches == 2  # read, not recomputed
    for (a, aa), (b, bb) in zip(got, again, strict=True):
        assert torch.equal(a, b) and torch.equal(aa, bb)
    # another view's images are refused loudly
    wrong = TeacherCache(tmp_path / "v", {"seed": 0}, 8, compute)
    with pytest.raises(TeacherCacheError, match="not paired"):
        for x, _, idx in wrong.batches(source)(1, None):
            wrong.outputs(x + 1, idx)
    # a stopped epoch writes nothing; another key starts afresh
    stopped = TeacherCache(tmp_path / "v", {"seed": 1}, 8, compute)
    assert not (tmp_path / "v" / "epoch-001.safetensors").exists()
    for x, _, idx in stopped.batches(source)(2, None):
        stopped.outputs(x, idx)
        break
    assert not (tmp_path / "v" / "epoch-002.safetensors").exists()


# ---------------------------------------------------------------------------------- statistics

A = {0: 0.912, 1: 0.915, 2: 0.909, 3: 0.918, 4: 0.911}
B = {0: 0.905, 1: 0.910, 2: 0.907, 3: 0.909, 4: 0.906}


def test_intervals_and_the_paired_test_match_scipy():
    values = list(A.values())
    s = stats.describe(values)
    low, high = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert (s.mean, s.sd) == pytest.approx((np.mean(values), np.std(values, ddof=1)))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))
    seeds, diff, t, p, dz = stats.paired(A, B)
    ref = sps.ttest_rel(list(A.values()), list(B.values()))
    d = np.array(list(A.values())) - np.array(list(B.values()))
    assert seeds == [0, 1, 2, 3, 4] and (t, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert dz == pytest.approx(d.mean() / d.std(ddof=1))
    assert (diff.ci_low, diff.ci_high) == pytest.approx(
        sps.t.interval(0.95, 4, loc=d.mean(), scale=sps.sem(d))
    )
    # pairs are by seed: a seed one arm lacks is left out of both
    seeds, diff, *_ = stats.paired({**A, 9: 0.5}, B)
    assert seeds == [0, 1, 2, 3, 4] and diff.mean == pytest.approx(d.mean())
    assert math.isnan(stats.describe([0.9]).sd) and math.isnan(stats.paired({0: 0.9}, {0: 0.8})[3])


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → monotone: 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = stats.holm([0.5, float("nan"), 0.6])
    assert out[0] == pytest.approx(1.0) and math.isnan(out[1]) and out[2] == pytest.approx(1.0)


def test_the_family_of_comparisons():
    acc = {"baseline": B, "kd": A, "ig": {s: v + 0.001 * s for s, v in B.items()}, "kd+ig": A}
    found = stats.comparisons(acc)
    pairs = [(c.arm, c.reference) for c in found]
    assert pairs == [
        ("kd", "baseline"),
        ("ig", "baseline"),
        ("kd+ig", "baseline"),
        ("ig", "kd"),
        ("kd+ig", "kd"),
    ]
    raw = [c.p for c in found]
    assert [c.p_holm for c in found] == pytest.approx(stats.holm(raw), nan_ok=True)
    assert math.isnan(found[-1].p)  # kd+ig equals kd on every seed: no spread, no test


# ---------------------------------------------------------------------------------- parts and summaries


def tiny(**overrides):
    from kdviz.experiments.ablation import StudyConfig

    base = dict(
        dataset="digits",
        teacher=str(TEACHER),
        student="mnv2_student_4x_fast",
        student_kwargs={"width_mult": 0.5},
        arms=list(ARMS),
        seeds=[0, 1],
        train=dict(epochs=1, batch_size=32, hflip=False, subset=64, ig_steps=2, eval_limit=40, overlay_p=0.5),
        probe=3,
        probe_steps=2,
        latency_seconds=0.1,
        test_limit=100,
    )
    return StudyConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def parted(tmp_path_factory):
    """All seven arms on digits in three parts into one summary: seed 0 whole, then seed 1's core arms
    (keeping the teacher caches) and its attention arms."""
    root = tmp_path_factory.mktemp("parted")
    folder, summary = root / "study", root / "results" / "tiny7"
    run_study(folder, tiny(), part=Selection(seeds=[0]), summary=summary, part_name="seed0")
    after_seed0 = sorted(p.name for p in (folder / "teacher_cache").iterdir())
    core = Selection(arms=list(CORE_ARMS), seeds=[1])
    first = run_study(folder, tiny(), part=core, summary=summary, part_name="core1", keep_teacher_cache=True)
    kept = first.status, sorted(p.name for p in (folder / "teacher_cache").iterdir())
    view = run_study(
        folder, tiny(), part=Selection(arms=list(AT_ARMS), seeds=[1]), summary=summary, part_name="at1"
    )
    return folder, summary, (after_seed0, kept), view


def test_a_study_of_seven_arms_in_parts(parted):
    folder, summary, (after_seed0, (status, kept)), view = parted
    assert after_seed0 == [] and status == "partial" and kept == ["s1-ig", "s1-plain"]
    assert view.status == "done" and view.finished_runs == 14
    assert list((folder / "teacher_cache").iterdir()) == []  # dropped when the parts ended
    by = {r.name: r.metrics for r in view.runs}
    for seed in (0, 1):
        # the AT arms read the views their seed's KD runs computed: the teacher ran once per view
        assert by[f"at-s{seed}"]["teacher_epochs_from_cache"] == 1
        assert by[f"kd-at-s{seed}"]["teacher_epochs_from_cache"] == 1
        assert by[f"kd-ig-at-s{seed}"]["teacher_epochs_from_cache"] == 1
        assert by[f"kd-s{seed}"]["teacher_epochs_from_cache"] == 0
    assert by["at-s1"]["part"] == "at1" and by["kd-s1"]["part"] == "core1" and by["kd-s0"]["part"] == "seed0"
    assert all(m["wall_seconds"] > 0 for m in by.values())
    assert all(m["machine"].startswith(cpu_name()) and m["finished"][:4].isdigit() for m in by.values())


def test_the_summary_is_small_has_no_weights_and_reads_like_the_study(parted):
    folder, summary, _, view = parted
    files = sorted(p.relative_to(summary).as_posix() for p in summary.rglob("*") if p.is_file())
    assert files == sorted(["study.json", "arms.csv", "arms.md"] + [f"runs/{r.name}.json" for r in view.runs])
    assert sum(p.stat().st_size for p in summary.rglob("*") if p.is_file()) < 200_000
    head = json.loads((summary / "study.json").read_text())
    assert set(head["parts"]) == {"seed0", "core1", "at1"} and len(head["parts"]["at1"]["runs"]) == 3
    read = load_summary(summary)
    assert read.summary and read.probe() is None and read.finished_runs == 14
    assert csv_table(summarise(read)) == csv_table(summarise(load_study(folder)))
    assert (summary / "arms.csv").read_text() == csv_table(summarise(read))
    assert weights_of(read).folder == folder  # the students' weights are on this machine
    assert [s.name for s in list_summaries(summary.parent)] == ["tiny7"]
    with pytest.raises(StudyError, match="other settings"):
        write_summary(load_study(folder).__class__(folder, tiny(seeds=[0]), view.state, view.runs), summary)


def test_a_part_goes_on_on_another_machine_without_redoing_the_summarised_runs(parted, tmp_path):
    """A part interrupted after some runs, resumed in a new session on a machine without the study
    folder: only the runs the committed summary lacks are trained, and the part's record keeps
    every run of both sessions."""
    _, summary, _, _ = parted
    committed = tmp_path / "results" / "tiny7"
    shutil.copytree(summary, committed)
    (committed / "runs" / "kd-s0.json").unlink()  # its session ended before kd-s0 finished
    trained: list[str] = []

    def report(event) -> None:
        if event.stage == "run" and event.run not in trained:
            trained.append(event.run)

    elsewhere = tmp_path / "other-machine" / "study"
    before = json.loads((committed / "study.json").read_text())
    view = run_study(
        elsewhere, tiny(), part=Selection(seeds=[0]), summary=committed, part_name="seed0", report=report
    )
    after = json.loads((committed / "study.json").read_text())
    here = json.loads((elsewhere / "study.json").read_text())
    assert here["student"]["latency_ms"] != before["student"]["latency_ms"]  # measured again there
    assert after["student"] == before["student"] and after["created"] == before["created"]  # kept
    assert trained == ["kd-s0"]
    assert sorted(p.name for p in (elsewhere / "runs").iterdir()) == ["kd-s0"]
    assert not (elsewhere / "igcache").exists()  # no run left to do needs the teacher's IG maps
    assert view.state["status"] == "done"  # every run is here or in the committed summary
    head = json.loads((committed / "study.json").read_text())
    assert len(head["parts"]["seed0"]["runs"]) == 7 and head["parts"]["seed0"]["wall_seconds"] > 0
    assert load_summary(committed).finished_runs == 14


def test_runs_that_need_no_ig_cache_run_before_it_is_built(parted, tmp_path, monkeypatch):
    """The IG cache is the longest set-up of a part (33 to 55 minutes on 2 cores): a part whose
    runs still to do include some without IG trains those first, and builds the cache only before
    the first run that reads it."""
    _, summary, _, _ = parted
    committed = tmp_path / "results" / "tiny7"
    shutil.copytree(summary, committed)
    for name in ("ig-s0", "at-s0"):  # ig comes before at in the study's order; both unfinished
        (committed / "runs" / f"{name}.json").unlink()
    elsewhere = tmp_path / "other-machine" / "study"
    cache_when_started: dict[str, bool] = {}

    def report(event) -> None:
        if event.stage == "run":
            cache_when_started.setdefault(event.run, (elsewhere / "igcache").exists())

    # the cache takes "an hour" of a fake clock: the run that waits for it must not count that hour
    # as its own wall time (kd+ig+at-s0 once recorded 96 minutes, 51 of them the cache's)
    clock, real_cache = [0.0], ablation.study_ig_cache

    def slow_cache(*args, **kwargs):
        clock[0] += 3600.0
        return real_cache(*args, **kwargs)

    monkeypatch.setattr(ablation, "study_ig_cache", slow_cache)
    real_clock = ablation.time.perf_counter
    monkeypatch.setattr(ablation.time, "perf_counter", lambda: real_clock() + clock[0])
    run_study(
        elsewhere, tiny(), part=Selection(seeds=[0]), summary=committed, part_name="seed0", report=report
    )
    assert cache_when_started == {"at-s0": False, "ig-s0": True}
    assert list(cache_when_started) == ["at-s0", "ig-s0"]
    record = json.loads((committed / "runs" / "ig-s0.json").read_text())["metrics"]
    assert record["ig_cache_seconds"] >= 3600 and record["wall_seconds"] < 3600
    at = json.loads((committed / "runs" / "at-s0.json").read_text())["metrics"]
    assert at["ig_cache_seconds"] == 0.0
    part = json.loads((committed / "study.json").read_text())["parts"]["seed0"]
    assert part["wall_seconds"] >= 3600  # the part's time still includes the cache


def test_a_study_shares_the_finished_ig_cache_of_a_study_beside_it(tmp_path):
    """The sweep's five studies and the main one need the same teacher maps (the better part of an
    hour each on 2 cores): a study whose neighbour finished them links them in instead of computing
    them, and one that needs other maps (other IG options) still computes its own."""
    config = tiny(arms=["ig"], seeds=[0])
    first, second, other = tmp_path / "first", tmp_path / "second", tmp_path / "other"
    run_study(first, config)
    events: list = []
    view = run_study(second, config, report=events.append)
    said = [e.message for e in events if e.stage == "igcache"]
    assert said == ["teacher IG maps: 64 shared with another study"]
    mine, theirs = IGMapStore(second / "igcache"), IGMapStore(first / "igcache")
    assert mine.complete and np.array_equal(np.asarray(mine.maps), np.asarray(theirs.maps))
    assert (second / "igcache" / MAPS).samefile(first / "igcache" / MAPS)  # linked: no second copy
    assert view.runs[0].metrics["test_accuracy"] == load_study(first).runs[0].metrics["test_accuracy"]

    events.clear()
    run_study(
        other, tiny(arms=["ig"], seeds=[0], train={**config.train, "ig_steps": 3}), report=events.append
    )
    assert any("images/s" in e.message for e in events if e.stage == "igcache")  # computed here
    assert IGMapStore(other / "igcache").spec.steps == 3
    assert not (other / "igcache" / MAPS).samefile(first / "igcache" / MAPS)


def test_summary_rows_carry_intervals_and_corrected_tests(parted):
    _, summary, _, _ = parted
    view = load_summary(summary)
    rows = {r["arm"]: r for r in summarise(view)}
    acc = {arm: {r.seed: r.metrics["test_accuracy"] for r in view.runs if r.arm == arm} for arm in ARMS}
    family = stats.comparisons(acc)
    assert len(family) == 6 + 5  # six arms against the baseline, five against KD
    for c in family:
        row = rows[c.arm]
        assert row[f"Δ vs {c.reference}"] == pytest.approx(c.diff)
        assert row[f"p vs {c.reference} (Holm)"] == pytest.approx(c.p_holm, nan_ok=True)
    assert rows["baseline"]["Δ vs baseline"] == 0.0 and rows["kd"]["Δ vs kd"] == 0.0
    for r in rows.values():
        s = stats.describe(list(acc[r["arm"]].values()))
        assert (r["accuracy ci low"], r["accuracy ci high"]) == pytest.approx(
            (s.ci_low, s.ci_high), nan_ok=True
        )


def test_the_ablate_command_runs_a_part_and_prints_the_summary(tmp_path, monkeypatch, capsys):
    from kdviz.cli.main import main

    summary = tmp_path / "results" / "cli"
    args = [
        "ablate",
        "--preset",
        "digits",
        "--smoke",
        "48",
        "--out",
        str(tmp_path / "s"),
        "--summary",
        str(summary),
    ]
    args += [
        "--arms",
        "baseline,kd,at",
        "--seeds",
        "0,1",
        "--only-seeds",
        "0",
        "--part-name",
        "seed0",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "partial" and out["runs_done"] == 3 and out["runs"] == 6
    want = summarise(load_summary(summary))
    for got, row in zip(out["arms"], want, strict=True):
        for key, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                assert got[key] is None or math.isnan(got[key]), key
            else:
                assert got[key] == pytest.approx(value), key
    assert main(["ablate", "--plan"]) == 0
    assert "core-seed3" in capsys.readouterr().out
    assert main(["ablate", "--part", "seed0", "--epochs", "1"]) == 1  # a planned part runs as planned
    assert "as planned" in capsys.readouterr().err
    assert main(["ablate", "--part", "nope"]) == 1
    assert "unknown part" in capsys.readouterr().err


def test_the_plan_fits_sessions_and_shares_one_study():
    parts = planning.plan()
    main = [p for p in parts if p.study == planning.MAIN_STUDY]
    configs = {json.dumps(p.config().as_dict(), sort_keys=True) for p in main}
    assert len(configs) == 1  # every part of the main study appends to the same study
    from kdviz.experiments.presets import configure

    assert configure("study").as_dict() == main[0].config().as_dict()  # so --preset study slices join it
    config = main[0].config()
    assert (
        config.student == "airnet_student_4x"
        and config.arms == list(ARMS)
        and config.seeds == [0, 1, 2, 3, 4]
    )
    assert (
        config.dataset == "cifar10"
        and config.train.get("subset") is None
        and config.teacher == "assets/cifar10_teacher"
    )
    runs = {(a, s) for p in main for a in p.arms for s in p.seeds}
    assert {(a, s) for a in CORE_ARMS for s in range(5)} <= runs and {
        (a, s) for a in AT_ARMS for s in range(3)
    } <= runs
    sweeps = [p for p in parts if p.study.startswith("sweep-")]
    assert len(sweeps) >= 4 and all(p.arms == ["baseline", "kd+ig"] for p in sweeps)
    assert all(p.expected_minutes() < 180 for p in parts)
    for p in parts:
        p.selection().check(p.config())
    with pytest.raises(ValueError, match="unknown part"):
        planning.part("nope")
    # a float32 point trains both its arms in float32, and only its precision differs from the others
    eight, sixteen = planning.part("sweep-8x"), planning.part("sweep-16x")
    assert eight.precision == "float32" and eight.config().train["precision"] == "float32"
    assert sixteen.precision == sixteen.config().train["precision"] == "bfloat16"
    differ = {k for k in eight.config().train if eight.config().train[k] != sixteen.config().train.get(k)}
    assert differ == {"precision"}
    assert "| float32 |" in planning.plan_table() and "| bfloat16 |" in planning.plan_table()
    with pytest.raises(StudyError, match="not in the study"):
        Selection(arms=["at"]).check(tiny(arms=["kd"]))


# ---------------------------------------------------------------------------------- the sweep


def test_pareto_front_by_hand():
    # (cost, accuracy): b beats a (cheaper and better); c is the most accurate; d is NaN
    assert pareto_front([(2.0, 0.80), (1.0, 0.85), (3.0, 0.90), (float("nan"), 0.99)]) == [
        False,
        True,
        True,
        False,
    ]
    assert pareto_front([(1.0, 0.8), (1.0, 0.8)]) == [True, True]  # ties beat nobody


def test_the_sweep_times_its_models_in_turns(monkeypatch):
    """Teacher and students share every timing round (a drifting load falls on all of them), and
    each row carries its own model's parameters and a median per runtime and batch."""
    rounds = []
    real = latency.sample_interleaved

    def recording(fns, **kw):
        rounds.append(sorted(fns))
        return real(fns, **kw)

    monkeypatch.setattr(latency, "sample_interleaved", recording)
    archs = ["airnet_student_32x", "airnet_student_64x"]
    rows = measure_costs(archs, seconds=0.05, threads=1)
    assert rounds == [sorted(archs)] * 4  # eager and ONNX, batch 1 and 64: all models in each
    for arch in archs:
        row = rows[arch]
        assert row["params"] == sum(p.numel() for p in create_model(arch).parameters())
        assert all(row[k] > 0 for k in LATENCY_KEYS)
        assert row["eager b64 ms"] > row["eager b1 ms"] and row["onnx b64 ms"] > row["onnx b1 ms"]
    assert rows["airnet_student_32x"]["macs"] > rows["airnet_student_64x"]["macs"]


def test_the_sweep_from_summaries(parted, tmp_path):
    folder, summary, _, _ = parted
    results = tmp_path / "results"
    shutil.copytree(summary, results / "sweep-16x")
    head = json.loads((results / "sweep-16x" / "study.json").read_text())
    head["config"]["student"] = "airnet_student_16x"  # the fixture study stands in for the 16× student
    (results / "sweep-16x" / "study.json").write_text(json.dumps(head))

    asked = []

    def fake(archs):
        asked.append(list(archs))
        rows = {}
        for arch in archs:
            n = sum(p.numel() for p in create_model(arch).parameters())
            rows[arch] = {"arch": arch, "params": n, "macs": n * 10, **{k: n / 1e5 for k in LATENCY_KEYS}}
        return rows

    rows = sweep_rows(
        results, measure=fake, students={"16x": "airnet_student_16x", "64x": "airnet_student_64x"}
    )
    assert [(r["student"], r["arm"]) for r in rows] == [
        ("teacher", "teacher"),
        ("16x", "baseline"),
        ("16x", "kd+ig"),
        ("64x", "baseline"),
        ("64x", "kd+ig"),
    ]
    assert asked == [["airnet_cifar", "airnet_student_16x", "airnet_student_64x"]]  # one call: timed in turns
    view = load_summary(results / "sweep-16x")
    base = [r.metrics["test_accuracy"] for r in view.runs if r.arm == "baseline"]
    assert rows[1]["accuracy"] == pytest.approx(np.mean(base)) and rows[1]["seeds"] == 2
    assert math.isnan(rows[3]["accuracy"]) and rows[3]["seeds"] == 0  # not run yet
    assert rows[1]["precision"] == view.config.train.get("precision", "float32")  # as its study trained
    assert rows[1]["compression ×"] == pytest.approx(rows[0]["params"] / rows[1]["params"])
    assert rows[1]["speed-up eager b1 ×"] == pytest.approx(rows[0]["eager b1 ms"] / rows[1]["eager b1 ms"])
    path = write_sweep(rows, tmp_path / "sweep")
    sweep = load_sweep(path)
    assert [r["student"] for r in sweep["rows"]] == [r["student"] for r in rows]
    fig = figure(sweep)
    names = {t.name for t in fig.data}
    assert {"baseline", "kd+ig", "teacher"} <= names
    assert load_sweep(tmp_path / "none") is None


def test_keep_costs_refreshes_accuracy_without_timing(parted, tmp_path, monkeypatch, capsys):
    """``sweep --keep-costs``: a part that lands while the cores are busy updates the accuracies, and
    the costs (and the machine that timed them) stay as they were timed."""
    from kdviz.cli.main import main
    from kdviz.experiments import sweep as sweep_module

    folder, summary, _, _ = parted
    results = tmp_path / "results"
    shutil.copytree(summary, results / "sweep-16x")
    head = json.loads((results / "sweep-16x" / "study.json").read_text())
    head["config"]["student"] = "airnet_student_16x"
    (results / "sweep-16x" / "study.json").write_text(json.dumps(head))
    timed = {"cpu": "the machine that timed", "cores": 2}
    old = [
        {"student": "teacher", "arm": "teacher", "arch": "airnet_cifar", "params": 100, "macs": 1000,
         **{k: 10.0 for k in LATENCY_KEYS}, "seeds": 0},
        {"student": "16x", "arm": "baseline", "arch": "airnet_student_16x", "params": 10, "macs": 100,
         **{k: 2.5 for k in LATENCY_KEYS}, "seeds": 0, "accuracy": float("nan")},
    ]  # fmt: skip
    write_sweep(old, tmp_path / "sweep", timed_on=timed)
    monkeypatch.setattr(sweep_module, "measure_costs", lambda *a, **k: pytest.fail("timed again"))
    out = ["sweep", "--results", str(results), "--out", str(tmp_path / "sweep"), "--keep-costs"]
    assert main([*out, "--students", "16x"]) == 0
    new = load_sweep(tmp_path / "sweep")
    assert new["machine"] == timed
    base = next(r for r in new["rows"] if r["student"] == "16x" and r["arm"] == "baseline")
    view = load_summary(results / "sweep-16x")
    assert base["seeds"] == 2 and base["accuracy"] == pytest.approx(
        np.mean([r.metrics["test_accuracy"] for r in view.runs if r.arm == "baseline"])
    )
    assert base["eager b64 ms"] == 2.5 and base["speed-up eager b64 ×"] == pytest.approx(4.0)
    capsys.readouterr()
    # a student the stored sweep never timed: one clear line, nothing written
    assert main([*out, "--students", "64x"]) == 1
    assert "no costs for airnet_student_64x" in capsys.readouterr().err
    assert load_sweep(tmp_path / "sweep")["rows"] == new["rows"]
    assert main(["sweep", "--results", str(results), "--out", str(tmp_path / "none"), "--keep-costs"]) == 1


def test_a_committed_summarys_run_files_are_not_ignored_by_git():
    """The summaries are meant to be committed: a ``runs/`` rule for work folders must not hide
    their run files (it once did, and a commit would have kept the tables without the runs)."""
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("docs/results/any-study/runs/baseline-s0.json", "docs/results/any-study/study.json"):
        check = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert check.returncode == 1, f"{path} is ignored by .gitignore"
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/studies/x/model.safetensors"], cwd=ROOT)
    assert ignored.returncode == 0  # the work folder stays ignored
