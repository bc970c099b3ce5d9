"""ToothSegLogic: everything the panel does, usable without the panel (Python console, self-test).

The Logic talks MRML only through Slicer's own I/O: a volume node is saved to a temporary NRRD
(Slicer's writer stores LPS geometry), segmented by the ``toothseg`` command line in a separate
process, and the resulting ``.seg.nrrd`` — named FDI segments with colours and SNOMED CT
terminology — is loaded back as a segmentation node. Export and "save as corrected case" go
through ``toothseg.core`` on files written by Slicer, so every file ToothSeg writes comes from the
same tested code as the command line.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from .Commands import (checkpointImportArguments, importedModelId, jobOutcome, segmentationArguments,
                       segmentationResultMessage)
from .ProcessRunner import ToothSegProcess

__all__ = ["ToothSegLogic"]

TEETH_SUFFIX = " teeth"


def _moduleDir() -> Path:
    return Path(__file__).resolve().parent.parent


def _saveNode(node, path: Path) -> Path:
    """Write a node with Slicer's own writer; a failed write is an error here, not a missing file later."""
    if not slicer.util.saveNode(node, str(path)):
        raise RuntimeError(f"Could not write {node.GetName()!r} to {path}.")
    return path


def _packageDir() -> str:
    """Folder that holds the ``toothseg`` package (the scripted-modules folder of the extension)."""
    import toothseg

    return str(Path(toothseg.__file__).resolve().parent.parent)


