"""Options, weights and paths that ended in a traceback or a silently wrong result: one `stma segment` run each.

Each case is checked as the user sees it: the exit code, one `stma: error:` line naming the option or file
at fault (or the warning, or the result), no traceback, what is in its output folder, and, for all the
runs together, that nothing changed outside their output folders.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from badinput_corpus import (
    HEIGHT,
    WIDTH,
    Run,
    StmaProcess,
    assert_clean_stderr,
    changed_outside,
    finished_frames,
    run_some_at_once,
    tree,
    write_frame_folder,
    write_mask,
    write_video,
)
from safetensors.torch import load_file, save_file

from stma_cli.inference.passes import ABSENT
from stma_cli.io.logits import read_logits

USAGE, FAILED = 2, 1
HUGE = 10**13  # a mask frame far past the end


@dataclass
class Case:
    args: list[str]  # after `segment`; VIDEO, --mask, --weights and --output are added unless given
    exit_code: int
    says: str | None  # the one error line, from its start (None: no error line)
    cwd: str = "."  # relative to the corpus root
    env: dict[str, str] = field(default_factory=dict)
    stdin: str | None = None  # a file of the corpus root
    output: bool = True  # False: no --output, the default output folder is tested
    check: Callable[[Path, Run], None] | None = None  # more checks of the output folder and the run


def _absent(folder: Path, run: Run) -> None:
    assert not folder.exists()


def _tracked(folder: Path) -> dict[int, list[int]]:
    """Object id: the frames where it is tracked (its logits are not ABSENT)."""
    logits, attrs = read_logits(folder / "logits.h5")
    return {int(i): [t for t in range(len(logits)) if (logits[t, k + 1] > ABSENT).any()]
            for k, i in enumerate(attrs["object_ids"])}


def _tracks(expected: dict[int, list[int]]) -> Callable[[Path, Run], None]:
    def check(folder: Path, run: Run) -> None:
        assert finished_frames(folder) == 12
        assert _tracked(folder) == expected

    return check


def _no_masks(folder: Path, run: Run) -> None:
    """An uncounted video is read to its end before the mask is found missing: nothing is written."""
    assert not list((folder / "masks").iterdir()) and not (folder / "manifest.json").exists()


def _one_warning(folder: Path, run: Run) -> None:
    warnings = [line for line in run.stderr.splitlines() if line.startswith("stma: warning:")]
    assert warnings == ["stma: warning: --precision bf16 on the CPU is many times slower than fp32 (about 18x on "
                        "a Xeon); fp32 is the CPU default"]
    assert finished_frames(folder) == 2


def _overflow(folder: Path, run: Run) -> None:
    assert not (folder / "manifest.json").exists() and not (folder / "logits.h5").exists()


def _stdin_list(folder: Path, run: Run) -> None:
    """Random bytes as paths: one error line each, the good video among them is done."""
    assert "stma: 1 done, 0 skipped, 4 failed" in run.stderr.splitlines()
    assert len(run.error_lines) == 4
    assert finished_frames(folder / "clip") == 8


def _real_folder_name(folder: Path, run: Run) -> None:
    """A frame folder given as `..` gets an output folder named after it, inside --output."""
    assert sorted(p.name for p in folder.iterdir()) == ["clip", "shots"]
    assert finished_frames(folder / "shots") == 8


CASES: dict[str, Case] = {
    "weights_unknown_user": Case(["--weights", "~nosuchuser-stma"], FAILED,
                                 "weights '~nosuchuser-stma': cannot expand '~' (no such user here)", check=_absent),
    "weights_path_too_long": Case(["--weights", "w" * 300], FAILED, f"{'w' * 300}: File name too long", check=_absent),
    "config_dim_is_a_string": Case(["--weights", "weights-dim"], FAILED, "{root}/weights-dim/config.json: invalid "
                                   "STMA config: dim is '128', expected an integer from 1 to 4096", check=_absent),
    "config_heads_zero": Case(["--weights", "weights-heads"], FAILED, "{root}/weights-heads/config.json: invalid "
                              "STMA config: heads is 0, expected an integer from 1 to 64", check=_absent),
    "config_radius_negative": Case(["--weights", "weights-radius"], FAILED, "{root}/weights-radius/config.json: "
                                   "invalid STMA config: propagation_radius is -1, expected an integer from 0 to 32",
                                   check=_absent),
    "weights_nan": Case(["--weights", "weights-nan"], FAILED, "{root}/weights-nan/model.safetensors: tensor ",
                        check=_absent),
    "weights_overflow": Case(["--weights", "weights-overflow"], FAILED, "{root}/clip.mp4: frame 1: the model's "
                             "output is not finite (NaN or inf): its weights are broken", check=_overflow),
    "revision_outside_the_cache": Case(["--weights", "acme/stma", "--revision", "../.."], FAILED,
                                       "--revision '../..': not a branch, tag or commit name",
                                       env={"HF_HOME": "{root}/hf"}, check=_absent),
    "template_attribute": Case(["clip.mp4", "--mask-template", "{stem.foo}.png"], USAGE,
                               "--mask-template '{stem.foo}.png': unknown field {stem.foo}", check=_absent),
    "template_index": Case(["clip.mp4", "--mask-template", "{stem[x]}.png"], USAGE,
                           "--mask-template '{stem[x]}.png': unknown field {stem[x]}", check=_absent),
    "template_positional": Case(["clip.mp4", "--mask-template", "{0}.png"], USAGE,
                                "--mask-template '{0}.png': unknown field {0}", check=_absent),
    "huge_frame_both": Case(["--mask", f"{HUGE}:clip.png", "--direction", "both"], FAILED,
                            f"clip.png: mask for frame {HUGE}, but the video has 8 frames", check=_absent),
    "huge_frame_both_uncounted": Case(["uncounted.mkv", "--mask", f"{HUGE}:clip.png", "--direction", "both"],
                                      FAILED, f"clip.png: mask for frame {HUGE}, but the video has 8 frames",
                                      check=_no_masks),
    "frame_number_of_5000_digits": Case(["--mask", "9" * 5000 + ":clip.png"], USAGE, "--mask 9999", check=_absent),
    "local_rank_not_a_number": Case([], FAILED, "environment variable LOCAL_RANK='abc': expected an integer",
                                    env={"LOCAL_RANK": "abc"}, check=_absent),
    "bf16_on_the_cpu": Case(["short.mp4", "--precision", "bf16"], 0, None, check=_one_warning),
    "default_output_of_dot_dot": Case(["...mp4", "--mask", "../clip.png"], FAILED,
                                      "...mp4: its name gives the output folder name '..'", cwd="work", output=False),
    "frame_folder_given_as_dot_dot": Case(["..", "{root}/clip.mp4", "--mask-template", "{root}/masks/{stem}.png"],
                                          0, None, cwd="shots/inner", check=_real_folder_name),
    "stdin_list_of_random_bytes": Case(["--mask-template", "{root}/{stem}.png"], FAILED, None, stdin="list.bin",
                                       check=_stdin_list),
    "backward_with_two_masks": Case(["clip12.mp4", "--mask", "2:a.png", "--mask", "8:b.png", "--direction",
                                     "backward"], 0, None, check=_tracks({1: [0, 1, 2], 2: list(range(9))})),
    "both_with_two_masks": Case(["clip12.mp4", "--mask", "2:a.png", "--mask", "8:b.png", "--direction", "both"],
                                0, None, check=_tracks({1: list(range(12)), 2: list(range(12))})),
    "forward_with_two_masks": Case(["clip12.mp4", "--mask", "2:a.png", "--mask", "8:b.png"], 0, None,
                                   check=_tracks({1: list(range(2, 12)), 2: list(range(8, 12))})),
}


@dataclass
class Corpus:
    root: Path
    runs: dict[str, Run]
    changed_outside: list[str]


def _weights_variant(good: Path, folder: Path, config: dict | None = None,
                     tensors: Callable[[dict], None] | None = None) -> None:
    shutil.copytree(good, folder)
    if config:
        (folder / "config.json").write_text(json.dumps({**json.loads((good / "config.json").read_text()), **config}))
    if tensors:
        state = load_file(folder / "model.safetensors")
        tensors(state)
        save_file(state, folder / "model.safetensors")


def _nan(state: dict) -> None:
    state["decoder.embed.bias"] = state["decoder.embed.bias"] * float("nan")


def _overflowing(state: dict) -> None:
    """Finite weights whose products overflow: the logits are not finite."""
    state["decoder.embed.weight"] = state["decoder.embed.weight"].sign() * 3e38


def _hub_cache(root: Path, weights: Path) -> None:
    """A Hub cache that holds acme/stma at one commit, as huggingface_hub lays it out."""
    repo = root / "hf" / "hub" / "models--acme--stma"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(weights, repo / "snapshots" / commit)


def _two_masks(root: Path) -> None:
    first, second = np.zeros((HEIGHT, WIDTH), np.uint8), np.zeros((HEIGHT, WIDTH), np.uint8)
    first[4:20, 4:20], second[28:44, 40:56] = 1, 2
    write_mask(root / "a.png", first)
    write_mask(root / "b.png", second)


def _command(name: str, case: Case, root: Path, weights: Path) -> list[str]:
    """`segment ARGS` with a video, --mask, --weights and --output added where the case gives none."""
    args = [arg.replace("{root}", str(root)) for arg in case.args]
    if not case.stdin and (not args or args[0].startswith("-")):
        args = [str(root / "clip.mp4"), *args]
    defaults = {"--weights": str(weights)}
    if case.output:
        defaults["--output"] = str(root / f"out-{name}")
    if "--mask-template" not in args and "--mask" not in args:
        defaults["--mask"] = str(root / "clip.png")
    for option, value in defaults.items():
        if option not in args:
            args += [option, value]
    return ["segment", *args]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, random_weights: Path) -> Corpus:
    root = tmp_path_factory.mktemp("options")
    write_video(root / "clip.mp4")
    write_video(root / "clip12.mp4", 12)
    write_video(root / "short.mp4", 2)
    write_video(root / "uncounted.mkv")
    write_mask(root / "clip.png")
    _two_masks(root)
    _weights_variant(random_weights, root / "weights-dim", {"dim": "128"})
    _weights_variant(random_weights, root / "weights-heads", {"heads": 0})
    _weights_variant(random_weights, root / "weights-radius", {"propagation_radius": -1})
    _weights_variant(random_weights, root / "weights-nan", tensors=_nan)
    _weights_variant(random_weights, root / "weights-overflow", tensors=_overflowing)
    _hub_cache(root, random_weights)
    (root / "work").mkdir()
    write_video(root / "work" / "...mp4")
    write_frame_folder(root / "shots")
    (root / "shots" / "inner").mkdir()
    write_mask(root / "masks" / "shots.png")
    write_mask(root / "masks" / "clip.png")
    rng = np.random.default_rng(5)
    bad_lines = [bytes(rng.integers(1, 256, 40, dtype=np.uint8)).replace(b"\n", b"_") for _ in range(2)]
    bad_lines += [b"nul\0inside.mp4", b"y" * 300 + b".mp4"]
    (root / "list.bin").write_bytes(b"\n".join([*bad_lines, str(root / "clip.mp4").encode()]) + b"\n")

    processes: dict[str, Callable[[], StmaProcess]] = {}
    for name, case in CASES.items():
        args = _command(name, case, root, random_weights)
        env = {key: value.replace("{root}", str(root)) for key, value in case.env.items()}
        processes[name] = (lambda a=args, c=case, e=env:
                           StmaProcess(a, root / c.cwd, stdin=root / c.stdin if c.stdin else None, env=e))
    before = tree(root)
    runs = run_some_at_once(processes)
    inside = [f"out-{name}" for name in CASES] + ["hf"]  # the Hub client may touch its cache
    return Corpus(root, runs, changed_outside(before, tree(root), *inside))


def test_nothing_changed_outside_the_output_folders(corpus: Corpus) -> None:
    """In particular `...mp4` without --output (default stma_output/..) wrote nothing into its folder."""
    assert corpus.changed_outside == []


@pytest.mark.parametrize("name", CASES)
def test_case(corpus: Corpus, name: str) -> None:
    case, run = CASES[name], corpus.runs[name]
    assert run.returncode == case.exit_code, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    if case.says is not None:
        assert len(run.error_lines) == 1, run.stderr
        assert run.error_lines[0].startswith(f"stma: error: {case.says.replace('{root}', str(corpus.root))}"), \
            run.stderr
    elif name != "stdin_list_of_random_bytes":
        assert run.error_lines == [], run.stderr
    if name not in ("stdin_list_of_random_bytes", "bf16_on_the_cpu"):
        assert_clean_stderr(run)
    if case.check is not None:
        case.check(corpus.root / f"out-{name}", run)
