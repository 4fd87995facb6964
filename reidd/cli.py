"""The ``reidd`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from reidd import __version__
from reidd.config import ConfigError, load_config

#: Modules that add their own subcommands through ``register(subparsers)``.
_PLUGIN_MODULES: list[str] = ["reidd.demo", "reidd.synth", "reidd.report", "reidd.train.cli", "reidd.evaluate.cli",
                                 "reidd.events.tail", "reidd.evaluate.mtmc"]

_DESCRIPTION = """\
reidd: multi-camera vehicle re-identification daemon.

Reads cameras (RTSP/HTTP streams or video files), detects vehicles, tracks them per camera,
turns tracks into tracklets and (with re-ID enabled) matches them across cameras.

Start with:
  reidd check-config cameras.yaml        validate a config without starting anything
  reidd replay --config cameras.yaml --out out/   process recorded files, deterministically
  reidd run --config cameras.yaml        the long-running daemon (SIGTERM drains and exits 0)
Every subcommand has its own --help.
"""


def _env_defaults() -> None:
    """Ultralytics: never phone home or pip-install at run time.

    Its settings stay where ultralytics keeps them for the user (``YOLO_CONFIG_DIR`` when set, else
    ``$XDG_CONFIG_HOME/Ultralytics``, ``~/.config/Ultralytics``): the trackers import ultralytics with
    any detector, and a default under the current folder left a ``.yolo/`` wherever reidd ran."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    # .pt files are pickles: ultralytics' restricted loader unless the config opts out (detector.trust_pickle)
    os.environ.setdefault("ULTRALYTICS_SAFE_LOAD", "1")


def _load(path: str, check_files: bool = True):
    try:
        return load_config(path, check_files=check_files)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def _bad_outputs(args: argparse.Namespace, dirs: tuple[str, ...] = (), files: tuple[str, ...] = ()) -> bool:
    """Print one line per command-line output path that cannot be written (nothing is created); True if any."""
    from reidd.config import check_output_dir, check_output_file, printable

    bad = False
    for names, check in ((dirs, check_output_dir), (files, check_output_file)):
        for name in names:
            value = getattr(args, name, None)
            why = check(os.path.abspath(value)) if value else None
            if why:
                print(f"--{name.replace('_', '-')}: {printable(why)}", file=sys.stderr)
                bad = True
    return bad


