"""Post-processing steps for label maps (registry; each step works label by label in its bounding box).

Every step takes ``(labels (Z, Y, X) int array, spacing_zyx in mm, **options)`` and returns a new
array; connectivity is full (26-neighbourhood in 3D, 8 in 2D), as in RAIL's and nnU-Net's code. A step
with a keyword parameter ``image`` also receives the scan's intensities on the same grid (or None where
the caller has none), one with ``jaws_in_view`` what the user said the scan holds (``both``, ``upper``,
``lower``; None: not said), and one with ``notes`` a list to which it appends what the user should know of
an assumption it had to make (shown with the result's warnings); none is an option a model card can set.

Worked example (``remove_small``, 1 mm voxels)::

    >>> labels = np.zeros((1, 5, 5), np.uint8); labels[0, :2, :2] = 11; labels[0, 4, 4] = 11
    >>> apply_steps(labels, (1, 1, 1), [{"name": "remove_small", "min_mm3": 2}])[0, 4, 4]
    0
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError

__all__ = ["register_step", "postprocessing_steps", "step_problems", "apply_steps", "JAWS_IN_VIEW",
           "takes_jaws_in_view"]

_STEPS: dict[str, Callable[..., np.ndarray]] = {}
#: Options with an upper bound besides the general "finite and >= 0" (step name -> option -> maximum).
_MAXIMA: dict[str, dict[str, float]] = {}
#: Options that are 0 (off) or at least a minimum (step name -> option -> minimum).
_OFF_OR_AT_LEAST: dict[str, dict[str, float]] = {}
#: Keyword parameters the pipeline fills in itself, never a model card (see the module docstring).
_PIPELINE_INPUTS = ("image", "jaws_in_view", "notes")
#: What ``jaws_in_view`` may be: the jaws whose teeth a scan holds, as its user knows them.
JAWS_IN_VIEW = ("both", "upper", "lower")


def register_step(name: str, maxima: dict[str, float] | None = None,
                  off_or_at_least: dict[str, float] | None = None) -> Callable:
    """Register a step under ``name``. Its options (the keyword arguments after ``spacing_zyx``) are sizes,
    distances, fractions or weights: every value must be a finite number >= 0, at most ``maxima[option]``
    and either 0 or at least ``off_or_at_least[option]`` where given (checked by :func:`step_problems` when
    a model card or recipe is read, not hours later)."""
    def wrap(func: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        _STEPS[name] = func
        _MAXIMA[name] = dict(maxima or {})
        _OFF_OR_AT_LEAST[name] = dict(off_or_at_least or {})
        return func

    return wrap


def postprocessing_steps() -> list[str]:
    return sorted(_STEPS)


def _structure(ndim: int) -> np.ndarray:
    return ndimage.generate_binary_structure(ndim, ndim)


def _boxes(labels: np.ndarray) -> list[tuple[int, tuple[slice, ...]]]:
    objects = ndimage.find_objects(labels)
    return [(value + 1, box) for value, box in enumerate(objects) if box is not None]


def _squeeze(labels: np.ndarray) -> tuple[np.ndarray, bool]:
    """2D maps arrive as (1, Y, X): use 2D connectivity for them."""
    if labels.ndim == 3 and labels.shape[0] == 1:
        return labels[0], True
    return labels, False


@register_step("remove_small")
def remove_small(labels: np.ndarray, spacing_zyx: Sequence[float], min_mm3: float = 50.0) -> np.ndarray:
    """Remove connected components smaller than ``min_mm3`` (mm³, or mm² for 2D) from every label."""
    data, flat = _squeeze(labels)
    out = data.copy()
    voxel = float(np.prod(spacing_zyx[-data.ndim:]))
    min_voxels = min_mm3 / voxel
    for value, box in _boxes(data):
        region = data[box] == value
        components, count = ndimage.label(region, _structure(data.ndim))
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())
        small = np.flatnonzero(sizes < min_voxels)
        small = small[small > 0]
        if small.size:
            view = out[box]
            view[np.isin(components, small)] = 0
    return out[None] if flat else out


@register_step("largest_component")
def largest_component(labels: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Keep only the largest connected component of every label."""
    data, flat = _squeeze(labels)
    out = data.copy()
    for value, box in _boxes(data):
        components, count = ndimage.label(data[box] == value, _structure(data.ndim))
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            view = out[box]
            view[(components > 0) & (components != int(sizes.argmax()))] = 0
    return out[None] if flat else out


