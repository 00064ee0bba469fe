"""The built-in nearly-symmetric class pairs of each dataset, in the dataset's own class names.

``known_pairs`` keeps those whose two names are both in the dataset's class list (after
``--classes``), so a renamed or dropped class never yields a pair; a pair naming a class that
the dataset does not define at all is a mistake in the table, and a warning names it. A
``--pairs FILE`` (read by ``stepcli.pairs.read_pairs``) replaces the table.
"""

from __future__ import annotations

import logging

from stepcli.extract.demo import PAIRS
from stepcli.pairs import Pair

log = logging.getLogger(__name__)

# Something-Something v2: one action and its reversal (or its mirror in direction).
SSV2_PAIRS: list[Pair] = [
    ("Opening something", "Closing something"),
    ("Folding something", "Unfolding something"),
    ("Covering something with something", "Uncovering something"),
    ("Putting something into something", "Taking something out of something"),
    ("Picking something up", "Putting something on a surface"),
    ("Pushing something from left to right", "Pushing something from right to left"),
    ("Pulling something from left to right", "Pulling something from right to left"),
    ("Moving something up", "Moving something down"),
    ("Moving something towards the camera", "Moving something away from the camera"),
    ("Moving something closer to something", "Moving something away from something"),
    ("Moving something and something closer to each other", "Moving something and something away from each other"),
    ("Pushing something onto something", "Pushing something off of something"),
    ("Burying something in something", "Digging something out of something"),
    ("Approaching something with your camera", "Moving away from something with your camera"),
    ("Turning the camera left while filming something", "Turning the camera right while filming something"),
    ("Turning the camera upwards while filming something", "Turning the camera downwards while filming something"),
    (
        "Pretending to open something without actually opening it",
        "Pretending to close something without actually closing it",
    ),
    ("Pretending to put something into something", "Pretending to take something out of something"),
]

# Diving48: a forward and a reverse dive both take off facing the water, a back and an inward
# dive both facing the board; with the same somersaults, twists and position the two differ
# only in the direction of rotation, which no single frame shows.
_DIVING48_VOCAB = """\
Back 15som 05Twis FREE|Back 15som 15Twis FREE|Back 15som 25Twis FREE|Back 15som NoTwis PIKE|Back 15som NoTwis TUCK|
Back 25som 15Twis PIKE|Back 25som 25Twis PIKE|Back 25som NoTwis PIKE|Back 25som NoTwis TUCK|Back 2som 15Twis FREE|
Back 2som 25Twis FREE|Back 35som NoTwis PIKE|Back 35som NoTwis TUCK|Back 3som NoTwis PIKE|Back 3som NoTwis TUCK|
Back Dive NoTwis PIKE|Back Dive NoTwis TUCK|Forward 15som 1Twis FREE|Forward 15som 2Twis FREE|Forward 15som NoTwis PIKE|
Forward 1som NoTwis PIKE|Forward 25som 1Twis PIKE|Forward 25som 2Twis PIKE|Forward 25som 3Twis PIKE|
Forward 25som NoTwis PIKE|Forward 25som NoTwis TUCK|Forward 35som NoTwis PIKE|Forward 35som NoTwis TUCK|
Forward 45som NoTwis TUCK|Forward Dive NoTwis PIKE|Forward Dive NoTwis STR|Inward 15som NoTwis PIKE|
Inward 15som NoTwis TUCK|Inward 25som NoTwis PIKE|Inward 25som NoTwis TUCK|Inward 35som NoTwis TUCK|
Inward Dive NoTwis PIKE|Reverse 15som 05Twis FREE|Reverse 15som 15Twis FREE|Reverse 15som 25Twis FREE|
Reverse 15som 35Twis FREE|Reverse 15som NoTwis PIKE|Reverse 25som 15Twis PIKE|Reverse 25som NoTwis PIKE|
Reverse 25som NoTwis TUCK|Reverse 35som NoTwis TUCK|Reverse Dive NoTwis PIKE|Reverse Dive NoTwis TUCK"""
DIVING48_CLASSES = [name.strip() for name in _DIVING48_VOCAB.replace("\n", "").split("|")]
_OPPOSITE_ROTATION = {"Forward": "Reverse", "Back": "Inward"}
DIVING48_PAIRS: list[Pair] = [
    (name, twin)
    for name in DIVING48_CLASSES
    if name.split(" ", 1)[0] in _OPPOSITE_ROTATION
    and (twin := _OPPOSITE_ROTATION[name.split(" ", 1)[0]] + " " + name.split(" ", 1)[1]) in DIVING48_CLASSES
]

