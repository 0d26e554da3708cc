"""`make bench`: every benchmark section, printing measured numbers and ratios."""

from __future__ import annotations

from benchmarks import elastic, expert_layer


def main() -> None:
    """Run the sections in order."""
    expert_layer.run()
    elastic.run()


if __name__ == "__main__":
    main()
