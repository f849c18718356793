"""midiread/midiwrite: the tutorial's piano-roll semantics, on small MIDI files written here with mido."""
from __future__ import annotations

import warnings

import mido
import numpy as np
import pytest

from dltutorials_is.datasets.download import DataError
from dltutorials_is.datasets.midi import MidiError, midiread, midiwrite, read_notes
from dltutorials_is.datasets.nottingham import load_nottingham

TPB = 480  # ticks per beat of the test files; at the default tempo a beat is 0.5 s


def on(note, time, velocity=64, channel=0):
    return mido.Message("note_on", note=note, velocity=velocity, time=time, channel=channel)


def off(note, time, channel=0):
    return mido.Message("note_off", note=note, velocity=64, time=time, channel=channel)


def tempo(us_per_beat, time):
    return mido.MetaMessage("set_tempo", tempo=us_per_beat, time=time)


def write_midi(path, *tracks, midi_type=None):
    midi = mido.MidiFile(type=midi_type if midi_type is not None else (0 if len(tracks) == 1 else 1), ticks_per_beat=TPB)
    for messages in tracks:
        midi.tracks.append(mido.MidiTrack(list(messages)))
    midi.save(path)
    return path


def notes_of(path):
    return [(n.pitch, round(n.start, 9), round(n.end, 9)) for n in read_notes(path)]


def test_frames_are_ceil_of_seconds_over_dt(tmp_path):
    # pitch 60 sounds 0.25 s .. 0.75 s: frames ceil(1.25)=2 .. ceil(3.75)-1=3 at dt 0.2
    f = write_midi(tmp_path / "a.mid", [on(60, 240), off(60, 480), on(62, 0), off(62, 48)])
    roll = midiread(f, r=(21, 109), dt=0.2).piano_roll
    assert roll.shape == (4, 88)  # ceil(max end 0.8 s / 0.2)
    assert roll.dtype == np.float64
    assert np.flatnonzero(roll[:, 60 - 21]).tolist() == [2, 3]
    # pitch 62 sounds 0.75 .. 0.8 s: ceil(3.75) = ceil(4.0) = 4, an empty slice: shorter than a frame, it vanishes
    assert not roll[:, 62 - 21].any()
    assert set(np.unique(roll)) <= {0.0, 1.0}


def test_tempo_change_within_a_track(tmp_path):
    # one beat at 120 bpm (0.5 s), then tempo 250000 us/beat: the next beat lasts 0.25 s
    f = write_midi(tmp_path / "t.mid", [on(60, 0), tempo(250000, 480), off(60, 480)])
    assert notes_of(f) == [(60, 0.0, 0.75)]


def test_conductor_track_tempo_changes_time_later_tracks_from_the_last_change(tmp_path):
    # The tutorial's reader keeps one tempo state across tracks while ticks restart per track, so
    # notes in track 1 are timed by extrapolating from the conductor's last tempo change (tick 960).
    conductor = [tempo(500000, 0), tempo(250000, 480), tempo(1000000, 480)]
    # conductor: tick 480 -> 0.5 s, tick 960 -> 0.75 s, then 1 s per beat
    notes = [on(60, 960), off(60, 480)]  # ticks 960..1440 of track 1
    f = write_midi(tmp_path / "c.mid", conductor, notes)
    assert notes_of(f) == [(60, 0.75, 1.75)]  # a tempo map would say 0.75 .. 1.75 too
    early = write_midi(tmp_path / "e.mid", conductor, [on(61, 0), off(61, 480)])
    # ticks 0..480 are extrapolated backwards at 1 s/beat from (960 ticks, 0.75 s): -1.25 .. -0.25 s
    # (a tempo map would say 0 .. 0.5 s); such a file has no piano-roll
    assert notes_of(early) == [(61, -1.25, -0.25)]
    with pytest.raises(MidiError, match="before time 0"):
        midiread(early)


def test_velocity_zero_note_on_ends_a_note(tmp_path):
    f = write_midi(tmp_path / "v.mid", [on(64, 0), on(64, 480, velocity=0)])
    assert notes_of(f) == [(64, 0.0, 0.5)]


def test_note_off_closes_only_the_latest_note_of_its_pitch(tmp_path):
    # Two overlapping notes of pitch 60: the first note-off closes the second (latest) one; the
    # second note-off finds that latest note already closed and does nothing, so the first note
    # is never completed and is dropped. Channels are not distinguished.
    f = write_midi(tmp_path / "o.mid", [on(60, 0), on(60, 240, channel=1), off(60, 240), off(60, 240), on(67, 0), off(67, 240)])
    assert notes_of(f) == [(60, 0.25, 0.5), (67, 0.75, 1.0)]


