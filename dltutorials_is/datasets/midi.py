"""MIDI files <-> binary piano-rolls, with the exact semantics of the RNN-RBM tutorial's `midi/utils.py`.

A piano-roll is a (frames x pitches) 0/1 array: frame t covers time [t*dt, (t+1)*dt) seconds and
column j is MIDI note r[0] + j. The tutorial read files with a small event-stream MIDI parser; this
module reads them with `mido` but reproduces that reader's timing rules on purpose, quirks included,
so that every piano-roll (and hence every number downstream) is the one the original produced:

* Tick -> seconds uses one tempo state shared by all tracks in file order, while the tick counter
  restarts at 0 with each track. For the usual file (one tempo at tick 0) this is the exact time.
  When the conductor track changes tempo, the notes of later tracks are timed by extrapolating from
  the *last* tempo change (one Nottingham training song, morris_simple_chords_2, is read this way).
* A note-on with velocity 0 is a note-off. A note-off closes the most recent note of that pitch
  (any channel, any track) if it is still open; otherwise it is ignored. Notes never closed are dropped.
* A note sounding from s to e seconds fills frames ceil(s/dt) .. ceil(e/dt)-1 (numpy slicing rules,
  so notes shorter than a frame can vanish); the roll has ceil(max e / dt) frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from dltutorials_is.errors import SettingError, UserError

DEFAULT_TEMPO = 500000  # microseconds per quarter note (120 bpm), the MIDI default
#: Longer than this, a file is not a song: a garbled tempo or time division can time a note days
#: late, and its piano-roll would not fit in memory.
MAX_SECONDS = 6 * 3600
WRITE_TICKS_PER_BEAT = 480  # at the default tempo: 960 ticks per second
WRITE_VELOCITY = 90


class MidiError(UserError, ValueError):
    """A MIDI file that cannot be read or holds nothing to turn into a piano-roll."""


@dataclass(frozen=True)
class Note:
    pitch: int
    start: float  # seconds
    end: float  # seconds


@dataclass(frozen=True)
class MidiContents:
    """What `midiread` returns: the completed notes and the piano-roll built from them."""

    notes: tuple[Note, ...]
    piano_roll: np.ndarray  # float64 0/1, frames x (r[1] - r[0])


class _TempoClock:
    """Seconds at the current tick, computed like the tutorial's reader (see the module docstring)."""

    def __init__(self, ticks_per_beat: int):
        self.ticks_per_beat = ticks_per_beat
        self.tempo = DEFAULT_TEMPO
        self.anchor_ticks = 0  # tick of the last tempo change (in the track where it happened)
        self.anchor_seconds = 0.0
        self.ticks = 0

    def start_track(self) -> None:
        self.ticks = 0

    def seconds(self) -> float:
        # Same operation order as the original, so float rounding (and every ceil) is identical.
        return self.anchor_seconds + self.tempo * (self.ticks - self.anchor_ticks) * 1e-6 / self.ticks_per_beat

    def set_tempo(self, tempo: int) -> None:
        self.anchor_seconds = self.seconds()
        self.anchor_ticks = self.ticks
        self.tempo = tempo


def _open(filename) -> mido.MidiFile:
    try:
        midi = mido.MidiFile(filename)
    except FileNotFoundError:
        raise
    except Exception as error:  # OSError, EOFError, ValueError, mido's KeySignatureError, …: a garbled file
        raise MidiError(f"{filename}: not a readable MIDI file ({type(error).__name__}: {error})") from error
    if midi.type == 2:
        raise MidiError(f"{filename}: MIDI format 2 (independent sequences) is not supported")
    if midi.ticks_per_beat <= 0 or midi.ticks_per_beat & 0x8000:
        raise MidiError(f"{filename}: SMPTE time division is not supported (only ticks per beat)")
    return midi


def read_notes(filename) -> list[Note]:
    """All completed notes of a MIDI file, in the order their note-on events were read."""
    midi = _open(filename)
    clock = _TempoClock(midi.ticks_per_beat)
    open_or_done: list[list] = []  # [pitch, start, end or None], in note-on order
    for track in midi.tracks:
        clock.start_track()
        for message in track:
            clock.ticks += message.time
            if message.type == "set_tempo":
                clock.set_tempo(message.tempo)
            elif message.type == "note_on" and message.velocity > 0:
                open_or_done.append([message.note, clock.seconds(), None])
            elif message.type in ("note_on", "note_off"):
                _close_latest(open_or_done, message.note, clock.seconds())
    return [Note(pitch, start, end) for pitch, start, end in open_or_done if end is not None]


