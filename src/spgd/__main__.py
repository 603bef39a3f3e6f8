"""`python -m spgd` (also under torchrun) runs the command-line interface."""
from .cli import main

raise SystemExit(main())
