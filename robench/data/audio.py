"""Speech datasets as raw waveforms: `fsdd` (read from --data-dir) and `speech-commands`
(torchaudio's loader, for users who are online).

Every clip becomes a fixed 1 s waveform at 16 kHz with values in [-1, 1] (16-bit PCM / 32768),
stored as a (N, 1, 1, 16000) tensor: one channel, a "height" of 1, so the rest of robench (the
per-channel Normalize, meta.json's input_shape [1, 1, 16000], subsets, attacks) runs unchanged,
and `soundnet5` reads it as a 1-D signal. The range travels as `Dataset.value_range` = (-1, 1).

Fixed length (our choice; the paper's Speech Commands clips are already 1 s): a shorter clip gets
zeros appended at the end (the silence a 1 s recording window would have held, and what Speech
Commands' own short clips get in common practice); a longer one keeps its centred 1 s, as the
spoken digit fills FSDD's trimmed recordings and the centre loses least of it.

FSDD (Free Spoken Digit Dataset): 6 speakers x 10 digits x 50 takes at 8 kHz, named
`{digit}_{speaker}_{take}.wav`, resampled to 16 kHz with scipy's polyphase filter
(`resample_poly(x, 2, 1)`). Its own split: takes 0-4 are the test set, 5-49 the training set.
`fsdd:SPEAKER` holds one speaker out instead: all of that speaker's recordings are the test set,
the other five speakers' the training set (the harder, speaker-disjoint test).

Speech Commands (Warden 2018), as Defensive Tensorization's appendix B uses it: 12 classes, the
ten words yes/no/up/down/left/right/on/off/stop/go, `unknown` (every other word) and `silence`
(1 s windows cut from the recordings in `_background_noise_`), and an 80/10/10 split. Reading of
the split: the dataset's own validation_list/testing_list (about 10% each, assigned by hashing
the speaker, so no speaker crosses splits) give validation and test; the rest is training. The
silence class gets as many clips per split as an average word class, cut at a fixed stride from
the noise files in file order, which files going to which split by the same 80/10/10 proportion.
robench trains on the training part and reports the test part; validation is not used.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from robench.data.dataset import Dataset, one_line
from robench.errors import RobenchError

SAMPLE_RATE = 16_000
LENGTH = SAMPLE_RATE  # 1 s
AUDIO_RANGE = (-1.0, 1.0)
FSDD_RATE = 8_000
FSDD_TEST_TAKES = range(0, 5)
_FSDD_NAME = re.compile(r"^([0-9])_([A-Za-z]+)_([0-9]+)\.wav$")

SPEECH_COMMANDS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SPEECH_COMMANDS_CLASSES = (*SPEECH_COMMANDS_WORDS, "unknown", "silence")
SPEECH_COMMANDS_INSTALL = 'speech-commands needs torchaudio, which is not installed; pip install "robench[audio]"'


def fix_length(wave: np.ndarray, length: int = LENGTH) -> np.ndarray:
    """Zeros appended to a short clip; the centred `length` samples of a long one."""
    if len(wave) >= length:
        start = (len(wave) - length) // 2
        return wave[start : start + length]
    return np.concatenate([wave, np.zeros(length - len(wave), dtype=wave.dtype)])


def _pcm_to_unit(samples: np.ndarray) -> np.ndarray:
    """Integer PCM to float32 in [-1, 1]: int16 / 32768 (the encoding of FSDD and Speech Commands)."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    if samples.dtype == np.int32:
        return samples.astype(np.float32) / 2147483648.0
    return np.clip(samples.astype(np.float32), -1.0, 1.0)


def _read_wav(path: Path, rate: int) -> np.ndarray:
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    try:
        file_rate, samples = wavfile.read(path)
    except (ValueError, OSError, EOFError) as exc:
        raise RobenchError(f"could not read {path} as a WAV file ({one_line(exc)}); restore it from the FSDD repository or delete it") from None
    if samples.ndim > 1:
        samples = samples.mean(axis=1).astype(samples.dtype)
    wave = _pcm_to_unit(samples)
    if file_rate != rate:
        # Polyphase resampling (anti-aliasing FIR): 8 kHz -> 16 kHz is up 2, down 1.
        from math import gcd

        g = gcd(rate, int(file_rate))
        wave = resample_poly(wave, rate // g, int(file_rate) // g).astype(np.float32)
    # The filter can overshoot a full-scale sample by a little; the data's range is [-1, 1].
    return np.clip(wave, -1.0, 1.0)


def fsdd_root(data_dir: Path) -> Path:
    """The folder holding `recordings/`: DATA_DIR/fsdd, or DATA_DIR itself."""
    for candidate in (data_dir / "fsdd", data_dir):
        if (candidate / "recordings").is_dir():
            return candidate
    raise RobenchError(f"FSDD not found under {data_dir}: expected {data_dir / 'fsdd' / 'recordings'} with the .wav files; "
                       f"point --data-dir at the folder holding fsdd/ (e.g. ../shared/data)")


def fsdd_files(root: Path) -> list[tuple[Path, int, str, int]]:
    """(path, digit, speaker, take) of every recording, sorted by name."""
    found = []
    for path in sorted((root / "recordings").glob("*.wav")):
        match = _FSDD_NAME.match(path.name)
        if match:
            found.append((path, int(match.group(1)), match.group(2).lower(), int(match.group(3))))
    if not found:
        raise RobenchError(f"no FSDD recordings ({{digit}}_{{speaker}}_{{take}}.wav) in {root / 'recordings'}; restore the folder from the FSDD repository")
    return found


def _decoded(files: list[tuple[Path, int, str, int]], cache: Path | None) -> torch.Tensor:
    """All clips as (N, 1, 1, LENGTH) float32, cached next to nothing the user owns: decoding
    and resampling 3,000 files takes a few seconds, so a cache keyed by the file list, sizes and
    mtimes (in robench's own cache folder) is reused when present and rebuilt when stale."""
    import hashlib

    digest = hashlib.sha256()
    for path, *_ in files:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    digest.update(f"rate={SAMPLE_RATE} length={LENGTH} v1".encode())
    cached = cache / f"fsdd-{digest.hexdigest()[:16]}.npy" if cache is not None else None
    if cached is not None and cached.is_file():
        try:
            array = np.load(cached, allow_pickle=False)
            if array.shape == (len(files), LENGTH):
                return torch.from_numpy(array).view(len(files), 1, 1, LENGTH)
        except (OSError, ValueError):
            pass  # a torn or foreign cache file is rebuilt below
    array = np.stack([fix_length(_read_wav(path, SAMPLE_RATE)) for path, *_ in files]).astype(np.float32)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".tmp.npy")
            np.save(partial, array, allow_pickle=False)
            partial.replace(cached)
        except OSError:
            pass  # a read-only home only costs the decoding time next run
    return torch.from_numpy(array).view(len(files), 1, 1, LENGTH)


