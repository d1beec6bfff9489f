"""`python -m sdpo_cli` == `sdpo` (the main guard matters: the vLLM engine spawns processes)."""

from .cli import main

if __name__ == "__main__":
    main()
