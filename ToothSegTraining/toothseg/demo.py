"""The main job on the bundled defaults: segment the bundled sample CBCT with the bundled 3D model.

Offline by construction: the sample (``Resources/SampleData``) and the model (``Resources/Models``)
are in the repository. The run writes what a clinician would keep — a Slicer ``.seg.nrrd``, one
STL per tooth and an overview picture — and, because the sample's true labels are bundled too,
scores the prediction with the STS-2024 metrics. The sample's intensities are SYNTHETIC (painted
onto real tooth shapes), so that score says the pipeline works, not how a model fares on real scans.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .core.errors import InputError
from .core.progress import Progress

if TYPE_CHECKING:
    from .core.models.card import ModelCard

__all__ = ["DemoResult", "run_demo", "sample_seen_in_training"]

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """What the demo wrote and found."""

    sample: str
    model: str
    segmentation: str
    stl_dir: str
    stl_files: int
    stl_names: list[str]
    picture: str | None
    report: str
    teeth_found: list[int]
    teeth_expected: list[int]
    metrics: dict[str, float]
    seconds: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    handedness: dict[str, Any] = field(default_factory=dict)  # the prediction's (toothseg.core.handedness)
    # whether the model was trained on the sample's patient (synthetic scans of its tooth shapes), so that the
    # figures are not held-out ones; None when the model's card does not say
    sample_seen_in_training: bool | None = None


NO_MODEL_NOTE = ("no bundled 3D model yet (train one with ToothSegTraining/toothseg/train/recipes/"
                 "demo3d_synthetic.yaml, or pass --model): the sample's true labels are exported instead")


def _default_model() -> Path | None:
    """The bundled 3D default (not whatever the user installed), or None while none is bundled."""
    from .core.models.catalog import load_catalog

    catalog = load_catalog(include_user=False)
    try:
        return catalog.resolve(catalog.default("3d").id)
    except InputError:
        return None


def sample_seen_in_training(card: ModelCard) -> bool | None:
    """Whether ``card``'s model was trained on synthetic scans of the sample's patient, whose figures on the
    sample are then no held-out ones; None when its card does not name its training anatomy."""
    from .core.resources import SAMPLE_ANATOMY

    anatomy = card.provenance.get("training_anatomy")
    return SAMPLE_ANATOMY in anatomy if isinstance(anatomy, list) else None


def _files_of_earlier_run(out: Path) -> tuple[set[str], bool]:
    """STL names an earlier demo run wrote into ``out/stl`` and whether it wrote ``overview.png``
    (from its report): only those may be removed when this run writes fewer; files the demo did
    not write are never touched."""
    try:
        report = json.loads((out / "demo_report.json").read_text(encoding="utf-8"))
        names, picture = report.get("stl_names", []), report.get("picture")
    except (OSError, ValueError, AttributeError):
        return set(), False
    stl = {n for n in names if isinstance(n, str) and n == Path(n).name and n.endswith(".stl")}
    return stl, isinstance(picture, str) and Path(picture).name == "overview.png"


def run_demo(out_dir: str | Path, model: str | None = None, device: str = "auto", fast: bool = False,
             picture: bool = True, progress: Progress | None = None) -> DemoResult:
    """Segment the bundled sample and write ``sample_teeth.seg.nrrd``, ``stl/``, ``overview.png``
    and ``demo_report.json`` into ``out_dir`` (their previous versions are replaced)."""
    from .core.export.surfaces import SurfaceOptions, export_surfaces
    from .core.inference import InferenceOptions, Predictor
    from .core.io.atomic import atomic_write_text, make_output_folder
    from .core.io.images import read_label_map, read_volume
    from .core.io.segmentation import write_segmentation
    from .core.metrics.protocols import sts2024_case
    from .core.models.catalog import load_catalog
    from .core.models.folder import read_card
    from .core.resources import sample_scan, sample_scan_labels

    progress = progress or Progress()
    folder = load_catalog().resolve(model) if model else _default_model()  # a bad --model fails before any write
    if folder is not None:
        card = read_card(folder)
        if card.input_kind != "3d":
            raise InputError(f"the demo segments a 3D scan; model {card.id} is for {card.input_kind} panoramic "
                             f"X-rays (try: toothseg segment XRAY.png -o labels.png --model {model})")
    seen = sample_seen_in_training(card) if folder is not None else None
    out = make_output_folder(out_dir, "the demo writes into a folder (-o DIR)")
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    image = read_volume(sample_scan())
    truth = read_label_map(sample_scan_labels())
    if folder is None:
        from .core.inference import Prediction
        from .core.labels import LabelTable

        table = LabelTable.fdi()
        prediction = Prediction(truth, table, warnings=[NO_MODEL_NOTE],
                                report={"labels_found": table.check_array(truth.array)})
        model_name = "none"
    else:
        predictor = Predictor(folder, InferenceOptions(device=device, tta=not fast, fast=fast))
        prediction = predictor.predict(image, progress.sub(0.0, 0.8, "segment"))
        model_name = f"{predictor.card.id} ({folder})"
    seconds["segment"] = round(time.perf_counter() - start, 2)

    earlier, earlier_picture = _files_of_earlier_run(out)
    start = time.perf_counter()
    seg_path = write_segmentation(prediction.labels, prediction.table, out / "sample_teeth.seg.nrrd", overwrite=True,
                                  fields=prediction.header_fields())
    written = []
    if prediction.labels.array.any():
        written = export_surfaces(prediction.labels, prediction.table, out / "stl", SurfaceOptions(smoothing=0.3),
                                  overwrite=True, progress=progress.sub(0.8, 0.95, "surfaces"))
    seconds["export"] = round(time.perf_counter() - start, 2)
    stl_names = sorted(s.path.name for s in written if s.path is not None)
    for name in earlier - set(stl_names):  # teeth an earlier demo run found and this one did not
        (out / "stl" / name).unlink(missing_ok=True)

    picture_path = None
    if picture:
        from .core.export.overview import write_overview

        start = time.perf_counter()
        progress.sub(0.95, 1.0).update(0.0, "picture")
        picture_path = write_overview(image, prediction.labels, prediction.table, out / "overview.png",
                                      title=f"{len(written)} teeth, frontal view")
        seconds["picture"] = round(time.perf_counter() - start, 2)
    elif earlier_picture:  # an old picture of another run would be taken for this one's
        (out / "overview.png").unlink(missing_ok=True)

    found = [int(v) for v in prediction.report.get("labels_found", [])]
    expected = sorted(int(v) for v in set(truth.array.ravel().tolist()) - {0})
    metrics = {} if folder is None else {  # the true labels would score 1.0: no number rather than a hollow one
        key: round(float(value), 4) for key, value in sts2024_case(truth.array, prediction.labels.array).items()}
    result = DemoResult(sample=str(sample_scan()), model=model_name, segmentation=str(seg_path),
                        stl_dir=str(out / "stl"), stl_files=len(written), stl_names=stl_names,
                        picture=str(picture_path) if picture_path else None, report=str(out / "demo_report.json"),
                        teeth_found=found, teeth_expected=expected, metrics=metrics, seconds=seconds,
                        warnings=list(prediction.warnings), handedness=prediction.report.get("handedness", {}),
                        sample_seen_in_training=seen)
    payload: dict[str, Any] = {"note": "the sample's intensities are SYNTHETIC (painted onto real STS-2024 tooth "
                                       "shapes); metrics use the STS-2024 protocol against those shapes",
                               **asdict(result)}
    atomic_write_text(out / "demo_report.json", json.dumps(payload, indent=1), overwrite=True)
    progress.update(1.0, "done")
    return result
