"""``WS /v1/stream``: live labelling, one JSON message per utterance (:class:`merc.inference.stream.StreamSession`).

Client -> server, one JSON object per message:

    {"speaker": "Ann", "text": "I got the job!"}    the next utterance of the conversation
    {"reset": true}                                  start another conversation
    {"token": "..."}                                 first message, when the server has a token and the client
                                                     cannot send an Authorization header (browsers)

Server -> client: ``{"index": i, "speaker", "text", "predicted", "probabilities"}`` per utterance (``i`` from 0;
plus ``"revised": [...]`` when a bidirectional run relabels earlier utterances), ``{"reset": true,
"conversation": k}``, ``{"ready": true, "mode": "step" | "prefix", "labels": [...]}`` once at the start, and
``{"error": "..."}`` for a bad message — the stream stays open and the bad message is not part of the conversation.
"""
from __future__ import annotations

import json
import logging

from fastapi import WebSocket, WebSocketDisconnect

from merc.errors import MercError
from merc.inference.stream import StreamSession
from merc.serve.auth import HTTPError, check_token

log = logging.getLogger(__name__)

FIELDS = {"speaker", "text"}


def parse_message(raw: str | bytes | None, max_chars: int) -> dict:
    """One client message -> dict; ValueError with the reason otherwise."""
    if raw is None:
        raise ValueError("binary messages are not accepted; send JSON text")
    if len(raw) > max_chars:
        raise ValueError(f"message of {len(raw)} characters; the most is {max_chars}")
    try:
        msg = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg}); send {{\"speaker\": ..., \"text\": ...}}") from None
    if not isinstance(msg, dict):
        raise ValueError("expected a JSON object {\"speaker\": ..., \"text\": ...} or {\"reset\": true}")
    if msg.get("reset") is True and set(msg) == {"reset"}:
        return msg
    unknown = sorted(set(msg) - FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; expected speaker and text (or {{\"reset\": true}})")
    for f in ("speaker", "text"):
        v = msg.get(f)
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{f!r} is {v!r}; expected a non-empty string")
    return {"speaker": msg["speaker"].strip(), "text": msg["text"].strip()}


async def _authorised(ws: WebSocket, token: str | None) -> bool:
    if not token:
        return True
    header = ws.headers.get("authorization")
    if header is None:  # a browser cannot set headers on a WebSocket: the first message carries the token
        try:
            first = json.loads(await ws.receive_text())
            header = f"Bearer {first.get('token', '')}" if isinstance(first, dict) else None
        except (json.JSONDecodeError, KeyError, RuntimeError):
            header = None
    try:
        check_token(token, header)
        return True
    except HTTPError as e:
        await ws.send_json({"error": e.detail, "status": 401})
        await ws.close(code=1008)
        return False


async def serve_stream(ws: WebSocket, app) -> None:
    config, predictor = app.state.config, app.state.predictor
    await ws.accept()
    if app.state.streams >= config.max_streams:
        await ws.send_json({"error": f"busy: {config.max_streams} streams open; try again later"})
        await ws.close(code=1013)
        return
    app.state.streams += 1
    try:
        if not await _authorised(ws, config.token):
            return
        session = await app.state.in_model_thread(StreamSession, predictor, config.max_utterances)
        await ws.send_json({"ready": True, "mode": session.mode, "labels": predictor.labels})
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                msg = parse_message(message.get("text"), config.max_body_bytes)
            except ValueError as e:
                await ws.send_json({"error": str(e)})
                continue
            if msg.get("reset"):
                session.reset()
                await ws.send_json({"reset": True, "conversation": session.conversation})
                continue
            try:
                reply = await app.state.in_model_thread(session.add, msg["speaker"], msg["text"])
            except MercError as e:
                await ws.send_json({"error": str(e)})
                continue
            await ws.send_json(reply)
    except WebSocketDisconnect:
        pass
    finally:
        app.state.streams -= 1
