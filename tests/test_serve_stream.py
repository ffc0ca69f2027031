"""Live streaming: the WebSocket contract (utterance i's label = POST /v1/predict on the conversation cut after i)
for a causal run (Mamba step mode, O(1) state) and a bidirectional one (prefix recomputed, revisions); the step
mode against the whole-sequence forward, including a model it must refuse."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from serve_runs import toy_run  # noqa: E402
from toy_corpus import conversations  # noqa: E402

from merc.inference.predictor import Predictor  # noqa: E402
from merc.inference.step import can_step, step_matches_forward, stepping_view  # noqa: E402
from merc.inference.stream import StreamSession  # noqa: E402
from merc.models.dialogue import DialogueConfig, DialogueModel  # noqa: E402
from merc.serve.app import ServeConfig, create_app  # noqa: E402


def dialogues(n=3, length=(6, 9), seed=1):
    """Toy conversations (mood cue first, filler after) as (speaker, text) lists; a third speaker in one."""
    convs = [[(u["speaker"], u["text"]) for u in c["utterances"]]
             for c in conversations(n, np.random.default_rng(seed), "s", lengths=length)]
    convs[0].insert(3, ("C", "I feel fine."))
    return convs


def check_contract(client, convs, *, revisions: bool):
    """Stream each conversation; every reply must equal /v1/predict on the prefix. Returns the revisions seen."""
    seen = 0
    with client.websocket_connect("/v1/stream") as ws:
        hello = ws.receive_json()
        assert hello["ready"] is True
        for k, conv in enumerate(convs):
            if k:
                ws.send_json({"reset": True})
                assert ws.receive_json() == {"reset": True, "conversation": k}
            view = []  # what a client shows: labels as sent, then as revised
            for i, (speaker, text) in enumerate(conv):
                ws.send_json({"speaker": speaker, "text": text})
                reply = ws.receive_json()
                assert reply["index"] == i and reply["speaker"] == speaker and reply["text"] == text
                prefix = {"utterances": [{"speaker": s, "text": t} for s, t in conv[:i + 1]]}
                whole = client.post("/v1/predict", json=prefix).json()["utterances"]
                assert reply["predicted"] == whole[i]["predicted"], (k, i)
                for lab, p in whole[i]["probabilities"].items():
                    assert reply["probabilities"][lab] == pytest.approx(p, abs=2e-4), (k, i, lab)
                view.append(reply["predicted"])
                for r in reply.get("revised", []):
                    assert revisions, "a causal stream revised an earlier label"
                    assert r["index"] < i and r["predicted"] != view[r["index"]]
                    view[r["index"]] = r["predicted"]
                    seen += 1
                if revisions:  # with the revisions applied, the client shows the whole prefix's labels
                    assert view == [u["predicted"] for u in whole], (k, i)
    return seen


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    return Predictor.from_pretrained(toy_run(tmp_path_factory, causal=True))


@pytest.fixture(scope="module")
def bidirectional(tmp_path_factory):
    return Predictor.from_pretrained(toy_run(tmp_path_factory, causal=False))


def test_causal_stream_is_step_mode_and_matches_prefixes(causal):
    assert causal.causal and causal.step_mode
    with TestClient(create_app(causal)) as client:
        with client.websocket_connect("/v1/stream") as ws:
            assert ws.receive_json()["mode"] == "step"
        check_contract(client, dialogues(), revisions=False)


def test_step_state_is_constant_size(causal):
    session = StreamSession(causal)
    sizes = []
    for i in range(40):
        session.add("AB"[i % 2], "ok then." if i > 1 else "I feel great.")
        sizes.append(sum(s.conv.numel() + s.ssm.numel() for s in session._step.states))
    assert len(set(sizes)) == 1, "the step state grew with the conversation"
    assert session._features == {}  # step mode keeps no per-utterance features either


def test_bidirectional_stream_matches_prefixes_with_revisions(bidirectional):
    assert not bidirectional.causal and not bidirectional.step_mode
    with TestClient(create_app(bidirectional)) as client:
        seen = check_contract(client, dialogues(n=4), revisions=True)
    assert seen > 0, "no revision happened: the revision path went untested"


def test_bad_messages_keep_the_stream(causal):
    with TestClient(create_app(causal, ServeConfig(max_utterances=3, max_body_bytes=500))) as client:
        with client.websocket_connect("/v1/stream") as ws:
            ws.receive_json()
            for bad in ("not json", "[1]", json.dumps({"speaker": "A"}), json.dumps({"speaker": "A", "text": ""}),
                        json.dumps({"speaker": "A", "text": "hi", "mood": "x"}), json.dumps({"reset": "yes"}),
                        json.dumps({"speaker": "A", "text": "x" * 600})):
                ws.send_text(bad)
                assert "error" in ws.receive_json(), bad
            ws.send_bytes(b"\xff\xfe")
            assert "binary" in ws.receive_json()["error"]
            for i in range(3):
                ws.send_json({"speaker": "A", "text": "I feel great."})
                assert ws.receive_json()["index"] == i  # bad messages took no place in the conversation
            ws.send_json({"speaker": "B", "text": "sure."})
            assert "reset" in ws.receive_json()["error"]  # over --max-utterances
            ws.send_json({"reset": True})
            ws.receive_json()
            ws.send_json({"speaker": "B", "text": "sure."})
            assert ws.receive_json()["index"] == 0


# the step mode itself

def tiny(kind="mamba", bidirectional=False, **kw):
    torch.manual_seed(0)
    return DialogueModel(DialogueConfig(kind=kind, input_dims={"text": 12, "audio": 5}, n_classes=4, d_model=16,
                                        n_layers=2, dropout=0.0, bidirectional=bidirectional, **kw)).eval()


def test_step_matches_forward_and_leaves_the_model_alone():
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert can_step(model) and step_matches_forward(model, {"text": 12, "audio": 5}, length=9)
    view, step = stepping_view(model)
    assert type(model.context).__name__ == "MambaContext" and view.context is step  # the original keeps its context
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kind,bidirectional", [("mamba", True), ("gru", False), ("transformer", False)])
def test_models_without_a_mamba_step_are_refused(kind, bidirectional):
    assert not step_matches_forward(tiny(kind, bidirectional), {"text": 12, "audio": 5})


def test_the_check_catches_a_model_that_looks_across_utterances():
    model = tiny()

    class Leaky(torch.nn.Module):  # fusion that mixes in the dialogue's mean: stepping cannot reproduce it
        def forward(self, x):
            return x + x.mean(dim=1, keepdim=True)

    model.inputs["text"].append(Leaky())
    assert can_step(model) and not step_matches_forward(model, {"text": 12, "audio": 5})
