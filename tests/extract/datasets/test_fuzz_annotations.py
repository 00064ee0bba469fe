"""Property tests over every annotation reader: whatever the file holds (truncated or invalid JSON,
wrong types, missing or extra fields, a BOM, CRLF, unicode and spaces in paths, empty files,
negative, inverted or out-of-range segments, huge numbers), reading it gives a dataset whose clips
are all extractable, or one `StepcliError` line, never another exception.

STEPCLI_FUZZ_EXAMPLES sets the examples per reader (a few dozen in the normal suite; thousands
for a long run).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from stepcli.errors import StepcliError
from stepcli.extract.datasets import Dataset, DatasetOptions, load_dataset
from stepcli.pairs import read_pairs

EXAMPLES = int(os.environ.get("STEPCLI_FUZZ_EXAMPLES", "50"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize="STEPCLI_FUZZ_EXAMPLES" not in os.environ)

# the values that break parsers: blanks, signs, huge and non-finite numbers, separators, unicode
WEIRD = st.sampled_from(["", " ", "a b", "ünï cödé", "日本語", "-1", "-0", "0", "1", "3.5", "1e309", "nan", "inf",
                         "-inf", "9" * 30, "\t", '"', ",", ";", "[", "{", "#", "\\", "a/b", " padded "])  # fmt: skip
NAMES = st.one_of(WEIRD, st.text(max_size=12))
NUMBERS = st.one_of(
    st.integers(-5, 400), st.integers(-(2**80), 2**80), st.floats(), st.booleans(), st.none(), WEIRD,
    st.lists(st.integers(-3, 3), max_size=3),
)  # fmt: skip
# most often a valid [start, end) (so that reading gets past the first entry), else anything
FRAME_PAIRS = st.one_of(
    st.tuples(st.integers(0, 300), st.integers(1, 100)).map(lambda p: [p[0], p[0] + p[1]]),
    st.tuples(st.integers(0, 300), st.integers(1, 100)).map(lambda p: [p[0], p[0] + p[1]]),
    st.tuples(NUMBERS, NUMBERS).map(list),
)


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy = NAMES) -> st.SearchStrategy:
    """`good` five times in six: enough valid entries that reading reaches the later ones."""
    return st.one_of(*[good] * 5, bad)


JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | NAMES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def damaged(draw, text: str) -> bytes:
    """`text` as a file, maybe with a BOM, CRLF, cut short, garbage appended, or not UTF-8 at all."""
    how = draw(st.sampled_from(["as-is"] * 12 + ["bom", "crlf", "truncate", "garbage", "latin1", "empty"]))
    if how == "bom":
        return ("\ufeff" + text).encode()
    if how == "crlf":
        return text.replace("\n", "\r\n").encode()
    if how == "truncate":
        return text.encode()[: draw(st.integers(0, max(len(text.encode()) - 1, 0)))]
    if how == "garbage":
        return text.encode() + draw(st.binary(max_size=8))
    if how == "latin1":
        return text.encode("latin-1", errors="replace") + b"\xff\xfe"
    return b"" if how == "empty" else text.encode()


def _drop_or_retype(draw, entry: dict) -> dict:
    """An entry with a field dropped, a field of the wrong type, or an extra field (or unchanged)."""
    entry = dict(entry)
    how = draw(st.sampled_from(["keep"] * 8 + ["drop", "retype", "extra"]))
    if how == "drop" and entry:
        del entry[draw(st.sampled_from(sorted(entry)))]
    elif how == "retype" and entry:
        entry[draw(st.sampled_from(sorted(entry)))] = draw(JSON)
    elif how == "extra":
        entry[draw(NAMES)] = draw(JSON)
    return entry


def check(read: Callable[[], Dataset]) -> None:
    """The property: a dataset every clip of which the pipeline can extract, or one error line."""
    try:
        dataset = read()
    except StepcliError as err:
        assert str(err).strip() and "\n" not in str(err), repr(str(err))
        event("one-line error")
        return
    event("dataset with clips" if dataset.clips else "dataset without clips")
    names = dataset.class_names
    assert len(set(names)) == len(names) and all(isinstance(n, str) and n.strip() for n in names), names
    ids = [c.clip_id for c in dataset.clips]
    assert len(set(ids)) == len(ids)
    for clip in dataset.clips:
        assert isinstance(clip.clip_id, str) and clip.clip_id.strip(), clip
        assert isinstance(clip.label, int) and 0 <= clip.label < len(names), clip
        assert clip.split in ("", "train", "val", "test"), clip
        if clip.frame_range is not None:
            first, stop = clip.frame_range
            assert isinstance(first, int) and isinstance(stop, int) and 0 <= first < stop, clip
        for t in (clip.start, clip.end):
            assert t is None or (math.isfinite(t) and t >= 0), clip
        if clip.start is not None and clip.end is not None:
            assert clip.start < clip.end, clip
    for a, b in dataset.pairs:
        assert a in names and b in names and a != b


def _write(directory: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)


def _in_tmp(test: Callable[[Path], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="stepcli-fuzz-") as tmp:
        test(Path(tmp))


# ---- generic csv, its --classes list and a --pairs file ------------------------------------

CSV_COLUMNS = ["path", "label", "start", "end", "split"]
SECONDS = st.one_of(st.sampled_from(["", "0", "1.5", "2", "-1", "nan", "inf", "1e309", "abc", " 3 "]),
                    st.floats().map(repr), st.integers(-(2**70), 2**70).map(str))  # fmt: skip
SECOND_PAIRS = st.one_of(st.just(("", "")), FRAME_PAIRS.map(lambda p: tuple(map(str, p))), st.tuples(SECONDS, SECONDS))
SPLIT_CELLS = mostly(st.sampled_from(["train", "val", "test", ""]), st.sampled_from(["TRAIN", "training", "bogus"]))


@st.composite
def csv_file(draw) -> bytes:
    columns = draw(mostly(st.permutations(CSV_COLUMNS), st.lists(NAMES, max_size=6)))
    labels = ["open", "close", " open", "ünï"]
    rows = []
    for k in range(draw(st.integers(0, 6))):
        start, end = draw(SECOND_PAIRS)
        cell = {"path": draw(mostly(st.sampled_from([f"v{k}.mp4", f"dir with space/ü{k}.mp4"]), NAMES)),
                "label": draw(mostly(st.sampled_from(labels), NAMES)), "start": start, "end": end,
                "split": draw(SPLIT_CELLS)}  # fmt: skip
        row = [cell.get(c, draw(NAMES)) for c in columns]
        shape = draw(st.sampled_from(["same"] * 8 + ["extra", "short"]))
        rows.append({"same": row, "extra": [*row, draw(NAMES)], "short": row[:-1]}[shape])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([columns, *rows])
    return draw(damaged(out.getvalue()))


CLASS_LIST = st.lists(mostly(st.sampled_from(["open", "close", "ünï"]), NAMES), max_size=5).map("\n".join)


@fuzz
@given(annotations=csv_file(), classes=st.none() | CLASS_LIST.flatmap(damaged))
def test_csv(annotations, classes):
    def read(tmp: Path) -> None:
        _write(tmp, {"list.csv": annotations} | ({"classes.txt": classes} if classes is not None else {}))
        options = DatasetOptions(annotations=tmp / "list.csv", classes=tmp / "classes.txt" if classes else None)
        check(lambda: load_dataset("csv", options))

    _in_tmp(read)


PAIR_LINES = st.lists(mostly(st.sampled_from(["open,close", "close,open", "open, close", "open,open",
                                                 "# c", "open"]), NAMES), max_size=4).map("\n".join)  # fmt: skip
PAIR_JSON = st.one_of(st.just([["open", "close"]]), st.lists(JSON, max_size=3), JSON).map(json.dumps)


@fuzz
@given(pairs=st.one_of(PAIR_LINES, PAIR_JSON).flatmap(damaged))
def test_pair_lists(pairs):
    def read(tmp: Path) -> None:
        _write(tmp, {"list.csv": b"path,label\na.mp4,open\nb.mp4,close\n", "pairs.txt": pairs})
        check(lambda: load_dataset("csv", DatasetOptions(annotations=tmp / "list.csv", pairs=tmp / "pairs.txt")))
        try:
            got = read_pairs(tmp / "pairs.txt", ["open", "close"])
        except StepcliError as err:
            assert "\n" not in str(err)
        else:
            assert all(set(p) == {"open", "close"} for p in got)

    _in_tmp(read)


# ---- Something-Something v2 ------------------------------------------------------------------

SSV2_CLASSES = ["Opening something", "Closing something", "Pushing [something] left"]


@st.composite
def ssv2_files(draw) -> dict[str, bytes]:
    labels = {name.replace("[", "").replace("]", ""): str(i) for i, name in enumerate(SSV2_CLASSES)}
    if draw(st.integers(0, 5)) == 0:
        labels = draw(st.one_of(st.dictionaries(NAMES, NUMBERS, max_size=3), JSON))
    files = {"labels.json": draw(damaged(json.dumps(labels)))}
    for name in draw(st.lists(st.sampled_from(["train.json", "validation.json", "test.json"]), unique=True)):
        entries = []
        for _ in range(draw(st.integers(0, 4))):
            entry = {"id": draw(mostly(st.integers(0, 99).map(str), NUMBERS)),
                     "template": draw(mostly(st.sampled_from(SSV2_CLASSES), NAMES)), "label": "x"}  # fmt: skip
            entries.append(_drop_or_retype(draw, entry))
        files[f"something-something-v2-{name}"] = draw(damaged(json.dumps(entries)))
    if draw(st.booleans()):
        answers = [f"{draw(NAMES)};{draw(st.sampled_from(SSV2_CLASSES))}" for _ in range(draw(st.integers(0, 3)))]
        files["test-answers.csv"] = draw(damaged("\n".join(answers)))
    return files


@fuzz
@given(files=ssv2_files(), classes=st.none() | CLASS_LIST.flatmap(damaged))
def test_ssv2(files, classes):
    def read(tmp: Path) -> None:
        _write(tmp / "labels", files)
        if classes is not None:
            _write(tmp, {"classes.txt": classes})
        options = DatasetOptions(root=tmp, classes=tmp / "classes.txt" if classes is not None else None)
        check(lambda: load_dataset("ssv2", options))

    _in_tmp(read)


# ---- Diving48 --------------------------------------------------------------------------------


@st.composite
def diving48_files(draw) -> dict[str, bytes]:
    vocab = [["Back", "15som", "05Twis", "FREE"], ["Forward", "1som", "NoTwis", "PIKE"]]
    if draw(st.integers(0, 5)) == 0:
        vocab = draw(st.one_of(st.lists(st.lists(NAMES, max_size=4), max_size=3), JSON))
    files = {"Diving48_vocab.json": draw(damaged(json.dumps(vocab)))}
    for name in ("Diving48_V2_train.json", "Diving48_V2_test.json"):
        entries = []
        for _ in range(draw(st.integers(0, 4))):
            first, stop = draw(FRAME_PAIRS)
            entry = {"vid_name": draw(mostly(st.sampled_from(["v1", "v 2", "ü"]), NAMES)),
                     "label": draw(mostly(st.integers(0, 1), NUMBERS)), "start_frame": first,
                     "end_frame": stop}  # fmt: skip
            entries.append(_drop_or_retype(draw, entry))
        files[name] = draw(damaged(json.dumps(entries)))
    return files


@fuzz
@given(files=diving48_files())
def test_diving48(files):
    def read(tmp: Path) -> None:
        _write(tmp, files)
        check(lambda: load_dataset("diving48", DatasetOptions(root=tmp)))

    _in_tmp(read)


# ---- IKEA ASM --------------------------------------------------------------------------------


@st.composite
def ikea_files(draw) -> dict[str, bytes]:
    actions = ["pick up leg", "lay down leg", "NA"]
    database = {}
    for _ in range(draw(st.integers(0, 3))):
        segments = []
        for _ in range(draw(st.integers(0, 3))):
            segment = {"segment": draw(mostly(FRAME_PAIRS, JSON)),
                       "label": draw(mostly(st.sampled_from(actions), NAMES))}  # fmt: skip
            segments.append(_drop_or_retype(draw, segment))
        record = _drop_or_retype(draw, {"subset": draw(SPLIT_CELLS), "annotation": segments})
        database[draw(mostly(st.sampled_from(["Lack/0001", "Kallax/scan 2", "ü/ß"]), NAMES))] = record
    top = draw(mostly(st.just({"version": 1, "database": database}), JSON))
    files = {"gt_segments.json": draw(damaged(json.dumps(top))),
             "indexing_files/atomic_action_list.txt": draw(damaged("\n".join(draw(
                 mostly(st.just(actions), st.lists(NAMES, max_size=3))))))}  # fmt: skip
    if draw(st.booleans()):
        scans = "\n".join(draw(st.lists(mostly(st.sampled_from(["Lack/0001", "Kallax/scan 2"]), NAMES))))
        files["indexing_files/train_cross_env.txt"] = draw(damaged(scans))
        files["indexing_files/test_cross_env.txt"] = draw(damaged(scans[::-1]))
    return files


@fuzz
@given(files=ikea_files())
def test_ikea_asm(files):
    def read(tmp: Path) -> None:
        _write(tmp, files)
        check(lambda: load_dataset("ikea-asm", DatasetOptions(root=tmp)))

    _in_tmp(read)


# ---- Drive&Act -------------------------------------------------------------------------------

DRIVE_COLUMNS = ["participant_id", "file_id", "annotation_id", "frame_start", "frame_end", "activity", "chunk_id"]


@st.composite
def drive_act_file(draw) -> bytes:
    columns = draw(mostly(st.permutations(DRIVE_COLUMNS), st.lists(NAMES, max_size=8)))
    rows = []
    for k in range(draw(st.integers(0, 5))):
        first, stop = draw(FRAME_PAIRS)
        cell = {"participant_id": "1", "file_id": draw(mostly(st.just("vp1/run 1.kinect_color"), NAMES)),
                "annotation_id": str(k), "frame_start": str(first), "frame_end": str(stop),
                "activity": draw(mostly(st.sampled_from(["opening_door_outside", "entering_car"]), NAMES)),
                "chunk_id": draw(mostly(st.just("0"), NAMES))}  # fmt: skip
        rows.append([cell.get(c, draw(NAMES)) for c in columns])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([columns, *rows])
    return draw(damaged(out.getvalue()))


@fuzz
@given(train=drive_act_file(), val=drive_act_file(), test=drive_act_file())
def test_drive_act(train, val, test):
    def read(tmp: Path) -> None:
        names = {f"midlevel.chunks_90.split_0.{part}.csv": data for part, data in
                 (("train", train), ("val", val), ("test", test))}  # fmt: skip
        _write(tmp, names)
        check(lambda: load_dataset("drive-act", DatasetOptions(annotations=tmp)))

    _in_tmp(read)


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00", "\ufeffpath,label\r\na b/ü.mp4,open\r\n".encode()])
def test_csv_edge_files_through_the_cli(tmp_path, content):
    """What the properties promise, through the CLI: exit 2 with one line, or a readable list."""
    from conftest import fails

    (tmp_path / "list.csv").write_bytes(content)
    if content.startswith(b"\xef\xbb\xbf"):  # a BOM and CRLF (as spreadsheets write) are read as plain CSV
        dataset = load_dataset("csv", DatasetOptions(annotations=tmp_path / "list.csv"))
        assert [c.clip_id for c in dataset.clips] == ["a b/ü.mp4"] and dataset.class_names == ["open"]
        return
    fails("extract", "--dataset", "csv", "--annotations", tmp_path / "list.csv", "--out", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
