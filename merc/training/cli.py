"""`merc train`, `merc evaluate`, `merc predict`."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from merc.data import DATASETS, SPLITS
from merc.device import add_device_argument
from merc.errors import ConfigError, IncompatibleRunError, MissingFileError
from merc.threads import add_threads_argument
from merc.training.flags import (
    add_dialogue_flags,
    add_encoder_flags,
    add_matav_flags,
    add_seed_flags,
    add_training_flags,
    encoders_from_args,
    fusion_from_args,
    modalities_from_args,
    model_config_from_args,
    names,
    text_encoder_from_args,
    train_config_from_args,
)
from merc.training.search_cli import add_search_arguments


def _fmt(ms: dict) -> str:
    return f"{100 * ms['mean']:.2f} ± {100 * ms['std']:.2f}"


def _abs(path: str | None) -> str | None:
    return os.path.abspath(path) if path else None


def parse_modality_dropout(spec: str | None, modalities: list[str]) -> dict[str, float]:
    """``0.1`` (every modality of the run, when it has more than one) or ``audio=0.2,face=0.3``."""
    if not spec:
        return {}
    try:
        if "=" not in spec:
            p = float(spec)
            return {m: p for m in modalities} if len(modalities) > 1 and p > 0 else {}
        return {m.strip(): float(q) for m, q in (part.split("=", 1) for part in names(spec))}
    except ValueError:
        raise ConfigError(f"--modality-dropout {spec!r}: expected a probability (0.1) or modality=p pairs "
                          f"(audio=0.2,face=0.3)") from None


def cmd_train(args: argparse.Namespace) -> int:
    from merc.training.adapters import parse_adapters
    from merc.training.experiment import run_experiment
    from merc.training.resume import prepare_out
    if args.overwrite and args.resume:
        raise ConfigError("--overwrite and --resume exclude each other: replace the run, or finish it")
    prepare_out(args.out, overwrite=args.overwrite, resume=args.resume)
    mc, tc = model_config_from_args(args), train_config_from_args(args)
    modalities = modalities_from_args(args)
    encoders = encoders_from_args(args, modalities)
    mc, tc = fusion_from_args(args, mc, tc, modalities, adapters=bool(args.adapters))
    common = dict(dataset=args.dataset, data_dir=os.path.abspath(args.data_dir), media_dir=args.media_dir,
                  modalities=modalities, encoders=encoders,
                  modality_dropout=parse_modality_dropout(args.modality_dropout, modalities),
                  text_encoder=text_encoder_from_args(args), progress=not args.quiet, qc_dir=_abs(args.qc_dir),
                  adapters=parse_adapters(args.adapters), tune_adapters=args.tune_adapters)
    from merc.executors import executor_from_args
    with executor_from_args(args) as ex:  # where seeds and search configurations train (merc.executors)
        if args.search:  # dev-selected settings first (merc.training.search), then the normal run with them
            from merc.data import load_corpus
            from merc.training.search_cli import search_settings
            common["corpus"] = load_corpus(args.dataset, common["data_dir"], media_dir=args.media_dir)
            mc, tc = search_settings(args, mc, tc, common, executor=ex)
        summary = run_experiment(**common, out=args.out, model_config=mc, train_config=tc, seeds=args.seeds,
                                 resume=args.resume or args.search, executor=ex)
    for split in ("dev", "test"):
        if split in summary:
            s = summary[split]
            print(f"{split:>5}: weighted F1 {_fmt(s['weighted_f1'])}  accuracy {_fmt(s['accuracy'])}  "
                  f"macro F1 {_fmt(s['macro_f1'])}  (% mean ± std over {s['weighted_f1']['n']} seed(s))")
    print(f"run directory: {args.out}")
    return 0


def recorded_data(args: argparse.Namespace, run) -> tuple[str, str]:
    """``--dataset`` / ``--data-dir``, each defaulting to what the run recorded at training time."""
    dataset = args.dataset or run.config.dataset
    if args.data_dir is None and args.dataset and args.dataset != run.config.dataset:
        raise ConfigError(f"--dataset {args.dataset} differs from the run's {run.config.dataset!r}: pass --data-dir")
    data_dir = args.data_dir or run.config.data_dir
    if not dataset or not data_dir:
        raise ConfigError(f"{run.path / 'config.json'} does not record its dataset and data folder; pass "
                          "--dataset and --data-dir")
    if not Path(data_dir).exists():
        given = "--data-dir" if args.data_dir else f"the data folder recorded in {run.path / 'config.json'}"
        raise MissingFileError(f"{data_dir}: no such folder ({given}); pass --data-dir to say where the "
                               f"{dataset} corpus is now")
    return dataset, data_dir


def cmd_evaluate(args: argparse.Namespace) -> int:
    from merc.data import load_corpus
    from merc.training.experiment import corpus_features
    from merc.training.features import check_fingerprints
    from merc.training.run import from_pretrained
    from merc.training.trainer import score_dialogues
    if args.ensemble:
        from merc.training.ensemble import EnsembleRun
        run = EnsembleRun.from_pretrained(args.run_dir)
    else:
        run = from_pretrained(args.run_dir)
    dataset, data_dir = recorded_data(args, run)
    media_dir = args.media_dir or run.config.media_dir or None
    corpus = load_corpus(dataset, data_dir, media_dir=media_dir)
    if list(corpus.labels) != list(run.labels):
        raise IncompatibleRunError(f"the labels of {dataset} at {data_dir} ({corpus.labels}) differ from the run's "
                                   f"({run.labels}, {run.path / 'labels.json'})")
    feats, report, fingerprints = corpus_features(corpus, [args.split], run.config.modalities, run.config.encoders,
                                                  media_dir=media_dir, progress=not (args.json or args.quiet),
                                                  qc_dir=_abs(args.qc_dir) or run.config.qc_dir or None)
    check_fingerprints(run.config.encoder_fingerprints, fingerprints)
    if args.ensemble:
        return _report_ensemble(args, run, corpus[args.split], feats[args.split])
    dialogues = run.dialogues(corpus[args.split], feats[args.split])
    m = score_dialogues(run.model, dialogues, run.labels)
    result = {k: m[k] for k in ("weighted_f1", "accuracy", "macro_f1", "per_class_f1", "n", "absent_classes")}
    if args.output:
        from merc.io import write_json
        write_json(args.output, {**result, "split": args.split, "run_dir": str(run.path)})
    if args.json:
        print(json.dumps(result))
    else:
        from merc.training.absence import absent_line
        print(f"{args.split} ({result['n']} utterances), run {run.path}")
        for mod, r in report[args.split].items():
            if r["absent"]:
                print(f"  {absent_line(r, mod, args.split)}; they are scored from the other modalities")
        absent = result["absent_classes"]
        print(f"  weighted F1 {100 * result['weighted_f1']:.2f}  accuracy {100 * result['accuracy']:.2f}  "
              f"macro F1 {100 * result['macro_f1']:.2f}" + (" (over the classes the split has)" if absent else ""))
        for lab, f in result["per_class_f1"].items():
            print(f"  {lab:>10}  F1 {100 * f:6.2f}" if lab not in absent else f"  {lab:>10}  F1      -")
        if absent:
            print(f"  note: no {args.split} utterance is labelled {', '.join(absent)}: "
                  f"{'this class is' if len(absent) == 1 else 'these classes are'} left out of macro F1")
    return 0


def _report_ensemble(args: argparse.Namespace, run, conversations, features) -> int:
    """``evaluate --ensemble``: single-model figures (each member, mean ± std) and the ensemble's, apart."""
    from merc.io import atomic_write_text, write_json
    from merc.training.ensemble import HEADLINE, ensemble_scores, markdown
    result = {"split": args.split, **ensemble_scores(run, conversations, features)}
    if args.output:
        write_json(args.output, result)
        atomic_write_text(Path(args.output).with_suffix(".md"), markdown(result))
    if args.json:
        print(json.dumps(result))
        return 0
    print(markdown(result, title=f"{args.split}: single models and their seed ensemble"))
    sm, e = result["single_model"], result["ensemble"]
    print("single model (mean ± std): " + "  ".join(f"{k} {_fmt(sm[k])}" for k in HEADLINE))
    print(f"ensemble of {e['n_members']}:        " + "  ".join(f"{k} {100 * e[k]:.2f}" for k in HEADLINE))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from merc.training.predict import predict_file
    run = None
    if args.ensemble:
        from merc.training.ensemble import EnsembleRun
        run = EnsembleRun.from_pretrained(args.run_dir)
    predict_file(args.run_dir, args.input, run=run, out_dir=args.out, as_json=args.json, plots=not args.no_plots,
                 output=args.output, overwrite=args.overwrite, progress=not args.quiet,
                 batch_utterances=args.batch_utterances, per_page=args.page_size, transcript=args.transcript,
                 recording=recording_config(args), save_transcript=args.save_transcript)
    return 0


