"""`fortify train`: parse options into a TrainConfig, call fortify.training.train, print the summary."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import typer

from fortify.numbers import parse_number


def register(app: typer.Typer) -> None:
    """Add `fortify train` to the app."""
    from fortify.training.config import MODES, TrainConfig

    d = TrainConfig()

    @app.command("train")
    def train_command(
        data: str = typer.Option(..., "--data", help="Dataset root (class folders) or 'phantom[:n=K]'."),
        split: Path | None = typer.Option(
            None, "--split", help="Split manifest; default: make one in --out."
        ),
        model: str = typer.Option(d.model, "--model", help="resnet18 | resnet34 | resnet50 | smallcnn."),
        mode: str = typer.Option(d.mode, "--mode", help=" | ".join(MODES)),
        eps: str = typer.Option("2/255", "--eps", help="L-inf radius in [0,1] pixels, e.g. 2/255."),
        epochs: int = typer.Option(d.epochs, "--epochs"),
        image_size: int = typer.Option(d.image_size, "--image-size"),
        batch_size: int = typer.Option(d.batch_size, "--batch-size", help="Global batch (split over ranks)."),
        lr: float = typer.Option(d.lr, "--lr", help="Peak learning rate."),
        seed: int = typer.Option(d.seed, "--seed"),
        device: str = typer.Option(d.device, "--device", help="auto | cpu | cuda | cuda:N"),
        precision: str = typer.Option(d.precision, "--precision", help="auto | fp32 | bf16"),
        out: Path = typer.Option(..., "--out", help="Run directory."),
        resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/last.*."),
        force: bool = typer.Option(False, "--force", help="Discard an existing run in --out."),
        pretrained: bool = typer.Option(False, "--pretrained", help="ImageNet weights (needs internet)."),
        weights: Path | None = typer.Option(
            None, "--weights", help="Local torchvision state dict (offline)."
        ),
        init: Path | None = typer.Option(None, "--init", help="Start from a fortify checkpoint (fine-tune)."),
        optimizer: str = typer.Option(d.optimizer, "--optimizer", help="sgd | adamw"),
        schedule: str = typer.Option(d.schedule, "--schedule", help="onecycle | cosine | constant"),
        attack_steps: int = typer.Option(d.attack_steps, "--attack-steps", help="Attack steps in training."),
        craft_bn: str = typer.Option(
            d.craft_bn,
            "--craft-bn",
            help="Batch-norm statistics training attacks craft against: batch (the batch's own) | running.",
        ),
        val_attack_steps: int = typer.Option(d.val_attack_steps, "--val-attack-steps"),
        trades_beta: float = typer.Option(d.trades_beta, "--trades-beta"),
        noise_sigma: float = typer.Option(
            d.noise_sigma, "--noise-sigma", help="noise mode: Gaussian noise std in [0,1] pixels."
        ),
        eps_warmup_epochs: float = typer.Option(d.eps_warmup_epochs, "--eps-warmup-epochs"),
        class_balanced: bool = typer.Option(d.class_balanced, "--class-balanced/--no-class-balanced"),
        augment: bool = typer.Option(d.augment, "--augment/--no-augment", help="Random horizontal flips."),
        max_shift: float = typer.Option(
            d.max_shift, "--max-shift", help="Also shift by up to this fraction of the size (0: off)."
        ),
        patience: int | None = typer.Option(None, "--patience", help="Early stopping patience (epochs)."),
        co_action: str = typer.Option(d.co_action, "--co-action", help="fast mode: warn | stop"),
        limit_per_class: int | None = typer.Option(None, "--limit-per-class", help="Smoke runs only."),
        cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Decode cache directory."),
        tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to RUN_DIR/tb."),
        as_json: bool = typer.Option(False, "--json", help="Print the final summary as JSON."),
    ) -> None:
        """Train a classifier (standard or adversarial) into a resumable run directory."""
        from fortify.training import train
        from fortify.training.loop import CatastrophicOverfittingWarning

        cfg = TrainConfig(
            data=data,
            split=str(split) if split else None,
            model=model,
            mode=mode,
            eps=parse_number(eps, "eps", lo=0),
            epochs=epochs,
            image_size=image_size,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            out=str(out),
            device=device,
            precision=precision,
            pretrained=pretrained,
            weights=str(weights) if weights else None,
            init=str(init) if init else None,
            optimizer=optimizer,
            schedule=schedule,
            attack_steps=attack_steps,
            craft_bn=craft_bn,
            val_attack_steps=val_attack_steps,
            trades_beta=trades_beta,
            noise_sigma=noise_sigma,
            eps_warmup_epochs=eps_warmup_epochs,
            class_balanced=class_balanced,
            augment=augment,
            max_shift=max_shift,
            patience=patience,
            co_action=co_action,
            limit_per_class=limit_per_class,
            cache_dir=str(cache_dir) if cache_dir else None,
            tensorboard=tensorboard,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CatastrophicOverfittingWarning)
            summary = train(cfg, resume=resume, force=force, progress=not as_json)
        for w in caught:
            if issubclass(w.category, CatastrophicOverfittingWarning):
                print(f"fortify: warning: {w.message}", file=sys.stderr)
        if summary.get("rank", 0) != 0:
            return  # under torchrun only rank 0 reports
        if as_json:
            print(json.dumps(summary, indent=2))
            return
        best = summary["best"] or {}
        print(f"run dir: {summary['run_dir']}  ({summary['epochs_completed']} epochs)")
        line = f"best epoch {summary['best_epoch']} by {summary['selection']}"
        if best:
            line += f": val clean {best['val_clean_acc']:.4f}"
            if best.get("val_robust_acc") is not None:
                line += f", val robust {best['val_robust_acc']:.4f}"
        print(line)
        if summary["stopped"]:
            print(f"stopped: {summary['stopped']}")
        print(f"checkpoints: {Path(cfg.out) / 'best.safetensors'}, {Path(cfg.out) / 'last.safetensors'}")