def _cache_dir() -> Path | None:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "robench"


def load_fsdd(data_dir: Path, holdout: str | None = None) -> Dataset:
    """FSDD with its own split (takes 0-4 test) or, with `holdout`, one speaker as the test set."""
    root = fsdd_root(data_dir)
    files = fsdd_files(root)
    speakers = sorted({speaker for _, _, speaker, _ in files})
    if holdout is not None:
        holdout = holdout.strip().lower()
        if holdout not in speakers:
            raise RobenchError(f"unknown FSDD speaker {holdout!r}; hold out one of {', '.join(speakers)} (e.g. --dataset fsdd:{speakers[0]})")
        test = np.array([speaker == holdout for _, _, speaker, _ in files])
    else:
        test = np.array([take in FSDD_TEST_TAKES for _, _, _, take in files])
    x = _decoded(files, _cache_dir())
    y = torch.tensor([digit for _, digit, _, _ in files], dtype=torch.int64)
    test_index, train_index = torch.from_numpy(np.flatnonzero(test)), torch.from_numpy(np.flatnonzero(~test))
    return Dataset(
        name="fsdd" if holdout is None else f"fsdd:{holdout}",
        train_x=x[train_index].contiguous(), train_y=y[train_index].contiguous(),
        test_x=x[test_index].contiguous(), test_y=y[test_index].contiguous(),
        num_classes=10,
        # The paper's SoundNet5 takes the raw waveform: no normalization inside the model.
        mean=(0.0,), std=(1.0,),
        value_range=AUDIO_RANGE,
    )


def load_speech_commands(root: Path, download: bool) -> Dataset:
    """Speech Commands v0.02 through torchaudio, as 12 classes (see the module docstring)."""
    try:
        from torchaudio.datasets import SPEECHCOMMANDS
    except ImportError:
        raise RobenchError(SPEECH_COMMANDS_INSTALL) from None
    root.mkdir(parents=True, exist_ok=True) if download else None
    try:
        splits = {part: SPEECHCOMMANDS(str(root), download=download, subset=part) for part in ("training", "testing")}
    except (RuntimeError, OSError) as exc:
        if download:
            raise RobenchError(f"could not download Speech Commands into {root}: {one_line(exc)}") from None
        raise RobenchError(f"Speech Commands not found under {root}; point --data-dir at a folder holding SpeechCommands/, or pass --download") from None
    index = {word: k for k, word in enumerate(SPEECH_COMMANDS_WORDS)}
    unknown, silence = len(SPEECH_COMMANDS_WORDS), len(SPEECH_COMMANDS_WORDS) + 1
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    folder = Path(splits["training"]._path)
    noise = sorted((folder / "_background_noise_").glob("*.wav"))
    for part, ds in splits.items():
        waves, labels = [], []
        for i in range(len(ds)):
            path = Path(ds._walker[i])
            word = path.parent.name
            waves.append(fix_length(_read_wav(path, SAMPLE_RATE)))
            labels.append(index.get(word, unknown))
        per_class = max(1, len(labels) // (len(SPEECH_COMMANDS_WORDS) + 1))
        clips = _silence_clips(noise, part, per_class)
        waves += clips
        labels += [silence] * len(clips)
        x = torch.from_numpy(np.stack(waves).astype(np.float32)).view(len(waves), 1, 1, LENGTH)
        tensors[part] = (x, torch.tensor(labels, dtype=torch.int64))
    return Dataset(
        name="speech-commands",
        train_x=tensors["training"][0], train_y=tensors["training"][1],
        test_x=tensors["testing"][0], test_y=tensors["testing"][1],
        num_classes=len(SPEECH_COMMANDS_CLASSES), mean=(0.0,), std=(1.0,), value_range=AUDIO_RANGE,
    )


def _silence_clips(noise_files: list[Path], part: str, count: int) -> list[np.ndarray]:
    """`count` 1 s windows of background noise for one split: each noise file is cut 80/10/10
    along time (training / validation / testing), so no noise sample is in two splits."""
    if not noise_files:
        return []
    lo, hi = {"training": (0.0, 0.8), "validation": (0.8, 0.9), "testing": (0.9, 1.0)}[part]
    windows = []
    for path in noise_files:
        wave = _read_wav(path, SAMPLE_RATE)
        segment = wave[int(lo * len(wave)) : int(hi * len(wave))]
        windows += [segment[s : s + LENGTH] for s in range(0, len(segment) - LENGTH + 1, LENGTH // 2)]
    if not windows:
        return []
    step = max(1, len(windows) // count)
    return windows[::step][:count]
