"""Audio for the simulated caller: WAV files in and out, and speech from a local synthesiser."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import wave
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from voice_agent.exceptions import ConfigError
from voice_agent.pipeline.resample import StreamResampler

ROOM_RATE = 48_000
# Per frame handed to LiveKit, which packetises for the wire itself: fewer, larger frames cost
# less per caller, so one machine drives more simulated calls.
FRAME_MS = 40
SAMPLES_PER_FRAME = ROOM_RATE * FRAME_MS // 1000


# Where speech ends in a clip: the last 10 ms window louder than this, or than 40 dB below the
# clip's loudest window when that is higher (a recording's noise floor is not speech).
_VOICED_DBFS = -50.0
_VOICED_BELOW_PEAK_DB = 40.0
_WINDOW = ROOM_RATE // 100


@dataclass(frozen=True)
class Utterance:
    """Mono 16-bit speech at the room rate, cut into 40 ms frames."""

    label: str
    pcm: bytes

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / ROOM_RATE

    @cached_property
    def speech_end_sample(self) -> int:
        """The sample just after the last voiced audio: a clip's silent tail is not speech."""
        samples = np.frombuffer(self.pcm, dtype=np.int16).astype(np.float32)
        windows = samples.size // _WINDOW
        if windows == 0:
            return samples.size
        power = np.mean(samples[: windows * _WINDOW].reshape(windows, _WINDOW) ** 2, axis=1)
        with np.errstate(divide="ignore"):
            dbfs = 10 * np.log10(power / (32768.0**2))
        threshold = max(_VOICED_DBFS, float(dbfs.max()) - _VOICED_BELOW_PEAK_DB)
        voiced = np.flatnonzero(dbfs > threshold)
        return samples.size if voiced.size == 0 else int(voiced[-1] + 1) * _WINDOW

    def frames(self) -> list[bytes]:
        """The speech as 40 ms frames (the last one padded with silence)."""
        size = SAMPLES_PER_FRAME * 2
        padded = self.pcm + b"\0" * (-len(self.pcm) % size)
        return [padded[i : i + size] for i in range(0, len(padded), size)]


def read_wav(path: Path) -> Utterance:
    """A WAV file (16-bit PCM, any rate, mono or stereo) as an utterance at 48 kHz mono."""
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2:
                raise ConfigError(f"{path}: only 16-bit PCM WAV is supported")
            channels, rate = wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError) as e:
        raise ConfigError(f"cannot read WAV file {path}: {e}") from e
    samples = np.frombuffer(raw, dtype=np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return Utterance(label=path.name, pcm=resample(samples.tobytes(), rate, ROOM_RATE))


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample a whole clip of mono 16-bit PCM."""
    resampler = StreamResampler(input_rate=from_rate, output_rate=to_rate)
    return resampler.push(pcm) + resampler.flush()


async def synthesize(text: str) -> Utterance:
    """Speech for `text` from espeak-ng (Debian package), the local synthesiser for `--say`."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise ConfigError("--say needs espeak-ng (apt-get install espeak-ng); or pass --audio")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "say.wav"
        proc = await asyncio.create_subprocess_exec(
            espeak, "-v", "en-us", "-s", "160", "-w", str(out), text,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise ConfigError(f"espeak-ng failed: {err.decode(errors='replace').strip()}")
        utterance = read_wav(out)
    return Utterance(label=text, pcm=utterance.pcm)


def write_wav(path: Path, pcm: bytes, rate: int = ROOM_RATE) -> None:
    """Write mono 16-bit PCM to a WAV file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


def rms_dbfs(pcm: bytes | memoryview) -> float:
    """Loudness of a 16-bit PCM block in dBFS (-inf for digital silence)."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(samples * samples)))
    return 20 * float(np.log10(rms / 32768)) if rms > 0 else float("-inf")