# IKEA ASM: picking a part up and laying it down again.
IKEA_ASM_PAIRS: list[Pair] = [
    (f"pick up {part}", f"lay down {part}")
    for part in ("back panel", "bottom panel", "front panel", "leg", "shelf", "side panel", "table top")
]

# Drive&Act fine-grained activities: the 34 of the ``midlevel.chunks_90.split_*`` files. The
# unsplit ``midlevel.chunks_90.csv`` has 39 (e.g. ``closing_backpack``), too rare to be split.
DRIVE_ACT_CLASSES = """\
closing_bottle|closing_door_inside|closing_door_outside|closing_laptop|drinking|eating|entering_car|
exiting_car|fastening_seat_belt|fetching_an_object|interacting_with_phone|
looking_or_moving_around (e.g. searching)|opening_backpack|opening_bottle|opening_door_inside|
opening_door_outside|opening_laptop|placing_an_object|preparing_food|pressing_automation_button|
putting_laptop_into_backpack|putting_on_jacket|putting_on_sunglasses|reading_magazine|reading_newspaper|
sitting_still|taking_laptop_from_backpack|taking_off_jacket|taking_off_sunglasses|talking_on_phone|
unfastening_seat_belt|using_multimedia_display|working_on_laptop|writing""".replace("\n", "").split("|")
DRIVE_ACT_PAIRS: list[Pair] = [
    ("opening_door_outside", "closing_door_outside"),
    ("opening_door_inside", "closing_door_inside"),
    ("entering_car", "exiting_car"),
    ("fastening_seat_belt", "unfastening_seat_belt"),
    ("putting_on_jacket", "taking_off_jacket"),
    ("putting_on_sunglasses", "taking_off_sunglasses"),
    ("opening_laptop", "closing_laptop"),
    ("opening_bottle", "closing_bottle"),
    ("putting_laptop_into_backpack", "taking_laptop_from_backpack"),
    ("fetching_an_object", "placing_an_object"),
]


def _demo_pairs() -> list[Pair]:
    return list(PAIRS)


PAIR_TABLES = {
    "ssv2": lambda: SSV2_PAIRS,
    "diving48": lambda: DIVING48_PAIRS,
    "ikea-asm": lambda: IKEA_ASM_PAIRS,
    "drive-act": lambda: DRIVE_ACT_PAIRS,
    "demo": _demo_pairs,
}


def table(dataset: str) -> list[Pair]:
    """The built-in pairs of ``dataset`` ([] for datasets without one, e.g. ``csv``)."""
    return list(PAIR_TABLES[dataset]()) if dataset in PAIR_TABLES else []


# the class lists stepcli knows without reading the dataset's files
OFFICIAL_CLASSES = {"diving48": DIVING48_CLASSES, "drive-act": DRIVE_ACT_CLASSES}


def known_pairs(dataset: str, class_names: list[str], official: list[str] | None = None) -> list[Pair]:
    """The built-in pairs of ``dataset`` whose two classes are both in ``class_names``.

    ``official`` is every class the dataset defines (default ``class_names``): a pair naming a
    class outside it is left out with one warning naming the class, so that a wrong name in the
    table, or a dataset version without that class, is seen rather than silently losing a pair.
    """
    names, defined = set(class_names), set(official if official is not None else class_names)
    unknown = sorted({name for pair in table(dataset) for name in pair if name not in defined})
    if unknown:
        log.warning(
            "WARNING: built-in %s pairs name classes that are not in the class list, left out: %s",
            dataset,
            ", ".join(repr(n) for n in unknown),
        )
    return [(a, b) for a, b in table(dataset) if a in names and b in names]