def test_unfinished_notes_are_dropped_and_notes_are_collected_across_tracks(tmp_path):
    f = write_midi(tmp_path / "u.mid", [on(60, 0), off(60, 480), on(62, 0)], [on(72, 480), off(72, 480)])
    assert notes_of(f) == [(60, 0.0, 0.5), (72, 0.5, 1.0)]


def test_notes_outside_the_range_are_not_drawn_but_count_for_the_length(tmp_path):
    f = write_midi(tmp_path / "r.mid", [on(20, 0), on(60, 0), off(60, 480), on(109, 0), off(20, 480), off(109, 0)])
    roll = midiread(f, r=(21, 109), dt=0.25).piano_roll
    assert roll.shape == (4, 88)  # the out-of-range notes end at 1.0 s
    assert np.flatnonzero(roll.sum(axis=0)).tolist() == [60 - 21]
    assert roll[:, 60 - 21].tolist() == [1, 1, 0, 0]


def test_unreadable_or_empty_files_raise_midi_error_naming_the_file(tmp_path):
    junk = tmp_path / "junk.mid"
    junk.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\x00\x00\x10\x00\x00\x90")
    with pytest.raises(MidiError, match="junk.mid"):
        midiread(junk)
    silent = write_midi(tmp_path / "silent.mid", [on(60, 0)])
    with pytest.raises(MidiError, match="silent.mid.*no completed notes"):
        midiread(silent)


@pytest.mark.parametrize("dt", [0.3, 0.2, 0.15, 0.29])
def test_midiwrite_reads_back_to_the_same_piano_roll(tmp_path, dt):
    rng = np.random.RandomState(1)
    for trial in range(5):
        roll = (rng.rand(rng.randint(2, 200), 88) < 0.08).astype("float64")
        roll[:3] = 0  # leading silence is kept
        roll[-1, rng.randint(88)] = 1  # trailing silence is not representable (as in the original)
        path = tmp_path / f"w{trial}.mid"
        midiwrite(path, roll, r=(21, 109), dt=dt)
        np.testing.assert_array_equal(midiread(path, r=(21, 109), dt=dt).piano_roll, roll)


def test_midiwrite_writes_sustained_notes_once(tmp_path):
    roll = np.zeros((4, 3))
    roll[0:3, 1] = 1
    path = tmp_path / "s.mid"
    midiwrite(path, roll, r=(60, 63), dt=0.3)
    (track,) = mido.MidiFile(path).tracks
    notes = [m for m in track if m.type in ("note_on", "note_off")]
    assert [(m.type, m.note) for m in notes] == [("note_on", 61), ("note_off", 61)]
    assert notes[0].velocity == 90
    with pytest.raises(ValueError, match="columns"):
        midiwrite(path, np.zeros((4, 5)), r=(60, 63))


def test_loader_errors_name_the_fix(tmp_path):
    with pytest.raises(DataError, match=f"prepare_nottingham.py --data-dir {tmp_path}`"):  # the folder it looked in
        load_nottingham(tmp_path, "train")
    folder = tmp_path / "Nottingham" / "train"
    folder.mkdir(parents=True)
    with pytest.raises(DataError, match="no .mid files.*prepare_nottingham.py"):
        load_nottingham(tmp_path, "train")
    (folder / "broken.mid").write_bytes(b"not a midi file")
    with pytest.raises(DataError, match="broken.mid"):
        load_nottingham(tmp_path, "train")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"), pytest.raises(DataError, match="empty"):
        load_nottingham(tmp_path, "train", on_bad="skip")
    write_midi(folder / "good.mid", [on(60, 0), off(60, 480)])
    with pytest.warns(UserWarning, match="skipped 1 unreadable MIDI file.*broken.mid"):
        rolls = load_nottingham(tmp_path, "train", dt=0.25, on_bad="skip")
    assert [r.shape for r in rolls] == [(2, 88)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="split"):
            load_nottingham(tmp_path, "training")


def test_nottingham_train_split_has_the_papers_frame_count():
    # `make test` fetches the data (python data/prepare_nottingham.py). 147,737 frames at dt = 0.3
    # is the size the FIM paper reports for this training set.
    rolls = load_nottingham(None, "train", r=(21, 109), dt=0.3)
    assert len(rolls) == 694
    assert sum(len(r) for r in rolls) == 147737
    assert all(r.shape[1] == 88 and set(np.unique(r)) <= {0.0, 1.0} for r in rolls)
