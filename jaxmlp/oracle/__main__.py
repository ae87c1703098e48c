"""`python -m jaxmlp.oracle …` is `jaxmlp check …`."""
import sys

from jaxmlp.oracle.cli import main

sys.exit(main())
