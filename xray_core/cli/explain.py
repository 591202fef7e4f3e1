"""`python -m xray_core explain`: why each patch got its label, as JSON.

    python -m xray_core explain --model M.keras [--method saliency|occlusion|gradcam] --json OUT PATCH...

Per file: `file`, `ok`, `label`, `probabilities` (class -> p, the model on the patch as the
app prepares it) and `saliency` (32x32 list, larger = more important for the predicted
class); or `file`, `ok: false`, `error` (one line). Exit 1 when no file could be explained.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from xray_core import CLASSES
from xray_core.errors import ConfigError, XrayLabError, one_line


def explain_files(model, paths: list[str], method: str = "saliency") -> list[dict]:
    """One record per path, in order; a bad file never stops the others (like classify_files)."""
    import numpy as np
    from xray_core.maps.explain import explain, prepare_patch, probabilities
    from xray_core.data.images import MAX_BYTES, read_image
    out = []
    for path in paths:
        name = os.path.basename(path) or path
        try:
            size = os.path.getsize(path)
            if size > MAX_BYTES:
                raise XrayLabError(f"{name}: file is {size / 2**20:.1f} MB, over the "
                                   f"{MAX_BYTES / 2**20:.0f} MB limit")
            with open(path, "rb") as fh:
                patch = prepare_patch(read_image(fh.read(), name))
            p = probabilities(model, patch)
            s = explain(model, patch, method)
            out.append({"file": path, "ok": True, "label": CLASSES[int(np.argmax(p))],
                        "probabilities": {c: float(v) for c, v in zip(CLASSES, p)},
                        "method": method,
                        "saliency": [[round(float(v), 8) for v in row] for row in s]})
        except XrayLabError as e:
            out.append({"file": path, "ok": False, "error": one_line(e)})
        except OSError as e:
            out.append({"file": path, "ok": False,
                        "error": f"{name}: cannot read file ({e.strerror or one_line(e)})"})
        except Exception as e:   # never let one file stop the batch
            out.append({"file": path, "ok": False, "error": f"{name}: unexpected {one_line(e)}"})
    return out


def cmd_explain(args) -> int:
    from xray_core.maps.explain import has_conv
    from xray_core.maps.inference import load_model
    model = load_model(args.model)
    if args.method == "gradcam" and not has_conv(model):
        raise ConfigError(f"{args.model}: Grad-CAM needs a convolutional layer; this is a fully connected "
                          "model (use --method saliency or occlusion)")
    results = explain_files(model, args.files, args.method)
    for r in results:
        if r["ok"]:
            print(f"{r['file']}: {r['label']} ({r['probabilities'][r['label']]:.2f})")
        else:
            print(f"{r['file']}: error: {r['error']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1, allow_nan=False))
    if not any(r["ok"] for r in results):
        print("error: no file could be explained", file=sys.stderr)
        return 1
    return 0


def add_commands(subparsers) -> None:
    from xray_core.maps.explain import METHODS
    x = subparsers.add_parser("explain", help="saliency / occlusion / Grad-CAM map per patch, as JSON")
    x.add_argument("--model", required=True)
    x.add_argument("--method", choices=METHODS, default="saliency",
                   help="saliency = integrated gradients (black baseline); gradcam needs a CNN")
    x.add_argument("--json", help="write the per-file records here")
    x.add_argument("files", nargs="+", metavar="PATCH")
    x.set_defaults(func=cmd_explain)