def recording_config(args: argparse.Namespace):
    """The recording pipeline's configuration from `merc predict`'s flags (used when INPUT is a recording
    given without --transcript)."""
    from merc.recording.asr import AsrConfig
    from merc.recording.diarize import DiarizeConfig
    from merc.recording.faces import FaceConfig
    from merc.recording.pipeline import RecordingConfig
    dia = DiarizeConfig(num_speakers=args.num_speakers, min_speakers=args.min_speakers,
                        max_speakers=args.max_speakers)
    dia.validate()
    return RecordingConfig(asr=AsrConfig(model=_abs(args.asr_model)), diarize=dia,
                           faces=FaceConfig(use=not getattr(args, "no_faces", False)))


def add_parser(sub) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter  # every flag's help ends with its default
    p = sub.add_parser("train", help="train a dialogue emotion model (early stopping on dev, test once)",
                       formatter_class=fmt)
    p.add_argument("--dataset", choices=DATASETS, required=True, help="corpus format")
    p.add_argument("--data-dir", required=True, help="corpus folder (recorded in the run as an absolute path)")
    p.add_argument("--media-dir", help="folder of the corpus's audio/video (MELD raw clips, IEMOCAP wav/avi); "
                   "jsonl media paths are relative to --data-dir")
    p.add_argument("--qc-dir", default=None, help="folder written by `merc qc` for this corpus: face encoders use "
                   "its speaker_tracks.json (the labelled speaker's face) instead of the largest face")
    add_dialogue_flags(p)
    add_encoder_flags(p)
    p.add_argument("--modality-dropout", default=None,
                   help="training-time probability of hiding a modality of an utterance (never all of them): "
                        "one value for every modality (0.1) or per modality (audio=0.2,face=0.3); None = off")
    p.add_argument("--adapters", default=None, metavar="MOD=DIR,...",
                   help="stage-2 adapters (`merc adapt --out DIR`) per modality, e.g. text=DIR,face=DIR: the "
                        "adapter's 128-d bottleneck of the raw stage-1 feature replaces that modality's feature; "
                        "others keep their stage-1 feature. Each adapter must match the run's encoder")
    p.add_argument("--tune-adapters", action="store_true",
                   help="fine-tune the adapters with the dialogue model (default: frozen)")
    add_seed_flags(p, seeds=1)
    add_training_flags(p)
    add_matav_flags(p, switches=True, width=False)
    add_search_arguments(p)
    p.add_argument("--causal", action="store_true", help="unidirectional context (online use) instead of bidirectional")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="run directory to create (must not exist unless --overwrite or "
                                                "--resume)")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run directory at --out first")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished seeds of an existing run at --out (same settings) and train the rest")
    from merc.executors import add_executor_flags
    add_executor_flags(p)
    add_threads_argument(p)
    add_device_argument(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a run on a split (weighted F1, accuracy, macro F1, per class)",
                       formatter_class=fmt)
    p.add_argument("run_dir", help="run directory (a multi-seed run uses its dev-selected seed)")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="corpus format (None: the dataset the run was trained on)")
    p.add_argument("--data-dir", default=None, help="corpus folder (None: the folder recorded in the run)")
    p.add_argument("--media-dir", default=None, help="corpus media folder (None: the one the run recorded)")
    p.add_argument("--qc-dir", default=None, help="`merc qc` folder whose speaker_tracks.json the face encoders "
                   "use (None: the one the run recorded)")
    p.add_argument("--split", choices=SPLITS, default="test", help="split to score")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    p.add_argument("--ensemble", action="store_true",
                   help="a multi-seed run: score each seed (and their mean ± std, the single-model figure) and, "
                        "separately, the ensemble that averages the seeds' probabilities; the JSON is then "
                        "{split, run_dir, n, members, single_model, ensemble}. A single run is an error")
    p.add_argument("--output", default=None, metavar="FILE.json",
                   help="also write the scores to FILE.json (with --ensemble, tables to FILE.md too)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(p)
    add_device_argument(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label every utterance of new conversations", formatter_class=fmt)
    p.add_argument("run_dir", help="run directory (a multi-seed run uses its dev-selected seed)")
    p.add_argument("input", help="conversations: .jsonl (one per line, as `merc data` reads; audio/video paths "
                                 "relative to its folder), .txt ('Speaker: text' lines, blank line between "
                                 "conversations), or a recording (.mp4, .wav, …): with --transcript, or without "
                                 "one to derive it (speech detection, Whisper, speaker clustering)")
    p.add_argument("--transcript", default=None, metavar="FILE",
                   help="speakers and times of the recording INPUT: .srt ('Speaker: text' subtitles) or .json "
                        "[{speaker, text, start, end}]; each segment is one utterance")
    g = p.add_argument_group("recording without --transcript", "derive the transcript: speech regions, Whisper "
                             "words, speakers S1, S2, … by clustering voices")
    g.add_argument("--asr-model", default=None, metavar="DIR",
                   help="a faster-whisper (CTranslate2) model folder; None = the bundled Whisper tiny.en "
                        "(English only; a multilingual model detects the language)")
    g.add_argument("--num-speakers", type=int, default=None, metavar="N",
                   help="the number of speakers, when known; None = estimated from the recording")
    g.add_argument("--min-speakers", type=int, default=1, metavar="N", help="at least N speakers when estimating")
    g.add_argument("--max-speakers", type=int, default=10, metavar="N", help="at most N speakers when estimating")
    g.add_argument("--no-faces", action="store_true",
                   help="a video's faces (who is on screen while someone speaks) do not join the speaker clustering; "
                        "audio inputs never use them")
    g.add_argument("--save-transcript", default=None, metavar="FILE.srt|FILE.json",
                   help="write the derived transcript in the format --transcript reads (correct it and rerun)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per conversation (input fields + gold, predicted, probabilities)")
    p.add_argument("--output", default=None, metavar="FILE.jsonl",
                   help="also write the JSON lines to FILE; rerunning resumes (skips conversations already there)")
    p.add_argument("--overwrite", action="store_true", help="start --output afresh instead of resuming")
    p.add_argument("--out", default="predictions", help="folder for the timeline plots")
    p.add_argument("--no-plots", action="store_true", help="do not draw timelines")
    p.add_argument("--page-size", type=int, default=50, metavar="N",
                   help="utterances per timeline page; longer conversations get several pages")
    p.add_argument("--batch-utterances", type=int, default=1024, metavar="N",
                   help="encode and run at most N utterances at a time (whole conversations; bounds memory)")
    p.add_argument("--ensemble", action="store_true",
                   help="a multi-seed run: average the probabilities of all its seeds (each with its own "
                        "standardisation) instead of using the dev-selected seed; a single run is an error")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_argument(p)
    add_device_argument(p)
    p.set_defaults(func=cmd_predict)
