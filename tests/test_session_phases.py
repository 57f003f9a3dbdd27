"""The session's phase machine: the timing log, scripted sessions, experimenter verbs, resume rules, the trial row
hook, and pictures handed in by the driver (never made by the session)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from edge_cer.errors import EdgeCerError
from edge_cer.session.data import SessionStore, read_session
from edge_cer.engine import GeneratedPicture, PlaceholderGenerator
from edge_cer.headless import run_headless
from edge_cer.runtime import build_runtime
from edge_cer.session.opening import open_session
from edge_cer.session.participant import ScriptedParticipant
from edge_cer.session.phases import NS, TRIAL_PHASES, Session
from edge_cer.session.stimuli import synthetic_stimuli
from tests.session_helpers import make_protocol


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory):
    return synthetic_stimuli(tmp_path_factory.mktemp("stimuli"))


def _open(tmp_path, stimuli, label="P001", **protocol_kwargs):
    protocol = make_protocol(**protocol_kwargs)
    return open_session(label, tmp_path / "data", protocol=protocol, stimuli=stimuli, min_free_bytes=0)


def test_timing_log_requested_and_actual_onsets(tmp_path, stimuli):
    # 10 ms per protocol second: fixation 10 ms, stimulus 60 ms, ... on the real clock.
    protocol, plan, store = _open(tmp_path, stimuli, time_scale=0.01, trials_per_condition=1, feedback='["none"]')
    session = Session(protocol, plan, store)
    run_headless(session, ScriptedParticipant(), build_runtime(protocol))
    store.close()
    _, trials, events = read_session(store.folder)
    onsets = [e for e in events if e["kind"] == "onset" and e["phase"] in TRIAL_PHASES]
    assert [e["phase"] for e in onsets] == list(TRIAL_PHASES) * 2
    for previous, event in zip(onsets, onsets[1:]):
        assert event["actual_ns"] >= event["requested_ns"], "a phase never starts before it is due"
        assert event["actual_ns"] - event["requested_ns"] < 0.05 * NS, "and not much later on an idle clock"
        assert event["actual_ns"] > previous["actual_ns"]
        if previous["phase"] in ("fixation", "stimulus", "cue"):  # timed phases: non-slip schedule
            due = previous["requested_ns"] + round(protocol.seconds(previous["phase"]) * NS)
            assert event["requested_ns"] == due
        if previous["phase"] == "feedback":  # counted from what was shown: its actual onset
            assert event["requested_ns"] == previous["actual_ns"] + round(protocol.seconds("feedback") * NS)
    stimulus = [e for e in onsets if e["phase"] == "stimulus"][0]
    rating = [e for e in events if e["kind"] == "rating"][0]
    assert rating["actual_ns"] - stimulus["actual_ns"] >= protocol.seconds("stimulus") * NS
    row = trials[0]
    assert row["rating_pre_rt_ms"] == pytest.approx(0.8 * 0.01 * 1000, abs=25)  # the script's rt_s, scaled
    assert set(json.loads(row["onsets"])) == set(TRIAL_PHASES) - {"iti"}  # the row is written as the ITI begins


def test_scripted_session_records_every_trial(tmp_path, stimuli):
    protocol, plan, store = _open(tmp_path, stimuli, practice=2, look=True)
    script = ScriptedParticipant.from_file()
    run_headless(Session(protocol, plan, store), script, build_runtime(protocol, placeholder=True))
    store.close()
    meta, trials, events = read_session(store.folder)
    assert [t["trial"] for t in trials] == list(range(1, len(plan) + 1)) and len(plan) == 2 + 5 * 2
    assert sum(t["practice"] for t in trials) == 2 and {t["strategy"] for t in trials} == {"reappraise", "describe", "look"}
    for t, planned in zip(trials, plan):
        assert (t["stimulus_id"], t["block"], t["strategy"]) == (planned.stimulus.id, planned.block, planned.condition.strategy)
        assert t["status"] == "completed" and t["rating_pre"] == 7
        expected_post = 7 + {"reappraise": -2, "describe": -1, "look": 0}[t["strategy"]] - (t["feedback"] == "ai")
        assert t["rating_post"] == expected_post
        assert bool(t["picture_file"]) == (t["feedback"] == "ai")
        assert (t["transcript"] is None) == (t["strategy"] == "look")
    ai = [t for t in trials if t["feedback"] == "ai"][0]
    assert ai["seed"] is not None and ai["strength"] == 0.6 and ai["steps"] == 4 and ai["picture_shown"] == 1
    assert ai["speech_end_s"] <= ai["transcript_final_s"] <= ai["picture_ready_s"] <= ai["picture_shown_s"]
    assert ai["transcript_source"] == "scripted" and ai["engine"] == "placeholder" and ai["feedback_source"] == "final"
    assert ai["prompt"] == ai["transcript"].lower().replace(",", "").rstrip(".")
    assert [e["kind"] for e in events][-2:] == ["onset", "session_end"]


def _advance_to(session, name, trial=None):
    while True:
        phase = session.next_phase()
        if phase.name == name and (trial is None or phase.trial.trial == trial):
            return phase
        if phase.name in ("rating_pre", "rating_post"):
            session.submit_rating(5)
        elif phase.name == "regulate" and phase.trial.condition.speaks:
            session.submit_transcript("It is just a picture.")


def test_pause_skip_abort_and_refused_resume(tmp_path, stimuli):
    protocol, plan, store = _open(tmp_path, stimuli, feedback='["none"]')
    session = Session(protocol, plan, store)
    stimulus = _advance_to(session, "stimulus", trial=1)
    session.pause()
    with pytest.raises(EdgeCerError, match="paused"):
        session.next_phase()
    restarted = session.resume()
    assert restarted.name == "stimulus" and restarted.onset_ns > stimulus.onset_ns
    assert session.skip_trial("participant coughing")
    assert session.next_phase().name == "fixation" and session.current.trial.trial == 2
    _advance_to(session, "cue", trial=2)
    session.abort("fire alarm")
    assert session.next_phase() is None
    folder = store.folder
    store.close()
    _, trials, events = read_session(folder)
    assert [(t["trial"], t["status"]) for t in trials] == [(1, "skipped"), (2, "aborted")]
    assert trials[1]["rating_pre"] == 5 and trials[1]["rating_post"] is None
    kinds = [e["kind"] for e in events]
    assert {"pause", "resume", "skip", "abort"} <= set(kinds) and kinds[-1] == "session_end"
    assert json.loads(events[-1]["detail"]) == {"state": "aborted", "reason": "fire alarm"}
    reopened = SessionStore(folder)
    with pytest.raises(EdgeCerError, match="already aborted; resuming a finished session is refused"):
        Session(protocol, plan, reopened)
    reopened.close()
    with pytest.raises(EdgeCerError, match="finished session is refused"):
        open_session("P001", tmp_path / "data", stimuli=stimuli, resume=True, min_free_bytes=0)


def test_resume_continues_at_first_unrecorded_trial(tmp_path, stimuli):
    protocol, plan, store = _open(tmp_path, stimuli, feedback='["none"]')
    session = Session(protocol, plan, store)
    _advance_to(session, "cue", trial=3)  # trials 1, 2 recorded; 3 half done
    store.close()  # the process "dies" here
    with pytest.raises(EdgeCerError, match="unfinished session; continue it with --resume"):
        open_session("P001", tmp_path / "data", protocol=protocol, stimuli=stimuli, min_free_bytes=0)
    protocol2, plan2, store2 = open_session("P001", tmp_path / "data", stimuli=stimuli, resume=True, min_free_bytes=0)
    assert plan2 == plan and protocol2.text == protocol.text
    resumed = Session(protocol2, plan2, store2)
    assert resumed.attempt == 2 and resumed.remaining[0].trial == 3
    run_headless(resumed, ScriptedParticipant(), build_runtime(protocol2))
    store2.close()
    _, trials, events = read_session(store2.folder)
    assert [t["trial"] for t in trials] == list(range(1, len(plan) + 1))
    assert [t["attempt"] for t in trials[:3]] == [1, 1, 2]
    (interrupted,) = [e for e in events if e["kind"] == "interrupted"]
    assert json.loads(interrupted["detail"])["resume_at"] == 3
    assert interrupted["actual_ns"] > events[0]["actual_ns"], "a resumed timeline continues, it does not restart"


def test_second_writer_is_locked_out_and_tables_are_append_only(tmp_path, stimuli):
    _, _, store = _open(tmp_path, stimuli, feedback='["none"]')
    with pytest.raises(EdgeCerError, match="already open in another process"):
        SessionStore(store.folder)
    store.log_event(1, None, None, "note", 0)
    store.close()
    con = sqlite3.connect(store.folder / "session.sqlite3")
    for sql in ("UPDATE events SET kind = 'x'", "DELETE FROM events", "UPDATE meta SET value = 'x'"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute(sql)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    SessionStore(store.folder).close()  # the lock is free again once its holder closed


class _FailingGenerator:
    def generate(self, *args, **kwargs):
        raise RuntimeError("out of memory")


def test_generation_failure_and_annotators_never_lose_the_trial(tmp_path, stimuli):
    protocol, plan, store = _open(tmp_path, stimuli, feedback='["ai"]', trials_per_condition=1)

    def text_length(row, trial, picture):
        return {"text_valence": float(len(row["transcript"] or ""))}

    def broken(row, trial, picture):
        return {"not_a_column": 1.0}

    session = Session(protocol, plan, store, trial_annotators=[text_length, broken])
    run_headless(session, ScriptedParticipant(), build_runtime(protocol, generator=_FailingGenerator()))
    store.close()
    _, trials, events = read_session(store.folder)
    assert [t["status"] for t in trials] == ["completed", "completed"]
    assert trials[0]["picture_file"] is None and "out of memory" in trials[0]["no_picture_reason"]
    assert trials[0]["picture_shown"] == 0 and trials[0]["feedback_source"] == "none"
    assert trials[0]["text_valence"] == len(trials[0]["transcript"])
    assert sum(e["kind"] == "annotator_failed" for e in events) == 2


def test_live_pipeline_picture_is_stored_at_once_and_shown_at_feedback(tmp_path, stimuli):
    protocol, plan, store = _open(tmp_path, stimuli, feedback='["ai"]', trials_per_condition=1)
    session = Session(protocol, plan, store)
    regulate = _advance_to(session, "regulate", trial=1)
    assert session.picture_request().prompt == "" and not session.picture_request().final
    png = PlaceholderGenerator().generate(regulate.trial.stimulus.path, "x", seed=1, strength=0.5, ip_scale=0.5, steps=2)
    session.submit_transcript("A calm lake.")
    request = session.picture_request()
    assert (request.prompt, request.seed, request.stimulus_path) == ("a calm lake", regulate.trial.seed,
                                                                     regulate.trial.stimulus.path)
    session.submit_picture(GeneratedPicture(png=png.png, params={"seed": 1, "engine_manifest_sha256": "ab"}))
    with pytest.raises(EdgeCerError, match="already has its feedback picture"):
        session.submit_picture(None, reason="twice")
    assert (store.folder.parent.parent / session._record["picture_file"]).read_bytes() == png.png
    feedback = _advance_to(session, "feedback")
    assert feedback.picture is not None and feedback.picture.read_bytes() == png.png
    _advance_to(session, "rating_post")
    with pytest.raises(EdgeCerError, match="rating 12 is outside"):
        session.submit_rating(12)
    store.close()


def test_feedback_lasts_its_full_duration_from_the_pictures_onset(tmp_path, stimuli):
    """A picture that takes long to make delays the feedback phase; it never shortens it (and a blank screen of a
    trial without a picture lasts as long)."""
    protocol, plan, store = _open(tmp_path, stimuli, feedback='["ai"]', trials_per_condition=1, time_scale=0.01)
    session = Session(protocol, plan, store)
    for trial, picture in ((1, True), (2, False)):
        regulate = _advance_to(session, "regulate", trial=trial)
        session.submit_transcript("He will recover.")
        session.clock.sleep_until(session.clock.now_ns() + NS // 5)  # generation takes 0.2 s, 3x the feedback phase
        made = PlaceholderGenerator().generate(regulate.trial.stimulus.path, "he will recover", seed=3, strength=0.5,
                                               ip_scale=0.5, steps=2)
        session.submit_picture(made if picture else None, reason=None if picture else "deadline")
        feedback = session.next_phase()
        assert feedback.name == "feedback" and feedback.due_ns == feedback.onset_ns + round(0.06 * NS)
        session.clock.sleep_until(feedback.due_ns)
        session.submit_rating(4) if session.next_phase().name == "rating_post" else None
        session.next_phase()
    store.close()
    _, trials, _ = read_session(store.folder)
    for t, picture in zip(trials, (True, False)):
        assert t["picture_shown"] == int(picture) and t["feedback_duration_s"] == pytest.approx(0.06)
        assert t["feedback_shown_duration_s"] >= 0.06 and t["feedback_wait_s"] >= 0.2
        assert t["seed"] == (3 if picture else plan[t["trial"] - 1].seed), "the shown picture's own seed"
    assert trials[1]["no_picture_reason"] == "deadline" and trials[1]["picture_file"] is None
