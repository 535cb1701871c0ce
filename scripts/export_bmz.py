#!/usr/bin/env python
"""Export a model as a BioImage Model Zoo (bioimage.io) package folder (and zip), then validate it.

    .venv/bin/python scripts/export_bmz.py --out runs/bmz/hts-instance-unet --zip
    .venv/bin/python scripts/export_bmz.py --model runs/iu16e.pt --card card.md --out runs/bmz/iu16e

Writes TorchScript weights, test tensors, a cover, a README and ``rdf.yaml``
(see docs/bioimageio.md). With ``bioimageio.spec`` installed (``pip install
"hts[bioimageio]"``) the package is then validated offline (file checksums,
test tensor shapes; ``--no-validate`` skips it); exit status 1 when invalid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hts.errors import HtsError
from hts.model.checkpoint import load_model
from hts.model.export import export_bioimageio, validate_bioimageio
from hts.model.pretrained import default_model, default_model_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help=f"hts checkpoint (default: the shipped {default_model_path().name})")
    ap.add_argument("--out", type=Path, required=True, help="package folder to write (created)")
    ap.add_argument("--zip", action="store_true", help="also write <out>.zip, the zoo's upload format")
    ap.add_argument("--name", default=None, help="rdf.yaml name (default: hts Instance-U-Net fluorescence nuclei)")
    ap.add_argument("--card", type=Path, default=None,
                    help="markdown on training data and metrics for the README (default: the shipped model's card summary)")
    ap.add_argument("--paper-doi", default=None, help="DOI of the Instance-U-Net paper, added to cite")
    ap.add_argument("--no-rpn-outputs", action="store_true", help="export the foreground probability only")
    ap.add_argument("--no-validate", action="store_true", help="skip the bioimageio.spec validation")
    args = ap.parse_args(argv)

    model = default_model() if args.model is None else load_model(args.model)[0]
    kwargs = {"name": args.name} if args.name else {}
    if args.paper_doi:
        kwargs["cite"] = [{"text": "Instance-U-Net: U-Net with a shared-encoder RPN and RPN-marker watershed",
                           "doi": args.paper_doi}]
    card = args.card.read_text() if args.card else None
    folder = export_bioimageio(model, args.out, card=card, rpn_outputs=not args.no_rpn_outputs,
                               make_zip=args.zip, **kwargs)
    print(f"wrote {folder}/rdf.yaml" + (f" and {folder.with_suffix('.zip')}" if args.zip else ""))
    if args.no_validate:
        return 0
    try:
        summary = validate_bioimageio(folder)
    except HtsError as exc:
        print(f"not validated: {exc}", file=sys.stderr)
        return 0
    print(summary.format())
    return 0 if summary.status in ("valid-format", "passed") else 1


if __name__ == "__main__":
    sys.exit(main())
