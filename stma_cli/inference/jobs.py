"""From command-line inputs to a list of video jobs: expansion, masks, output folders, shards."""
from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from stma_cli.errors import StmaError
from stma_cli.inference.pipeline import VideoJob
from stma_cli.io.masks import parse_mask_arg

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".gif"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_OUTPUT = Path("stma_output")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based): videos index, index+count, index+2*count, ..."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """`K/N` with 0 <= K < N."""
        try:
            k, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise StmaError(f"--shard {text!r}: expected K/N, e.g. 0/4") from None
        if n < 1 or not 0 <= k < n:
            raise StmaError(f"--shard {text}: K must be in 0..N-1 (got K={k}, N={n})")
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


def expand_inputs(inputs: Iterable[str]) -> list[str]:
    """Videos from paths: files, frame folders, and folders of videos or frame folders (one level)."""
    videos: list[str] = []
    for item in inputs:
        if item == "-":
            videos.append(item)
            continue
        path = Path(item)
        if _is_dir(path) and not _is_frame_folder(path):
            children = sorted(p for p in path.iterdir() if _is_video_file(p) or (p.is_dir() and _is_frame_folder(p)))
            if not children:
                raise StmaError(f"{path}: folder holds no video files, frames or frame folders")
            videos += [str(p) for p in children]
        else:
            videos.append(item)
    return videos


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


TEMPLATE_FIELDS = ("stem", "name", "parent")


def check_template(template: str) -> None:
    """A --mask-template may use only the plain fields {stem}, {name} and {parent}."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise StmaError(f"--mask-template {template!r}: {exc} (fields: {{stem}}, {{name}}, {{parent}})") from None
    for field in fields:
        if field not in TEMPLATE_FIELDS:
            raise StmaError(f"--mask-template {template!r}: unknown field {{{field}}} "
                            "(fields: {stem}, {name}, {parent}, without attributes or indices)")


def mask_from_template(template: str, source: str) -> Path:
    """Fill `{stem}`, `{name}`, `{parent}` from the video path; relative results are taken from its folder."""
    check_template(template)
    path = Path(source)
    try:
        filled = Path(template.format(stem=video_stem(source), name=path.name, parent=path.parent.name))
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise StmaError(f"--mask-template {template!r}: {exc} (fields: {{stem}}, {{name}}, {{parent}})") from None
    return filled if filled.is_absolute() or source == "-" else path.parent / filled


NAME_FIELDS = ("stem", "name", "parent", "index")
DEFAULT_NAME_TEMPLATE = "{stem}"


def output_folder(template: str, source: str, index: int) -> Path:
    """A video's folder under --output from `template`: fields {stem}, {name}, {parent} and {index} (its
    0-based place in the whole list, before sharding; format specs such as {index:04d} work). The result
    is a relative path of one or more folders, none of them '', '.' or '..'."""
    path = Path(source)
    fields = {"stem": video_stem(source), "name": path.name, "parent": path.parent.name, "index": index}
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        unknown = [name for name in names if name not in NAME_FIELDS]
        if unknown:
            raise KeyError(unknown[0])
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
    start, colon, stop = text.partition(":")
    if not colon or not all(part.strip().isdigit() for part in (start, stop) if part.strip()):
        raise StmaError(f"--frames {text!r}: expected START:END, e.g. 100:200, 100: or :200 (0-based, END excluded)")
    first = int(start) if start.strip() else 0
    last = int(stop) if stop.strip() else None
    if last is not None and last <= first:
        raise StmaError(f"--frames {text}: END must be after START")
    return first, last


def parse_ends(values: Iterable[str]) -> dict[int, list[int]]:
    """`--end ID:FRAME` values as {frame: [ids]}: object ID is not followed across the cut before FRAME."""
    ends: dict[int, list[int]] = {}
    for value in values:
        object_id, colon, frame = value.partition(":")
        if not colon or not object_id.strip().isdigit() or not frame.strip().isdigit():
            raise StmaError(f"--end {value!r}: expected ID:FRAME, e.g. 2:140 (object 2 ends before frame 140)")
        if not 1 <= int(object_id) <= 255:
            raise StmaError(f"--end {value}: object ids are 1..255")
        ends.setdefault(int(frame), []).append(int(object_id))
    return ends


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
        return mask_specs or [(first, mask_from_template(mask_template, video))]

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
        jobs.append(VideoJob(video, masks_of(video), folder, **plan))
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
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in files) and not any(_is_video_file(p) for p in files)
