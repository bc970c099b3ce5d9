"""What "Renumber tooth" changes in a segmentation: pure bookkeeping on segment names, no Slicer.

The Slicer module applies the plan to its segments (name, colour, terminology, label key); keeping
the decision here lets the tests check it. Giving a tooth a number that another segment holds swaps
the two, so no FDI number is ever used twice. A segment that held no tooth number has none to give
back, so the tooth that held the new number becomes "Unnumbered (was Tooth NN …)" and loses its label
key, for review; the ``.seg.nrrd`` reader then gives it a value of its own (as any further segment that
already shared the number). Names are read by :func:`~toothseg.core.labels.fdi_of_segment_name`, as
the reader reads them.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import LabelError
from .labels import LabelInfo, LabelTable, fdi_of_segment_name, is_fdi_tooth

__all__ = ["UNNUMBERED_PREFIX", "renumbering_plan"]

UNNUMBERED_PREFIX = "Unnumbered"
"""Start of the name a tooth gets when its number goes to another segment and none comes back; a
name that no reader takes for a tooth number."""


def renumbering_plan(segment_names: Mapping[str, str], segment_id: str, new_number: int,
                     table: LabelTable | None = None) -> dict[str, LabelInfo | str]:
    """The changes that give segment ``segment_id`` the FDI number ``new_number``.

    ``segment_names`` maps every segment ID of the segmentation to its name. The result maps segment
    IDs to their new label (a :class:`LabelInfo`: name, colour, terminology, key) or, for a segment
    that loses its number, its new name (the caller also removes its label key). Renumbering a tooth
    to its own number only refreshes its colour and terminology."""
    table = table or LabelTable.fdi(deciduous=True)
    if not is_fdi_tooth(new_number):
        raise LabelError(f"{new_number} is not an FDI tooth number (11-48 permanent, 51-85 deciduous)")
    if segment_id not in segment_names:
        raise LabelError("select a tooth segment first")
    plan: dict[str, LabelInfo | str] = {segment_id: table[new_number]}
    holders = [sid for sid, name in segment_names.items()
               if sid != segment_id and fdi_of_segment_name(name) == new_number]
    old_number = fdi_of_segment_name(segment_names[segment_id])
    for index, holder in enumerate(holders):
        if index == 0 and old_number is not None and old_number != new_number:
            plan[holder] = table[old_number]  # a swap: the other tooth takes the freed number
        else:  # nothing to give back (or a number held twice already): flag it for review
            plan[holder] = f"{UNNUMBERED_PREFIX} (was {segment_names[holder]})"
    return plan
