"""The export panel of the Models and Benchmark pages: a model to ONNX (optionally int8), checked, then
offered for download with its card.

The work is :func:`kdviz.bench.deploy.export_model`, the same as ``python -m kdviz export``; the
files go to the cache folder (``KDVIZ_CACHE/exports/<weights' fingerprint>``) and the download
buttons read them from there, so an export survives a rerun of the page.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from kdviz.bench.deploy import ExportReport, export_model
from kdviz.bench.export import ExportError
from kdviz.core import settings
from kdviz.data.base import Dataset
from kdviz.models.checkpoints import LoadedModel

from .cards import human_bytes

REPORTS_KEY = "kdviz_export_reports"  # {fingerprint + int8 method: ExportReport}


def export_dir(loaded: LoadedModel) -> Path:
    return settings.cache_dir() / "exports" / loaded.fingerprint[:16]


def panel(loaded: LoadedModel, data: Dataset | None, *, key: str) -> ExportReport | None:
    """Controls, the export on a click, its figures and the download buttons; the report shown."""
    name = loaded.card.name or loaded.path.name
    c1, c2 = st.columns([2, 1])
    int8 = c1.radio(
        "Also an int8 copy",
        ["none", "auto", "static", "dynamic"],
        horizontal=True,
        key=f"{key}_int8",
        help="ONNX Runtime's quantisation, its accuracy and latency against float measured here. auto: "
        "static QDQ (calibrated on 32 training images) for a convnet, dynamic otherwise; dynamic int8 "
        "convolutions run slower than float on a CPU.",
    )
    limit = c2.number_input(
        "Test images for the int8 accuracy", 100, 100_000, 2000, step=100, key=f"{key}_limit"
    )
    reports = st.session_state.setdefault(REPORTS_KEY, {})
    wanted = f"{loaded.fingerprint}:{int8}"
    if data is None:
        st.info("Choose the model's data set in the sidebar: the export is checked on its images.")
    elif st.button("Export to ONNX", type="primary", key=f"{key}_go"):
        out = export_dir(loaded) / f"{name}.onnx"
        with st.status(f"Exporting {name}…", expanded=True) as status:
            try:
                reports[wanted] = export_model(
                    loaded,
                    out,
                    data,
                    int8=None if int8 == "none" else int8,
                    eval_limit=int(limit),
                    progress=status.write,
                )
            except ExportError as exc:
                status.update(label="Export failed", state="error")
                st.error(f"Not exported: {exc}")
                return None
            status.update(label=f"Exported {name}", state="complete", expanded=False)
    report = reports.get(wanted)
    if report is not None and Path(report.onnx).is_file():
        show(report, key=key)
        return report
    return None


def show(report: ExportReport, *, key: str) -> None:
    """What was checked, the int8 figures against float, and the download buttons."""
    st.success(
        f"ONNX opset {report.opset}, {report.image_size}×{report.image_size} px, "
        f"{human_bytes(report.size_bytes)}: its outputs equal PyTorch's on {report.checked_images} test "
        f"images (largest difference {report.max_abs_diff:.2g}). Preprocessing (mean, std, size) and class "
        "names are in the file's metadata."
    )
    q = report.int8
    if q:
        ms = q["latency_ms"]
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "model": kind,
                        "accuracy": q[f"accuracy_{kind}"],
                        "ms, batch 1": ms[f"{kind}_batch1"],
                        "ms, batch 64": ms[f"{kind}_batch64"],
                        "size": human_bytes(q["size_bytes"] if kind == "int8" else report.size_bytes),
                    }
                    for kind in ("float", "int8")
                ]
            ),
            hide_index=True,
            column_config={"accuracy": st.column_config.NumberColumn(format="percent")},
        )
        st.caption(
            f"int8 ({q['method']}): {q['accuracy_change'] * 100:+.2f} accuracy points on {q['images']} test "
            f"images, {q['agreement']:.1%} of predictions unchanged; {q['speedup_batch1']:.2f}× at batch 1, "
            f"{q['speedup_batch64']:.2f}× at batch 64 (float and int8 timed in turns on this machine)."
        )
    onnx_path, card_path = Path(report.onnx), Path(report.card)
    c1, c2, c3 = st.columns(3)
    c1.download_button(
        "Download the .onnx",
        onnx_path.read_bytes(),
        file_name=onnx_path.name,
        mime="application/octet-stream",
        key=f"{key}_dl_onnx",
    )
    c2.download_button(
        "Download its card (.json)",
        json.dumps(json.loads(card_path.read_text()), indent=2),
        file_name=card_path.name,
        mime="application/json",
        key=f"{key}_dl_card",
    )
    if q and Path(q["path"]).is_file():
        c3.download_button(
            "Download the int8 .onnx",
            Path(q["path"]).read_bytes(),
            file_name=Path(q["path"]).name,
            mime="application/octet-stream",
            key=f"{key}_dl_int8",
        )
