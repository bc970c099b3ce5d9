"""The ``toothseg evaluate --report DIR`` page: one self-contained HTML file (plots embedded as
PNG data URIs, also written next to it), readable offline and attachable to an e-mail or a paper's
supplement.

It shows what a reader of a segmentation paper looks for: the protocol's summary numbers, a table
per tooth, the mean Dice of each tooth laid out on a dental chart (so a weak quadrant or tooth type
is visible at a glance), the spread of per-tooth Dice by tooth type, and the worst cases with the
slice where prediction and ground truth disagree most. Plots use matplotlib's object API (no
pyplot global state, no display, no network).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .core.errors import InputError
from .core.io.atomic import atomic_output, atomic_write_text, make_output_folder
from .core.labels import fdi_name, is_fdi_tooth

__all__ = ["CaseView", "ReportData", "crop_to_content", "prepare_report_folder", "worst_slice", "tooth_group",
           "write_report"]

#: Dental chart as seen facing the patient: upper jaw 18…11 | 21…28, lower jaw 48…41 | 31…38.
CHART_ROWS = ([18, 17, 16, 15, 14, 13, 12, 11, 21, 22, 23, 24, 25, 26, 27, 28],
              [48, 47, 46, 45, 44, 43, 42, 41, 31, 32, 33, 34, 35, 36, 37, 38])
TOOTH_GROUPS = ("incisor", "canine", "premolar", "molar")


def tooth_group(fdi: int) -> str | None:
    """Incisor / canine / premolar / molar of a permanent or deciduous FDI number (None otherwise)."""
    if not is_fdi_tooth(fdi):
        return None
    quadrant, position = divmod(fdi, 10)
    if position <= 2:
        return "incisor"
    if position == 3:
        return "canine"
    if quadrant >= 5:  # deciduous 4 and 5 are molars
        return "molar"
    return "premolar" if position <= 5 else "molar"


@dataclass
class CaseView:
    """What the report keeps of one case: its score and the most telling axial slice."""

    case: str
    mean_dice: float
    gt_slice: np.ndarray
    pred_slice: np.ndarray
    slice_index: int
    planar: bool = False  # a 2D image (panoramic X-ray): the whole image, no slice


@dataclass
class ReportData:
    protocol: str
    summary: Mapping[str, Any]
    tooth_rows: list[dict[str, Any]] = field(default_factory=list)  # one per (case, label)
    cases: list[CaseView] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)
    method: str = "prediction"
    #: Per-tooth rows of other methods on the same ground truth, for the side-by-side box plot.
    other_methods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def worst_slice(gt: np.ndarray, pred: np.ndarray) -> int:
    """Index along axis 0 (z) with the most voxels where the labels disagree; the middle of the
    ground truth's teeth when they agree everywhere."""
    disagreement = (gt != pred).reshape(gt.shape[0], -1).sum(axis=1)
    if disagreement.any():
        return int(np.argmax(disagreement))
    occupied = np.flatnonzero((gt != 0).reshape(gt.shape[0], -1).any(axis=1))
    return int(occupied[len(occupied) // 2]) if occupied.size else gt.shape[0] // 2


def crop_to_content(*slices: np.ndarray, margin: int = 8) -> tuple[slice, slice]:
    """Bounding box of the non-zero pixels of the 2D slices, with a margin (the whole slice if empty)."""
    occupied = np.zeros(slices[0].shape, bool)
    for item in slices:
        occupied |= item != 0
    if not occupied.any():
        return slice(None), slice(None)
    rows, columns = np.flatnonzero(occupied.any(axis=1)), np.flatnonzero(occupied.any(axis=0))
    return (slice(max(rows[0] - margin, 0), rows[-1] + margin + 1),
            slice(max(columns[0] - margin, 0), columns[-1] + margin + 1))


def prepare_report_folder(folder: str | Path) -> Path:
    """Create the report folder and make sure matplotlib is there — before hours of metrics, not after."""
    try:
        import matplotlib  # noqa: PLC0415, F401
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise InputError("--report needs matplotlib: pip install 'toothseg[report]'") from exc
    return make_output_folder(folder, "--report writes a folder (index.html and its plots)")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (optional plotting library)
    from matplotlib.figure import Figure  # noqa: PLC0415 (optional plotting library)

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _per_tooth(rows: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """Mean metrics per label over the cases whose ground truth has it; detection counts."""
    by_label: dict[int, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_label.setdefault(int(row["label"]), []).append(row)
    table = {}
    for label, items in sorted(by_label.items()):
        in_gt = [r for r in items if r["in_gt"]]

        def mean(key: str, sample=in_gt) -> float:
            values = [float(r[key]) for r in sample if math.isfinite(float(r[key]))]
            return float(np.mean(values)) if values else math.nan

        table[label] = {"cases": len(in_gt), "detected": sum(bool(r["in_pred"]) for r in in_gt),
                        "false_positive": sum(1 for r in items if r["in_pred"] and not r["in_gt"]),
                        "dice": mean("dice"), "iou": mean("iou"), "nsd": mean("nsd"),
                        "hd95": mean("hd95"), "asd": mean("asd")}
    return table


def _chart_png(per_tooth: Mapping[int, Mapping[str, float]]) -> bytes:
    from matplotlib import colormaps  # noqa: PLC0415 (optional plotting library)

    figure = _figure(10, 3.2)
    axes = figure.add_subplot()
    cmap = colormaps["RdYlGn"]
    for row, teeth in enumerate(CHART_ROWS):
        for column, fdi in enumerate(teeth):
            stats = per_tooth.get(fdi)
            dice = stats["dice"] if stats and stats["cases"] else math.nan
            colour = "#dddddd" if math.isnan(dice) else cmap(max(0.0, min(1.0, (dice - 0.5) / 0.5)))
            y = 1 - row
            axes.add_patch(_rectangle(column, y, colour))
            axes.text(column + 0.5, y + 0.68, str(fdi), ha="center", va="center", fontsize=9, weight="bold")
            axes.text(column + 0.5, y + 0.3, "—" if math.isnan(dice) else f"{dice:.2f}", ha="center",
                      va="center", fontsize=8)
    axes.axvline(8, color="black", linewidth=1.5)
    axes.axhline(1, color="black", linewidth=1.5)
    axes.set_xlim(0, 16)
    axes.set_ylim(0, 2)
    axes.set_axis_off()
    axes.set_title("Mean Dice per tooth (FDI, facing the patient: patient's right on the left; grey = absent)",
                   fontsize=9)
    return _png(figure)


def _rectangle(x: float, y: float, colour):
    from matplotlib.patches import Rectangle  # noqa: PLC0415 (optional plotting library)

    return Rectangle((x + 0.04, y + 0.04), 0.92, 0.92, facecolor=colour, edgecolor="black", linewidth=0.6)


def _group_dice(rows: Sequence[Mapping[str, Any]], group: str) -> list[float]:
    return [float(r["dice"]) for r in rows if r["in_gt"] and tooth_group(int(r["label"])) == group
            and not math.isnan(float(r["dice"]))]


def _box_png(methods: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes:
    """Per-tooth Dice by tooth type, one box per method side by side within each type."""
    from matplotlib import colormaps  # noqa: PLC0415 (optional plotting library)

    groups = [g for g in TOOTH_GROUPS if any(_group_dice(rows, g) for rows in methods.values())]
    figure = _figure(max(6.0, 1.2 * len(groups) * len(methods)), 3.4)
    axes = figure.add_subplot()
    width = 0.8 / max(len(methods), 1)
    cmap = colormaps["tab10"]
    for index, (name, rows) in enumerate(methods.items()):
        data = [_group_dice(rows, g) or [math.nan] for g in groups]
        positions = [g + (index - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        boxes = axes.boxplot(data, positions=positions, widths=width * 0.85, patch_artist=True,
                             manage_ticks=False)
        for box in boxes["boxes"]:
            box.set_facecolor(cmap(index % 10))
            box.set_alpha(0.6)
        if boxes["boxes"]:
            boxes["boxes"][0].set_label(name)
    axes.set_xticks(range(len(groups)), groups)
    axes.set_xlim(-0.6, len(groups) - 0.4)
    axes.set_ylabel("Dice per tooth and case")
    axes.set_ylim(0, 1.02)
    axes.grid(axis="y", alpha=0.3)
    if len(methods) > 1:
        axes.legend(fontsize=8, loc="lower left")
    axes.set_title("Dice by tooth type", fontsize=9)
    return _png(figure)


def _case_png(view: CaseView) -> bytes:
    from matplotlib import colormaps  # noqa: PLC0415 (optional plotting library)

    figure = _figure(8, 3.4)
    cmap = colormaps["tab20"]
    for index, (title, labels) in enumerate((("ground truth", view.gt_slice), ("prediction", view.pred_slice))):
        axes = figure.add_subplot(1, 3, index + 1)
        colours = np.zeros(labels.shape + (4,))
        present = labels != 0
        colours[present] = cmap((labels[present] % 20) / 20.0)
        axes.imshow(colours, origin="upper", interpolation="nearest")
        axes.set_title(title, fontsize=9)
        axes.set_axis_off()
    axes = figure.add_subplot(1, 3, 3)
    overlay = np.ones(view.gt_slice.shape + (3,))
    agree = (view.gt_slice == view.pred_slice) & (view.gt_slice != 0)
    missed = (view.gt_slice != 0) & (view.pred_slice == 0)
    extra = (view.gt_slice == 0) & (view.pred_slice != 0)
    wrong = (view.gt_slice != 0) & (view.pred_slice != 0) & (view.gt_slice != view.pred_slice)
    for mask, colour in ((agree, (0.75, 0.75, 0.75)), (missed, (0.1, 0.3, 0.95)), (extra, (0.95, 0.2, 0.1)),
                         (wrong, (0.95, 0.75, 0.0))):
        overlay[mask] = colour
    axes.imshow(overlay, origin="upper", interpolation="nearest")
    axes.set_title("grey agree · blue missed · red extra · yellow wrong number", fontsize=7)
    axes.set_axis_off()
    where = ("image (cropped)" if view.planar else f"axial slice {view.slice_index} from inferior (radiological view: "
             "anterior up, patient's right on the left; cropped)")
    figure.suptitle(f"{view.case}: {where}, mean tooth Dice {view.mean_dice:.3f}", fontsize=9)
    return _png(figure)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4f}"
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_format(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(name: str, data: bytes, folder: Path, alt: str) -> str:
    with atomic_output(folder / name, overwrite=True) as tmp:
        tmp.write_bytes(data)
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def write_report(data: ReportData, folder: str | Path, worst: int = 3, note: str = "") -> Path:
    """Write ``index.html`` and its PNG files into ``folder``; return the HTML path."""
    folder = prepare_report_folder(folder)
    per_tooth = _per_tooth(data.tooth_rows)
    sections = [f"<h1>ToothSeg evaluation of <i>{html.escape(data.method)}</i> — protocol "
                f"<code>{html.escape(data.protocol)}</code></h1>"]
    if note:
        sections.append(f"<p class='note'>{html.escape(note)}</p>")
    summary = [(k, v) for k, v in data.summary.items() if isinstance(v, (int, float))]
    sections += ["<h2>Summary</h2>", _table(("metric", "value"), summary)]
    if data.problems:
        sections += ["<h2>Problems</h2>", _table(("case", "problem"),
                                                   [(p["case"], p["problem"]) for p in data.problems])]
    sections += ["<h2>Per tooth</h2>", _image("dental_chart.png", _chart_png(per_tooth), folder, "dental chart"),
                 _image("dice_by_tooth_type.png", _box_png({data.method: data.tooth_rows, **data.other_methods}),
                        folder, "box plot"),
                 "<p>Means over the cases whose ground truth has the tooth; NSD at 1 mm; HD95 and ASD in "
                 "millimetres, averaged over the detected teeth only (a missed tooth has no distance and is "
                 "counted in <i>detected</i> instead).</p>",
                 _table(("FDI", "tooth", "cases", "detected", "false positives", "Dice", "IoU", "NSD",
                         "HD95 (mm)", "ASD (mm)"),
                        [(label, fdi_name(label) if is_fdi_tooth(label) else f"label {label}", s["cases"],
                          s["detected"], s["false_positive"], s["dice"], s["iou"], s["nsd"], s["hd95"], s["asd"])
                         for label, s in per_tooth.items()])]
    if data.other_methods:
        comparison = []
        for name, rows in {data.method: data.tooth_rows, **data.other_methods}.items():
            dice = [float(r["dice"]) for r in rows if r["in_gt"] and not math.isnan(float(r["dice"]))]
            comparison.append((name, float(np.mean(dice)) if dice else math.nan,
                               *(float(np.mean(d)) if (d := _group_dice(rows, g)) else math.nan for g in TOOTH_GROUPS)))
        sections += ["<h2>Methods (same ground truth)</h2>",
                     _table(("method", "mean tooth Dice", *TOOTH_GROUPS), comparison)]
    ranked = sorted(data.cases, key=lambda v: (math.isnan(v.mean_dice), v.mean_dice))[:worst]
    if ranked:
        sections.append(f"<h2>Worst {len(ranked)} case(s)</h2>")
        for index, view in enumerate(ranked):
            sections.append(_image(f"worst_{index + 1}.png", _case_png(view), folder, view.case))
    for earlier in folder.glob("worst_*.png"):  # an earlier report's extra cases would pass for this one's
        number = earlier.stem.removeprefix("worst_")
        if number.isdigit() and int(number) > len(ranked):
            earlier.unlink(missing_ok=True)
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}th{background:#eee}img{max-width:100%;display:block;margin:1em 0}"
             ".note{background:#fff6d5;padding:0.5em}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ToothSeg evaluation</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n")
    return atomic_write_text(folder / "index.html", page, overwrite=True)
