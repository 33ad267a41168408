"""python -m ingest SOURCE... : bulk ingest of image folders and videos.

Through a running service (default):

    python -m ingest /archive/images /archive/cam3.mp4 --url http://127.0.0.1:8000 --every 2

On Ray (the service stopped; writes the gallery under --data-dir directly):

    python -m ingest /archive --ray --data-dir data --model models/demo/model.onnx --actors 4

Rerunning the same command after an interruption skips what is stored. Exit status: 0 when
everything was stored, 1 when some frames were refused, 2 for bad arguments, 3 when the
service could not be used, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gallery.records import camera_problem
from ingest.client import Backoff, ServiceError, Summary, Uploader
from ingest.sources import Source, expected_frames, find_sources, read_frames

EXIT_REFUSED, EXIT_USAGE, EXIT_SERVICE, EXIT_INTERRUPTED = 1, 2, 3, 130


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ingest",
        description="Ingest image folders (recursively) and video files into the gallery.",
    )
    parser.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="folder or file")
    parser.add_argument("--camera", type=_camera, help="default: image folder or video name")
    parser.add_argument("--every", type=float, default=1.0, help="video: seconds between frames")
    parser.add_argument(
        "--start",
        type=_moment,
        help="video: time of the stream's zero (Unix seconds or ISO 8601); "
        "default the container's creation_time, else none (seconds into the video)",
    )
    parser.add_argument("--batch", type=int, default=8, help="frames per request or transaction")
    service = parser.add_argument_group("through the service")
    service.add_argument("--url", default="http://127.0.0.1:8000", help="the service's base URL")
    service.add_argument(
        "--api-key", default=os.environ.get("PS_API_KEY"), help="X-API-Key (default $PS_API_KEY)"
    )
    service.add_argument("--retries", type=int, default=8, help="retries per request (backoff)")
    service.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    on_ray = parser.add_argument_group("on Ray (writes the store directly)")
    on_ray.add_argument("--ray", action="store_true", help="run the pipeline on Ray Data")
    on_ray.add_argument("--ray-address", help="cluster to join (default: $RAY_ADDRESS or local)")
    on_ray.add_argument("--data-dir", type=Path, help="gallery directory (default $PS_DATA_DIR)")
    on_ray.add_argument("--model", type=Path, help="model.onnx (default $PS_MODEL)")
    on_ray.add_argument("--providers", help="ONNX Runtime providers (default $PS_PROVIDERS)")
    on_ray.add_argument("--min-score", type=float, help="default $PS_MIN_DETECTION_SCORE or card")
    on_ray.add_argument("--actors", type=int, default=2, help="detector actors")
    on_ray.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs per actor")
    on_ray.add_argument("--actor-gpus", type=float, default=0.0, help="GPUs per actor")
    on_ray.add_argument("--decode-cpus", type=float, default=1.0, help="CPUs per decoding task")
    args = parser.parse_args(argv)
    if args.every <= 0 or args.batch < 1 or args.retries < 0 or args.actors < 1:
        parser.error("--every must be positive; --batch and --actors at least 1; --retries >= 0")
    return args


def _camera(text: str) -> str:
    """The service's rule (gallery.records.camera_problem), checked before anything is sent."""
    if (problem := camera_problem(text)) is not None:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: {problem}")
    return text


def _moment(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Unix seconds or ISO 8601, got {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        sources = find_sources(args.sources, args.camera)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    counts = [expected_frames(source, args.every) for source in sources]
    total = None if None in counts else sum(c for c in counts if c is not None)
    summary = Summary()
    with tqdm(total=total, unit="frame", disable=None) as bar, logging_redirect_tqdm():

        def progress(current: Summary) -> None:
            bar.update(current.done - bar.n)
            bar.set_postfix(
                ingested=current.ingested, skipped=current.skipped, refused=len(current.refused)
            )

        try:
            run = _on_ray if args.ray else _through_service
            run(args, sources, summary, progress)
        except KeyboardInterrupt:
            bar.close()
            print(f"interrupted; rerun the same command to continue\n{summary.report()}")
            return EXIT_INTERRUPTED
        except ServiceError as exc:
            bar.close()
            print(f"stopped: {exc}\n{summary.report()}", file=sys.stderr)
            return EXIT_SERVICE
    print(summary.report())
    return EXIT_REFUSED if summary.refused else 0


def _through_service(
    args: argparse.Namespace,
    sources: list[Source],
    summary: Summary,
    progress: Callable[[Summary], None],
) -> None:
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout) as client:
        uploader = Uploader(client, args.batch, Backoff(retries=args.retries), summary=summary)
        frames = (
            frame for source in sources for frame in read_frames(source, args.every, args.start)
        )
        uploader.send(frames, progress)


def _on_ray(
    args: argparse.Namespace,
    sources: list[Source],
    summary: Summary,
    progress: Callable[[Summary], None],
) -> None:
    import ray  # only this path needs Ray, and importing it takes seconds

    from gallery.records import StoreLocked
    from gallery.settings import GallerySettings
    from inference.card import ModelError
    from inference.engine import chosen_providers
    from ingest.ray_pipeline import ModelOptions, RayOptions, ingest_on_ray

    settings = GallerySettings()  # the service's PS_* settings: write what it will serve
    asked = tuple(args.providers.split(",")) if args.providers else settings.provider_list
    model = ModelOptions(
        model=args.model or settings.model,
        providers=chosen_providers(asked),
        min_score=args.min_score if args.min_score is not None else settings.min_detection_score,
        max_pixels=settings.max_pixels,
        milvus=settings.milvus,
    )
    options = RayOptions(
        actors=args.actors,
        actor_cpus=args.actor_cpus,
        actor_gpus=args.actor_gpus,
        decode_cpus=args.decode_cpus,
        batch_size=args.batch,
    )
    ray.init(address=args.ray_address, include_dashboard=False)
    try:
        ingest_on_ray(
            sources,
            args.data_dir or settings.data_dir,
            model,
            args.every,
            args.start,
            options,
            progress,
            summary,
        )
    except (StoreLocked, ModelError) as exc:  # a running service holds the store; a bad model
        raise ServiceError(str(exc)) from exc
    finally:
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
