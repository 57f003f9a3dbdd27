"""Streaming speech recognition over sherpa-onnx: partial results while someone speaks, a final one when they stop.

Three modes, chosen by what the ASR folder holds (see edge_cer.speech.manifest):

- ``streaming``: a sherpa ``OnlineRecognizer``; partials as its text changes, a final at each endpoint.
- ``two-pass``: the same partials and endpoints; the final text comes from Whisper (edge_cer.speech.whisper, over
  sherpa's offline Whisper format) run on the utterance's audio.
- ``vad``: no streaming model. Silero VAD cuts speech segments; Whisper re-decodes the growing segment for
  partials while someone speaks, and decodes the segment for the final. When live, that final decode starts at
  the first silent VAD window (speculatively) instead of after the VAD's full silence, and is kept if the segment
  the VAD then closes ends there.

Example (a complete run over a file, fast)::

    import soundfile as sf
    from edge_cer.speech.recognizer import create_recognizer

    recognizer = create_recognizer("models/asr")
    stream = recognizer.create_stream()
    samples, sample_rate = sf.read("speech.wav", dtype="float32")
    stream.accept_waveform(sample_rate, samples)
    for event in recognizer.decode(stream) + recognizer.finish(stream):
        print(event)

Live use goes through `RecognizerWorker`, which runs the same verbs in a thread so the caller never blocks.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_cer.errors import EdgeCerError
from edge_cer.speech.families import SILERO_VAD_SAMPLE_RATE, SILERO_VAD_WINDOW, VAD_MIN_SILENCE_S
from edge_cer.speech.manifest import SAMPLE_RATE, AsrFolder, ModelFiles, load_asr_folder
from edge_cer.speech.whisper import Whisper


@dataclass(frozen=True)
class Partial:
    """The current, still changing text of the utterance. `t`: audio time (s) decoded so far; `wall`:
    `time.monotonic()` when the text was ready."""

    text: str
    t: float
    wall: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Final:
    """A finished utterance. `t_endpoint`: audio time (s) where speech ended; `t_final`: audio time at which the
    end was detected; `wall`: `time.monotonic()` when the text was ready (for latency measurements)."""

    text: str
    t_endpoint: float
    t_final: float
    wall: float = field(default_factory=time.monotonic)


Event = Partial | Final
FEED = int(0.1 * SAMPLE_RATE)  # streaming: samples fed to sherpa between endpoint checks
# vad mode: audio decoded before each segment's detected start. Silero found espeak onsets up to 0.59 s late on
# the held-out set (perf/asr.md: "That house burned down" lost its first three words at 0.25 s); Whisper reads
# leading silence well.
VAD_PRE_ROLL = int(0.8 * SAMPLE_RATE)
# vad mode, in silence: audio kept. The VAD dates a segment's start back (min speech + 2 windows) when it detects
# it, so the pre-roll must still be held then, however the audio was chunked: else the final depends on chunking.
SILENCE_KEPT = VAD_PRE_ROLL + SAMPLE_RATE
# vad mode: voice heard this early means the recording began mid-speech, with no silence before it.
EARLY_VOICE = int(0.25 * SAMPLE_RATE)


@dataclass
class RecognizerConfig:
    """Settings; each default says why."""

    # One: the lab CPU also runs the TUI and the picture client, and onnxruntime's second thread spin-waits for a
    # core that is busy; on the loaded 2-core dev VM, 2 threads doubled the end-of-speech latency (perf/asr.md).
    num_threads: int = 1
    # sherpa-onnx's endpoint rules (seconds of trailing silence; utterance cap). Its defaults: 2.4 s with no words
    # yet, 1.2 s after words (shorter cuts reappraisals at thinking pauses), 20 s at most (bounded memory).
    rule1_min_trailing_silence: float = 2.4
    rule2_min_trailing_silence: float = 1.2
    rule3_min_utterance_length: float = 20.0
    vad_min_silence: float = VAD_MIN_SILENCE_S  # a pause this long ends the utterance (speech/families.py)
    vad_threshold: float = 0.5  # Silero's own default speech probability threshold
    vad_max_speech: float = 20.0  # Whisper reads at most 30 s; same cap as the streaming rule 3
    # vad mode: a partial re-decode every 200 ms of speech, on the audio clock. The target is a partial at least
    # every 320 ms; at 300 ms the decodes' jitter put the p95 interval at 0.33-0.36 s. A drafted decode costs
    # ~0.05-0.1 s CPU for a 5 s utterance (perf/asr.md).
    partial_interval: float = 0.2
    # Whisper: zero mel frames (10 ms each) appended after the audio so it finds the end of text. sherpa's default
    # is 1000, which makes the encoder read 10 s more than the audio; 100 gives the same text on our espeak
    # sentences (perf/asr.md) at less than half the encoder cost for a 5 s utterance.
    whisper_tail_paddings: int = 100
    # Whisper: stop a decode when its last 6 tokens repeat earlier ones (the sentence read again); 0 turns it off.
    whisper_no_repeat: int = 6
    # Whisper: beam width of a final (partials stay greedy, drafted); 1 is greedy. 3 took clean-speech WER down 1-4
    # points at ~2x a greedy decode's CPU, hidden in the `vad_min_silence` wait; Whisper's own 5 gains 0-2 points
    # more but its decode outlasts that wait (end of speech -> final over 0.5 s; perf/asr.md).
    whisper_beam_size: int = 3
    # Whisper: a final over more audio than this (pre-roll included) decodes greedy. Its beam decode grows with the
    # audio (beam 3: 0.19 s for 5 s, 0.46 s for 10 s, 1.1 s for 20 s on one core; greedy 0.09 / 0.19 / 0.48 s) and
    # must end within the ~0.3 s between the pause and the endpoint (perf/asr.md "Long utterances").
    whisper_beam_max_s: float = 7.0
    # Whisper: stationary noise reduction (speech/denoise.py) of audio whose estimated SNR is below this many dB
    # (0: off). 15 dB white noise reads as ~20 dB; clean speech is not touched. WER at 15 dB SNR -6 to -11 points.
    whisper_denoise_below_db: float = 25.0


def _check_rate(sample_rate: int) -> None:
    if sample_rate != SAMPLE_RATE:
        raise EdgeCerError(f"audio at {sample_rate} Hz, the models read {SAMPLE_RATE} Hz; open it through "
                           "edge_cer.speech.audio (which resamples) or resample it first")


@dataclass(frozen=True)
class Speculation:
    """A final decoded before the VAD closed its segment: valid if the segment starts at `start` (and no voice
    was heard since, which clears it)."""

    start: int
    text: str


class SpeechStream:
    """Audio of one speaker: samples not yet decoded, the sherpa stream (or VAD), the current utterance.

    `accept_waveform` only queues samples; the recognizer's `decode` feeds them to sherpa in `FEED` slices and
    checks for an endpoint after each, so one large accept (a whole file) still ends every utterance in place.
    """

    def __init__(self, online_stream=None, vad=None, voice=None):
        self.online = online_stream
        self.vad = vad
        self.voice = voice  # vad mode: Silero without the silence hangover (is someone speaking right now?)
        self.speaking = False
        self.voice_buffer = np.zeros(0, np.float32)  # samples the voice detector has not yet read
        self.speculative: Speculation | None = None  # vad mode: the final decoded at the first silent window
        self.pause_at = 0  # sample where speech last stopped (vad: the voice went silent; streaming: a token ended)
        self.first_voice: int | None = None  # vad mode: sample where the voice detector first heard voice
        self.pending = np.zeros(0, np.float32)  # accepted, not yet fed to sherpa
        self.utterance: list[np.ndarray] = []  # samples since the last final (two-pass / vad partials)
        self.utterance_start = 0  # sample index where `utterance` starts
        self.num_samples = 0  # samples accepted in total: the audio clock
        self.last_text = ""  # streaming: the newest partial's text (a Partial when it changes)
        self.draft: tuple[int, ...] = ()  # vad mode: Whisper's tokens for the current segment so far
        self.partial_due = 0  # vad mode: sample count at which the next partial re-decode is due
        self.finished = False

    @property
    def t(self) -> float:
        return self.num_samples / SAMPLE_RATE

    def silence_s(self) -> float:
        """Seconds of decoded audio since speech last stopped (0 while someone speaks; all of it before any speech)."""
        return 0.0 if self.speaking else (self.num_samples - self.pause_at) / SAMPLE_RATE

    @property
    def received(self) -> int:
        """Samples accepted so far, decoded or not."""
        return self.num_samples + len(self.pending)

    def accept_waveform(self, sample_rate: int, samples: np.ndarray) -> None:
        """Append mono float32 samples in [-1, 1] at the model rate."""
        _check_rate(sample_rate)
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise EdgeCerError(f"audio chunk of shape {samples.shape}; pass mono samples (edge_cer.speech.audio "
                               "mixes channels down)")
        if self.finished:
            raise EdgeCerError("audio after input_finished(); create a new stream for new audio")
        self.pending = np.concatenate([self.pending, samples])

    def take(self, n: int) -> np.ndarray | None:
        """The next `n` pending samples (fewer only when finished), now part of the utterance and the clock."""
        if len(self.pending) < n and not (self.finished and len(self.pending)):
            return None
        piece, self.pending = self.pending[:n], self.pending[n:]
        self.utterance.append(piece)
        self.num_samples += len(piece)
        return piece

    def utterance_samples(self) -> np.ndarray:
        return np.concatenate(self.utterance) if self.utterance else np.zeros(0, np.float32)

    def start_utterance(self, at_sample: int) -> None:
        """Forget audio before `at_sample` (keeps memory bounded on long recordings)."""
        audio = self.utterance_samples()
        keep = audio[max(0, at_sample - self.utterance_start):]
        self.utterance = [keep] if len(keep) else []
        self.utterance_start = self.num_samples - len(keep)
        self.last_text = ""
        self.draft = ()
        self.partial_due = self.received


class StreamingRecognizer:
    """sherpa ``OnlineRecognizer`` (streaming mode), optionally with an offline model for the final (two-pass)."""

    mode = "streaming"

    def __init__(self, online, offline=None, config: RecognizerConfig | None = None):
        self.online, self.offline = online, offline
        self.config = config or RecognizerConfig()
        if offline is not None:
            self.mode = "two-pass"

    def create_stream(self) -> SpeechStream:
        return SpeechStream(online_stream=self.online.create_stream())

    def decode(self, stream: SpeechStream, partials: bool = True) -> list[Event]:
        """Decode the pending audio; a Partial when the text changed (if `partials`), a Final at each endpoint."""
        events: list[Event] = []
        while (piece := stream.take(FEED)) is not None:
            stream.online.accept_waveform(SAMPLE_RATE, piece)
            while self.online.is_ready(stream.online):
                self.online.decode_stream(stream.online)
            result = self.online.get_result_all(stream.online)
            text = result.text.strip()
            self._track_speech(stream, result)
            if partials and text != stream.last_text:
                stream.last_text = text
                events.append(Partial(text, stream.t))
            if self.online.is_endpoint(stream.online):
                events += self._endpoint(stream, result)
        return events

    def finish(self, stream: SpeechStream) -> list[Event]:
        """End of input: pad the tail so the last frames are decoded, then close the utterance."""
        if stream.finished:
            return []
        stream.finished = True
        events = self.decode(stream)
        tail = np.zeros(int(0.66 * SAMPLE_RATE), np.float32)  # sherpa's examples pad 0.66 s
        stream.online.accept_waveform(SAMPLE_RATE, tail)
        stream.online.input_finished()
        while self.online.is_ready(stream.online):
            self.online.decode_stream(stream.online)
        return events + self._endpoint(stream, self.online.get_result_all(stream.online))

    @staticmethod
    def _track_speech(stream: SpeechStream, result) -> None:
        """Speech last stopped where the utterance's last token ends (its time + one 40 ms frame)."""
        if result.timestamps:
            stream.pause_at = stream.utterance_start + int((result.timestamps[-1] + 0.04) * SAMPLE_RATE)

    def _endpoint(self, stream: SpeechStream, result) -> list[Event]:
        text = result.text.strip()
        self._track_speech(stream, result)
        t_end = (stream.pause_at if result.timestamps else stream.utterance_start) / SAMPLE_RATE
        if text and self.offline is not None:
            end = int(min(t_end + 0.2, stream.t) * SAMPLE_RATE)  # a little trailing audio helps Whisper end
            text = self.offline.transcribe(stream.utterance_samples()[: end - stream.utterance_start]).text
        events: list[Event] = [Final(text, min(t_end, stream.t), stream.t)] if text else []
        # A fresh sherpa stream (not `reset`): a long recording must not accumulate features.
        stream.online = self.online.create_stream()
        stream.start_utterance(stream.num_samples)
        return events


