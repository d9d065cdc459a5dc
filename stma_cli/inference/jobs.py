"""From command-line inputs to a list of video jobs: expansion, masks, output folders, shards."""
from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from stma_cli.errors import StmaError
from stma_cli.io.masks import MAX_FRAME_DIGITS, MAX_ID, parse_mask_arg
from stma_cli.io.safe_fs import read_json
from stma_cli.io.video import FRAME_SUFFIXES, frame_files

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".gif"}
DEFAULT_OUTPUT = Path("stma_output")
_SHARD = re.compile(r"\s*(-?[0-9]{1,18})\s*/\s*(-?[0-9]{1,18})\s*")  # ASCII digits: int() also takes '٣'


@dataclass
class VideoJob:
    """One video to segment: its source, its masks as (frame, path), and its output folder.

    `frames` (start, stop) restricts the run to frames start..stop-1 (stop None: to the end); the masks
    keep the video's frame numbers. `ends` maps a frame to the objects that end there: they are not
    followed across the cut just before it (forward onto it, or backward from it). `error`, if set, is
    reported for the video instead of segmenting it (a problem found in planning). `coco_image_id` picks
    the image of COCO mask files (see `read_mask`).
    """

    source: str
    masks: list[tuple[int, Path]]
    output: Path
    error: str | None = None
    frames: tuple[int, int | None] = (0, None)
    ends: dict[int, list[int]] = field(default_factory=dict)
    coco_image_id: int | None = None


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based): videos index, index+count, index+2*count, ..."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """`K/N` with 0 <= K < N."""
        match = _SHARD.fullmatch(text)
        if match is None:
            raise StmaError(f"--shard {text!r}: expected K/N, e.g. 0/4")
        k, n = int(match[1]), int(match[2])
        if n < 1 or not 0 <= k < n:
            raise StmaError(f"--shard {k}/{n}: K must be in 0..N-1 (got K={k}, N={n})")
        return cls(k, n)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> "Shard":
        """torchrun's RANK/WORLD_SIZE, else a SLURM array's task id/count, else the whole list.

        A SLURM array `--array=MIN-MAX:STEP` runs shard (ID - MIN) / STEP of COUNT.
        """
        if "WORLD_SIZE" in env and "RANK" in env:
            return cls._checked(_int(env, "RANK"), _int(env, "WORLD_SIZE"), "RANK/WORLD_SIZE")
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            offset = _int(env, "SLURM_ARRAY_TASK_ID") - _int(env, "SLURM_ARRAY_TASK_MIN", 0)
            step = _int(env, "SLURM_ARRAY_TASK_STEP", 1)
            if step < 1 or offset % step:
                raise StmaError(f"SLURM_ARRAY_TASK_ID={env['SLURM_ARRAY_TASK_ID']} is not MIN + a multiple of "
                                "SLURM_ARRAY_TASK_STEP; use --shard K/N")
            return cls._checked(offset // step, _int(env, "SLURM_ARRAY_TASK_COUNT"), "SLURM_ARRAY_TASK_ID/COUNT")
        return cls()

    @classmethod
    def _checked(cls, index: int, count: int, source: str) -> "Shard":
        if count < 1 or not 0 <= index < count:
            raise StmaError(f"{source}: shard {index} of {count} does not exist; use --shard K/N")
        return cls(index, count)

    def select(self, items: list) -> list:
        """This shard's share of `items`."""
        return items[self.index::self.count]


def local_device(spec: str, env: Mapping[str, str] = os.environ) -> str:
    """Under torchrun, `auto`/`cuda` means this process's GPU (LOCAL_RANK)."""
    if spec in ("auto", "cuda") and "LOCAL_RANK" in env:
        import torch

        local_rank = _int(env, "LOCAL_RANK")
        if local_rank < 0:
            raise StmaError(f"environment variable LOCAL_RANK={local_rank}: expected 0 or more")
        if torch.cuda.is_available():
            return f"cuda:{local_rank % torch.cuda.device_count()}"
    return spec


def expand_inputs(inputs: Iterable[str], recursive: bool = False) -> list[str]:
    """Videos from paths: files, frame folders, and folders of videos or frame folders: one level down, or
    (`recursive`) every level, a frame folder ending the descent."""
    videos: list[str] = []
    for item in inputs:
        if item == "-":
            videos.append(item)
            continue
        path = Path(item)
        if _is_dir(path) and not _is_frame_folder(path):
            found = _videos_in(path, recursive)
            if not found:
                nested = [p for p in _subfolders(path) if _videos_in(p, True)]
                hint = f"; videos are further down, e.g. in {nested[0]}: use --recursive" if nested else ""
                raise StmaError(f"{path}: folder holds no video files, frames or frame folders{hint}")
            videos += [str(p) for p in found]
        else:
            videos.append(item)
    return videos


