"""Uploaded audio made playable on the phone network: decoded with FFmpeg's libraries
(through PyAV, whose wheels carry them: no system package to install) and written as
8 kHz, 16-bit, mono PCM WAV, which Twilio's ``<Play>`` takes as it is and telephony
cannot improve on anyway. A file that FFmpeg cannot decode is refused, with why."""

from __future__ import annotations

import io

import av
from av.audio.resampler import AudioResampler

from application.assets import AudioConversionError, Converted

RATE = 8000


class PyAvAudioConverter:
    def to_telephony(self, data: bytes) -> Converted:
        try:
            return self._convert(data)
        except AudioConversionError:
            raise
        except (av.error.FFmpegError, ValueError, EOFError) as exc:  # corrupt or truncated input
            why = getattr(exc, "strerror", None) or str(exc)
            raise AudioConversionError(f"could not be decoded as audio ({why}): it may be corrupt or truncated") from exc

    def _convert(self, data: bytes) -> Converted:
        with av.open(io.BytesIO(data), mode="r") as source:
            stream = next((s for s in source.streams if s.type == "audio"), None)
            if stream is None:
                raise AudioConversionError("has no audio stream")
            source_rate = stream.codec_context.sample_rate
            source_channels = stream.codec_context.channels
            resampler = AudioResampler(format="s16", layout="mono", rate=RATE)
            out = io.BytesIO()
            samples = 0
            with av.open(out, mode="w", format="wav") as target:
                wav = target.add_stream("pcm_s16le", rate=RATE, layout="mono")
                for frame in source.decode(stream):
                    for converted in resampler.resample(frame):
                        samples += converted.samples
                        target.mux(wav.encode(converted))
                for converted in resampler.resample(None):
                    samples += converted.samples
                    target.mux(wav.encode(converted))
                target.mux(wav.encode(None))
        if samples == 0:
            raise AudioConversionError("holds no audio that could be decoded")
        return Converted(
            data=out.getvalue(), duration_seconds=round(samples / RATE, 3), sample_rate=RATE, channels=1, bit_depth=16,
            source_sample_rate=source_rate or None, source_channels=source_channels or None,
        )  # fmt: skip