class VadRecognizer:
    """Silero VAD segments + an offline model (vad mode): partials by re-decoding, a final per segment.

    Two Silero instances read the same windows: sherpa's `VoiceActivityDetector` cuts the segments (a segment ends
    after `vad_min_silence` of silence), and a bare `VadModel` without that hangover says whether someone is
    speaking in the newest window. While someone speaks, the open segment is re-decoded every `partial_interval`;
    at the first silent window it is re-decoded once more, and that text is also the speculative final: when the
    VAD then closes the segment where the pause began, the final is ready instead of starting. Each decode of a
    segment passes the previous one's tokens to Whisper as a draft (edge_cer.speech.whisper).
    """

    mode = "vad"

    def __init__(self, offline, vad_config, voice_config, config: RecognizerConfig | None = None):
        import sherpa_onnx

        self.offline, self.vad_config = offline, vad_config
        self.config = config or RecognizerConfig()
        self._new_vad = lambda: sherpa_onnx.VoiceActivityDetector(vad_config, buffer_size_in_seconds=60)
        self._new_voice = lambda: sherpa_onnx.VadModel.create(voice_config)

    def create_stream(self) -> SpeechStream:
        return SpeechStream(vad=self._new_vad(), voice=self._new_voice())

    def decode(self, stream: SpeechStream, partials: bool = True) -> list[Event]:
        """Feed the VAD window by window; a Final per finished segment.

        `partials`: the caller is live and has caught up with the audio; then the open segment is re-decoded for
        Partials and the speculative final (see the class). A file decode passes False: each segment is decoded
        once, when the VAD closes it.
        """
        events: list[Event] = []
        while (piece := stream.take(SILERO_VAD_WINDOW)) is not None:
            window = np.pad(piece, (0, SILERO_VAD_WINDOW - len(piece)))
            stream.vad.accept_waveform(window)
            was_speaking = stream.speaking
            if self._voice_heard(stream, window):
                stream.speculative = None  # speech went on: the segment will end later
                if stream.first_voice is None:
                    stream.first_voice = stream.num_samples
            elif was_speaking:
                stream.pause_at = stream.num_samples
            events += self._pop_segments(stream)
        if stream.vad.is_speech_detected():
            # Counted in samples received, not in the 512-sample windows read: 100 ms chunks then give a partial
            # every second or third chunk, not sometimes every fourth.
            due = stream.received >= stream.partial_due
            if partials and (due if stream.speaking else stream.speculative is None):
                events += self._redecode(stream)
        elif not events:
            # Silence: keep only a short pre-roll so memory stays bounded and partials start near the speech.
            stream.start_utterance(stream.num_samples - SILENCE_KEPT)
        return events

    def finish(self, stream: SpeechStream) -> list[Event]:
        if stream.finished:
            return []
        stream.finished = True
        events = self.decode(stream, partials=False)
        stream.vad.flush()
        return events + self._pop_segments(stream)

    @staticmethod
    def _voice_heard(stream: SpeechStream, window: np.ndarray) -> bool:
        """Run the voice detector on the newest window, framed as sherpa's VAD frames it: Silero v5 reads
        `window_size()` samples (64 of context + 512 new) and moves 512; any other length makes sherpa exit."""
        stream.voice_buffer = np.concatenate([stream.voice_buffer, window])
        size = stream.voice.window_size()
        while len(stream.voice_buffer) >= size:
            stream.speaking = stream.voice.is_speech(stream.voice_buffer[:size])
            stream.voice_buffer = stream.voice_buffer[SILERO_VAD_WINDOW:]
        return stream.speaking

    def _redecode(self, stream: SpeechStream) -> list[Event]:
        """Whisper on the open segment: a Partial (its text may not have changed: it says how far the decode
        reached); at a pause, also the speculative final."""
        self._schedule_next_partial(stream)
        start = stream.vad.current_segment.start
        stop = self._final_stop(stream, start, end=None)
        if stop is None:
            text = self._transcribe(stream, start, stream.num_samples, drafted=True).text
        else:
            text = self._transcribe(stream, start, stop, drafted=False).text
            stream.speculative = Speculation(start, text)
        return [Partial(text, stream.t)] if text else []

    def _schedule_next_partial(self, stream: SpeechStream) -> None:
        """The next partial is due `partial_interval` after this one *was due*, not after it ran: the decode's own
        time and the block it arrived in do not add up from one partial to the next. A due time already passed
        (a slow decode) is skipped, not queued: a stale partial is worth less than the next fresh one. A decode
        before its due time (the one at a pause) leaves the schedule as it is."""
        if stream.received >= stream.partial_due:
            step = round(self.config.partial_interval * SAMPLE_RATE)
            stream.partial_due += ((stream.received - stream.partial_due) // step + 1) * step

    @staticmethod
    def _final_stop(stream: SpeechStream, start: int, end: int | None) -> int | None:
        """Where the final's audio ends: where the voice detector last went silent, if it did within the segment
        and is still silent; else the segment's `end` (None while the segment is open: no final yet).

        Both detectors read the same 512-sample windows however the audio was chunked, so the final's audio (and,
        decoded without a draft, its text) is the same for a file, a live feed, with or without partials. Not
        the VAD's own segment samples: the VAD holds its newest window back and ends segments a window off.
        """
        return stream.pause_at if not stream.speaking and stream.pause_at > start else end

    def _transcribe(self, stream: SpeechStream, start: int, stop: int, drafted: bool):
        """Whisper on samples [start, stop) of the stream, after up to VAD_PRE_ROLL of what the utterance buffer
        holds before them (Silero fires after the onset and clips first words). Partials pass `drafted`: every
        decode of a segment reads the same start, so each is a good draft for the next. Finals decode plain (an
        int8 decoder verifying a draft in one batch can pick other near-ties: not the same text every time)."""
        held, at = stream.utterance_samples(), start - stream.utterance_start
        audio = held[max(0, at - VAD_PRE_ROLL):stop - stream.utterance_start]
        if start < VAD_PRE_ROLL and stream.first_voice is not None and stream.first_voice <= EARLY_VOICE:
            # The recording began mid-speech: silence first, or Whisper drops the first word (perf/asr.md). Not
            # otherwise: zeros before a lead of room noise cost accuracy there.
            audio = np.concatenate([np.zeros(VAD_PRE_ROLL - start, np.float32), audio])
        result = self.offline.transcribe(audio, draft=stream.draft, beam_size=1) if drafted else \
            self.offline.transcribe(audio)  # a final: the configured beam
        stream.draft = result.tokens
        return result

    def _pop_segments(self, stream: SpeechStream) -> list[Event]:
        events: list[Event] = []
        while not stream.vad.empty():
            start = stream.vad.front.start
            end = start + len(stream.vad.front.samples)
            stream.vad.pop()
            stop, spec = self._final_stop(stream, start, end), stream.speculative
            # No voice since the speculative decode (any clears it): it read [start, stop) too.
            text = spec.text if spec is not None and spec.start == start else \
                self._transcribe(stream, start, stop, drafted=False).text
            stream.speculative = None
            if text:
                events.append(Final(text, end / SAMPLE_RATE, stream.t))
            stream.start_utterance(max(end, stop))
        return events


Recognizer = StreamingRecognizer | VadRecognizer


def _online_recognizer(model: ModelFiles, config: RecognizerConfig):
    import sherpa_onnx

    files = {role: str(path) for role, path in model.files.items()}
    common = dict(tokens=files["tokens"], num_threads=config.num_threads, enable_endpoint_detection=True,
                  rule1_min_trailing_silence=config.rule1_min_trailing_silence,
                  rule2_min_trailing_silence=config.rule2_min_trailing_silence,
                  rule3_min_utterance_length=config.rule3_min_utterance_length)
    factory = {
        "transducer": lambda: sherpa_onnx.OnlineRecognizer.from_transducer(
            encoder=files["encoder"], decoder=files["decoder"], joiner=files["joiner"], **common),
        "zipformer2_ctc": lambda: sherpa_onnx.OnlineRecognizer.from_zipformer2_ctc(model=files["model"], **common),
        "nemo_ctc": lambda: sherpa_onnx.OnlineRecognizer.from_nemo_ctc(model=files["model"], **common),
    }[model.family.name]
    return factory()


def _vad_config(model: ModelFiles, config: RecognizerConfig, min_silence: float, min_speech: float = 0.25):
    """Silero settings; `min_speech` 0.25 s is sherpa's default (a click does not start a segment)."""
    import sherpa_onnx

    vad = sherpa_onnx.VadModelConfig()
    vad.silero_vad.model = str(model.files["model"])
    vad.silero_vad.threshold = config.vad_threshold
    vad.silero_vad.min_silence_duration = min_silence
    vad.silero_vad.min_speech_duration = min_speech
    vad.silero_vad.max_speech_duration = config.vad_max_speech
    vad.silero_vad.window_size = SILERO_VAD_WINDOW  # sherpa exits on any other window for Silero v5+
    vad.sample_rate = SILERO_VAD_SAMPLE_RATE  # sherpa exits on any other rate
    vad.num_threads = 1  # a 512-sample window is far too small to split across threads
    return vad


def create_recognizer(asr_dir: str | Path | AsrFolder, config: RecognizerConfig | None = None) -> Recognizer:
    """Build the recognizer an ASR folder supports (streaming, two-pass or vad), after verifying the folder."""
    folder = asr_dir if isinstance(asr_dir, AsrFolder) else load_asr_folder(asr_dir)
    config = config or RecognizerConfig()
    streaming, offline = folder.model("streaming"), folder.model("offline")
    offline_rec = Whisper(offline, config.num_threads, config.whisper_tail_paddings, config.whisper_no_repeat,
                          config.whisper_beam_size, config.whisper_denoise_below_db,
                          config.whisper_beam_max_s) if offline else None
    if streaming:
        return StreamingRecognizer(_online_recognizer(streaming, config), offline_rec, config)
    vad = folder.model("vad")
    # The segmenter waits `vad_min_silence`; the voice detector reports the first silent window at once.
    return VadRecognizer(offline_rec, _vad_config(vad, config, config.vad_min_silence),
                         _vad_config(vad, config, min_silence=0.0, min_speech=0.0), config)


class RecognizerWorker:
    """Runs a recognizer in a thread: `push` audio from any thread, receive events on `events` (or a callback).

    `push` never blocks; the worker decodes whatever has arrived, so a slow decode coalesces audio instead of
    falling behind chunk by chunk. `close()` finishes the stream and waits for the last Final. `progress`: (Finals
    delivered, the stream's `silence_s()`) after the newest decode, set together once its events were delivered.
    """

    def __init__(self, recognizer: Recognizer, on_event: Callable[[Event], None] | None = None):
        self.recognizer = recognizer
        self.stream = recognizer.create_stream()
        self.events: queue.Queue[Event] = queue.Queue()
        self.on_event = on_event or self.events.put
        self.error: BaseException | None = None
        self.progress: tuple[int, float] = (0, 0.0)
        self._audio: queue.Queue[np.ndarray | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="speech-recognizer", daemon=True)
        self._thread.start()

    def push(self, samples: np.ndarray) -> None:
        """Queue mono float32 samples at the model rate (16 kHz)."""
        self._audio.put(np.asarray(samples, dtype=np.float32))

    def close(self, timeout: float | None = None) -> None:
        self._audio.put(None)
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            done = False
            while not done:
                chunks = [self._audio.get()]
                while not self._audio.empty():  # coalesce: decode once per burst of arrivals
                    chunks.append(self._audio.get_nowait())
                done = chunks[-1] is None
                audio = [c for c in chunks if c is not None]
                if audio:
                    self.stream.accept_waveform(SAMPLE_RATE, np.concatenate(audio))
                # Partials only when caught up: a backlog means the final matters more than a stale partial.
                events = self.recognizer.decode(self.stream, partials=self._audio.empty())
                for event in events:
                    self.on_event(event)
                finals = self.progress[0] + sum(isinstance(e, Final) for e in events)
                self.progress = (finals, self.stream.silence_s())
            for event in self.recognizer.finish(self.stream):
                self.on_event(event)
        except BaseException as exc:  # surfaced to the caller by close()
            self.error = exc