def _close_latest(notes: list[list], pitch: int, seconds: float) -> None:
    """Close the most recent note of `pitch` if it is still open (an older open one stays open)."""
    for note in reversed(notes):
        if note[0] == pitch:
            if note[2] is None:
                note[2] = seconds
            return


def notes_to_piano_roll(notes: list[Note], r: tuple[int, int], dt: float) -> np.ndarray:
    """Binary piano-roll of `notes`; its length comes from every note, but only pitches in r are drawn."""
    if not notes:
        raise MidiError("no completed notes, so there is no piano-roll to build")
    last = max(note.end for note in notes)
    if not last <= MAX_SECONDS:
        raise MidiError(f"a note ends after {last / 3600:.3g} hours, more than the {MAX_SECONDS / 3600:g} a song "
                        "can last (a garbled tempo or time division?)")
    length = int(np.ceil(last / dt))
    if length <= 0:
        raise MidiError("every note ends before time 0 (see the cross-track tempo rule above)")
    roll = np.zeros((length, r[1] - r[0]))
    for note in notes:
        if r[0] <= note.pitch < r[1]:
            roll[int(np.ceil(note.start / dt)) : int(np.ceil(note.end / dt)), note.pitch - r[0]] = 1
    return roll


def midiread(filename, r: tuple[int, int] = (21, 109), dt: float = 0.2) -> MidiContents:
    """Read a MIDI file into a piano-roll of pitches r[0] <= note < r[1], one frame per `dt` seconds."""
    notes = read_notes(filename)
    try:
        roll = notes_to_piano_roll(notes, r, dt)
    except MidiError as error:
        raise MidiError(f"{filename}: {error}") from None
    return MidiContents(tuple(notes), roll)


def piano_roll_to_track(piano_roll: np.ndarray, r: tuple[int, int], dt: float, patch: int = 0) -> mido.MidiTrack:
    """One track at the default tempo: a note starts where a pitch turns on and ends where it turns off
    (velocity 90 on, note-off with velocity 0, trailing silent frames not kept), as the tutorial wrote them.

    Unlike the tutorial, each event is written one tick (about 1 ms) *before* its frame boundary at
    480 ticks per beat: an event exactly on the boundary i*dt reads back as frame i+1 whenever float
    rounding makes ceil(time/dt) overshoot (a quarter of all boundaries at dt=0.3). See DEVIATIONS.md.
    """
    ticks_per_second = WRITE_TICKS_PER_BEAT * 1e6 / DEFAULT_TEMPO
    if dt * ticks_per_second < 2:
        raise SettingError(f"dt={dt} s is shorter than two MIDI ticks ({2 / ticks_per_second:.4f} s) — piano-rolls "
                           "this fine cannot be written as MIDI")

    def event_tick(boundary: int) -> int:
        return max(0, round(boundary * dt * ticks_per_second) - 1)

    frames = [set((np.flatnonzero(frame) + r[0]).tolist()) for frame in np.asarray(piano_roll)]
    track = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=DEFAULT_TEMPO, time=0),
            mido.Message("program_change", channel=0, program=patch, time=0),
        ]
    )
    last_tick = 0

    def add(kind: str, pitch: int, velocity: int, boundary: int) -> None:
        nonlocal last_tick
        tick = event_tick(boundary)
        track.append(mido.Message(kind, channel=0, note=pitch, velocity=velocity, time=tick - last_tick))
        last_tick = tick

    for i, pitches in enumerate(frames):
        before = frames[i - 1] if i > 0 else set()
        after = frames[i + 1] if i + 1 < len(frames) else set()
        for pitch in sorted(pitches - before):
            add("note_on", pitch, WRITE_VELOCITY, i)
        for pitch in sorted(pitches - after):
            add("note_off", pitch, 0, i + 1)
    track.append(mido.MetaMessage("end_of_track", time=0))
    return track


def midiwrite(filename, piano_roll: np.ndarray, r: tuple[int, int] = (21, 109), dt: float = 0.2, patch: int = 0) -> None:
    """Write a piano-roll as a format-0 MIDI file that `midiread` with the same r and dt reads back."""
    piano_roll = np.asarray(piano_roll)
    if piano_roll.ndim != 2 or piano_roll.shape[1] != r[1] - r[0]:
        raise ValueError(f"piano-roll of shape {piano_roll.shape} does not have r[1]-r[0] = {r[1] - r[0]} columns")
    midi = mido.MidiFile(type=0, ticks_per_beat=WRITE_TICKS_PER_BEAT)
    midi.tracks.append(piano_roll_to_track(piano_roll, r, dt, patch))
    midi.save(str(Path(filename)))
