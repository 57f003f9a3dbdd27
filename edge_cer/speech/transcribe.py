"""`edge-cer transcribe`: speech to text with an ASR folder.

    edge-cer transcribe --asr models/asr speech.wav              # final transcript
    edge-cer transcribe --asr models/asr speech.wav --partials   # JSON lines: partials, finals, then the transcript
    edge-cer transcribe --asr models/asr --mic --partials        # live, until Ctrl-C

With --partials every event is a JSON line ({"partial": ...} or {"final": ...}); the last line is always the
whole transcript ({"transcript": ...}). Without it only the transcript's text is printed.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from edge_cer.errors import EdgeCerError
from edge_cer.speech.audio import check_audio_file, file_source, microphone_source
from edge_cer.speech.manifest import SAMPLE_RATE
from edge_cer.speech.recognizer import (Final, Partial, Recognizer, RecognizerWorker, StreamingRecognizer,
                                        VadRecognizer, create_recognizer)


@dataclass(frozen=True)
class Transcript:
    """A recording's text: the finals joined, and the finals themselves (with their timestamps)."""

    text: str
    finals: tuple[Final, ...]


def transcribe_file(asr: str | Path | Recognizer, path: str | Path, mix_down: bool = False, on_event=None,
                    partials: bool = False) -> Transcript:
    """Transcribe a WAV/FLAC file as fast as the CPU allows. Silent or empty audio gives an empty transcript.

    `asr`: an ASR folder, or a recognizer from `create_recognizer` (load once, transcribe many). `partials`:
    also decode partial results (passed to `on_event`); off, each utterance is decoded once, for its final.
    """
    recognizer = asr if isinstance(asr, (StreamingRecognizer, VadRecognizer)) else create_recognizer(asr)
    return transcribe_source(recognizer, file_source(path, mix_down=mix_down), on_event, partials)


def transcribe_source(recognizer: Recognizer, chunks, on_event=None, partials: bool = False) -> Transcript:
    """Transcribe 16 kHz mono chunks (an edge_cer.speech.audio source) to their end."""
    stream = recognizer.create_stream()
    events = []
    for chunk in chunks:
        stream.accept_waveform(SAMPLE_RATE, chunk)
        events += _emit(recognizer.decode(stream, partials=partials), on_event)
    events += _emit(recognizer.finish(stream), on_event)
    finals = tuple(e for e in events if isinstance(e, Final))
    return Transcript(" ".join(f.text for f in finals), finals)


def _emit(events, on_event):
    for event in events:
        if on_event:
            on_event(event)
    return events


def _json_line(event) -> str:
    if isinstance(event, Partial):
        return json.dumps({"partial": event.text, "t": round(event.t, 3)})
    return json.dumps({"final": event.text, "t_endpoint": round(event.t_endpoint, 3), "t_final": round(event.t_final, 3)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--asr", required=True, type=Path, help="ASR folder written by `edge-cer export asr`")
    parser.add_argument("audio", nargs="?", type=Path, help="WAV/FLAC file (omit with --mic)")
    parser.add_argument("--mic", action="store_true", help="transcribe the default microphone live, until Ctrl-C")
    parser.add_argument("--device", default=None, help="microphone device (index or name); used only with --mic")
    parser.add_argument("--partials", action="store_true", help="print partial and final results as JSON lines")
    parser.add_argument("--mix-down", action="store_true", help="average the channels of a multi-channel file")


def run(args: argparse.Namespace) -> int:
    if bool(args.audio) == bool(args.mic):
        raise EdgeCerError("give either an AUDIO file or --mic (not both, not neither)")
    if args.device is not None and not args.mic:
        raise EdgeCerError("--device applies only with --mic")
    show = (lambda e: print(_json_line(e), flush=True)) if args.partials else None
    if args.audio:
        check_audio_file(args.audio)  # a wrong file is refused before the recogniser loads
        transcript = transcribe_file(args.asr, args.audio, mix_down=args.mix_down, on_event=show,
                                     partials=args.partials)
    else:
        device = int(args.device) if args.device and args.device.isdigit() else args.device
        worker = RecognizerWorker(create_recognizer(args.asr),
                                  on_event=show or (lambda e: isinstance(e, Final) and print(e.text, flush=True)))
        finals = []
        worker_events = worker.on_event
        worker.on_event = lambda e: (isinstance(e, Final) and finals.append(e), worker_events(e))
        try:
            for chunk in microphone_source(device):
                worker.push(chunk)
        except KeyboardInterrupt:
            pass
        worker.close()
        transcript = Transcript(" ".join(f.text for f in finals), tuple(finals))
    print(json.dumps({"transcript": transcript.text}) if args.partials else transcript.text)
    return 0