class ToothSegLogic(ScriptedLoadableModuleLogic):
    """Segmentation, correction bookkeeping and export for the ToothSeg module."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.process: ToothSegProcess | None = None
        self.workDir = Path(tempfile.mkdtemp(prefix="ToothSeg-"))

    # ------------------------------------------------------------------ dependencies
    @staticmethod
    def ensureDependencies() -> None:
        """Install ToothSeg's Python requirements and PyTorch (through the PyTorch extension) on first use."""
        requirements = _moduleDir() / "Resources" / "requirements.txt"
        try:
            import slicer.packaging

            slicer.packaging.pip_ensure(slicer.packaging.load_requirements(requirements), requester="ToothSeg")
        except ImportError:  # Slicer releases before slicer.packaging
            missing = []
            for module, package in (("slicerio", "slicerio"), ("nrrd", "pynrrd"), ("safetensors", "safetensors"),
                                    ("h5py", "h5py"), ("tqdm", "tqdm"), ("yaml", "PyYAML")):
                try:
                    __import__(module)
                except ImportError:
                    missing.append(package)
            if missing:
                slicer.util.pip_install(" ".join(missing))
        import PyTorchUtils

        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            if torchLogic.installTorch(askConfirmation=True) is None:
                raise RuntimeError("PyTorch is required to segment teeth; it was not installed.")

    # ------------------------------------------------------------------ models
    @staticmethod
    def catalog():
        from toothseg.core.models.catalog import load_catalog

        return load_catalog()

    def modelEntries(self, inputKind: str | None = None) -> list:
        entries = self.catalog().entries
        return [e for e in entries if inputKind is None or e.input_kind == inputKind]

    def defaultModelId(self, inputKind: str) -> str:
        """The catalogue's default installed model for 3D scans or 2D panoramics ("" if none is installed)."""
        from toothseg.core.errors import InputError

        try:
            return self.catalog().default(inputKind).id
        except InputError:
            return ""

    def modelDescription(self, modelId: str) -> str:
        """HTML model card: classes, spacing, training data, validation metrics, licence, or how to get it."""
        from html import escape

        from toothseg.core.errors import InputError
        from toothseg.core.models.folder import read_card

        # every text comes from a model card, possibly a shared one: escaped, so that it shows as written
        # and cannot bring markup (links, local images) into the panel
        entry = self.catalog().get(modelId)
        lines = [f"<b>{escape(entry.name)}</b> ({escape(entry.status())})"]
        if entry.description:
            lines.append(escape(entry.description))
        if entry.available:
            try:
                card = read_card(entry.folder)
            except InputError as exc:  # an edited or damaged card: say so in the panel, not as a traceback
                return "<br>".join(lines + [escape(f"The model card cannot be read: {exc}")])
            numbered = f", numbered as {card.output_table.name}" if card.output_label_table is not None else ""
            lines.append(escape(f"Classes: {card.num_classes - 1} ({card.label_table.name}{numbered}); spacing "
                                f"({card.input_axes}): {card.spacing_zyx or 'native'} mm; patch: {card.patch_size}"))
            if card.nnunet is not None:
                lines.append(escape("Runs with nnU-Net's own preprocessing and blending (imported nnU-Net model)."))
            if card.provenance:
                data = card.provenance.get("data_source", "")
                synthetic = " (synthetic intensities)" if card.provenance.get("synthetic_intensities") else ""
                lines.append(escape(f"Training: {card.provenance.get('method', '')} on {data}{synthetic}"))
            if card.metrics:
                lines.append(escape("Validation: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                               for k, v in card.metrics.items())))
        else:
            lines.append(escape("Weights not installed: " + entry.source.get("how", "")))
        if entry.license:
            lines.append(escape(f"Licence: {entry.license}"))
        return "<br>".join(lines)

    def addModelFolder(self, folder: str) -> str:
        """Verify (SHA-256, schema, weights) and install a model folder; returns its ID."""
        return self.catalog().add_folder(folder).id

    def importTargetId(self, zipPath: str, selectedId: str | None) -> str:
        """The ID an imported nnU-Net zip is installed under (:func:`importedModelId`)."""
        try:
            entry = self.catalog().get(selectedId) if selectedId else None
        except Exception:  # not a catalogue ID (a removed folder): name the model after its file
            entry = None
        waiting = entry is not None and entry.method == "nnunet" and not entry.available
        return importedModelId(zipPath, selectedId, waiting)

    def startCheckpointImport(self, zipPath: str, modelId: str, onFinished=None) -> ToothSegProcess:
        """``toothseg models import-checkpoint nnunet --zip FILE --id ID --install`` in a background process
        (checkpoints read with weights_only; the model is written in a scratch folder and installed only
        once whole, so Cancel leaves nothing); ``onFinished(ok, message)``."""
        return self._startModelJob(checkpointImportArguments(zipPath, modelId), "Import",
                                   f"Model {modelId} imported and installed.", None, onFinished)

    def downloadSource(self, modelId: str) -> tuple[str | None, str]:
        """(archive URL or None, how to get the weights otherwise) of a catalogue model."""
        from toothseg.core.models.download import archive_of

        entry = self.catalog().get(modelId)
        archive = archive_of(entry)
        how = entry.source.get("how", "") if isinstance(entry.source, dict) else ""
        urls = entry.source.get("urls", []) if isinstance(entry.source, dict) else []
        links = "".join(f'<br><a href="{url}">{url}</a>' for url in urls)
        return (str(archive["url"]) if archive and archive.get("sha256") else None), how + links

    def startModelDownload(self, modelId: str, onProgress=None, onFinished=None) -> ToothSegProcess:
        """``toothseg models get ID`` in a background process (SHA-256 checked before anything is
        installed); ``onFinished(ok, message)``."""
        return self._startModelJob(["models", "get", modelId, "--progress-lines"], "Download",
                                   f"Model {modelId} installed.", onProgress, onFinished)

    def _startModelJob(self, arguments: list[str], what: str, doneMessage: str, onProgress,
                       onFinished) -> ToothSegProcess:
        """A background ``toothseg`` job that installs a model; ``onFinished(ok, message)``, where a
        cancelled job says that nothing was installed."""
        if self.process is not None and self.process.isRunning():
            raise RuntimeError("Another ToothSeg task is running.")

        def finished(exitCode: int, cancelled: bool, log: str) -> None:
            state, message = jobOutcome(exitCode, cancelled, log, what,
                                        f"{what} cancelled; nothing was installed.")
            if onFinished:
                onFinished(state == "ok", doneMessage if state == "ok" else message)

        self.process = ToothSegProcess(arguments, onProgress=onProgress, onFinished=finished,
                                       pythonPath=_packageDir())
        self.process.start()
        return self.process

    @staticmethod
    def deviceDescription() -> str:
        try:
            import torch
        except ImportError:
            return "PyTorch not installed yet"
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            return f"GPU: {torch.cuda.get_device_name()} ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
        return "No CUDA GPU found: the CPU will be used"

    # ------------------------------------------------------------------ sample and checks
    @staticmethod
    def sampleScanPath() -> Path:
        from toothseg.core.resources import resources_dir

        return resources_dir() / "SampleData" / "SyntheticCBCT_Validation_0002.nii.gz"

    def loadSample(self):
        node = slicer.util.loadVolume(str(self.sampleScanPath()))
        node.SetName("ToothSeg sample (synthetic CBCT)")
        return node

    @staticmethod
    def volumeWarning(volumeNode) -> str:
        """A warning when the volume does not look like a dental CBCT or a panoramic X-ray."""
        from toothseg.core.volume import dental_input_warnings

        if volumeNode is None or volumeNode.GetImageData() is None:
            return ""
        dims = volumeNode.GetImageData().GetDimensions()
        warnings = dental_input_warnings(tuple(dims), tuple(volumeNode.GetSpacing()), dims[2] == 1,
                                         slicer.util.arrayFromVolume(volumeNode))
        return " ".join(w[0].upper() + w[1:] + "." for w in warnings)

    # ------------------------------------------------------------------ segmentation
    def startSegmentation(self, volumeNode, modelId: str, device: str = "auto", fast: bool = False, tta: bool = True,
                          uncertainty: bool = False, jaws: str = "auto", onProgress=None,
                          onFinished=None) -> ToothSegProcess:
        """Segment ``volumeNode`` in a background process. ``jaws``: which jaws the scan holds (``both``,
        ``upper``, ``lower``), as the user knows it, or ``auto``.

        ``onFinished(segmentationNode, uncertaintyNode, message)`` is called when it ends."""
        if volumeNode is None:
            raise ValueError("Select an input volume first.")
        if self.process is not None and self.process.isRunning():
            raise RuntimeError("A segmentation is already running.")
        runDir = self.workDir / time.strftime("run-%Y%m%d-%H%M%S")
        runDir.mkdir(parents=True, exist_ok=True)
        inputPath = _saveNode(volumeNode, runDir / "input.nrrd")
        # a .seg.nrrd for panoramic X-rays too (one slice): FDI names, colours and terminology come with
        # it, where a label map imported into Slicer would take its names from a generic colour table
        outputPath = runDir / "teeth.seg.nrrd"
        uncertaintyPath = runDir / "uncertainty.nrrd" if uncertainty else None
        arguments = segmentationArguments(inputPath, outputPath, runDir / "report.json", modelId, device, fast, tta,
                                          uncertaintyPath, jaws)

        def finished(exitCode: int, cancelled: bool, log: str) -> None:
            state, message = jobOutcome(exitCode, cancelled, log, "Segmentation", "Segmentation cancelled.")
            if state != "ok":
                segmentationNode = uncertaintyNode = None
            else:
                try:
                    segmentationNode, uncertaintyNode, message = self._loadResult(
                        volumeNode, outputPath, uncertaintyPath, runDir / "report.json")
                except Exception as exc:  # noqa: BLE001 - a Qt slot: an escaping error would leave the panel "running"
                    logging.exception("ToothSeg: loading the result failed")
                    segmentationNode = uncertaintyNode = None
                    message = f"The segmentation finished but could not be loaded from {outputPath}: {exc}"
            if onFinished:
                onFinished(segmentationNode, uncertaintyNode, message)

        self.process = ToothSegProcess(arguments, onProgress=onProgress, onFinished=finished, pythonPath=_packageDir())
        self.process.start()
        return self.process

    def cancel(self) -> None:
        if self.process is not None:
            self.process.cancel()

    def lastTaskCancelled(self) -> bool:
        """Whether the latest background task ended because Cancel/Stop was pressed: the widget
        then shows no error dialog (decided by this flag, not by the wording of the message)."""
        return self.process is not None and bool(self.process.cancelled)

    def _loadResult(self, volumeNode, outputPath: Path, uncertaintyPath: Path | None, reportPath: Path):
        name = volumeNode.GetName() + TEETH_SUFFIX
        segmentationNode = slicer.util.loadSegmentation(str(outputPath))
        segmentationNode.SetName(name)
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentationNode.CreateClosedSurfaceRepresentation()
        uncertaintyNode = None
        if uncertaintyPath is not None and uncertaintyPath.exists():
            uncertaintyNode = slicer.util.loadVolume(str(uncertaintyPath))
            uncertaintyNode.SetName(volumeNode.GetName() + " uncertainty")
        report = json.loads(reportPath.read_text(encoding="utf-8")) if reportPath.exists() else {}
        message, _ = segmentationResultMessage(report)
        segmentationNode.SetAttribute("ToothSeg.Report", json.dumps(report))
        segmentationNode.SetAttribute("ToothSeg.Handedness", (report.get("handedness") or {}).get("verdict", ""))
        return segmentationNode, uncertaintyNode, message

    @staticmethod
    def mirroredNumberingWarning(segmentationNode) -> str | None:
        """The warning to show when the result's left/right numbering looks mirrored, else None."""
        report = json.loads(segmentationNode.GetAttribute("ToothSeg.Report") or "{}")
        return segmentationResultMessage(report)[1]

    @staticmethod
    def toothUncertainty(segmentationNode) -> list[tuple[int, float]]:
        """(FDI, mean uncertainty) of each tooth, most uncertain first ("review these first")."""
        report = json.loads(segmentationNode.GetAttribute("ToothSeg.Report") or "{}")
        values = [(int(k), float(v)) for k, v in report.get("tooth_uncertainty", {}).items()]
        return sorted(values, key=lambda item: -item[1])

    # ------------------------------------------------------------------ correction
    @staticmethod
    def renumberTooth(segmentationNode, segmentId: str, newNumber: int) -> str:
        """Give a segment a new FDI number (name, colour, terminology); the tooth that had the number
        takes the old one (a swap), so no number is used twice. The plan is ``toothseg.core``'s."""
        from toothseg.core.errors import LabelError
        from toothseg.core.renumbering import renumbering_plan

        segmentation = segmentationNode.GetSegmentation()
        names = {sid: segmentation.GetSegment(sid).GetName() for sid in segmentation.GetSegmentIDs()}
        try:
            plan = renumbering_plan(names, segmentId, int(newNumber))
        except LabelError as exc:
            raise ValueError(str(exc)[:1].upper() + str(exc)[1:] + ".") from exc
        for sid, change in plan.items():
            if isinstance(change, str):  # the tooth lost its number: no key may give it back on saving
                segmentation.GetSegment(sid).SetName(change)
                segmentation.GetSegment(sid).RemoveTag("ToothSeg.LabelKey")
            else:
                ToothSegLogic._applyLabel(segmentation.GetSegment(sid), change)
        return plan[segmentId].segment_name

    @staticmethod
    def _applyLabel(segment, info) -> None:
        import slicerio

        segment.SetName(info.segment_name)
        segment.SetColor(*info.color)
        if info.terminology is not None:
            segment.SetTag("TerminologyEntry", slicerio.terminology_entry_to_string(info.terminology.to_slicer()))
        segment.SetTag("ToothSeg.LabelKey", info.key)

    def saveCorrectedCase(self, volumeNode, segmentationNode, poolDir: str) -> tuple[Path, list[str]]:
        """Store the corrected labels in the active-learning case pool as a new revision (the volume is
        copied in the first time); an earlier correction is never overwritten. Returns the revision file
        and the names of segments that are no class (e.g. ``Segment_1`` drawn by hand), which the
        user should name as teeth before fine-tuning."""
        from toothseg.core.io.images import read_volume, write_volume
        from toothseg.core.io.segmentation import read_segmentation
        from toothseg.core.pool.store import save_corrected_case

        staging = Path(tempfile.mkdtemp(prefix="corrected-", dir=self.workDir))
        try:
            imagePath = _saveNode(volumeNode, staging / "image.nrrd")
            segPath = _saveNode(segmentationNode, staging / "labels.seg.nrrd")
            corrected = read_segmentation(segPath, reference=read_volume(imagePath))
            labelsPath = write_volume(corrected.labels, staging / "labels.nii.gz")
            return save_corrected_case(poolDir, volumeNode.GetName(), imagePath, labelsPath), corrected.unrecognised
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # ------------------------------------------------------------------ active learning
    @staticmethod
    def poolSummary(poolDir: str) -> str:
        """One line on the pool (cases per status, model, versions, missing or replaced images)."""
        from toothseg.core.pool.store import describe_pool

        return describe_pool(poolDir)

    def openNextPoolCase(self, poolDir: str):
        """Load the predicted case the model is least sure of (entropy) with its prediction, then mark
        it in review; returns (case ID, volume node, segmentation node)."""
        from toothseg.core.pool.ranking import choose_next
        from toothseg.core.pool.store import CasePool

        pool = CasePool(poolDir)
        state = pool.read()
        caseId = choose_next(state, 1, "entropy", exclude=pool.stale_predictions(state))[0]
        record = state.cases[caseId]
        volumeNode, segmentationNode = self.loadPoolCase(caseId, pool.path(record.image), pool.path(record.prediction))
        pool.set_status([caseId], "in_review", "opened in 3D Slicer")
        return caseId, volumeNode, segmentationNode

    def loadPoolCase(self, caseId: str, imagePath: Path, predictionPath: Path):
        """The case's volume (named by its case ID, which Save as corrected case maps back to the
        pool) and its prediction as a segmentation with FDI names, colours and terminology."""
        from toothseg.core.io.images import read_label_map
        from toothseg.core.io.segmentation import write_segmentation
        from toothseg.core.labels import LabelTable

        volumeNode = slicer.util.loadVolume(str(imagePath), properties={"name": caseId})
        staging = Path(tempfile.mkdtemp(prefix="pool-case-", dir=self.workDir))
        try:
            segPath = staging / f"{caseId}.seg.nrrd"
            labels = read_label_map(predictionPath)
            write_segmentation(labels, LabelTable.fdi(deciduous=True, pulp=True, jaws=True), segPath)
            segmentationNode = slicer.util.loadSegmentation(str(segPath))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        segmentationNode.SetName(caseId + TEETH_SUFFIX)
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentationNode.CreateClosedSurfaceRepresentation()
        return volumeNode, segmentationNode

    def _startPoolJob(self, arguments: list, what: str, onProgress, onLog, onFinished) -> ToothSegProcess:
        """A ``toothseg al …`` job in the background; ``onFinished(ok, message)``."""
        if self.process is not None and self.process.isRunning():
            raise RuntimeError("Another ToothSeg task is running.")

        def finished(exitCode: int, cancelled: bool, log: str) -> None:
            lines = [line for line in log.splitlines() if line.strip()]
            state, message = jobOutcome(exitCode, cancelled, log, what, f"{what} stopped; start it again to resume.")
            ok = state == "ok"
            if ok:
                message = " ".join(lines[-2:]) if lines else f"{what} finished."
            if onFinished:
                onFinished(ok, message)

        self.process = ToothSegProcess(arguments, onProgress=onProgress, onLog=onLog, onFinished=finished,
                                       pythonPath=_packageDir())
        self.process.start()
        return self.process

    def startPoolPrediction(self, poolDir: str, device: str = "auto", onProgress=None, onLog=None,
                            onFinished=None) -> ToothSegProcess:
        """``toothseg al predict POOL``: predictions and uncertainty scores for every open case."""
        return self._startPoolJob(["al", "predict", poolDir, "--device", device, "--progress-lines"],
                                  "Prediction of the pool", onProgress, onLog, onFinished)

    @staticmethod
    def stoppedFinetune(poolDir: str):
        """The pool's stopped fine-tuning run (``toothseg.core.pool.store.StoppedFinetune``), or None."""
        from toothseg.core.pool.store import stopped_finetune

        return stopped_finetune(poolDir)

    def startFinetune(self, poolDir: str, recipe: str = "", device: str = "auto", restart: bool = False,
                      onProgress=None, onLog=None, onFinished=None) -> ToothSegProcess:
        """``toothseg al finetune POOL``: a new model version from the corrected cases, promoted only
        if it is not worse on held-out corrected cases; stopping keeps a checkpoint to resume from
        (``restart`` discards a stopped run instead)."""
        arguments = ["al", "finetune", poolDir, "--device", device, "--progress-lines"]
        if recipe:
            arguments += ["--recipe", recipe]
        if restart:
            arguments.append("--restart")
        return self._startPoolJob(arguments, "Fine-tuning", onProgress, onLog, onFinished)

    # ------------------------------------------------------------------ export
    def export(self, volumeNode, segmentationNode, outDir: str, fileFormat: str = "stl", coordinateSystem: str = "LPS",
               smoothing: float = 0.3, decimate: float = 0.0, merged: bool = False, labelMap: bool = True,
               segNrrd: bool = True, overwrite: bool = False) -> list[str]:
        """Surfaces per tooth (or merged), label map and .seg.nrrd, named after the segmentation; returns the
        files written. The rules (an earlier export is replaced only with ``overwrite``, and then whole; a
        panoramic X-ray gets a PNG and no surfaces) live in ``toothseg.core.export.case_files``.

        Raises:
            toothseg.core.errors.OutputExistsError: an earlier export is there and ``overwrite`` is False.
        """
        from toothseg.core.export.case_files import export_case_files
        from toothseg.core.export.surfaces import SurfaceOptions
        from toothseg.core.io.images import read_volume
        from toothseg.core.io.segmentation import read_segmentation
        from toothseg.core.names import plain_name_from

        staging = Path(tempfile.mkdtemp(prefix="export-", dir=self.workDir))
        try:
            image = read_volume(_saveNode(volumeNode, staging / "image.nrrd"))
            seg = read_segmentation(_saveNode(segmentationNode, staging / "labels.seg.nrrd"), reference=image)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        base = plain_name_from(segmentationNode.GetName(), "segmentation")  # DICOM names hold ':' and '/'
        options = SurfaceOptions(smoothing=smoothing, decimate=decimate, coordinate_system=coordinateSystem,
                                 file_format=fileFormat)
        written = export_case_files(seg.labels, seg.table, outDir, base, options, merged=merged, label_map=labelMap,
                                    seg_nrrd=segNrrd, overwrite=overwrite)
        logging.info("ToothSeg export: %d files in %s", len(written), outDir)
        return [str(path) for path in written]
