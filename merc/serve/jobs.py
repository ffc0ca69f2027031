"""Recording jobs: an uploaded audio/video file (and its transcript) labelled in a bounded worker pool.

At most ``workers`` jobs run and ``queue`` more wait; a job beyond that is refused (``QueueFull`` -> HTTP 503),
so memory never grows with the number of uploads. Finished jobs are kept for ``keep`` more submissions
(oldest forgotten first). Each job owns a temporary folder holding its upload and transcript; the folder is
deleted when the job ends, whether it succeeded, failed or was never run.

A job runs ``merc predict REC --transcript T --json`` (:func:`merc.training.predict.predict_file`) with the
server's loaded run, so its result is the same JSON, except that ``media`` and ``transcript`` name the uploaded
files instead of server paths.
"""
from __future__ import annotations

import io
import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from merc.errors import MercError

log = logging.getLogger(__name__)

STAGES = {"queued": 0.0, "reading": 0.1, "labelling": 0.3, "done": 1.0, "failed": 1.0}


class QueueFull(Exception):
    """Every worker is busy and the queue is full."""


@dataclass
class Job:
    id: str
    folder: Path
    media_name: str
    transcript_name: str | None
    status: str = "queued"  # queued | reading | labelling | done | failed
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    utterances: int | None = None
    result: dict | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        now = self.finished or time.time()
        out: dict[str, Any] = {"id": self.id, "status": self.status, "progress": STAGES[self.status],
                               "media": self.media_name, "transcript": self.transcript_name,
                               "elapsed": round(now - (self.started or now), 3),
                               "waited": round((self.started or now) - self.created, 3)}
        if self.utterances is not None:
            out["utterances"] = self.utterances
        if self.result is not None:
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


class JobQueue:
    """``submit(job, work)``: run ``work(job)`` in the pool; :meth:`get` reports it."""

    def __init__(self, *, workers: int = 1, queue: int = 4, keep: int = 100):
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="merc-job")
        self.slots = threading.BoundedSemaphore(workers + queue)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.keep = keep
        self.lock = threading.Lock()

    def new_job(self, folder: Path, media_name: str, transcript_name: str | None) -> Job:
        return Job(uuid.uuid4().hex, folder, media_name, transcript_name)

    def submit(self, job: Job, work: Callable[[Job], None]) -> None:
        if not self.slots.acquire(blocking=False):
            shutil.rmtree(job.folder, ignore_errors=True)
            raise QueueFull
        with self.lock:
            self.jobs[job.id] = job
            finished = [k for k, j in self.jobs.items() if j.status in ("done", "failed")]
            for k in finished[:max(0, len(self.jobs) - self.keep)]:
                del self.jobs[k]
        try:
            self.pool.submit(self._run, job, work)
        except RuntimeError:  # the pool is shutting down
            self.slots.release()
            shutil.rmtree(job.folder, ignore_errors=True)
            raise QueueFull from None

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def _run(self, job: Job, work: Callable[[Job], None]) -> None:
        job.started = time.time()
        try:
            work(job)
            job.status = "done"
        except MercError as e:
            job.error, job.status = str(e).replace(str(job.folder) + "/", ""), "failed"
        except Exception as e:  # a bug: keep serving, say so, log the traceback
            log.exception("recording job %s failed", job.id)
            job.error, job.status = f"internal error: {type(e).__name__}: {e}", "failed"
        finally:
            job.finished = time.time()
            shutil.rmtree(job.folder, ignore_errors=True)
            self.slots.release()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            for j in self.jobs.values():
                shutil.rmtree(j.folder, ignore_errors=True)


def label_recording(predictor, job: Job, media: Path, transcript: Path | None) -> None:
    """The work of a job: ``merc predict media [--transcript transcript] --json`` with the server's run."""
    from merc.data.transcript import media_conversation
    from merc.training.predict import predict_file
    job.status = "reading"
    if transcript is not None:
        conv, _ = media_conversation(media, transcript)
        job.utterances = len(conv)
    job.status = "labelling"
    records = predict_file(None, media, run=predictor.shared_run(), out_dir=None, as_json=True, plots=False,
                           stream=io.StringIO(), transcript=transcript)
    rec = records[0]
    rec["media"], rec["transcript"] = job.media_name, job.transcript_name
    job.utterances = len(rec["utterances"])
    job.result = rec
