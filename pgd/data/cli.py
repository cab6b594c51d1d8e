"""`pgd data`: generate the synthetic datasets or validate annotation files.

    pgd data coco --out DIR [--seed 0 --num-train 400 --num-val 100 --image-size 128 --style easy|hard]
    pgd data crowdhuman --out DIR [--seed 0 --num-train 300 --num-val 80 --image-size 160]
    pgd data validate --coco JSON --img-dir D  |  --odgt FILE --img-dir D

Exit status 2 with the error message when validation fails.
"""
from __future__ import annotations

import argparse
import json
import sys

from .synth_coco import STYLES, GeneratedDataset, generate_coco
from .synth_crowdhuman import generate_crowdhuman
from .validate import AnnotationError, validate_coco, validate_odgt


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgd data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    for name, defaults in (("coco", (400, 100, 128)), ("crowdhuman", (300, 80, 160))):
        g = sub.add_parser(name, help=f"write the synthetic {name} set",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        g.add_argument("--out", required=True, default=argparse.SUPPRESS, help="output directory")
        g.add_argument("--seed", type=int, default=0, help="generator seed")
        g.add_argument("--num-train", type=int, default=defaults[0], help="training images")
        g.add_argument("--num-val", type=int, default=defaults[1], help="validation images")
        g.add_argument("--image-size", type=int, default=defaults[2], help="image side in pixels")
        if name == "coco":
            g.add_argument("--style", choices=sorted(STYLES), default="easy",
                           help="difficulty preset (easy: sized for the mini profile)")
    v = sub.add_parser("validate", help="validate an annotation file (exit 2 on failure)")
    kind = v.add_mutually_exclusive_group(required=True)
    kind.add_argument("--coco", help="COCO json annotation file")
    kind.add_argument("--odgt", help="CrowdHuman .odgt annotation file")
    v.add_argument("--img-dir", help="image folder (omit to skip the image file checks)")
    v.add_argument("--check-image-sizes", action="store_true", help="COCO: compare width/height to the files")
    return p


def _report(result: GeneratedDataset) -> None:
    for split, ann in result.annotations.items():
        print(f"wrote {ann}")
        print(f"wrote {result.images[split]}/ ({result.stats[split]['images']} images)")
        print(f"  {split}: {json.dumps(result.stats[split])}")
    print(f"generated in {result.seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "coco":
            _report(generate_coco(args.out, args.seed, args.num_train, args.num_val, args.image_size, args.style))
        elif args.action == "crowdhuman":
            _report(generate_crowdhuman(args.out, args.seed, args.num_train, args.num_val, args.image_size))
        elif args.coco:
            data = validate_coco(args.coco, args.img_dir, check_image_sizes=args.check_image_sizes)
            print(f"{args.coco}: OK ({len(data['images'])} images, {len(data['annotations'])} annotations, "
                  f"{len(data['categories'])} categories{'' if args.img_dir else '; image files not checked'})")
        else:
            index = validate_odgt(args.odgt, args.img_dir)
            print(f"{args.odgt}: OK ({len(index.ids)} records, {index.num_boxes} boxes"
                  f"{'' if args.img_dir else '; image files not checked'})")
    except AnnotationError as exc:
        print(f"pgd data: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad generator arguments
        print(f"pgd data: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
