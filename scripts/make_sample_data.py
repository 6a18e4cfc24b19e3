"""Write the embedded sample datasets into the repository's ``sample_data/`` folder.

Usage: ``.venv/bin/python scripts/make_sample_data.py [--overwrite] [--output DIR]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medxfer.data.sample import generate_sample_data


def main() -> None:
    """Generate the sample data (deterministic, seeded)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).resolve().parents[1] / "sample_data")
    parser.add_argument("--overwrite", action="store_true", help="replace existing folders")
    args = parser.parse_args()
    for folder in generate_sample_data(args.output, overwrite=args.overwrite):
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"wrote {folder} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
