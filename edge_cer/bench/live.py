"""Speech end -> picture of the live pipeline, with and without speculation, on recorded or synthesised speech.

    run_live_bench("engines/sd-turbo", "models/asr", synthesize=True, out="perf/results/live_sd_turbo.json")
    edge-cer bench --live --engines DIR --asr DIR [--audio A.wav ... | --audio FOLDER] --out perf/results/NAME

Each recording is replayed at microphone timing (each chunk after its last sample) through the recogniser
while `LiveTrial` generates, exactly as in a session, on the parts `edge_cer.runtime` builds; modes alternate per
recording so machine load hits both alike. Measured per trial, on one monotonic clock: end of speech (synthesised
speech: its last sample, read off the waveform; recordings: the recogniser's endpoint, which Silero puts ~0.1 s
late), the recogniser's last final (`speech_end_to_recogniser_final_s`: the ASR latency), the final transcript
(the end of the turn, `[live] end_of_turn_s` of silence later), and the moment the picture can be shown:
max(picture ready, final transcript), since no picture is shown before the final transcript decides which one.
The deadline is lifted (60 s) so the true latency is measured, not the fallback.
Warm-up (not measured): one generation and one replay.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_cer.affect.safety import SafetyPolicy
from edge_cer.errors import EdgeCerError
from edge_cer.live.speaking import listen
from edge_cer.live.trial import NS, LiveTrial
from edge_cer.runtime import build_runtime
from edge_cer.session.prompt import PromptBuilder
from edge_cer.session.protocol import Protocol, load_protocol
from edge_cer.speech.audio import file_source, read_audio, speech_end_s
from edge_cer.speech.recognizer import Final

# Reappraisals as participants speak them: 4-6 s each at espeak-ng's 150 words per minute.
SENTENCES = (
    "They are actors, and the whole scene is staged for a film.",
    "The man on the ground is getting help, and he will recover soon.",
    "Everyone in the picture is safe now, and the storm has passed.",
)
TRAILING_SILENCE_S = 1.5  # a speaker stops; the recogniser needs silence to find the endpoint
MODES = {"speculative": True, "final_only": False}


def synthesise(texts, folder: Path) -> list[Path]:
    """espeak-ng speech (en-us, 150 wpm) with trailing silence, one WAV per text."""
    import soundfile as sf

    if shutil.which("espeak-ng") is None:
        raise EdgeCerError("espeak-ng is not installed (it speaks the benchmark's reappraisals); "
                           "apt-get install espeak-ng, or pass recordings with --audio")
    paths = []
    for i, text in enumerate(texts):
        path = folder / f"reappraisal-{i + 1}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
        samples, rate = sf.read(path, dtype="float32")
        sf.write(path, np.concatenate([samples, np.zeros(int(TRAILING_SILENCE_S * rate), np.float32)]), rate)
        paths.append(path)
    return paths


def speech_end(path: Path) -> float:
    """Seconds into a clean (synthesised) recording where its last sample above 0.01 ends."""
    return speech_end_s(read_audio(path))


def measure(generator, recognizer, wav: Path, stimulus: Path, protocol: Protocol, speculate: bool,
            policy: SafetyPolicy, seed: int = 1, speech_ends_at: float | None = None) -> dict:
    """One live trial from a recording; seconds relative to the end of speech (`speech_ends_at` s into the recording,
    or, if None, the recogniser's endpoint)."""
    live = dataclasses.replace(protocol.live, speculate=speculate, deadline_s=60.0)
    trial = LiveTrial(generator, stimulus, seed=seed, generation=protocol.generation,
                      prompt=PromptBuilder(protocol.prompt), live=live, policy=policy, precompute=False)
    heard = listen(recognizer, file_source(wav, realtime=True), time.monotonic_ns,
                   end_of_turn_s=protocol.live.end_of_turn_s,
                   on_event=lambda event, text: trial.partial(text, settled=isinstance(event, Final)))
    trial.final(heard.text, heard.speech_end_ns)
    outcome = trial.result()
    trial.close()
    fields = outcome.fields({})
    end = heard.speech_end_ns if speech_ends_at is None or not heard.text else \
        heard.start_ns + round(speech_ends_at * NS)
    shown = max(outcome.ready_ns, heard.final_ns) if outcome.ready_ns is not None else None
    generated = next((g for g in outcome.generations if g.picture is not None and g.picture is outcome.picture), None)
    return {
        "audio": wav.name, "mode": "speculative" if speculate else "final_only", "transcript": heard.text,
        "partials": heard.partials, "source": outcome.source, "reason": outcome.reason,
        "speech_end_from": "waveform" if speech_ends_at is not None else "recogniser",
        "speech_end_to_recogniser_final_s": (heard.last_final_ns - end) / NS if end else None,
        "speech_end_to_final_s": (heard.final_ns - end) / NS if end else None,
        "speech_end_to_picture_s": (shown - end) / NS if end and shown else None,
        "speech_end_to_feedback_s": (max(outcome.decided_ns, heard.final_ns) - end) / NS if end else None,
        "final_to_picture_s": (shown - heard.final_ns) / NS if shown else None,
        "shown_generation_s": (generated.ended_ns - generated.started_ns) / NS if generated else None,
        **{k: fields[k] for k in ("speculative_generations", "wasted_generations", "safety_blocked")},
        "generations": [(g.kind, g.prompt, g.outcome) for g in outcome.generations],
    }


def run_live_bench(engines, asr, audio_files=None, *, synthesize: bool = True, out: str | Path | None = None,
                   runs: int = 2, steps: int | None = None, protocol: Protocol | None = None, provider: str = "cpu",
                   stimulus: str | Path | None = None, policy: SafetyPolicy | None = None, report=print) -> dict:
    """Measure speech end -> picture with and without speculation; returns (and writes to `out`) the results.

    `engines`/`asr`: folders or loaded objects. `out`: a .json file, or a folder that gets live.json. `policy`: the
    safety gate's (default: the shipped one; random-weight engines paint noise that it may refuse)."""
    from edge_cer.bench.machine import machine_info
    from edge_cer.bench.stats import summarize
    from edge_cer.session.stimuli import synthetic_stimuli

    protocol = protocol or load_protocol()
    if steps is not None:
        protocol = dataclasses.replace(protocol, generation=dataclasses.replace(protocol.generation, steps=steps))
    folders = {"engines": engines, "asr": asr} if isinstance(engines, (str, Path)) else {
        "generator": engines, "recognizer": asr}
    runtime = build_runtime(protocol, provider=provider, **folders)
    generator, recognizer, policy = runtime.generator, runtime.recognizer, policy or runtime.live.policy
    stimulus = Path(stimulus) if stimulus else synthetic_stimuli().stimuli[0].path
    with tempfile.TemporaryDirectory() as tmp:
        if audio_files:
            wavs = [w for a in map(Path, audio_files) for w in (sorted(a.glob("*.wav")) if a.is_dir() else [a])]
            if not wavs:
                raise EdgeCerError(f"{', '.join(map(str, audio_files))}: no WAV files; pass recordings or a "
                                   "folder of them")
        elif synthesize:
            wavs = synthesise(SENTENCES, Path(tmp))
        else:
            raise EdgeCerError("run_live_bench: give audio_files or synthesize=True")
        generator.precompute(stimulus)  # warm-up: caches, one generation, one replay (not measured)
        g = protocol.generation
        generator.generate(stimulus, "warm up", seed=0, strength=g.strength, ip_scale=g.ip_scale, steps=g.steps)
        measure(generator, recognizer, wavs[0], stimulus, protocol, False, policy)
        ends = {wav: None if audio_files else speech_end(wav) for wav in wavs}
        trials = []
        for run in range(runs):
            for i, wav in enumerate(wavs):
                order = list(MODES.values()) if (run + i) % 2 == 0 else list(MODES.values())[::-1]
                for speculate in order:
                    trials.append(measure(generator, recognizer, wav, stimulus, protocol, speculate, policy,
                                          speech_ends_at=ends[wav]))
                    report(_line(trials[-1]))
    result = {
        "settings": {"engines": str(engines), "asr": str(asr), "asr_mode": recognizer.mode, "provider": provider,
                     "engine": generator.pipeline.backend.name if hasattr(generator, "pipeline") else type(generator).__name__,
                     "generation": dataclasses.asdict(protocol.generation), "prompt": dataclasses.asdict(protocol.prompt),
                     "live": dataclasses.asdict(protocol.live), "runs": runs, "audio": [w.name for w in wavs],
                     "synthesised": not audio_files, "deadline_s_during_bench": 60.0,
                     "safety": dataclasses.asdict(policy)},
        "machine": machine_info(),
        "summary": {mode: {key: summarize([t[key] for t in trials if t["mode"] == mode and t[key] is not None])
                           for key in ("speech_end_to_picture_s", "speech_end_to_feedback_s", "speech_end_to_final_s",
                                       "speech_end_to_recogniser_final_s", "final_to_picture_s", "shown_generation_s")}
                    | {"wasted_per_trial": float(np.mean([t["wasted_generations"] for t in trials if t["mode"] == mode])),
                       "speculative_per_trial": float(np.mean([t["speculative_generations"] for t in trials
                                                               if t["mode"] == mode]))}
                    for mode in MODES},
        "trials": trials,
    }
    report(table(result))
    if out is not None:
        out = Path(out)
        path = out if out.suffix == ".json" else out / "live.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _line(t: dict) -> str:
    seconds = t["speech_end_to_picture_s"]
    return (f"{t['audio']:<18} {t['mode']:<12} speech end -> picture "
            f"{'n/a' if seconds is None else f'{seconds:6.3f} s'}  source {t['source']:<11} "
            f"speculative {t['speculative_generations']} wasted {t['wasted_generations']}")


def table(result: dict) -> str:
    """Fixed-width summary: per mode, p50 / p95 / mean of each interval (seconds), n."""
    s = result["settings"]
    lines = [f"live bench: engine {s['engine']} steps {s['generation']['steps']}, asr mode {s['asr_mode']}, "
             f"{len(s['audio'])} recordings x {s['runs']} runs, cpu {result['machine']['cpu']}",
             f"{'mode':<12} {'interval':<32} {'p50 s':>8} {'p95 s':>8} {'mean s':>8} {'n':>3}"]
    for mode, summary in result["summary"].items():
        for key in ("speech_end_to_recogniser_final_s", "speech_end_to_final_s", "final_to_picture_s",
                    "speech_end_to_picture_s", "speech_end_to_feedback_s"):
            v = summary[key]
            if v["n"]:
                lines.append(f"{mode:<12} {key[:-2]:<32} {v['p50_ms'] / 1e3:8.3f} {v['p95_ms'] / 1e3:8.3f} "
                             f"{v['mean_ms'] / 1e3:8.3f} {v['n']:>3}")
        lines.append(f"{mode:<12} {'speculative / wasted':<32} {summary['speculative_per_trial']:8.2f} "
                     f"{summary['wasted_per_trial']:8.2f}")
    return "\n".join(lines)
