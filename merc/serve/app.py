"""The HTTP service of ``merc serve``: a FastAPI app over one loaded :class:`~merc.inference.predictor.Predictor`.

    GET  /                      the page (plain HTML, CSS, JS shipped in the package; nothing from the internet)
    GET  /docs, /openapi.json   the API described (an offline page over the OpenAPI schema)
    GET  /healthz               {"status": "ok"}
    GET  /v1/model              the run: labels, modalities, encoders, model kind, causal, streaming mode
    POST /v1/predict            a conversation (JSON or 'Speaker: text' lines) -> the record `merc predict --json`
                                prints for it
    POST /v1/recordings         multipart `file` (+ `transcript`) -> 202 {"id", ...}; a bounded worker pool
    GET  /v1/recordings/{id}    status, progress and, when done, the record of `merc predict REC --json`
    WS   /v1/stream             live labelling, one message per utterance (merc.serve.stream)

With a token (``merc serve --token`` or ``MERC_TOKEN``; required to bind beyond loopback) every ``/v1`` request
needs ``Authorization: Bearer <token>`` (401 otherwise); the page, the schema and /healthz are open (they hold no
data and run no model), and the page asks for the token. Limits answer 413 (body or upload too large) or 422
(conversation too long); bad input answers 4xx with ``{"detail": "..."}`` and the server keeps serving.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from merc.errors import IncompatibleRunError, InputError, MercError
from merc.inference.predictor import Predictor
from merc.inference.records import predict_records
from merc.serve.auth import HTTPError, check_token
from merc.serve.inputs import UnsupportedMediaType, read_conversation, recording_suffix, transcript_suffix
from merc.serve.jobs import JobQueue, QueueFull, label_recording
from merc.serve.stream import serve_stream

log = logging.getLogger(__name__)

STATIC = resources.files("merc.serve") / "static"


@dataclass
class ServeConfig:
    token: str | None = None
    max_body_bytes: int = 1_000_000        # POST /v1/predict and stream messages
    max_upload_bytes: int = 200_000_000    # POST /v1/recordings (recording + transcript)
    max_utterances: int = 1000             # per conversation, per stream
    workers: int = 1                       # recording jobs run at once
    queue: int = 4                         # recording jobs waiting; more -> 503
    max_streams: int = 16                  # open WebSocket streams; more -> closed with 1013 (try again later)


def transcript_required() -> bool:
    """Whether a recording needs an uploaded transcript: until merc can derive one itself (``merc predict RUN
    talk.mp4`` without ``--transcript``, the ``merc.recording`` package), it does."""
    from importlib.util import find_spec
    return find_spec("merc.recording") is None


class BodyLimit:
    """ASGI middleware: a request body over its limit (by Content-Length, or counted as it arrives) is
    answered 413 without reading the rest."""

    def __init__(self, app, config: ServeConfig):
        self.app, self.config = app, config

    def limit(self, path: str) -> int:
        return self.config.max_upload_bytes if path.startswith("/v1/recordings") else self.config.max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit(scope["path"])
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await _too_large(send, limit)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await _too_large(send, limit)


class _TooLarge(Exception):
    pass


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": f"request body over this server's limit of {limit} bytes "
                                 "(merc serve --max-body-bytes / --max-upload-bytes)"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(predictor: Predictor, config: ServeConfig | None = None) -> FastAPI:
    """The service over ``predictor`` (loaded once: its model and encoders serve every request)."""
    config = config or ServeConfig()
    jobs = JobQueue(workers=config.workers, queue=config.queue)
    # requests and streams call the model from this one thread (they would wait for its lock anyway): with a
    # thread per waiting request, each thread's allocator arena kept its own high-water mark (RSS grew with
    # concurrency in benchmarks/bench_serve.py)
    model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="merc-model")

    async def in_model_thread(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(model_thread, functools.partial(fn, *args))

    @asynccontextmanager
    async def lifespan(app):
        yield
        jobs.shutdown()  # running jobs are dropped; their temporary folders are deleted
        model_thread.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="merc", summary="Emotion recognition in conversation: labels per utterance",
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan)
    app.state.predictor, app.state.config, app.state.jobs, app.state.streams = predictor, config, jobs, 0
    app.state.in_model_thread = in_model_thread
    app.add_middleware(BodyLimit, config=config)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, e: HTTPError):
        return JSONResponse({"detail": e.detail}, status_code=e.status, headers=e.headers)

    @app.exception_handler(MercError)
    async def _merc_error(request: Request, e: MercError):
        status = 415 if isinstance(e, UnsupportedMediaType) else 500 if isinstance(e, IncompatibleRunError) else 422
        return JSONResponse({"detail": str(e)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return JSONResponse({"detail": "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())},
                            status_code=422)

    def auth(request: Request) -> None:
        check_token(config.token, request.headers.get("authorization"))

    # pages

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/docs", include_in_schema=False)
    def docs():
        return FileResponse(str(STATIC / "docs.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/healthz", summary="liveness")
    def healthz():
        return {"status": "ok"}

    # the API

    @app.get("/v1/model", summary="the run this server labels with")
    def model(request: Request):
        auth(request)
        return {**predictor.describe(), "limits": {"max_utterances": config.max_utterances,
                                                   "max_body_bytes": config.max_body_bytes,
                                                   "max_upload_bytes": config.max_upload_bytes},
                "transcript_required": transcript_required()}

    @app.post("/v1/predict", summary="label every utterance of one conversation", openapi_extra={
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "object", "example": {"utterances": [
                {"speaker": "Ann", "text": "I got the job!"}, {"speaker": "Bob", "text": "That's wonderful."}]}}},
            "text/plain": {"schema": {"type": "string", "example": "Ann: I got the job!\nBob: That's wonderful."}}}}})
    async def predict(request: Request):
        auth(request)
        body = await request.body()
        data = read_conversation(body, request.headers.get("content-type", ""), max_utterances=config.max_utterances)
        records = await in_model_thread(predict_records, predictor, data.conversations, data.raw)
        return records[0]

    @app.post("/v1/recordings", status_code=202, summary="label a recording (multipart: file, transcript)")
    async def recordings(request: Request):
        auth(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise HTTPError(415, "send multipart/form-data with a 'file' part (the recording) and, optionally, a "
                                 "'transcript' part (.srt or .json segments)")
        form = await request.form(max_files=2, max_fields=2)
        try:
            return await _start_job(form)
        finally:
            await form.close()

    async def _start_job(form):
        unknown = sorted(set(form.keys()) - {"file", "transcript"})
        if unknown:
            raise InputError(f"unknown form field(s) {unknown}; expected 'file' and optionally 'transcript'")
        upload, transcript = form.get("file"), form.get("transcript")
        if not isinstance(upload, UploadFile):
            raise InputError("no 'file' part: upload the recording as the multipart field 'file'")
        if transcript is None and transcript_required():
            raise InputError("a transcript is needed: this merc cannot yet find who speaks when in a recording; "
                             "upload it as the 'transcript' part (.srt 'Speaker: text' subtitles or JSON segments "
                             "[{speaker, text, start, end}])")
        folder = Path(tempfile.mkdtemp(prefix="merc-job-"))
        try:
            raw = folder / "upload"
            with raw.open("wb") as f:
                await run_in_threadpool(shutil.copyfileobj, upload.file, f)
            suffix, _ = await run_in_threadpool(recording_suffix, raw)
            media = raw.rename(folder / f"{_stem(upload.filename)}{suffix}")  # the stem names the conversation
            tpath = None
            if transcript is not None:
                body = await transcript.read() if isinstance(transcript, UploadFile) else str(transcript).encode()
                tpath = folder / f"transcript{transcript_suffix(body)}"
                tpath.write_bytes(body)
                await run_in_threadpool(_check_transcript, media, tpath)
            job = jobs.new_job(folder, _name(upload.filename, "recording"),
                               None if tpath is None else _name(getattr(transcript, "filename", None), "transcript"))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            jobs.submit(job, lambda j: label_recording(predictor, j, media, tpath))
        except QueueFull:
            raise HTTPError(503, f"busy: {config.workers} recording job(s) running and {config.queue} waiting; "
                                 "try again later", {"Retry-After": "10"}) from None
        return JSONResponse(job.to_dict(), status_code=202, headers={"Location": f"/v1/recordings/{job.id}"})

    @app.get("/v1/recordings/{job_id}", summary="a recording job: status, progress, result")
    def recording(job_id: str, request: Request):
        auth(request)
        job = jobs.get(job_id)
        if job is None:
            raise HTTPError(404, f"no recording job {job_id!r} (finished jobs are forgotten after "
                                 f"{jobs.keep} newer ones)")
        return job.to_dict()

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        await serve_stream(ws, app)

    return app


def _check_transcript(media: Path, transcript: Path) -> None:
    from merc.data.transcript import media_conversation
    try:
        media_conversation(media, transcript)
    except MercError as e:
        raise InputError(str(e).replace(str(transcript.parent) + "/", "")) from None


def _stem(filename: str | None) -> str:
    """A safe file stem from a client's file name (letters, digits, ``._-``), ``recording`` when none is left."""
    stem = re.sub(r"[^\w.-]+", "_", Path(filename or "").stem).strip("._")[:80]
    return stem or "recording"


def _name(filename: str | None, default: str) -> str:
    """A client's file name, for display only (never a path on this server)."""
    name = Path(filename or default).name[:200]
    return name or default