@register_step("fill_holes")
def fill_holes(labels: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
    """Fill enclosed background holes inside every label (never overwrites another label)."""
    data, flat = _squeeze(labels)
    out = data.copy()
    for value, box in _boxes(data):
        region = data[box] == value
        filled = ndimage.binary_fill_holes(region)
        view = out[box]
        view[filled & (view == 0)] = value
    return out[None] if flat else out


@register_step("merge_fragments", maxima={"max_fraction": 1.0})
def merge_fragments(labels: np.ndarray, spacing_zyx: Sequence[float], max_fraction: float = 0.5) -> np.ndarray:
    """One label per connected tooth: a fragment of label A (not its largest component, and smaller
    than ``max_fraction`` of it) that touches another label B is relabelled B — the label it shares
    most of its border with; fragments touching no other label are left to ``remove_small``.

    Three passes over each label's bounding box, whatever the number of fragments: the fragment ids
    are spread one voxel outwards (grey dilation), and (fragment, neighbour label) pairs counted.
    """
    data, flat = _squeeze(labels)
    out = data.copy()
    structure = _structure(data.ndim)
    for value, box in _boxes(data):
        grown = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(box, data.shape))
        region = data[grown]
        components, count = ndimage.label(region == value, structure)
        if count < 2:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        largest = int(sizes.argmax())
        fragment_ids = np.flatnonzero((sizes > 0) & (sizes < max_fraction * sizes[largest]))
        fragment_ids = fragment_ids[fragment_ids != largest]
        if fragment_ids.size == 0:
            continue
        fragments = np.where(np.isin(components, fragment_ids), components, 0)
        spread = ndimage.grey_dilation(fragments, footprint=structure)
        border = (spread > 0) & (fragments == 0) & (region != 0) & (region != value)
        if not border.any():
            continue
        n_labels = int(data.max()) + 1
        pairs = np.bincount(spread[border].astype(np.int64) * n_labels + region[border].astype(np.int64),
                            minlength=(count + 1) * n_labels).reshape(count + 1, n_labels)
        target = np.zeros(count + 1, dtype=data.dtype)
        touching = pairs.sum(1) > 0
        target[touching] = pairs[touching].argmax(1)
        relabel = target[fragments]
        view = out[grown]
        view[relabel > 0] = relabel[relabel > 0]
    return out[None] if flat else out


def step_problems(steps: Any) -> list[str]:
    """What is wrong with a list of steps, in words (empty when nothing is): not a list of objects with a
    known ``name``, an option the step does not take, or a value that is not a finite number >= 0 (or is
    above the step's maximum). A negative ``min_mm3`` would keep every fragment and a negative
    ``type_weight`` would reward wrong tooth types, silently; they are refused instead."""
    if not isinstance(steps, (list, tuple)):
        return [f"post-processing must be a list of steps, got {type(steps).__name__}"]
    problems = []
    for index, step in enumerate(steps):
        if not isinstance(step, dict) or step.get("name") not in _STEPS:
            name = step.get("name") if isinstance(step, dict) else step
            problems.append(f"step {index}: unknown post-processing step {name!r} "
                            f"(known: {', '.join(postprocessing_steps())})")
            continue
        name = step["name"]
        accepted = [option for option in list(inspect.signature(_STEPS[name]).parameters)[2:]
                    if option not in _PIPELINE_INPUTS]
        for option, value in step.items():
            if option == "name":
                continue
            if option not in accepted:
                problems.append(f"step {index} ({name}): unknown option {option!r} "
                                f"(it takes: {', '.join(accepted) or 'none'})")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                problems.append(f"step {index} ({name}): {option} must be a finite number >= 0, got {value!r}")
            elif value > _MAXIMA[name].get(option, math.inf):
                problems.append(f"step {index} ({name}): {option} must be at most {_MAXIMA[name][option]}, "
                                f"got {value!r}")
            elif 0 < value < _OFF_OR_AT_LEAST[name].get(option, 0):
                problems.append(f"step {index} ({name}): {option} must be 0 (off) or at least "
                                f"{_OFF_OR_AT_LEAST[name][option]}, got {value!r}")
    return problems


def takes_jaws_in_view(steps: Sequence[dict[str, Any]]) -> bool:
    """Whether any of ``steps`` (known ones) uses what the user said of the jaws in the scan."""
    return any(step.get("name") in _STEPS and "jaws_in_view" in inspect.signature(_STEPS[step["name"]]).parameters
               for step in steps if isinstance(step, dict))


def apply_steps(labels: np.ndarray, spacing_zyx: Sequence[float], steps: Sequence[dict[str, Any]],
                image: np.ndarray | None = None, jaws_in_view: str | None = None,
                notes: list[str] | None = None) -> np.ndarray:
    """Run ``steps`` (``[{"name": "remove_small", "min_mm3": 30}, …]``) in order, after
    :func:`step_problems` found nothing wrong with them; ``image`` (the intensities on the labels' grid)
    and ``jaws_in_view`` (:data:`JAWS_IN_VIEW`, or None) go to the steps that take them, and so does
    ``notes``, to which they append their messages for the user (None: the messages are dropped)."""
    problems = step_problems(steps)
    if problems:
        raise InputError("post-processing: " + "; ".join(problems))
    if jaws_in_view is not None and jaws_in_view not in JAWS_IN_VIEW:
        raise InputError(f"jaws in view: {jaws_in_view!r} is none of {', '.join(JAWS_IN_VIEW)}")
    if image is not None and image.shape != labels.shape:
        raise ValueError(f"post-processing: image {image.shape} and labels {labels.shape} are not on one grid")
    for step in steps:
        options = dict(step)
        name = options.pop("name")
        parameters = inspect.signature(_STEPS[name]).parameters
        if "image" in parameters:
            options["image"] = image
        if "jaws_in_view" in parameters:
            options["jaws_in_view"] = jaws_in_view
        if "notes" in parameters:
            options["notes"] = notes if notes is not None else []
        labels = _STEPS[name](labels, spacing_zyx, **options)
    return labels
