"""ToothSeg: per-tooth segmentation of dental CBCT and panoramic X-rays in 3D Slicer.

A thin shell: the panel (Resources/UI/ToothSeg.ui) binds to a typed parameter node; the work is done
by ToothSegLib.Logic, which runs ``toothseg`` (the same code as the command line) in a separate
process and exchanges files through Slicer's own readers and writers.
"""

from pathlib import Path
from typing import Annotated

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from ToothSegLib.Commands import MIRRORED_NUMBERING_TITLE
from ToothSegLib.Logic import ToothSegLogic


class ToothSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("ToothSeg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["PyTorchUtils", "Segmentations"]
        self.parent.contributors = ["ToothSeg developers"]
        self.parent.helpText = _(
            "Segments every tooth of a dental CBCT (or panoramic X-ray) with FDI numbers, standard colours and "
            "SNOMED CT terminology; correct the result in the Segment Editor, export one STL per tooth, and keep "
            "corrected cases for fine-tuning. Inference runs in a separate process with progress and cancel."
        )
        self.parent.acknowledgementText = _(
            "Methods from RAIL, U-Mamba2-SSL, coarse-to-fine pseudo-labels (STS-2024), BCP and seed papers; "
            "sample tooth shapes from the MICCAI STS-2024 challenge (MIT)."
        )


@parameterNodeWrapper
class ToothSegParameterNode:
    """Panel state, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    fastMode: bool = False
    testTimeAugmentation: bool = True
    jawsInView: Annotated[str, Choice(["auto", "both", "upper", "lower"])] = "auto"
    computeUncertainty: bool = False
    exportFormat: Annotated[str, Choice(["stl", "obj"])] = "stl"
    coordinateSystem: Annotated[str, Choice(["LPS", "RAS"])] = "LPS"
    smoothing: Annotated[float, WithinRange(0.0, 1.0)] = 0.3
    decimation: Annotated[float, WithinRange(0.0, 0.95)] = 0.0
    mergedSurfaces: bool = False
    exportLabelMap: bool = True
    exportSegmentationFile: bool = True
    exportFolder: Path
    poolFolder: Path
    finetuneRecipe: Path


class ToothSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ToothSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ToothSegLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.addModelButton.connect("clicked(bool)", self.onAddModel)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.getWeightsButton.connect("clicked(bool)", self.onGetWeights)
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.renumberButton.connect("clicked(bool)", self.onRenumber)
        self.ui.saveCorrectedButton.connect("clicked(bool)", self.onSaveCorrected)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.predictPoolButton.connect("clicked(bool)", self.onPredictPool)
        self.ui.nextCaseButton.connect("clicked(bool)", self.onNextCase)
        self.ui.finetuneButton.connect("clicked(bool)", self.onFinetune)
        self.ui.finetuneStopButton.connect("clicked(bool)", self.onCancel)
        self.ui.poolFolderLineEdit.connect("currentPathChanged(QString)", self.refreshPoolStatus)
        self.ui.finetuneCollapsibleButton.connect("contentsCollapsed(bool)", self.refreshPoolStatus)

        self.ui.segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(
            slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode", "ToothSegSegmentEditor"))
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setEnabled(False)
        self.ui.deviceInfoLabel.text = self.logic.deviceDescription()
        self.populateModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic:
            self.logic.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(ToothSegParameterNode(self.logic.getParameterNode()))
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        node = self._parameterNode
        running = self.logic.process is not None and self.logic.process.isRunning()
        haveInput = bool(node and node.inputVolume)
        haveModel = self.ui.modelComboBox.currentData is not None
        self.ui.getWeightsButton.enabled = haveModel and not running and not self._modelInstalled()
        self.ui.importModelButton.enabled = not running
        self.ui.applyButton.enabled = haveInput and haveModel and not running
        self.ui.applyButton.toolTip = _("Segment the teeth") if haveInput else _("Select or load a volume first")
        haveResult = bool(node and node.segmentation)
        for button in (self.ui.renumberButton, self.ui.saveCorrectedButton, self.ui.exportButton):
            button.enabled = haveResult and haveInput and not running
        havePool = bool(self._poolFolderText())
        for button in (self.ui.predictPoolButton, self.ui.nextCaseButton, self.ui.finetuneButton):
            button.enabled = havePool and not running
        self.ui.finetuneStopButton.enabled = running

    # ------------------------------------------------------------------ input
    def onLoadSample(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not load the sample scan."), waitCursor=True):
            self._parameterNode.inputVolume = self.logic.loadSample()

    def onInputChanged(self, node) -> None:
        if node is None or node.GetImageData() is None:
            self.ui.inputInfoLabel.text = ""
            return
        dims = node.GetImageData().GetDimensions()
        spacing = node.GetSpacing()
        text = _("{x} x {y} x {z} voxels, {sx:.3g} x {sy:.3g} x {sz:.3g} mm").format(
            x=dims[0], y=dims[1], z=dims[2], sx=spacing[0], sy=spacing[1], sz=spacing[2])
        warning = self.logic.volumeWarning(node)
        self._selectModelForKind("2d" if dims[2] == 1 else "3d")
        self.ui.inputInfoLabel.text = text + (("\n" + _("Warning: ") + warning) if warning else "")

    # ------------------------------------------------------------------ models
    def populateModels(self) -> None:
        self.ui.modelComboBox.clear()
        with slicer.util.tryWithErrorDisplay(_("Could not read the model catalogue.")):
            for entry in self.logic.modelEntries():
                label = f"{entry.name} [{entry.input_kind.upper()}]"
                if entry.input_kind in entry.default_for and entry.available:
                    label += " — " + _("default")
                if not entry.available:
                    label += " — " + _("weights not installed")
                self.ui.modelComboBox.addItem(label, entry.id)

    def _selectModelForKind(self, inputKind: str) -> None:
        """Keep the chosen model if it fits the input; otherwise switch to the default for this kind."""
        modelId = self.ui.modelComboBox.currentData
        try:
            if modelId and self.logic.catalog().get(modelId).input_kind == inputKind:
                return
        except Exception:  # a broken catalogue is reported by populateModels
            return
        default = self.logic.defaultModelId(inputKind)
        if default:
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.findData(default))

    def onModelChanged(self, index) -> None:
        modelId = self.ui.modelComboBox.currentData
        if modelId:
            self.ui.modelCardLabel.text = self.logic.modelDescription(modelId)
        self._updateButtons()

    def onAddModel(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, _("Choose a ToothSeg model folder"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("This folder is not a valid ToothSeg model."), waitCursor=True):
            modelId = self.logic.addModelFolder(folder)
            self.populateModels()
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.findData(modelId))

    def onImportModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(None, _("Choose an nnU-Net model zip"), "",
                                              _("nnU-Net model (*.zip)"))
        if isinstance(path, (tuple, list)):  # PythonQt returns the path; Qt for Python (path, filter)
            path = path[0]
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("The import could not start."), waitCursor=True):
            modelId = self.logic.importTargetId(path, self.ui.modelComboBox.currentData)
            self.logic.startCheckpointImport(path, modelId,
                                             onFinished=lambda ok, message: self.onImportFinished(ok, message, modelId))
            self.ui.progressBar.setVisible(True)
            self.ui.progressBar.setRange(0, 0)  # busy: an import reports no fraction, only that it runs
            self.ui.statusLabel.text = _("Importing {path} as {modelId}…").format(path=path, modelId=modelId)
            self.ui.cancelButton.setEnabled(True)
            self._updateButtons()

    def onImportFinished(self, ok: bool, message: str, modelId: str) -> None:
        self.ui.cancelButton.setEnabled(False)
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.setVisible(False)
        self.ui.statusLabel.text = message
        if ok:
            self.populateModels()
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.findData(modelId))
        elif not self.logic.lastTaskCancelled():
            slicer.util.errorDisplay(message)
        self._updateButtons()

    def _modelInstalled(self) -> bool:
        modelId = self.ui.modelComboBox.currentData
        try:
            return bool(modelId) and self.logic.catalog().get(modelId).available
        except Exception:  # a broken catalogue is reported by populateModels
            return False

    def onGetWeights(self) -> None:
        modelId = self.ui.modelComboBox.currentData
        with slicer.util.tryWithErrorDisplay(_("Could not get the weights."), waitCursor=True):
            url, how = self.logic.downloadSource(modelId)
            if url is None:
                # No checksummed archive: say where the weights come from and how to import them.
                slicer.util.infoDisplay(_("These weights are not published as a checksummed archive. "
                                          "How to get them:") + "<br><br>" + how, windowTitle=_("Get weights"))
                return
            if not slicer.util.confirmOkCancelDisplay(
                    _("Download the model from {url}? Its SHA-256 is checked before anything is installed.").format(
                        url=url), windowTitle=_("Get weights")):
                return
            self.logic.startModelDownload(modelId, onProgress=self.onProgress, onFinished=self.onDownloadFinished)
            self.ui.progressBar.setVisible(True)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Downloading…")
            self.ui.cancelButton.setEnabled(True)
            self._updateButtons()

    def onDownloadFinished(self, ok: bool, message: str) -> None:
        self.ui.cancelButton.setEnabled(False)
        self.ui.progressBar.setVisible(False)
        self.ui.statusLabel.text = message
        if ok:
            modelId = self.ui.modelComboBox.currentData
            self.populateModels()
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.findData(modelId))
        elif not self.logic.lastTaskCancelled():
            slicer.util.errorDisplay(message)
        self._updateButtons()

    # ------------------------------------------------------------------ segment
    def onApply(self) -> None:
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            self.logic.ensureDependencies()
            self.logic.startSegmentation(node.inputVolume, self.ui.modelComboBox.currentData, node.device,
                                         node.fastMode, node.testTimeAugmentation, node.computeUncertainty,
                                         jaws=node.jawsInView, onProgress=self.onProgress, onFinished=self.onFinished)
            # shown once the job runs: a refused start leaves no progress bar behind with nothing to progress
            self.ui.progressBar.setVisible(True)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Starting…")
            self.ui.cancelButton.setEnabled(True)
            self._updateButtons()

    def onProgress(self, fraction: float, stage: str) -> None:
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = stage

    def onCancel(self) -> None:
        self.ui.statusLabel.text = _("Cancelling…")
        self.logic.cancel()

    def onFinished(self, segmentationNode, uncertaintyNode, message: str) -> None:
        self.ui.cancelButton.setEnabled(False)
        self.ui.progressBar.setVisible(False)
        self.ui.statusLabel.text = message
        if segmentationNode is not None:
            self._parameterNode.segmentation = segmentationNode
            self.ui.segmentEditorWidget.setSegmentationNode(segmentationNode)
            self.ui.segmentEditorWidget.setSourceVolumeNode(self._parameterNode.inputVolume)
            if uncertaintyNode is not None:
                slicer.util.setSliceViewerLayers(background=self._parameterNode.inputVolume,
                                                 foreground=uncertaintyNode, foregroundOpacity=0.4)
            self.showReviewTable(segmentationNode)
            mirrored = self.logic.mirroredNumberingWarning(segmentationNode)
            if mirrored:  # a wrong-side tooth number is a clinical error: not only a line in the status
                slicer.util.warningDisplay(mirrored, windowTitle=MIRRORED_NUMBERING_TITLE)
        elif message and not self.logic.lastTaskCancelled():
            slicer.util.errorDisplay(message)
        self._updateButtons()

    def showReviewTable(self, segmentationNode) -> None:
        ranking = self.logic.toothUncertainty(segmentationNode)
        table = self.ui.reviewTable
        table.setRowCount(len(ranking))
        for row, (fdi, value) in enumerate(ranking):
            table.setItem(row, 0, qt.QTableWidgetItem(str(fdi)))
            table.setItem(row, 1, qt.QTableWidgetItem(f"{value:.3f}"))

    # ------------------------------------------------------------------ correct
    def onRenumber(self) -> None:
        segmentId = self.ui.segmentEditorWidget.currentSegmentID()
        with slicer.util.tryWithErrorDisplay(_("Could not renumber the tooth.")):
            newNumber = int(self.ui.renumberSpinBox.value)
            name = self.logic.renumberTooth(self._parameterNode.segmentation, segmentId, newNumber)
            self.ui.statusLabel.text = _("Renamed to {name}").format(name=name)

    def onSaveCorrected(self) -> None:
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not save the corrected case."), waitCursor=True):
            path, unrecognised = self.logic.saveCorrectedCase(node.inputVolume, node.segmentation, self._poolDir())
            self.ui.statusLabel.text = _("Corrected labels saved as {path}").format(path=path)
            self.refreshPoolStatus()
        if unrecognised:
            slicer.util.warningDisplay(
                _("Saved, but these segments are no tooth: {names}.\n\nFine-tuning refuses them until each is "
                  "named as a tooth (Renumber tooth) or removed; then save the case again.").format(
                    names=", ".join(unrecognised)),
                windowTitle=_("ToothSeg"))

    # ------------------------------------------------------------------ fine-tune (active learning)
    def _poolFolderText(self) -> str:
        """The chosen pool folder, or "" (an empty Path parameter reads back as ".")."""
        folder = str(self._parameterNode.poolFolder or "") if self._parameterNode else ""
        return "" if folder in ("", ".") else folder

    def _poolDir(self) -> str:
        folder = self._poolFolderText()
        if not folder:
            raise ValueError(_("Choose a case-pool folder (under Correct) first."))
        return folder

    def refreshPoolStatus(self, *args) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not read the case pool.")):
            folder = self._poolFolderText()
            self.ui.poolStatusLabel.text = self.logic.poolSummary(folder) if folder else \
                _("Choose a case-pool folder under Correct.")

    def _startPoolJob(self, start, startingText: str) -> None:
        log = self.ui.finetuneLogTextEdit
        start(onProgress=self.onPoolProgress, onLog=log.appendPlainText, onFinished=self.onPoolJobFinished)
        # after a successful start only: a refused one ("another task is running") keeps the last job's log
        self.ui.finetuneProgressBar.value = 0
        log.clear()
        self.ui.statusLabel.text = startingText
        self._updateButtons()

    def onPredictPool(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not start the prediction of the pool."), waitCursor=True):
            self.logic.ensureDependencies()
            poolDir, device = self._poolDir(), self._parameterNode.device
            self._startPoolJob(lambda **kw: self.logic.startPoolPrediction(poolDir, device, **kw),
                               _("Predicting the pool…"))

    def onFinetune(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not start fine-tuning."), waitCursor=True):
            self.logic.ensureDependencies()
            poolDir, device = self._poolDir(), self._parameterNode.device
            recipe = str(self._parameterNode.finetuneRecipe or "")
            recipe = "" if recipe in ("", ".") else recipe
            restart = self._askRestartStoppedFinetune(poolDir)
            if restart is None:
                return
            self._startPoolJob(lambda **kw: self.logic.startFinetune(poolDir, recipe, device, restart, **kw),
                               _("Fine-tuning…"))

    def _askRestartStoppedFinetune(self, poolDir: str):
        """False: no stopped run, or resume it; True: discard it and start afresh; None: the user cancelled.
        Discarding is confirmed separately, so that a "No" meant as "not now" loses no training."""
        stopped = self.logic.stoppedFinetune(poolDir)
        if stopped is None:
            return False
        if stopped.recipe_missing:
            return True if slicer.util.confirmOkCancelDisplay(
                _("Fine-tuning {version} was stopped, and its recipe {recipe} is gone, so it cannot resume. "
                  "Discard it and start afresh?").format(version=stopped.version, recipe=stopped.recipe),
                windowTitle=_("Fine-tune")) else None
        if slicer.util.confirmYesNoDisplay(
                _("Fine-tuning {version} (started {started}) was stopped. Resume it, with the recipe and settings "
                  "it started with?").format(version=stopped.version, started=stopped.started),
                windowTitle=_("Fine-tune")):
            return False
        return True if slicer.util.confirmOkCancelDisplay(
            _("Discard the stopped fine-tuning {version} and its progress, and start afresh with the chosen "
              "recipe?").format(version=stopped.version), windowTitle=_("Fine-tune")) else None

    def onPoolProgress(self, fraction: float, stage: str) -> None:
        self.ui.finetuneProgressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = stage

    def onPoolJobFinished(self, ok: bool, message: str) -> None:
        self.ui.statusLabel.text = message
        self.ui.finetuneLogTextEdit.appendPlainText(message)
        if ok:
            self.ui.finetuneProgressBar.value = 100
            self.populateModels()  # a new model version is in the catalogue
        elif not self.logic.lastTaskCancelled():
            slicer.util.errorDisplay(message)
        self.refreshPoolStatus()
        self._updateButtons()

    def onNextCase(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not load the next case."), waitCursor=True):
            caseId, volumeNode, segmentationNode = self.logic.openNextPoolCase(self._poolDir())
            self._parameterNode.inputVolume = volumeNode
            self._parameterNode.segmentation = segmentationNode
            self.ui.segmentEditorWidget.setSegmentationNode(segmentationNode)
            self.ui.segmentEditorWidget.setSourceVolumeNode(volumeNode)
            self.ui.correctCollapsibleButton.collapsed = False
            self.ui.statusLabel.text = _("Case {case}: correct it, then Save as corrected case.").format(case=caseId)
            self.refreshPoolStatus()

    # ------------------------------------------------------------------ export
    def onExport(self) -> None:
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            if not node.exportFolder or not str(node.exportFolder):
                raise ValueError(_("Choose an export folder first."))
            self.logic.ensureDependencies()  # a segmentation loaded from a file may come before any Apply
            from toothseg.core.errors import OutputExistsError

            try:
                written = self._export(overwrite=False)
            except OutputExistsError as exc:
                # an earlier export of this segmentation: replace it (whole) only if the user says so
                if not slicer.util.confirmOkCancelDisplay(
                        _("Replace the earlier export? Its surfaces folder is replaced as a whole.") + "\n\n"
                        + str(exc), windowTitle=_("Export")):
                    return
                written = self._export(overwrite=True)
            report = _("{count} files written to {folder} (mm, {system})").format(
                count=len(written), folder=node.exportFolder, system=node.coordinateSystem)
            if node.inputVolume.GetImageData().GetDimensions()[2] == 1:
                report = _("{count} files written to {folder}; a 2D X-ray has no surfaces to export").format(
                    count=len(written), folder=node.exportFolder)
            self.ui.exportReportLabel.text = report

    def _export(self, overwrite: bool) -> list[str]:
        node = self._parameterNode
        return self.logic.export(node.inputVolume, node.segmentation, str(node.exportFolder), node.exportFormat,
                                 node.coordinateSystem, node.smoothing, node.decimation, node.mergedSurfaces,
                                 node.exportLabelMap, node.exportSegmentationFile, overwrite=overwrite)


class ToothSegTest(ScriptedLoadableModuleTest):
    """Self-test for a real Slicer with the extension installed: sample scan → bundled model → segments → STL."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SegmentSampleAndExport()

    def test_SegmentSampleAndExport(self):
        import tempfile

        logic = ToothSegLogic()
        volume = logic.loadSample()
        self.assertIsNotNone(volume)
        modelId = logic.defaultModelId("3d")
        self.assertTrue(modelId, "no bundled 3D model")
        done = {}

        def finished(segmentationNode, uncertaintyNode, message):
            done["node"], done["message"] = segmentationNode, message

        process = logic.startSegmentation(volume, modelId, device="cpu", fast=True, onFinished=finished)
        process.process.waitForFinished(-1)
        slicer.app.processEvents()
        node = done.get("node")
        self.assertIsNotNone(node, done.get("message"))
        names = [node.GetSegmentation().GetNthSegment(i).GetName()
                 for i in range(node.GetSegmentation().GetNumberOfSegments())]
        self.assertTrue(names and all(n.startswith("Tooth ") for n in names), names)
        if len(names) >= 2:  # Renumber tooth: giving the first tooth the second's number swaps the two
            segmentation = node.GetSegmentation()
            firstId, secondId = segmentation.GetNthSegmentID(0), segmentation.GetNthSegmentID(1)
            secondNumber = int(names[1].split()[1])
            logic.renumberTooth(node, firstId, secondNumber)
            self.assertEqual(segmentation.GetSegment(firstId).GetName(), names[1])
            self.assertEqual(segmentation.GetSegment(secondId).GetName(), names[0])
        with tempfile.TemporaryDirectory() as folder:
            written = logic.export(volume, node, folder)
            self.assertTrue(any(p.endswith(".stl") for p in written))
        self.delayDisplay("ToothSeg self-test passed")