def _videos_in(folder: Path, recursive: bool) -> list[Path]:
    """The video files and frame folders in `folder` (and, if `recursive`, in its folders), sorted."""
    found = []
    for child in sorted(folder.iterdir()):
        if _is_video_file(child) or (child.is_dir() and _is_frame_folder(child)):
            found.append(child)
        elif recursive and child.is_dir() and not child.is_symlink():
            found += _videos_in(child, True)
    return found


def _subfolders(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if child.is_dir() and not child.is_symlink())


def video_stem(source: str) -> str:
    """The name a video's outputs and mask template use: file stem, or folder name (`..` gives the real name)."""
    if source == "-":
        return "stdin"
    path = Path(source)
    if _is_dir(path):
        return (path.resolve().name if path.name in ("", ".", "..") else path.name) or "root"
    return path.stem


def output_name_problem(stem: str) -> str | None:
    """Why `stem` cannot name an output folder inside --output, or None if it can."""
    if stem in ("", ".", ".."):
        return f"its name gives the output folder name {stem!r}, which is not a folder inside --output"
    if "/" in stem or "\0" in stem:
        return "its name holds '/' or a NUL byte"
    return None


TEMPLATE_FIELDS = ("stem", "name", "parent", "frame")
MASK_SUFFIXES = {".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jpg", ".jpeg", ".json"}
_FRAME = "\0frame\0"  # stands for {frame} while the other fields are filled


