"""The built-in nearly-symmetric class pairs of each dataset, in the dataset's own class names.

``known_pairs`` keeps those whose two names are both in the dataset's class list (after
``--classes``), so a renamed or dropped class never yields a pair. A ``--pairs FILE`` (read by
``stepcli.pairs.read_pairs``) replaces the table.
"""

from __future__ import annotations

from stepcli.pairs import Pair

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

# Drive&Act fine-grained (midlevel) activities.
DRIVE_ACT_PAIRS: list[Pair] = [
    ("opening_door_outside", "closing_door_outside"),
    ("opening_door_inside", "closing_door_inside"),
    ("entering_car", "exiting_car"),
    ("fastening_seat_belt", "unfastening_seat_belt"),
    ("putting_on_jacket", "taking_off_jacket"),
    ("putting_on_sunglasses", "taking_off_sunglasses"),
    ("opening_laptop", "closing_laptop"),
    ("opening_bottle", "closing_bottle"),
    ("opening_backpack", "closing_backpack"),
    ("putting_laptop_into_backpack", "taking_laptop_from_backpack"),
    ("fetching_an_object", "placing_an_object"),
]


def _demo_pairs() -> list[Pair]:
    from stepcli.extract.demo import PAIRS

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


def known_pairs(dataset: str, class_names: list[str]) -> list[Pair]:
    """The built-in pairs of ``dataset`` whose two classes are both in ``class_names``."""
    names = set(class_names)
    return [(a, b) for a, b in table(dataset) if a in names and b in names]
