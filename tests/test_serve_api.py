"""`merc serve`'s HTTP API on a toy run: every endpoint, the same records as `merc predict --json`, every bad input
the issue lists (each followed by a check that the server still answers), token rules, recording jobs."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from conftest import write_wav  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from serve_runs import srt, toy_run  # noqa: E402

from merc.cli import main  # noqa: E402
from merc.inference.predictor import Predictor  # noqa: E402
from merc.serve import app as serve_app  # noqa: E402
from merc.serve.app import ServeConfig, create_app, transcript_required  # noqa: E402

TOKEN = "t0ken-for-the-tests-0123456789"
CONV = {"conversation_id": "c1", "utterances": [
    {"speaker": "A", "text": "I feel great."}, {"speaker": "B", "text": "I feel furious."},
    {"speaker": "A", "text": "ok then."}, {"speaker": "B", "text": "sure.", "emotion": "angry"}]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return toy_run(tmp_path_factory, causal=True)


@pytest.fixture(scope="module")
def predictor(run):
    return Predictor.from_pretrained(run)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor, ServeConfig(max_body_bytes=20_000, max_utterances=50,
                                                      max_upload_bytes=400_000))) as c:
        yield c


def alive(client, headers=None):
    """The server still answers, and still labels."""
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.post("/v1/predict", json=CONV, headers=headers)
    assert r.status_code == 200, r.text
    assert len(r.json()["utterances"]) == 4


def test_health_model_and_schema(client, run):
    assert client.get("/healthz").json() == {"status": "ok"}
    m = client.get("/v1/model").json()
    labels = json.loads((Path(run) / "labels.json").read_text())
    assert m["labels"] == labels and m["causal"] is True and m["streaming"] == "step"
    assert m["modalities"] == ["text"] and m["encoders"] == {"text": ["toy-levers"]} and m["model"] == "mamba"
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/recordings", "/v1/recordings/{job_id}", "/v1/model", "/healthz"} <= set(spec["paths"])
    for page in ("/", "/docs", "/static/app.js", "/static/style.css"):
        r = client.get(page)
        assert r.status_code == 200
        # nothing loaded from the internet (the SVG namespace is an identifier, not a fetch)
        assert "http://" not in r.text.replace("http://www.w3.org/2000/svg", "") and "https://" not in r.text, page


def test_predict_json_equals_merc_predict(client, run, tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(CONV) + "\n")
    capsys.readouterr()
    assert main(["predict", str(run), str(path), "--json", "--no-plots", "--quiet"]) == 0
    cli = json.loads(capsys.readouterr().out)
    r = client.post("/v1/predict", json=CONV)
    assert r.status_code == 200
    assert r.json() == cli
    assert r.json()["utterances"][3]["gold"] == "angry"


def test_predict_text_plain(client):
    body = "\n".join(f"{u['speaker']}: {u['text']}" for u in CONV["utterances"])
    r = client.post("/v1/predict", content=body.encode(), headers={"Content-Type": "text/plain; charset=utf-8"})
    assert r.status_code == 200, r.text
    labels = [u["predicted"] for u in client.post("/v1/predict", json=CONV).json()["utterances"]]
    assert [u["predicted"] for u in r.json()["utterances"]] == labels
    assert [u["speaker"] for u in r.json()["utterances"]] == ["A", "B", "A", "B"]


BAD = [  # (name, body bytes, content type, status, words the message must contain)
    ("malformed JSON", b'{"utterances": [', "application/json", 422, "not valid JSON"),
    ("a JSON list", b"[1, 2]", "application/json", 422, "conversation object"),
    ("unknown conversation field", json.dumps({**CONV, "colour": 1}).encode(), "application/json", 422, "colour"),
    ("unknown utterance field", json.dumps({"utterances": [{"speaker": "A", "text": "hi", "mood": 1}]}).encode(),
     "application/json", 422, "mood"),
    ("empty conversation", b'{"utterances": []}', "application/json", 422, "non-empty list"),
    ("empty text", b'{"utterances": [{"speaker": "A", "text": "  "}]}', "application/json", 422, "empty text"),
    ("non-UTF-8 JSON", '{"utterances": [{"speaker": "A", "text": "caf\u00e9"}]}'.encode("latin-1"),
     "application/json", 422, "not UTF-8"),
    ("non-UTF-8 text", "A: caf\u00e9\n".encode("cp1252"), "text/plain", 422, "not UTF-8"),
    ("text without speaker", b"just words\n", "text/plain", 422, "Speaker: text"),
    ("empty text body", b"", "text/plain", 422, "no conversations"),
    ("a client path", json.dumps({"utterances": [{"speaker": "A", "text": "hi", "audio": "/etc/passwd"}]}).encode(),
     "application/json", 422, "opens no path"),
    ("two conversations", b"A: hi\n\nB: ho\n", "text/plain", 422, "one conversation per request"),
    ("too many utterances", ("A: hi\n" * 51).encode(), "text/plain", 422, "at most 50"),
    ("unknown content type", b"<a/>", "application/xml", 415, "content type"),
    ("too large", b"A: " + b"x" * 30_000, "text/plain", 413, "limit of 20000 bytes"),
]


@pytest.mark.parametrize("name,body,ctype,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_predict_input(client, name, body, ctype, status, words):
    r = client.post("/v1/predict", content=body, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert words in detail, detail
    assert "/tmp" not in detail  # no server path in the message
    alive(client)


def test_too_large_without_content_length(client):
    def chunks():  # a chunked upload: no Content-Length, counted as it arrives
        for _ in range(30):
            yield b"A: " + b"x" * 1000 + b"\n"
    r = client.post("/v1/predict", content=chunks(), headers={"Content-Type": "text/plain"})
    assert r.status_code == 413, r.text
    alive(client)


def test_token_rules(predictor):
    with TestClient(create_app(predictor, ServeConfig(token=TOKEN))) as c:
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            r = c.post("/v1/predict", json=CONV, headers=headers)
            assert r.status_code == 401 and "token" in r.json()["detail"], headers
            assert r.headers["www-authenticate"] == "Bearer"
            assert c.get("/v1/model", headers=headers).status_code == 401
            assert c.get("/v1/recordings/abc", headers=headers).status_code == 401
            alive(c, {"Authorization": f"Bearer {TOKEN}"})
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert c.get("/v1/model", headers=good).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200  # open: no data, no model
        with c.websocket_connect("/v1/stream") as ws:  # a browser sends the token as the first message
            ws.send_json({"token": "nope"})
            assert ws.receive_json()["status"] == 401
        with c.websocket_connect("/v1/stream") as ws:
            ws.send_json({"token": TOKEN})
            assert ws.receive_json()["ready"] is True
            ws.send_json({"speaker": "A", "text": "I feel great."})
            assert ws.receive_json()["index"] == 0
        with c.websocket_connect("/v1/stream", headers=good) as ws:
            assert ws.receive_json()["ready"] is True


def test_non_loopback_needs_a_token(run, capsys, monkeypatch):
    from merc.serve.cli import is_loopback, resolve_token
    monkeypatch.delenv("MERC_TOKEN", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    assert main(["serve", str(run), "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "MERC_TOKEN" in capsys.readouterr().err
    assert main(["serve", str(run), "--host", "0.0.0.0", "--token", "short"]) == 2
    assert "at least 16" in capsys.readouterr().err
    assert resolve_token("0.0.0.0", TOKEN) == TOKEN
    monkeypatch.setenv("MERC_TOKEN", TOKEN)
    assert resolve_token("0.0.0.0", None) == TOKEN
    assert resolve_token("127.0.0.1", None) == TOKEN  # a token set is always required


# recordings

UTTS = [("A", "I feel great."), ("B", "I feel furious."), ("A", "ok then.")]


def wait_job(client, job_id, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        job = client.get(f"/v1/recordings/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['status']}")


def test_recording_with_transcript_equals_merc_predict(client, run, tmp_path, capsys):
    wav, sub = tmp_path / "talk.wav", tmp_path / "talk.srt"
    write_wav(wav, seconds=3.0)
    sub.write_text(srt(UTTS))
    r = client.post("/v1/recordings", files={"file": ("talk.bin", wav.read_bytes(), "application/octet-stream"),
                                             "transcript": ("talk.srt", sub.read_bytes())})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/recordings/{r.json()['id']}"
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "done", job
    assert job["progress"] == 1.0 and job["utterances"] == 3
    capsys.readouterr()
    assert main(["predict", str(run), str(wav), "--transcript", str(sub), "--json", "--no-plots", "--quiet"]) == 0
    cli = json.loads(capsys.readouterr().out)
    got = job["result"]
    assert got["media"] == "talk.bin" and got["transcript"] == "talk.srt"  # the upload's names, no server path
    assert {k: v for k, v in got.items() if k not in ("media", "transcript")} == \
        {k: v for k, v in cli.items() if k not in ("media", "transcript")}
    assert not list(Path(serve_app.tempfile.gettempdir()).glob("merc-job-*")), "a job left its temporary folder"
    alive(client)


def test_recording_bad_inputs(client, tmp_path):
    wav = tmp_path / "a.wav"
    write_wav(wav, seconds=1.0)
    sub = srt(UTTS).encode()
    cases = [  # (files, status, words)
        ({"file": ("talk.mp4", b"this is not a video at all" * 10), "transcript": ("t.srt", sub)}, 422,
         "expected an audio or video recording"),
        ({"file": ("talk.wav", wav.read_bytes()), "transcript": ("t.srt", b"no subtitles here\n")}, 422, "t"),
        ({"file": ("talk.wav", wav.read_bytes()), "transcript": ("t.srt", "1\n\xe9".encode("latin-1"))}, 422,
         "not UTF-8"),
        ({"transcript": ("t.srt", sub)}, 422, "'file'"),
        ({"file": ("big.wav", b"x" * 500_000)}, 413, "limit"),
        ({"file": ("talk.wav", wav.read_bytes()), "transcript": ("t.srt", sub), "other": ("x", b"1")}, 400,
         "Too many files"),  # Starlette's multipart parser refuses a third file
        ({"file": ("talk.wav", wav.read_bytes()), "mood": (None, b"1")}, 422, "unknown form field"),
    ]
    for files, status, words in cases:
        r = client.post("/v1/recordings", files=files)
        assert r.status_code == status, (files.keys(), r.text)
        assert words in r.json()["detail"]
        alive(client)
    r = client.post("/v1/recordings", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 415
    assert client.get("/v1/recordings/nope").status_code == 404
    assert not list(Path(serve_app.tempfile.gettempdir()).glob("merc-job-*"))


def test_recording_without_transcript(client, tmp_path):
    wav = tmp_path / "a.wav"
    write_wav(wav, seconds=1.0)  # silence
    r = client.post("/v1/recordings", files={"file": ("talk.wav", wav.read_bytes())})
    if transcript_required():  # no merc.recording: the transcript must be uploaded
        assert r.status_code == 422 and "transcript is needed" in r.json()["detail"]
    else:  # merc.recording derives the transcript: accepted as a job, which ends in the pipeline's own error
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"])
        assert job["status"] == "failed" and "no speech found" in job["error"], job
        assert "/tmp" not in job["error"]  # the upload's name, no server path
    alive(client)


def test_failed_job_and_full_queue(predictor, tmp_path, monkeypatch):
    import merc.training.predict as predict_mod
    from merc.errors import InputError
    gate, calls = threading.Event(), []

    def fake_predict_file(*args, **kw):
        calls.append(kw["transcript"].parent)
        gate.wait(10)
        raise InputError(f"{kw['transcript']}: something the user must fix")

    monkeypatch.setattr(predict_mod, "predict_file", fake_predict_file)
    wav = tmp_path / "a.wav"
    write_wav(wav, seconds=3.0)
    files = {"file": ("talk.wav", wav.read_bytes()), "transcript": ("talk.srt", srt(UTTS).encode())}
    with TestClient(create_app(predictor, ServeConfig(workers=1, queue=1))) as c:
        first = c.post("/v1/recordings", files=files)
        second = c.post("/v1/recordings", files=files)
        assert first.status_code == second.status_code == 202
        third = c.post("/v1/recordings", files=files)
        assert third.status_code == 503 and "busy" in third.json()["detail"] and third.headers["retry-after"]
        gate.set()
        for r in (first, second):
            job = wait_job(c, r.json()["id"])
            assert job["status"] == "failed" and "something the user must fix" in job["error"]
            assert "/tmp" not in job["error"]
        assert calls and not any(folder.exists() for folder in calls), "a failed job left its upload behind"
        assert c.post("/v1/recordings", files=files).status_code == 202  # slots came back
        alive(c)
