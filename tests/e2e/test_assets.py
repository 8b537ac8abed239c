"""Flow assets through the real stack: audio files checked by content and served to the
phone network by signed URLs (no API key), dictionaries whose entries speak a play node's
numbers, and the TwiML <Play> a real call gets."""

from __future__ import annotations

import io
import math
import struct
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.harness import Platform, wait_for


def wav(seconds: float = 1.0, rate: int = 8000, tone: int = 0) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack("<h", tone) * int(seconds * rate))
    return buf.getvalue()


def tone_wav(seconds: float, rate: int = 44100, channels: int = 2) -> bytes:
    """A 440 Hz tone, as a studio would send it (44.1 kHz stereo)."""
    frame = [struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) * channels for i in range(int(seconds * rate))]
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(frame))
    return buf.getvalue()


def encoded(container: str, codec: str, seconds: float = 2.0) -> bytes:
    """A real MP3 (LAME) or OGG (Opus) file of the tone, encoded with FFmpeg's libraries."""
    import av
    from av.audio.resampler import AudioResampler

    out = io.BytesIO()
    with av.open(io.BytesIO(tone_wav(seconds)), "r") as src, av.open(out, "w", format=container) as dst:
        stream = dst.add_stream(codec, rate=48000 if codec == "libopus" else 44100)
        stream.layout = "stereo"
        to = AudioResampler(format=stream.codec_context.codec.audio_formats[0].name, layout="stereo", rate=stream.codec_context.sample_rate)
        for frame in [*src.decode(audio=0), None]:
            for f in to.resample(frame):
                dst.mux(stream.encode(f))
        dst.mux(stream.encode(None))
    return out.getvalue()


def wav_shape(data: bytes) -> tuple[int, int, int, float]:
    with wave.open(io.BytesIO(data)) as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth() * 8, round(w.getnframes() / w.getframerate(), 2)


MP3 = encoded("mp3", "libmp3lame")
OGG = encoded("ogg", "libopus")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, httpx.Client]]:
    platform = Platform(tmp_path_factory.mktemp("assets") / "var")
    _, key = platform.new_org()
    with platform.client(key) as client:
        yield platform, client
    platform.close()


def upload(c: httpx.Client, data: bytes, name: str = "hello.wav", **fields: str) -> httpx.Response:
    form = {"title": "Hello", "usageType": "welcome", **fields}
    return c.post("/api/audio-management/upload", files={"file": (name, data, "application/octet-stream")}, data=form)


def test_upload_is_checked_by_content(world: tuple[Platform, httpx.Client]) -> None:
    _, c = world
    r = upload(c, wav(1.5), tags="greeting,fr", description="Bonjour")
    assert r.status_code == 201, r.text
    a = r.json()
    assert (a["durationSeconds"], a["sampleRate"], a["channels"], a["bitDepth"]) == (1.5, 8000, 1, 16)
    assert a["tags"] == ["greeting", "fr"] and a["usageType"] == "welcome" and a["uploadedBy"]
    assert a["file"]["contentType"] == "audio/wav" and a["file"]["fileSize"] == len(wav(1.5))

    fake = upload(c, b"not audio at all, just text", "fake.wav")
    assert fake.status_code == 400 and "WAV, MP3 or OGG" in fake.json()["fieldErrors"]["file"][0]