def check_template(template: str) -> None:
    """A --mask-template may use only the plain fields {stem}, {name}, {parent} and {frame}."""
    try:
        parsed = [(name, conversion, spec) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise StmaError(f"--mask-template {template!r}: {exc} (fields: {{stem}}, {{name}}, {{parent}}, "
                        "{frame})") from None
    fields = [name for name, _, _ in parsed]
    for name, conversion, spec in parsed:
        if name not in TEMPLATE_FIELDS:
            raise StmaError(f"--mask-template {template!r}: unknown field {_braced(name)} "
                            "(fields: {stem}, {name}, {parent}, {frame}, without attributes or indices)")
        if conversion or spec:
            raise StmaError(f"--mask-template {template!r}: field {{{name}}} with a conversion or format spec; "
                            "fields are plain: {stem}, {name}, {parent}, {frame}")
    if "frame" in fields and "/" in template[template.index("{frame}"):]:
        raise StmaError(f"--mask-template {template!r}: {{frame}} may only appear in the file name")


def _braced(field: str) -> str:
    """A template field as typed, `{name}`, or as a quoted string if it holds a line break or other unprintables."""
    return f"{{{field}}}" if field.isprintable() else repr(f"{{{field}}}")


def mask_from_template(template: str, source: str) -> Path:
    """Fill `{stem}`, `{name}`, `{parent}` from the video path; relative results are taken from its folder.

    A `{frame}` field is left as the text `{frame}`: `masks_from_template` matches it against files.
    """
    check_template(template)
    path = Path(source)
    try:
        filled = template.format(stem=video_stem(source), name=path.name, parent=path.parent.name, frame=_FRAME)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise StmaError(f"--mask-template {template!r}: {exc} (fields: {{stem}}, {{name}}, {{parent}}, "
                        "{frame})") from None
    filled_path = Path(filled.replace(_FRAME, "{frame}"))
    return filled_path if filled_path.is_absolute() or source == "-" else path.parent / filled_path


def masks_from_template(template: str, source: str, frames: tuple[int, int | None] = (0, None)) -> list[tuple[int, Path]]:
    """A video's masks, as (frame, path), from --mask-template. The template names:

    - a mask file: the mask of the first frame of `frames`;
    - a folder: each file in it named after a frame is that frame's mask (DAVIS, YouTube-VOS): a frame
      number (00042.png is frame 42) or, for a frame folder, the stem of one of its frames;
    - a file name with {frame}: each file that matches, with the frame in place of {frame};
    - a COCO file with several images: each image named after a frame is that frame's mask.

    Only masks within `frames` are kept; none there is an error naming the template's result.
    """
    path = mask_from_template(template, source)
    first, stop = frames
    if "{frame}" in path.name:
        prefix, _, suffix = path.name.partition("{frame}")
        pattern = re.compile(re.escape(prefix) + r"(.+)" + re.escape(suffix))
        found = [(match[1], file) for file in _listing(path.parent, template)
                 if (match := pattern.fullmatch(file.name))]
    elif _is_dir(path):
        found = [(file.stem, file) for file in _listing(path, template) if file.suffix.lower() in MASK_SUFFIXES]
    elif path.suffix.lower() == ".json" and len(images := _coco_images(path)) > 1:
        found = [(Path(str(image.get("file_name", ""))).stem, path) for image in images]
    else:
        return [(first, path)]
    frame_of = _frame_numbering(source)
    masks = sorted({(frame, file) for name, file in found if (frame := frame_of(name)) is not None
                    and frame >= first and (stop is None or frame < stop)})
    if not masks:
        span = f" within --frames {first}:{'' if stop is None else stop}" if frames != (0, None) else ""
        raise StmaError(f"{path}: no mask named after a frame of {source}{span} (--mask-template {template!r})")
    return masks


def _listing(folder: Path, template: str) -> list[Path]:
    try:
        return sorted(file for file in folder.iterdir() if file.is_file())
    except OSError as exc:
        raise StmaError(f"{folder}: cannot list the masks of --mask-template {template!r} "
                        f"({exc.strerror or exc})") from None


def _coco_images(path: Path) -> list:
    """The images of a COCO file (empty for any other JSON, or one that cannot be read: reading it reports why)."""
    try:
        data = read_json(path, "mask")
    except StmaError:
        return []
    images = data.get("images") if isinstance(data, dict) and "annotations" in data else None
    return [image for image in images if isinstance(image, dict)] if isinstance(images, list) else []


def _frame_numbering(source: str) -> Callable[[str], int | None]:
    """From a mask's name to its frame: a frame folder's own stems, else (or failing that) a frame number."""
    stems: dict[str, int] = {}
    if source != "-" and _is_dir(Path(source)):
        stems = {file.stem: index for index, file in enumerate(frame_files(Path(source)))}

    def frame_of(name: str) -> int | None:
        if name in stems:
            return stems[name]
        digits = re.search(r"(\d+)$", name)
        if digits is None or not name.isascii() or len(digits[1]) > 9:
            return None
        return int(digits[1]) if not stems or name.isdecimal() else None

    return frame_of


NAME_FIELDS = ("stem", "name", "parent", "index")
_NAME_SPEC = re.compile(r"0?[0-9]{0,3}d?")  # {index:04d}; no field inside a spec, no width that fills the memory
DEFAULT_NAME_TEMPLATE = "{stem}"


def output_folder(template: str, source: str, index: int) -> Path:
    """A video's folder under --output from `template`: fields {stem}, {name}, {parent} and {index} (its
    0-based place in the whole list, before sharding; format specs such as {index:04d} work). The result
    is a relative path of one or more folders, none of them '', '.' or '..'."""
    path = Path(source)
    fields = {"stem": video_stem(source), "name": path.name, "parent": path.parent.name, "index": index}
    try:
        parsed = [(field, conversion, spec) for _, field, spec, conversion in string.Formatter().parse(template)
                  if field is not None]
        unknown = [name for name, _, _ in parsed if name not in NAME_FIELDS]
        if unknown:
            raise KeyError(unknown[0])
        if any(conversion or not _NAME_SPEC.fullmatch(spec) for _, conversion, spec in parsed):
            raise ValueError("fields are plain, with at most a number format such as {index:04d}")
        filled = template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise StmaError(f"--name-template {template!r}: {exc} (fields: {{stem}}, {{name}}, {{parent}}, "
                        "{index})") from None
    parts = filled.split("/")
    for part in parts:
        problem = output_name_problem(part)
        if problem is not None:
            raise StmaError(f"{source}: --name-template {template!r} gives {filled!r}: {problem}")
    return Path(*parts)


def parse_frames(text: str | None) -> tuple[int, int | None]:
    """`--frames START:END` (0-based, END exclusive, either may be empty) as (start, stop or None)."""
    if text is None:
        return 0, None
    start, colon, stop = (part.strip() for part in text.partition(":"))
    if not colon or any(_number(part) is None for part in (start, stop) if part):
        raise StmaError(f"--frames {text!r}: expected START:END, e.g. 100:200, 100: or :200 (0-based, END excluded)")
    first = _number(start) if start else 0
    last = _number(stop) if stop else None
    if last is not None and last <= first:
        raise StmaError(f"--frames {first}:{last}: END must be after START")
    return first, last


def parse_ends(values: Iterable[str]) -> dict[int, list[int]]:
    """`--end ID:FRAME` values as {frame: [ids]}: object ID is not followed across the cut before FRAME."""
    ends: dict[int, list[int]] = {}
    for value in values:
        id_text, colon, frame_text = value.partition(":")
        object_id, frame = _number(id_text), _number(frame_text)
        if not colon or object_id is None or frame is None:
            raise StmaError(f"--end {value!r}: expected ID:FRAME, e.g. 2:140 (object 2 ends before frame 140)")
        if not 1 <= object_id <= MAX_ID:
            raise StmaError(f"--end {object_id}:{frame}: object ids are 1..{MAX_ID}")
        ends.setdefault(frame, []).append(object_id)
    return ends


def _number(text: str) -> int | None:
    """A frame number or object id as typed: ASCII digits only (`str.isdigit` also takes '²', which `int`
    refuses), at most MAX_FRAME_DIGITS of them, spaces around allowed; None otherwise."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= MAX_FRAME_DIGITS else None


def build_jobs(videos: list[str], masks: list[str], mask_template: str | None, output: Path | None, *,
               own_folder: bool = True, name_template: str | None = None, frames: tuple[int, int | None] = (0, None),
               ends: dict[int, list[int]] | None = None, coco_image_id: int | None = None) -> list[VideoJob]:
    """One job per video, in `output` (default stma_output/) under the name `name_template` gives.

    `own_folder`: the one video was named itself (not found in a folder or read from a list), so that
    `output`, if given, is its own folder, unless a `name_template` is given. A video whose name gives no
    safe folder name inside the output (a file `...mp4` has the stem `..`) gets a job that only reports
    the problem, so the rest of the batch goes on. Masks without a frame number are for the first frame
    of `frames`.
    """
    if not videos:
        raise StmaError("no video given (paths as arguments, or one per line on standard input)")
    if masks and mask_template:
        raise StmaError("give either --mask or --mask-template, not both")
    if masks and len(videos) > 1:
        raise StmaError(f"--mask applies to one video, but {len(videos)} were given: use --mask-template")
    if ends and len(videos) > 1:
        raise StmaError(f"--end applies to one video, but {len(videos)} were given")
    if not masks and not mask_template:
        raise StmaError("no mask given: use --mask PATH (or FRAME:PATH) or --mask-template")
    if mask_template is not None:
        check_template(mask_template)
    first = frames[0]
    mask_specs = [parse_mask_arg(m, default_frame=first) for m in masks]
    plan = {"frames": frames, "ends": dict(ends or {}), "coco_image_id": coco_image_id}

    def masks_of(video: str) -> list[tuple[int, Path]]:
        return mask_specs or masks_from_template(mask_template, video, frames)

    if len(videos) == 1 and own_folder and output is not None and name_template is None:
        if "\0" in videos[0]:
            return [VideoJob(videos[0], [], output, error=f"{videos[0]}: its path holds a NUL byte")]
        return [VideoJob(videos[0], masks_of(videos[0]), output, **plan)]
    root = output if output is not None else DEFAULT_OUTPUT
    template = name_template or DEFAULT_NAME_TEMPLATE
    seen: dict[Path, str] = {}
    jobs = []
    for index, video in enumerate(videos):
        if "\0" in video:
            jobs.append(VideoJob(video, [], root, error=f"{video}: its path holds a NUL byte"))
            continue
        problem = None if name_template else output_name_problem(video_stem(video))
        if problem is not None:
            jobs.append(VideoJob(video, [], root, error=f"{video}: {problem}; rename it"))
            continue
        folder = root / output_folder(template, video, index)
        if folder in seen:
            hint = "" if name_template else "; --name-template '{parent}/{stem}' keeps them apart"
            raise StmaError(f"{video} and {seen[folder]} would share the output folder {folder}{hint}")
        seen[folder] = video
        try:
            jobs.append(VideoJob(video, masks_of(video), folder, **plan))
        except StmaError as error:  # this video's masks are not there: the rest of the batch goes on
            jobs.append(VideoJob(video, [], folder, error=str(error)))
    return jobs


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    """An integer environment variable; StmaError names it if it is not one."""
    value = env.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StmaError(f"environment variable {name}={value!r}: expected an integer") from None


def _is_dir(path: Path) -> bool:
    """Whether `path` is a folder; False for paths the system refuses (too long, NUL bytes): opening
    them reports the problem, per video."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def _is_frame_folder(path: Path) -> bool:
    """Images and no video files: a folder of videos may also hold their mask PNGs."""
    files = [p for p in path.iterdir() if p.is_file()]
    return any(p.suffix.lower() in FRAME_SUFFIXES for p in files) and not any(_is_video_file(p) for p in files)
