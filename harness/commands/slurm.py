"""``harness slurm CONFIG``: print (or submit) the Slurm batch script a spec needs."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="strategy spec YAML")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--account", help="Slurm account")
    p.add_argument("--time", help="time limit, e.g. 01:30:00")
    p.add_argument("--results-dir", help="results root on a shared file system (default: results)")
    p.add_argument("--python", help="python of the environment the job runs in (default: this one)")
    p.add_argument(
        "--nightly", action="store_true", help="the nightly regression job (run, compare, history)"
    )
    p.add_argument(
        "--baseline", help="with --nightly: the baseline run directory to compare against"
    )
    p.add_argument("--submit", action="store_true", help="submit with sbatch and print the job id")


def main(args: argparse.Namespace) -> int:
    from harness.commands.slurm_render import render, submit
    from harness.spec.spec import load_spec

    spec = load_spec(args.config)
    text = render(
        spec,
        args.config,
        partition=args.partition,
        account=args.account,
        time=args.time,
        results_dir=args.results_dir,
        python=args.python,
        nightly=args.nightly,
        baseline=args.baseline,
    )
    if args.submit:
        print(submit(text))
    else:
        print(text, end="" if text.endswith("\n") else "\n")
    return 0
