"""What "Renumber tooth" changes in a segmentation: pure bookkeeping on segment names, no Slicer.

The Slicer module applies the plan to its segments (name, colour, terminology); keeping the decision
here lets the tests check it. Giving a tooth a number that another segment holds swaps the two, so no
FDI number is ever used twice; a segment that is not a ToothSeg tooth (no "Tooth NN" name) has no
number to give back, so the one that held the number is renamed "… (was Tooth NN …)" for review (as
is any further segment that already shared the number).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import LabelError
from .labels import LabelInfo, LabelTable, is_fdi_tooth

__all__ = ["tooth_number_of_segment", "renumbering_plan"]

_TOOTH_NAME = re.compile(r"Tooth (\d{2})(?: \([^()]*\))?")


def tooth_number_of_segment(name: str) -> int | None:
    """The FDI number of a segment named as ToothSeg names teeth (``Tooth 36 (lower left first molar)``
    or ``Tooth 36``), else None (pulp, jaws, a user's own segment)."""
    match = _TOOTH_NAME.fullmatch(name.strip())
    if match is None or not is_fdi_tooth(int(match.group(1))):
        return None
    return int(match.group(1))


def renumbering_plan(segment_names: Mapping[str, str], segment_id: str, new_number: int,
                     table: LabelTable | None = None) -> dict[str, LabelInfo | str]:
    """The changes that give segment ``segment_id`` the FDI number ``new_number``.

    ``segment_names`` maps every segment ID of the segmentation to its name. The result maps segment
    IDs to their new label (a :class:`LabelInfo`: name, colour, terminology) or, for a segment that
    only needs a new name, that name. Renumbering a tooth to its own number changes nothing but its
    colour and terminology (it returns the one entry)."""
    table = table or LabelTable.fdi(deciduous=True)
    if not is_fdi_tooth(new_number):
        raise LabelError(f"{new_number} is not an FDI tooth number (11-48 permanent, 51-85 deciduous)")
    if segment_id not in segment_names:
        raise LabelError("select a tooth segment first")
    target = table[new_number]
    plan: dict[str, LabelInfo | str] = {segment_id: target}
    holders = [sid for sid, name in segment_names.items()
               if sid != segment_id and tooth_number_of_segment(name) == new_number]
    old_number = tooth_number_of_segment(segment_names[segment_id])
    for index, holder in enumerate(holders):
        if index == 0 and old_number is not None and old_number != new_number:
            plan[holder] = table[old_number]  # a swap: the other tooth takes the freed number
        else:  # nothing to give back (or a number held twice already): flag it for review
            plan[holder] = f"{segment_names[holder]} (was {target.segment_name})"
    return plan