def _check_detection_files(cfg) -> bool:
    """``detector.type: file``: every line of each enabled camera's file checked as the detector will (one line per
    bad file naming file:line on stderr, progress of big files and a warning for a file with no box there too);
    True when all pass."""
    if cfg.detector.type != "file" or not cfg.detector.detections_dir:
        return True
    from reidd.config import printable
    from reidd.detect.base import DetectorLoadError
    from reidd.detect.file import check_detection_file

    def say(msg: str) -> None:
        print(printable(msg), file=sys.stderr, flush=True)

    ok = True
    for cam in cfg.enabled_cameras:
        path = Path(cfg.detector.detections_dir) / f"{cam.id}.txt"
        try:
            index = check_detection_file(path, say)
        except DetectorLoadError as exc:
            say(str(exc))
            ok = False
            continue
        if index.boxes == 0:
            say(f"warning: detections {path}: no boxes in the file (camera '{cam.id}' gets no detections)")
    return ok


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 2
    if not _check_detection_files(cfg):
        return 2
    cams = ", ".join(f"{c.id} ({c.kind}{'' if c.enabled else ', disabled'})" for c in cfg.cameras)
    print(f"{args.config}: OK — {len(cfg.cameras)} camera(s): {cams}; detector {cfg.detector.type} "
          f"({_detector_source(cfg.detector)}), "
          f"tracker {cfg.tracker.type}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return 2
    if args.speed is not None and args.speed <= 0:
        print("--speed must be > 0", file=sys.stderr)
        return 2
    if _bad_outputs(args, ("out",), ("events_jsonl", "output_mtmc")):
        return 2
    live = [c.id for c in cfg.enabled_cameras if c.is_live]
    if live:
        print(f"replay needs recorded files; these cameras are live streams: {', '.join(live)} "
              "(use `reidd run` for them)", file=sys.stderr)
        return 2
    from reidd.daemon import run_replay, setup_logging

    setup_logging(args.log_level or cfg.logging.level, cfg.logging.json_format)
    try:
        code, _ = run_replay(cfg, args.out, speed=args.speed, serve_metrics=args.metrics, redis_url=args.redis_url,
                             events_jsonl=args.events_jsonl, mtmc_path=args.output_mtmc,
                             save_crops=not args.no_crops, save_embeddings=args.save_embeddings)
    except _startup_errors() as exc:
        print(f"reidd replay: {exc}", file=sys.stderr)
        return 2
    return code


def _run_with_config(args: argparse.Namespace, name: str, body, extra_errors: tuple = ()) -> int:
    """Load ``--config`` (exit 2 when invalid), set up logging, run ``body(cfg)``; start-up errors exit 2."""
    cfg = _load(args.config)
    if cfg is None:
        return 2
    from reidd.daemon import setup_logging

    setup_logging(args.log_level or cfg.logging.level, cfg.logging.json_format)
    try:
        return body(cfg)
    except (*extra_errors, *_startup_errors()) as exc:
        print(f"reidd {name}: {exc}", file=sys.stderr)
        return 2


def cmd_rematch(args: argparse.Namespace) -> int:
    from reidd.match.recording import RecordingError, rematch

    def body(cfg) -> int:
        if _bad_outputs(args, ("out",), ("events_jsonl", "output_mtmc")):
            return 2
        res = rematch(cfg, args.embeddings, args.out, mtmc_path=args.output_mtmc, events_jsonl=args.events_jsonl)
        print(f"rematch: {res['queries']} embedded tracklets, {res['events']} events "
              f"({res['matches']} cross-camera matches)")
        return 0

    return _run_with_config(args, "rematch", body, (RecordingError,))


def cmd_topology(args: argparse.Namespace) -> int:
    import tempfile

    from reidd.match.recording import RecordingError, read_embedding_log
    from reidd.match.topology import TopologyError, learn_topology, plot_links, write_report, write_topology_yaml

    def body(cfg) -> int:
        if _bad_outputs(args, ("work",), ("out",)):
            return 2
        if args.max_transit is not None and args.max_transit <= 0:
            print("--max-transit must be > 0", file=sys.stderr)
            return 2
        if len(cfg.enabled_cameras) < 2:
            print(f"{args.config}: cameras: a topology needs at least two enabled cameras", file=sys.stderr)
            return 2
        log_path = args.embeddings
        tmp = None
        if log_path is None:
            live = [c.id for c in cfg.enabled_cameras if c.is_live]
            if live:
                print(f"topology learns from recorded files; these cameras are live streams: {', '.join(live)} "
                      "(record them, or pass --embeddings from a replay)", file=sys.stderr)
                return 2
            from reidd.daemon import run_replay

            work = args.work or (tmp := tempfile.TemporaryDirectory(prefix="reidd-topology-")).name
            free = cfg.model_copy(update={"matching": cfg.matching.model_copy(update={"topology": []})})
            print(f"topology: replaying {len(cfg.enabled_cameras)} camera(s) with no topology into {work}",
                  file=sys.stderr)
            code, _ = run_replay(free, work, save_crops=False, save_embeddings=True)
            if code != 0:
                print(f"topology: the replay failed (exit {code}); see the log above", file=sys.stderr)
                return code
            log_path = str(Path(work) / "embeddings.jsonl")
        try:
            items = [it for kind, it in read_embedding_log(log_path) if kind == "query"]
            est = learn_topology(items, cfg.matching, use_class=cfg.detector.type != "motion",
                                 max_transit=args.max_transit, confident=args.confident,
                                 min_matches=args.min_matches)
        finally:
            if tmp is not None:
                tmp.cleanup()
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_topology_yaml(est, out, source=Path(log_path).name if args.embeddings else "its own replay")
        write_report(est, out.with_suffix(".json"))
        plots = plot_links(est, out.parent, out.stem)
        for p in est.pairs:
            if p.transits:
                print(p.summary())
        links = est.links()
        print(f"topology: {len(links)} link(s) -> {out} (details {out.with_suffix('.json').name}, "
              f"{len(plots)} plot(s) {out.stem}-*.png)")
        return 0 if links else 1

    return _run_with_config(args, "topology", body, (RecordingError, TopologyError))


def _detector_source(det) -> str:
    """What the detector reads, for check-config's summary line."""
    return {"motion": "background subtraction", "file": f"detection files in {det.detections_dir}"}.get(
        det.type, det.model)


def cmd_run(args: argparse.Namespace) -> int:
    from reidd.daemon import run_live

    return _run_with_config(args, "run", run_live)


def _startup_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "this configuration cannot start" (clear message, exit 2)."""
    from reidd.daemon import MetricsBindError
    from reidd.detect.base import DetectorLoadError
    from reidd.gallery.redis_server import RedisUnavailable
    from reidd.reid.embedder import EmbedderError

    return (DetectorLoadError, EmbedderError, RedisUnavailable, MetricsBindError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reidd", description=_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"reidd {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("check-config", help="validate a cameras.yaml and exit (0 valid, 2 invalid)",
                       description="Validate a cameras.yaml without opening any camera or model. Every problem is "
                                   "printed with its path (e.g. cameras[2].url); exit code 2 when there is any.")
    s.add_argument("config", help="path to the cameras.yaml")
    s.set_defaults(func=cmd_check_config)

    log_help = "override logging.level from the config (DEBUG, INFO, WARNING, ERROR)"
    s = sub.add_parser(
        "run", help="run the daemon on the configured cameras until stopped",
        description="The long-running daemon: reads every enabled camera (live streams, or files paced at their "
                    "native frame rate), detects, tracks and builds tracklets, embeds them and matches them "
                    "across cameras against the Redis gallery (embedded redis-server when gallery.redis_url is "
                    "unset), and publishes tracklet and match events to the Redis stream events.stream. "
                    "SIGTERM/SIGINT drain: open tracklets are flushed and decided, events delivered (or kept in "
                    "the on-disk spool), exit code 0. Prometheus metrics, /healthz and /readyz are served at "
                    "metrics.host:metrics.port.")
    s.add_argument("--config", required=True, help="path to the cameras.yaml")
    s.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help=log_help)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser(
        "replay", help="process recorded video files deterministically and write the results",
        description="Replay recorded files (every frame, merged across cameras by media time) as fast as the "
                    "machine allows, or at --speed times real time. The same input gives byte-identical outputs: "
                    "OUT/tracklets.jsonl (one closed tracklet per line), OUT/mot/<camera>.txt (MOTChallenge: "
                    "frame,id,x,y,w,h,conf,-1,-1,-1, frame 1-based) and OUT/summary.json. With re-ID enabled (the "
                    "default) tracklets are also embedded and matched across cameras: events go to the Redis "
                    "stream (and --events-jsonl), best crops to OUT/crops, global ids to --output-mtmc. Exit "
                    "code 1 when a camera failed (the others still finish), 2 for a bad config or model.")
    s.add_argument("--config", required=True, help="path to the cameras.yaml (every enabled camera must be a file)")
    s.add_argument("--out", required=True, help="output folder (created)")
    s.add_argument("--speed", type=float, default=None,
                   help="pace playback at this multiple of real time (default: as fast as possible)")
    s.add_argument("--metrics", action="store_true", help="also serve the Prometheus endpoint while replaying")
    s.add_argument("--redis-url", default=None,
                   help="use this Redis for gallery and events (e.g. to share a gallery with other daemons); "
                        "default: a private embedded Redis under OUT/state, started empty, so reruns are identical")
    s.add_argument("--events-jsonl", default=None, help="also write every event to this JSONL file")
    s.add_argument("--output-mtmc", default=None,
                   help="write final per-frame global ids in AI City MTMC format "
                        "(camera_id obj_id frame_id xmin ymin width height -1 -1; frame_id 1-based)")
    s.add_argument("--no-crops", action="store_true", help="do not save best crops under OUT/crops")
    s.add_argument("--save-embeddings", action="store_true",
                   help="also write OUT/embeddings.jsonl (every embedded tracklet and decision tick) for "
                        "`reidd rematch`, which re-runs the cross-camera association with other settings")
    s.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help=log_help)
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser(
        "rematch", help="re-run the cross-camera association of a replay with other matching settings",
        description="Feed the embedded tracklets recorded by `reidd replay --save-embeddings` (OUT/embeddings.jsonl) "
                    "back through a fresh, private gallery and the matcher of --config, without decoding, detecting, "
                    "tracking or embedding again: seconds instead of minutes, to tune the matching section on your "
                    "own recordings. With the configuration that recorded it, the result equals the replay's.")
    s.add_argument("--config", required=True, help="cameras.yaml whose gallery/matching/events settings to use")
    s.add_argument("--embeddings", required=True, help="OUT/embeddings.jsonl of an earlier replay")
    s.add_argument("--out", required=True, help="output folder (created; holds the private Redis state)")
    s.add_argument("--events-jsonl", default=None, help="write every event to this JSONL file")
    s.add_argument("--output-mtmc", default=None, help="write final per-frame global ids in AI City MTMC format")
    s.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help=log_help)
    s.set_defaults(func=cmd_rematch)

    s = sub.add_parser(
        "topology", help="learn which camera pairs vehicles travel between, and their transit times",
        description="Estimate matching.topology from a recording: replays the config's file cameras with no "
                    "topology (or reads --embeddings of an earlier `reidd replay --save-embeddings`), finds "
                    "confident cross-camera matches on the daemon's calibrated scale, and keeps the camera pairs "
                    "whose transit times cluster well above chance. Writes OUT (a matching block to review and "
                    "paste), OUT with .json (every pair examined) and one plot per pair (OUT-stem-SRC-DST.png). "
                    "Exit 0 with links found, 1 with none, 2 for bad input.")
    s.add_argument("--config", required=True, help="cameras.yaml (its matching settings score the pairs)")
    s.add_argument("--out", required=True, help="topology YAML to write, e.g. topology.yaml")
    s.add_argument("--embeddings", default=None,
                   help="OUT/embeddings.jsonl of an earlier replay (default: replay the config's cameras now)")
    s.add_argument("--work", default=None, help="keep the replay's output here (default: a temporary folder)")
    s.add_argument("--max-transit", type=float, default=None,
                   help="longest transit searched, seconds (default: matching.window_s)")
    s.add_argument("--confident", type=float, default=2.5,
                   help="calibrated score a mutual best match needs to count as evidence (default 2.5)")
    s.add_argument("--min-matches", type=int, default=5,
                   help="confident matches a link needs in its cluster (default 5)")
    s.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help=log_help)
    s.set_defaults(func=cmd_topology)

    for name in _PLUGIN_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    _env_defaults()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
