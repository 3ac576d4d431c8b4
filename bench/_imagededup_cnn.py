"""imagededup's CNN encoder, timed; run as a script by ``bench.ingest_speed`` in another Python.

imagededup's CNN needs torchvision, which cannot be installed beside the project's pinned torch,
so ``bench.ingest_speed --imagededup-python PY`` runs this file with a separate interpreter PY
(torch + torchvision + imagededup; nothing of the project is imported here). The model is
imagededup's default, MobileNetV3-small cut at its global pooling, with random weights:
``torchvision.models.mobilenet_v3_small`` is called with ``weights=None`` and every weight download
is refused, so nothing is fetched (random weights cost the same time as the trained ones).

    PY bench/_imagededup_cnn.py --images DIR --warmup DIR --repeat 1 --out result.json

``--warmup`` is encoded once untimed (first-call costs), then ``--images`` ``--repeat`` times with
``CNN().encode_images(image_dir=...)`` at its defaults; the best pass goes to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any


def _no_download(*args: object, **kwargs: object) -> Any:
    raise RuntimeError("bench/_imagededup_cnn.py downloads no weights (random weights are timed)")


def random_weight_cnn() -> Any:
    """imagededup's default CNN (MobileNetV3-small), built with random weights."""
    import torch.hub
    import torchvision.models

    torch.hub.load_state_dict_from_url = _no_download
    torch.hub.download_url_to_file = _no_download
    build = torchvision.models.mobilenet_v3_small

    def random_mobilenet(*args: object, weights: object = None, **kwargs: Any) -> Any:
        return build(weights=None, **kwargs)

    torchvision.models.mobilenet_v3_small = random_mobilenet  # imagededup calls it via this module
    from imagededup.methods import CNN

    encoder = CNN(verbose=False)
    for name in list(logging.root.manager.loggerDict):  # its loggers exist once CNN is built
        if name.startswith("imagededup"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return encoder


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--warmup", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from importlib import metadata

    import torch
    import torchvision

    start = time.perf_counter()
    encoder = random_weight_cnn()
    init_seconds = time.perf_counter() - start
    encoder.encode_images(image_dir=args.warmup)
    passes = []
    for _ in range(args.repeat):
        cpu, start = time.process_time(), time.perf_counter()
        encodings = encoder.encode_images(image_dir=args.images)
        passes.append((time.perf_counter() - start, time.process_time() - cpu, len(encodings)))
    seconds, cpu_seconds, encoded = min(passes)
    result = {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "encoded": encoded,
        "init_seconds": init_seconds,
        "device": str(encoder.device),
        "threads": torch.get_num_threads(),
        "batch_size": encoder.batch_size,
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "imagededup": metadata.version("imagededup"),
        },
    }
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