@pytest.mark.parametrize("kind", ["wav", "mp3", "ogg"])
def test_uploads_are_converted_for_telephony_and_the_original_kept(world: tuple[Platform, httpx.Client], kind: str) -> None:
    """WAV, MP3 or OGG at any rate and channel count becomes an 8 kHz 16-bit mono WAV that
    Twilio plays as it is; the original is kept and described."""
    platform, c = world
    data = {"wav": tone_wav(2.0), "mp3": MP3, "ogg": OGG}[kind]
    r = upload(c, data, f"studio.{kind}")
    assert r.status_code == 201, r.text
    a = r.json()
    assert (a["durationSeconds"], a["sampleRate"], a["channels"], a["bitDepth"], a["format"]) == (2.0, 8000, 1, 16, "wav")
    source_rate = 48000 if kind == "ogg" else 44100
    assert a["original"] == {"format": kind, "contentType": {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg"}[kind],
                             "sampleRate": source_rate, "channels": 2, "bitDepth": 16 if kind == "wav" else None, "fileSize": len(data)}  # fmt: skip
    assert a["file"]["contentType"] == a["original"]["contentType"] and a["file"]["fileSize"] == len(data)
    assert a["file"]["playable"] is True and a["file"]["playback"]["sampleRate"] == 8000

    streamed = c.get(f"/api/audio-management/audio/{a['id']}")  # what the phone network fetches
    assert streamed.headers["content-type"] == "audio/wav" and wav_shape(streamed.content) == (8000, 1, 16, 2.0)
    assert len(streamed.content) == a["file"]["playback"]["fileSize"]
    played = httpx.get(c.get(f"/api/audio-management/audio/{a['id']}/playback-url").json()["playbackUrl"])
    assert played.content == streamed.content
    original = c.get(f"/api/audio-management/audio/{a['id']}/original")
    assert original.status_code == 200 and original.content == data
    assert original.headers["content-type"].startswith(a["original"]["contentType"])
    assert httpx.get(f"{platform.base_url}/api/audio-management/audio/{a['id']}/original").status_code == 401
    listed = wait_for(lambda: [x for x in c.get("/api/audio-management/audios", params={"limit": 100}).json()["data"] if x["id"] == a["id"]], 10)
    assert listed[0]["original"] == a["original"] and listed[0]["sampleRate"] == 8000


def test_a_corrupt_file_is_refused_with_why(world: tuple[Platform, httpx.Client]) -> None:
    _, c = world
    import random

    noise = bytes(random.Random(4).randrange(256) for _ in range(3000))
    frame = MP3.find(b"\xff\xfb")
    for name, data, kind in (("junk.mp3", MP3[: frame + 4] + noise, "MP3"), ("cut.ogg", OGG[:200], "OGG"),
                             ("cut.wav", tone_wav(1.0)[:44] + b"\x00\x01", "WAV")):  # fmt: skip
        r = upload(c, data, name)
        assert r.status_code == 400, (name, r.text)
        message = r.json()["fieldErrors"]["file"][0]
        assert message.startswith(f"is a {kind} file that could not be decoded as audio"), message
        assert message.endswith("it may be corrupt or truncated"), message
    assert upload(c, wav(), usageType="jingle").json()["fieldErrors"]["usageType"]
    assert upload(c, wav(), title="").json()["fieldErrors"]["title"]
    assert upload(c, wav(700)).json()["fieldErrors"]["file"][0].startswith("lasts 700 s")
    assert c.post("/api/audio-management/upload", data={"title": "no file"}).status_code == 400


def test_list_update_delete_and_isolation(world: tuple[Platform, httpx.Client]) -> None:
    platform, c = world
    ids = [upload(c, wav(s), f"{t}.wav", title=t, usageType=u).json()["id"]
           for t, u, s in (("Zeta goodbye", "goodbye", 1), ("Alpha question", "question", 3), ("Mid question", "question", 2))]  # fmt: skip

    def listed(**params: Any) -> list[str]:
        body = c.get("/api/audio-management/audios", params=params).json()
        return [a["id"] for a in body["data"] if a["id"] in ids]

    wait_for(lambda: len(listed(limit=100)) == 3, 10, what="the uploads to be listed")
    assert listed(usageType="question", sortBy="title", sortOrder="asc") == [ids[1], ids[2]]
    assert listed(sortBy="durationSeconds", sortOrder="desc", limit=100) == [ids[1], ids[2], ids[0]]
    assert listed(search="zeta") == [ids[0]]
    assert [a["id"] for a in c.get("/api/audio-management/audios/usage/goodbye").json()["data"]] == [ids[0]]
    assert c.get("/api/audio-management/audios", params={"sortBy": "size"}).status_code == 400

    changed = c.put(f"/api/audio-management/audio/{ids[0]}", json={"title": "Omega", "tags": ["x"]})
    assert changed.status_code == 200 and changed.json()["title"] == "Omega" and changed.json()["tags"] == ["x"]
    assert c.get(f"/api/audio-management/audio/{ids[0]}/metadata").json()["title"] == "Omega"
    wait_for(lambda: listed(search="omega") == [ids[0]], 10, what="the new title to be listed")

    _, other_key = platform.new_org("Other")
    with platform.client(other_key) as other:
        assert other.get(f"/api/audio-management/audio/{ids[0]}/metadata").status_code == 404
        assert other.get(f"/api/audio-management/audio/{ids[0]}").status_code == 404

    assert c.delete(f"/api/audio-management/audio/{ids[0]}").status_code == 200
    assert c.get(f"/api/audio-management/audio/{ids[0]}/metadata").status_code == 404
    wait_for(lambda: ids[0] not in listed(limit=100), 10, what="the deleted audio to leave the list")


def test_stream_and_signed_playback_url(world: tuple[Platform, httpx.Client]) -> None:
    platform, c = world
    data = wav(1.0, tone=1000)
    aid = upload(c, data).json()["id"]
    streamed = c.get(f"/api/audio-management/audio/{aid}")
    assert streamed.status_code == 200 and streamed.headers["content-type"] == "audio/wav"
    assert wav_shape(streamed.content) == (8000, 1, 16, 1.0)
    anonymous = httpx.get(f"{platform.base_url}/api/audio-management/audio/{aid}")
    assert anonymous.status_code == 401

    p = c.get(f"/api/audio-management/audio/{aid}/playback-url", params={"expiresIn": 60}).json()
    assert p["id"] == aid and p["expiresIn"] == 60 and p["expiresAt"].endswith("Z")
    fetched = httpx.get(p["playbackUrl"])  # no API key, as Twilio fetches it
    assert fetched.status_code == 200 and fetched.content == streamed.content
    assert httpx.get(p["playbackUrl"].replace("signature=", "signature=0")).status_code == 403
    other = upload(c, wav(0.5)).json()["id"]
    assert httpx.get(p["playbackUrl"].replace(aid, other)).status_code == 403  # one file only
    assert c.get(f"/api/audio-management/audio/{aid}/playback-url", params={"expiresIn": 0}).status_code == 400
    assert c.get(f"/api/audio-management/audio/{aid}/playback-url", params={"expiresIn": 86401}).status_code == 400
    platform.clock.advance(200)
    assert httpx.get(p["playbackUrl"]).status_code == 403  # expired


def test_dictionaries(world: tuple[Platform, httpx.Client]) -> None:
    _, c = world
    listed = c.get("/api/dictionaries").json()
    system = {d["language"]: d for d in listed if d["isSystem"]}
    assert set(system) == {"ar", "fr"} and system["fr"]["organizationId"] is None
    assert c.delete(f"/api/dictionaries/{system['fr']['id']}").status_code == 403
    put_system = c.post(f"/api/dictionaries/{system['fr']['id']}/entries", files={"file": ("1.wav", wav(), "audio/wav")}, data={"key": "1"})
    assert put_system.status_code == 403

    assert c.post("/api/dictionaries", json={"name": "x", "language": "de"}).json()["fieldErrors"]["language"]
    d = c.post("/api/dictionaries", json={"name": "Mes nombres", "language": "fr"})
    assert d.status_code == 201 and d.json()["isSystem"] is False and d.json()["createdBy"]
    did = d.json()["id"]
    e = c.post(f"/api/dictionaries/{did}/entries", files={"file": ("cent.wav", wav(), "audio/wav")}, data={"key": "100"})
    assert e.status_code == 201, e.text
    got = c.get(f"/api/dictionaries/{did}/entries/100").json()
    assert got["key"] == "100" and got["dictionaryId"] == did and got["audioId"] == e.json()["audioId"]
    bad = c.post(f"/api/dictionaries/{did}/entries", files={"file": ("x.wav", b"text", "audio/wav")}, data={"key": "2"})
    assert bad.status_code == 400
    assert c.delete(f"/api/dictionaries/{did}/entries/100").status_code == 200
    assert c.get(f"/api/dictionaries/{did}/entries/100").status_code == 404
    # The list is a read model: the new dictionary appears in it once projected.
    wait_for(lambda: did in [x["id"] for x in c.get("/api/dictionaries").json()], 10, what="the dictionary to be listed")
    assert c.delete(f"/api/dictionaries/{did}").status_code == 200
    assert c.get(f"/api/dictionaries/{did}").status_code == 404


def test_a_call_plays_uploaded_audio_and_stitched_numbers(world: tuple[Platform, httpx.Client]) -> None:
    platform, c = world
    greeting = wav(1.0, tone=7)
    gid = upload(c, greeting).json()["id"]
    did = c.post("/api/dictionaries", json={"name": "Chiffres", "language": "fr"}).json()["id"]
    entries = {}
    for key in ("40", "2"):
        r = c.post(f"/api/dictionaries/{did}/entries", files={"file": (f"{key}.wav", wav(0.5, tone=int(key)), "audio/wav")}, data={"key": key})
        entries[key] = r.json()["audioId"]
    graph = {"startNodeId": "dial", "nodes": {
        "dial": {"type": "dial", "config": {"enableAMD": False}, "outputs": {"onAnswer": "play"}},
        "play": {"type": "play", "config": {"audioItems": [
            {"type": "audioFile", "audioId": gid},
            {"type": "number", "value": 42, "mode": "full", "language": "fr", "dictionaryId": did},
            {"type": "number", "value": 43, "mode": "full", "language": "fr", "dictionaryId": did},  # no "3": TTS
            {"type": "number", "value": 7, "language": "fr"}]}, "outputs": {"onComplete": "bye"}},  # system: empty, TTS
        "bye": {"type": "hangup"}}}  # fmt: skip
    phone = "+212617000004"
    contact = c.post("/api/contact", json={"primaryPhone": phone}).json()
    audience = c.post("/api/audience", json={"name": "assets"}).json()
    c.post(f"/api/audience/{audience['id']}/add-contacts", json={"contacts": [contact["id"]]})
    flow = c.post("/api/flows", json={"name": "assets", "graph": graph})
    assert flow.status_code == 201, flow.text
    program = c.post("/api/programs", json={
        "name": "assets", "audienceId": audience["id"], "flowId": flow.json()["id"],
        "startAt": datetime.now(UTC).isoformat(), "didPool": ["+212500000001"], "retryStrategy": {"type": "none"}}).json()  # fmt: skip
    eid = c.post(f"/api/programs/{program['id']}/launch").json()["executionId"]
    wait_for(lambda: c.get(f"/api/program-executions/{eid}").json()["status"] == "completed", 30, what="the call")

    verbs = [v for call in platform.sandbox.calls() if call["to"] == phone for v in call["verbs"] if v["verb"] in ("Play", "Say")]
    assert [(v["verb"], v.get("text")) for v in verbs] == [("Play", None), ("Play", None), ("Play", None), ("Say", "43"), ("Say", "7")]
    # Twilio fetches each <Play> with no API key: the URLs are signed.
    heard = [httpx.get(v["url"]) for v in verbs if v["verb"] == "Play"]
    assert [r.status_code for r in heard] == [200, 200, 200]
    assert heard[0].content == c.get(f"/api/audio-management/audio/{gid}").content
    assert c.get(f"/api/audio-management/audio/{gid}/original").content == greeting
    assert [r.content for r in heard[1:]] == [c.get(f"/api/audio-management/audio/{entries[k]}").content for k in ("40", "2")]
