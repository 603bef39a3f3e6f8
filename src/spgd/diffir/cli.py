"""`spgd train-diffir` and `spgd export-diffir`: DiffIR's two training stages, and small weight files."""
from __future__ import annotations

import argparse
import json

from .train import DiffIRTrainConfig as C


def add_parsers(sub: argparse._SubParsersAction, add_threads) -> None:  # noqa: ANN001
    p = sub.add_parser("train-diffir", help="train one stage of a DiffIR restorer on pairs spgd synthesises",
                       description="Stage 1 (CPEN_S1 + DIRformer, L1) or stage 2 (CPEN_S2 + 4-step IPR diffusion, "
                                   "DIRformer from stage 1, frozen stage-1 teacher; L1 + IPR L1). Pairs come from the "
                                   "task's own operator, seeded per step; OUT gets checkpoints/, loss.csv, curve.csv.")
    p.add_argument("--data", required=True, help="uint8 N x 3 x S x S .npy of clean crops (spgd train's format)")
    p.add_argument("--out", "-o", required=True, help="run folder (an existing one is resumed)")
    p.add_argument("--task", "-t", default=C.task, help="task preset whose operator degrades (default: spgd's default task)")
    p.add_argument("--stage", type=int, choices=[1, 2], default=C.stage)
    p.add_argument("--teacher", default="", help="stage 2: the stage-1 run folder, checkpoint or exported weights")
    p.add_argument("--config", default="{}", help="inline JSON of network sizes (DiffIRConfig: dim, blocks, "
                                                  "refinement, heads, ffn, cpen_feats, cpen_res, ...)")
    for name in ("batch_size", "steps", "encoder_steps", "seed", "val_count", "val_every", "ckpt_every"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(C, name), help="(default: %(default)s)")
    for name in ("lr", "lr_min", "ema"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(C, name), help="(default: %(default)s)")
    p.add_argument("--augment", choices=["hflip", "dihedral"], default=C.augment)
    p.add_argument("--val", default="", help="folder of clean validation images (never a test set)")
    p.add_argument("--time-limit", type=float, default=0.0, help="stop after this many seconds, with a checkpoint")
    p.add_argument("--init", default="", help="exported weights (export-diffir) to start from when OUT has no "
                                              "checkpoint: fresh optimizer, the step count kept (a machine was lost)")
    p.add_argument("--finetune", default="", help="exported weights of another task's model (same stage and network) "
                                                  "to start from at step 0: fresh optimizer and schedule")
    add_threads(p)
    p.set_defaults(func=_train)
    e = sub.add_parser("export-diffir", help="write a DiffIR checkpoint's EMA weights as a small safetensors file")
    e.add_argument("checkpoint", help="checkpoint file, or a run folder (its last checkpoint)")
    e.add_argument("output", help="the .safetensors file to write")
    e.add_argument("--data-note", default="", help="what the weights were trained on, stored in the file")
    e.add_argument("--image-size", type=int, help="the one clean-image size the weights are for (aligned 64x64 "
                                                  "faces: 64); omit for weights of natural images of any size")
    e.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:
    from .train import train

    cfg = C(data=args.data, out=args.out, task=args.task, stage=args.stage, teacher=args.teacher,
            model=json.loads(args.config), batch_size=args.batch_size, lr=args.lr, lr_min=args.lr_min,
            steps=args.steps, ema=args.ema, encoder_steps=args.encoder_steps, augment=args.augment, seed=args.seed,
            val=args.val, val_count=args.val_count, val_every=args.val_every, ckpt_every=args.ckpt_every,
            init=args.init, finetune=args.finetune)
    last = train(cfg, time_limit=args.time_limit)
    print(f"DiffIR stage {cfg.stage}: last checkpoint {last}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .train import export

    path = export(args.checkpoint, args.output, data_note=args.data_note, image_size=args.image_size)
    print(f"wrote {path} ({path.stat().st_size / 2 ** 20:.2f} MiB)")
    return 0
